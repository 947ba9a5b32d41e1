//! Operations on an environment: each a job in the environment's one slot, whoever asks.

use crate::core::{CommitId, EnvName, JobId, RepoId};
use crate::queue::{JobKind, JobState, JobStore, Request};
use crate::runner::deploy::EnvDir;
use crate::runner::{Config, RunnerError};

/// What a rollback did.
pub struct RolledBack {
    pub job: JobId,
    /// The release it goes back to.
    pub target: String,
    /// Done at once (the environment was idle), else queued after the job that runs in it.
    pub at_once: bool,
}

/// Rolls `env` back to release `to`, else to the one before what runs now. A job, as from the
/// API: claimed and done here at once when nothing of the environment runs; else it waits in
/// the environment's slot for what runs (a deploy under way), so a deploy's switch never takes
/// a rollback back. The target is chosen now, when the person asks.
pub fn rollback(
    config: &Config,
    queue: &mut dyn JobStore,
    env: &EnvDir,
    to: Option<&str>,
) -> Result<RolledBack, RunnerError> {
    let target = crate::runner::rollback_target(env, to)?;
    let info =
        env.info(&target).ok_or_else(|| RunnerError::Platform(format!("release {target} has no description")))?;
    let options = serde_json::json!({ "release": target }).to_string();
    let job = queue_on(&config.data_dir, queue, JobKind::Rollback, info, options)?;
    let at_once = match queue.claim_job(job.id, &config.runner_id, config.lease)? {
        Some(claimed) => {
            crate::runner::process(config, queue, &claimed, &crate::runner::shutdown::Shutdown::default())?;
            true
        }
        None => false,
    };
    Ok(RolledBack { job: job.id, target, at_once })
}

/// What a redeploy queued.
pub struct Redeployed {
    pub job: JobId,
    /// When the environment was never deployed: the failed push run again, and its commit.
    pub retried: Option<(JobId, CommitId)>,
}

/// Deploys what environment `name` runs again (its slug; new variables take effect). One that
/// never deployed, whose last push failed (a service not ready, a variable missing), gets that
/// push's commit again: no commit is needed to retry.
pub fn redeploy(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    name: &EnvName,
) -> Result<Redeployed, RunnerError> {
    let env = EnvDir::new(data, repo, name);
    if let Some(info) = env.current_release().and_then(|r| env.info(&r)) {
        let job = queue_on(data, queue, JobKind::Redeploy, info, "{}".into())?;
        return Ok(Redeployed { job: job.id, retried: None });
    }
    let failed = queue
        .jobs()?
        .into_iter()
        .filter(|j| j.repo == *repo && j.environment == *name && j.kind == JobKind::Push)
        .max_by_key(|j| j.id)
        .filter(|j| j.state == JobState::Failed)
        .ok_or_else(|| RunnerError::Platform(format!("environment {name} runs nothing to redeploy")))?;
    let request = Request {
        kind: JobKind::Push,
        repo: repo.clone(),
        ref_name: failed.ref_name,
        environment: name.clone(),
        commit: failed.commit.clone(),
        options: "{}".into(),
        pusher: crate::queue::pusher(&|k| std::env::var(k).ok()),
    };
    let job = queue.enqueue(&request)?;
    crate::store::wake::wake(data);
    Ok(Redeployed { job: job.id, retried: Some((failed.id, failed.commit)) })
}

/// Queues a job of `kind` on the environment a release describes (its repository, branch and
/// commit), and wakes the runners waiting on the data directory.
fn queue_on(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    kind: JobKind,
    info: crate::store::ReleaseInfo,
    options: String,
) -> Result<crate::queue::Job, RunnerError> {
    let job = queue.enqueue(&request_on(kind, info, options, crate::queue::pusher(&|k| std::env::var(k).ok())))?;
    crate::store::wake::wake(data);
    Ok(job)
}

/// The request for a job of `kind` on the environment a release describes (its repository,
/// branch and commit), asked by `pusher`: for the command line and the API alike.
pub fn request_on(kind: JobKind, info: crate::store::ReleaseInfo, options: String, pusher: Option<String>) -> Request {
    Request {
        kind,
        ref_name: format!("refs/heads/{}", info.branch.clone().unwrap_or_else(|| info.environment.to_string())),
        repo: info.repo,
        environment: info.environment,
        commit: info.commit,
        options,
        pusher,
    }
}

/// What runs in `env`, or why nothing does.
fn deployed(env: &EnvDir, name: &str) -> Result<crate::store::ReleaseInfo, RunnerError> {
    env.current_release()
        .and_then(|r| env.info(&r))
        .ok_or_else(|| RunnerError::Platform(format!("environment {name} is not deployed")))
}

/// Copies the parent's data (`data`: its databases; `mounts`: its mounts' files) into `env`
/// again, from `from` or the default branch's environment, whose own data is never overwritten
/// this way. The job queued, and the parent.
pub fn sync(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    env: &EnvDir,
    name: &str,
    (with_data, with_mounts): (bool, bool),
    from: Option<String>,
) -> Result<(crate::queue::Job, String), RunnerError> {
    let info = deployed(env, name)?;
    let default = crate::platform::default_branch(info.repo.as_str()).map(|b| crate::core::ids::environment_name(&b));
    if default.as_deref() == Some(name) {
        return Err(RunnerError::Platform(format!(
            "environment {name} is the default branch's: its data is never overwritten by another environment's"
        )));
    }
    let parent =
        from.or(default).ok_or_else(|| RunnerError::Platform("no parent environment: name one with --from".into()))?;
    if parent == name {
        return Err(RunnerError::Platform("an environment cannot be synced from itself".into()));
    }
    let options = crate::runner::sync::Sync { parent: parent.clone(), data: with_data, mounts: with_mounts };
    let options = serde_json::to_string(&options).map_err(|e| RunnerError::Platform(e.to_string()))?;
    Ok((queue_on(data, queue, JobKind::Sync, info, options)?, parent))
}

/// Deletes `env`: off the router, its services dropped, its files removed (a job).
pub fn delete(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    env: &EnvDir,
    name: &str,
) -> Result<crate::queue::Job, RunnerError> {
    queue_on(data, queue, JobKind::Delete, deployed(env, name)?, "{}".into())
}

/// Makes environment `given` (its name or its branch) of `repo` active: pushes deploy it
/// again, and its branch's last commit is deployed now. The job queued.
pub fn activate(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    given: &str,
) -> Result<crate::queue::Job, RunnerError> {
    let (name, branch) = crate::store::environments::resolve(repo.path(), given).map_err(RunnerError::Platform)?;
    let project = crate::activity::project_name(repo);
    let branch = branch
        .ok_or_else(|| RunnerError::Platform(format!("{project} has no branch of environment {name} to deploy")))?;
    let head = git2::Repository::open_bare(repo.path())
        .and_then(|git| git.refname_to_id(&format!("refs/heads/{branch}")))
        .map_err(|e| RunnerError::Platform(format!("{}: {e}", repo.as_str())))?;
    crate::store::environments::Environments::set_inactive(repo.path(), name.as_str(), false)
        .map_err(RunnerError::Platform)?;
    let request = Request {
        kind: JobKind::Push,
        repo: repo.clone(),
        ref_name: format!("refs/heads/{branch}"),
        environment: name,
        commit: CommitId::from_oid(head),
        options: "{}".into(),
        pusher: crate::queue::pusher(&|k| std::env::var(k).ok()),
    };
    let job = queue.enqueue(&request)?;
    crate::store::wake::wake(data);
    Ok(job)
}

/// Makes environment `name` of `repo` inactive: pushes to its branch keep the code without
/// deploying it, and what it runs is stopped after a final backup (a job; None when nothing of
/// it was deployed).
pub fn deactivate(
    data: &std::path::Path,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    name: &EnvName,
) -> Result<Option<crate::queue::Job>, RunnerError> {
    crate::store::environments::Environments::set_inactive(repo.path(), name.as_str(), true)
        .map_err(RunnerError::Platform)?;
    let env = EnvDir::new(data, repo, name);
    let Some(info) = env.current_release().and_then(|r| env.info(&r)) else { return Ok(None) };
    queue_on(data, queue, JobKind::Delete, info, r#"{"backup": true}"#.into()).map(Some)
}
