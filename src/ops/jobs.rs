//! Jobs: queued and the runners woken, cancelled.

use super::{Actor, Error};
use crate::core::JobId;
use crate::queue::{Job, JobKind, JobStore, Request};
use crate::store::DataDir;

/// Queues `request` and wakes the runners waiting on the data directory.
pub fn enqueue(data: &DataDir, store: &mut dyn JobStore, request: &Request) -> Result<Job, Error> {
    let job = store.enqueue(request)?;
    crate::store::wake::wake(data.root());
    Ok(job)
}

/// What a cancellation did.
pub struct Cancelled {
    /// The cancellation, an activity of its own.
    pub record: Job,
    /// What the activity was doing (pending, running).
    pub was: crate::queue::JobState,
}

/// Cancels activity `id`: a pending one never runs, a running one is stopped by its runner at
/// its next heartbeat. The cancellation is an activity of its own, naming who asked.
pub fn cancel(data: &DataDir, store: &mut dyn JobStore, id: JobId, actor: &Actor) -> Result<Cancelled, Error> {
    let Some(was) = store.cancel(id)? else {
        return Err(match store.job(id)? {
            Some(job) => Error::Conflict(format!("activity #{id} has already ended: {}", job.state.as_str())),
            None => Error::NotFound(format!("there is no activity #{id}")),
        });
    };
    let job = store.job(id)?.ok_or_else(|| Error::NotFound(format!("there is no activity #{id}")))?;
    let text = format!(
        "Activity #{id} ({} of environment {}) cancelled by {}; it was {}",
        job.kind.as_str(),
        job.environment,
        actor.who(),
        was.as_str()
    );
    let request = Request {
        kind: JobKind::Cancel,
        repo: job.repo,
        ref_name: job.ref_name,
        environment: job.environment,
        commit: job.commit,
        options: serde_json::json!({ "activity": id, "was": was.as_str() }).to_string(),
        pusher: actor.name.clone(),
    };
    let record = crate::activity::record_done(store, data, &request, &text)?;
    crate::store::wake::wake(data.root());
    Ok(Cancelled { record, was })
}
