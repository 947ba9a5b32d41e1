//! With a queue that runners on several machines share (PostgreSQL), a job's log is shipped
//! into it as it is written: the console, `pushgate-runner logs` and the push read it there,
//! wherever they run. The runner writes the log to its own file as always; a thread sends what
//! was appended every 200 ms, and once more when the job's last line is written. A runner that
//! takes a job on (a deploy after a build on another machine, or after a runner died) first
//! copies what the store holds into its own file, so that the log goes on where it stood.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::shutdown::Shutdown;
use super::Config;
use crate::core::JobId;
use crate::queue::JobStore;

const EVERY: Duration = Duration::from_millis(200);

/// Ships one job's log; `finish` sends the rest and stops.
pub struct Shipper {
    stop: Arc<Shutdown>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shipper {
    /// Starts shipping `job`'s log (None beside the embedded queue: the log is read where it is
    /// written). The local file is first brought up to what the store holds.
    pub fn start(config: &Config, queue: &dyn JobStore, job: JobId) -> Option<Shipper> {
        if config.queue.is_embedded() {
            return None;
        }
        let path = config.log_path(job);
        let local = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        // What the store holds is the log as others read it. A file shorter than that (another
        // machine ran the job so far) is brought up to it; a longer one (this machine ran it and
        // died before shipping its end) ships the rest first.
        let seeded = queue.log_from(job, 0).map_err(|e| e.to_string()).and_then(|kept| {
            if let Some(missing) = kept.get(local as usize..).filter(|m| !m.is_empty()) {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                let mut f =
                    std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| e.to_string())?;
                f.write_all(missing).map_err(|e| e.to_string())?;
            }
            Ok(kept.len() as u64)
        });
        let mut shipped = match seeded {
            Ok(stored) => stored,
            Err(e) => {
                // Shipping from offsets the store does not agree with would garble the log.
                tracing::warn!(error = %e, "the job's log cannot be continued from the store; it stays on this machine");
                return None;
            }
        };
        let stop = Arc::new(Shutdown::default());
        let (config, stopping) = (config.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut store = match config.queue.open(crate::store::QUEUE_TIMEOUT) {
                Ok(store) => store,
                Err(e) => {
                    tracing::warn!(error = %e, "the job's log cannot be shipped; it stays on this machine");
                    return;
                }
            };
            loop {
                let last = stopping.sleep(EVERY);
                ship(store.as_mut(), job, &path, &mut shipped);
                if last {
                    return;
                }
            }
        });
        Some(Shipper { stop, thread: Some(thread) })
    }

    /// Sends what is left and stops.
    pub fn finish(mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Sends the bytes of `path` past `shipped`.
fn ship(store: &mut dyn JobStore, job: JobId, path: &PathBuf, shipped: &mut u64) {
    let Ok(mut f) = std::fs::File::open(path) else { return };
    if f.seek(SeekFrom::Start(*shipped)).is_err() {
        return;
    }
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
        return;
    }
    match store.append_log(job, *shipped, &bytes) {
        Ok(()) => *shipped += bytes.len() as u64,
        Err(e) => tracing::warn!(error = %e, "shipping the job's log; trying again"),
    }
}
