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
    let request = Request {
        kind: JobKind::Rollback,
        ref_name: format!("refs/heads/{}", info.branch.clone().unwrap_or_else(|| info.environment.to_string())),
        repo: info.repo,
        environment: info.environment,
        commit: info.commit,
        options: serde_json::json!({ "release": target }).to_string(),
        pusher: crate::queue::pusher(&|k| std::env::var(k).ok()),
    };
    let job = queue.enqueue(&request)?;
    crate::store::wake::wake(&config.data_dir);
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
    let pusher = crate::queue::pusher(&|k| std::env::var(k).ok());
    let (request, retried) = match env.current_release().and_then(|r| env.info(&r)) {
        Some(info) => (
            Request {
                kind: JobKind::Redeploy,
                ref_name: format!("refs/heads/{}", info.branch.clone().unwrap_or_else(|| name.to_string())),
                repo: info.repo,
                environment: name.clone(),
                commit: info.commit,
                options: "{}".into(),
                pusher,
            },
            None,
        ),
        None => {
            let failed = queue
                .jobs()?
                .into_iter()
                .filter(|j| j.repo == *repo && j.environment == *name && j.kind == JobKind::Push)
                .max_by_key(|j| j.id)
                .filter(|j| j.state == JobState::Failed)
                .ok_or_else(|| RunnerError::Platform(format!("environment {name} runs nothing to redeploy")))?;
            let retried = Some((failed.id, failed.commit.clone()));
            let request = Request {
                kind: JobKind::Push,
                repo: repo.clone(),
                ref_name: failed.ref_name,
                environment: name.clone(),
                commit: failed.commit,
                options: "{}".into(),
                pusher,
            };
            (request, retried)
        }
    };
    let job = queue.enqueue(&request)?;
    crate::store::wake::wake(data);
    Ok(Redeployed { job: job.id, retried })
}
