//! Waking runners the moment a push queues a job, without polling the queue.
//!
//! A runner creates a FIFO in the data directory and waits on it; post-receive opens it without
//! blocking and writes a byte. No runner listening: the open fails at once and nothing waits.
//! A wake-up that falls between two waits is caught by the runner's slow fallback check.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub fn fifo_path(data_dir: &Path) -> PathBuf {
    super::DataDir::new(data_dir).wakeup()
}

/// Tells waiting runners that a job was queued. Never blocks, never fails the caller.
pub fn wake(data_dir: &Path) {
    let opened = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo_path(data_dir));
    if let Ok(mut fifo) = opened {
        let _ = fifo.write_all(b"!");
    }
}

/// A runner's end: workers wait on it; a thread reads the FIFO and wakes them all.
#[derive(Clone)]
pub struct Waker {
    state: Arc<(Mutex<u64>, Condvar)>,
}

impl Waker {
    /// Creates the FIFO if needed and starts listening.
    pub fn listen(data_dir: &Path) -> std::io::Result<Waker> {
        let path = fifo_path(data_dir);
        if !path.exists() {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
            // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o622) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            // A runner started as root: the hooks, which run as the data directory's owner,
            // must be able to write to it.
            if let Ok(owner) = std::fs::metadata(data_dir) {
                use std::os::unix::fs::MetadataExt;
                let _ = std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid()));
            }
        }
        let waker = Waker { state: Arc::new((Mutex::new(0), Condvar::new())) };
        let state = waker.state.clone();
        std::thread::spawn(move || loop {
            // Blocks until a writer opens the FIFO, then reads until it closes.
            let Ok(mut fifo) = std::fs::File::open(&path) else { return };
            let mut sink = Vec::new();
            let _ = fifo.read_to_end(&mut sink);
            let (count, cond) = &*state;
            if let Ok(mut n) = count.lock() {
                *n += 1;
            }
            cond.notify_all();
        });
        Ok(waker)
    }

    /// Waits for a wake-up, at most `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let (count, cond) = &*self.state;
        let Ok(guard) = count.lock() else { return };
        let seen = *guard;
        let _ = cond.wait_timeout_while(guard, timeout, |n| *n == seen);
    }
}
