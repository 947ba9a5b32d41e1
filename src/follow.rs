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

/// Follows `job` until it ends: its log, then its verdict. Returns the final state, or None
/// when no runner picked it up in time or the pusher hung up.
pub fn follow(
    queue: &dyn JobStore,
    log_path: &Path,
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
        if copy_new(log_path, &mut offset, out).is_err() {
            return Ok(None); // the pusher hung up; the build goes on
        }
        if !matches!(state, JobState::Pending | JobState::Running) {
            let _ = copy_new(log_path, &mut offset, out);
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
fn copy_new(path: &Path, offset: &mut u64, out: &mut dyn Write) -> std::io::Result<()> {
    let Ok(mut file) = std::fs::File::open(path) else { return Ok(()) };
    let len = file.metadata()?.len();
    if len <= *offset {
        return Ok(());
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut chunk = Vec::new();
    file.take(len - *offset).read_to_end(&mut chunk)?;
    *offset = len;
    out.write_all(&chunk)?;
    out.flush()
}
