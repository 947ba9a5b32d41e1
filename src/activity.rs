//! What the API, the console and the webhooks show of a job: an activity of a project.

use serde_json::{json, Value};

use crate::core::{RepoId, Timestamp};
use crate::queue::{Job, JobState, JobStore, QueueError, Request};
use crate::store::DataDir;

/// A project's name: its bare repository's, without `.git` (`shop` for `/srv/git/shop.git`).
pub fn project_name(repo: &RepoId) -> String {
    let name = std::path::Path::new(repo.as_str()).file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| repo.as_str().to_owned());
    name.strip_suffix(".git").map(str::to_owned).unwrap_or(name)
}

/// The project (a repository known to the store) named `name`; else which there are, for the
/// admin's commands (the API says less to callers who may not see them all).
pub fn project_named(store: &dyn JobStore, name: &str) -> Result<RepoId, String> {
    let repos = store.projects().map_err(|e| e.to_string())?;
    let names: Vec<String> = repos.iter().map(project_name).collect();
    repos
        .into_iter()
        .find(|r| project_name(r) == name)
        .ok_or_else(|| format!("no project `{name}` has been pushed to (projects: {})", names.join(", ")))
}

/// The first line of `commit`'s message in `repo`, if it can be read here.
fn subject(repo: &RepoId, commit: &crate::core::CommitId) -> Option<String> {
    let git = git2::Repository::open_bare(repo.path()).ok()?;
    let commit = git.find_commit(commit.oid()).ok()?;
    commit.summary().map(|s| s.chars().take(120).collect())
}

/// An activity as the API shows it. `state` is where it is (pending, in_progress, complete,
/// cancelled), `result` how it ended (success, failure, cancelled, superseded).
pub fn activity(job: &Job) -> Value {
    let state = match job.state {
        JobState::Pending => "pending",
        JobState::Running => "in_progress",
        JobState::Succeeded | JobState::Failed => "complete",
        JobState::Cancelled | JobState::Superseded => "cancelled",
    };
    let result = job.state.result();
    let ms = |from: &Timestamp, to: Option<&Timestamp>| {
        let to = to.copied().unwrap_or_else(Timestamp::now);
        to.system_time().duration_since(from.system_time()).map(|d| d.as_millis() as u64).ok()
    };
    let options: Value = job.options.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null);
    json!({
        "id": job.id,
        "type": job.kind,
        "state": state,
        "result": result,
        "project": project_name(&job.repo),
        "environment": job.environment,
        "ref": job.ref_name,
        "commit": job.commit,
        "subject": subject(&job.repo, &job.commit),
        "old_commit": job.old_commit,
        "pusher": job.pusher,
        "release": job.release,
        "options": options,
        "superseded_by": job.superseded_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timings": {
            "wait_ms": ms(&job.created_at, job.started_at.as_ref()),
            "run_ms": job.started_at.as_ref().and_then(|s| ms(s, job.finished_at.as_ref())),
        },
        "log_url": format!("/api/activities/{}/log", job.id),
    })
}

/// Records an action done at once (a rollback or a cancel from the command line, a cancel from
/// the API) as an ended activity, with a log of one line saying what was done.
pub fn record_done<S: JobStore + ?Sized>(
    store: &mut S,
    data: &DataDir,
    request: &Request,
    text: &str,
) -> Result<Job, QueueError> {
    let job = store.record(request, JobState::Succeeded)?;
    let line = format!("{} [{}] {text}\n", Timestamp::now(), request.kind.as_str());
    if let Err(e) = std::fs::create_dir_all(data.logs()).and_then(|()| std::fs::write(data.log(job.id), &line)) {
        tracing::warn!(error = %e, job = job.id.0, "the log of a recorded activity");
    }
    // Readers on other machines read logs from the store: the line goes there too.
    store.append_log(job.id, 0, line.as_bytes())?;
    Ok(job)
}
