//! The push shows the deployment: after the refs move, post-receive follows the job's log into
//! the pusher's terminal until the job ends, the way Magento Cloud does.
//!
//! `-o pushgate.nowait` returns at once. If no runner picks the job up within a short wait, the
//! push says so and how to follow it later. If the pusher hangs up, writes fail and following
//! stops; the runner goes on regardless. Pushes that queue many builds are not followed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::queue::{Job, JobState, JobStore, QueueError};

/// Following stops being useful past this many builds in one push.
pub const MAX_FOLLOWED: usize = 3;

/// How often the job's state and log are looked at.
const POLL: Duration = Duration::from_millis(100);

/// Where a job's log is read: the file a runner on this machine writes, or the shared store
/// runners on other machines ship it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAt<'a> {
    File(&'a Path),
    Store,
}

impl<'a> LogAt<'a> {
    /// Where the log is beside a queue: the file a runner on this machine writes (`file`) beside
    /// the embedded queue; the store beside a shared one, whose runners may be elsewhere.
    pub fn beside(embedded_queue: bool, file: &'a Path) -> LogAt<'a> {
        if embedded_queue {
            LogAt::File(file)
        } else {
            LogAt::Store
        }
    }

    /// The log from `offset` (empty when there is none yet).
    pub fn read_from(&self, queue: &dyn JobStore, job: crate::core::JobId, offset: u64) -> std::io::Result<Vec<u8>> {
        match self {
            LogAt::File(path) => read_file_from(path, offset),
            LogAt::Store => queue.log_from(job, offset).map_err(std::io::Error::other),
        }
    }
}

/// The bytes of a file from `offset` (none when it does not exist yet).
pub fn read_file_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let Ok(mut file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let len = file.metadata()?.len();
    if len <= offset {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut chunk = Vec::new();
    file.take(len - offset).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// Follows `job` until it ends: its log, then its verdict. Returns the final state, or None
/// when no runner picked it up in time or the pusher hung up.
pub fn follow(
    queue: &dyn JobStore,
    log_path: LogAt<'_>,
    job: &Job,
    pickup_wait: Duration,
    console: Option<&str>,
    out: &mut dyn Write,
) -> Result<Option<JobState>, QueueError> {
    let follow_it = |id| match console {
        Some(url) => format!("Follow it at {}", activity_url(url, id)),
        None => format!("Follow it with: pushgate-runner logs {id} --follow"),
    };
    let started = Instant::now();
    let mut offset = 0u64;
    loop {
        let state = queue.job(job.id)?.map(|j| j.state).unwrap_or(JobState::Cancelled);
        if state == JobState::Pending && started.elapsed() >= pickup_wait {
            let _ = writeln!(
                out,
                "No runner picked build #{} up within {} s; it stays queued. {}",
                job.id,
                pickup_wait.as_secs(),
                follow_it(job.id)
            );
            return Ok(None);
        }
        if copy_new(queue, log_path, job.id, &mut offset, out).is_err() {
            return Ok(None); // the pusher hung up; the build goes on
        }
        if !matches!(state, JobState::Pending | JobState::Running) {
            let _ = copy_new(queue, log_path, job.id, &mut offset, out);
            let _ = match state {
                JobState::Succeeded => {
                    writeln!(out, "Deployment of environment {} succeeded (build #{}).", job.environment, job.id)
                }
                JobState::Failed => writeln!(
                    out,
                    "Build #{} for environment {} failed; the environment keeps its previous release. Details: {}",
                    job.id,
                    job.environment,
                    match console {
                        Some(url) => activity_url(url, job.id),
                        None => format!("pushgate-runner logs {}", job.id),
                    }
                ),
                other => writeln!(out, "Build #{} ended: {}.", job.id, other.as_str()),
            };
            return Ok(Some(state));
        }
        std::thread::sleep(POLL);
    }
}

/// The console's page of an activity.
pub fn activity_url(console: &str, id: crate::core::JobId) -> String {
    format!("{console}/#activity/{id}")
}

/// Writes what was appended to the log since `offset`.
fn copy_new(
    queue: &dyn JobStore,
    at: LogAt<'_>,
    job: crate::core::JobId,
    offset: &mut u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut chunk = at.read_from(queue, job, *offset)?;
    // A character split between two reads (a C1 control is two bytes, 0xC2 0x80-0x9F) must not
    // pass as two harmless halves, nor its second half be taken for a stray byte: an incomplete
    // sequence at the end waits for the next read.
    chunk.truncate(chunk.len() - incomplete_tail(&chunk));
    if chunk.is_empty() {
        return Ok(());
    }
    *offset += chunk.len() as u64;
    out.write_all(&printable(&chunk))?;
    out.flush()
}

/// The bytes at the end of `text` that begin a UTF-8 sequence its end cuts short.
fn incomplete_tail(text: &[u8]) -> usize {
    match text.utf8_chunks().last() {
        Some(last)
            if !last.invalid().is_empty()
                && std::str::from_utf8(last.invalid()).is_err_and(|e| e.error_len().is_none()) =>
        {
            last.invalid().len()
        }
        _ => 0,
    }
}

/// Text from a project (a job's log: its hooks' output) as a terminal may show it: control
/// characters other than line feeds and tabs written as `^X` (`^[` for ESC, `^?` for DEL,
/// `^M` for a carriage return that ends no line), C1 controls as `\u{9b}`, and a lone byte
/// 0x80-0x9F outside any UTF-8 character (which an 8-bit terminal takes for a C1 control) as
/// `\x9b`. A hook's output can then neither move the cursor, retitle a window, rewrite what
/// was shown, nor send an escape sequence to the terminal of whoever reads it.
pub fn printable(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Which bytes belong to well-formed UTF-8 characters.
    let mut in_character = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        in_character.extend(std::iter::repeat_n(true, chunk.valid().len()));
        in_character.extend(std::iter::repeat_n(false, chunk.invalid().len()));
    }
    let special = |i: usize, b: u8| {
        (b < 0x20 && b != b'\n' && b != b'\t' && !(b == b'\r' && text.get(i + 1) == Some(&b'\n')))
            || b == 0x7f
            || (b == 0xc2 && text.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
            || ((0x80..=0x9f).contains(&b) && !in_character[i])
    };
    if !text.iter().enumerate().any(|(i, b)| special(i, *b)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if !special(i, b) {
            out.push(b);
        } else if b == 0xc2 {
            out.extend_from_slice(format!("\\u{{{:x}}}", text[i + 1]).as_bytes());
            i += 1;
        } else if b >= 0x80 {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else if b == 0x7f {
            out.extend_from_slice(b"^?");
        } else {
            out.extend_from_slice(&[b'^', b + 0x40]);
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_sequences_reach_no_terminal() {
        let shown = super::printable(b"ok\tdone\r\n\x1b]0;pwned\x07\x1b[2J\rhidden \xc2\x9b31m \x7f caf\xc3\xa9\n");
        assert_eq!(String::from_utf8_lossy(&shown), "ok\tdone\r\n^[]0;pwned^G^[[2J^Mhidden \\u{9b}31m ^? caf\u{e9}\n");
        assert!(matches!(super::printable(b"plain\n"), std::borrow::Cow::Borrowed(_)));
        // A lone 0x9B (CSI to an 8-bit terminal), not inside a character; "…" keeps its 0x80.
        let shown = super::printable(b"\x9b31m red \xe2\x80\xa6 \xa0\n");
        assert_eq!(&*shown, b"\\x9b31m red \xe2\x80\xa6 \xa0\n");
    }

    #[test]
    fn a_character_split_between_two_reads_waits_for_its_end() {
        assert_eq!(super::incomplete_tail(b"done \xe2\x80"), 2);
        assert_eq!(super::incomplete_tail(b"done \xc2"), 1);
        assert_eq!(super::incomplete_tail(b"done \xe2\x80\xa6"), 0);
        assert_eq!(super::incomplete_tail(b"done \x9b"), 0, "a stray byte is not a beginning");
    }
}
