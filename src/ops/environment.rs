//! Operations on an environment: each change a job in the environment's one slot, whoever
//! asks; and the project's environments' settings (type, limit) and variables.

use super::{Actor, Error};
use crate::core::{CommitId, EnvName, JobId, RepoId};
use crate::queue::{Job, JobKind, JobState, JobStore, Request};
use crate::runner::declared::{Declared, Layered};
use crate::runner::Config;
use crate::store::deployed::EnvDir;
use crate::store::environments::{EnvType, Environments};
use crate::store::{DataDir, ReleaseInfo};

/// The project named `name` (its repository).
pub fn project(store: &dyn JobStore, name: &str) -> Result<RepoId, Error> {
    crate::activity::project_named(store, name).map_err(Error::NotFound)
}

/// Environment `given` (its name or its branch) of `repo`: its name.
pub fn named(repo: &RepoId, given: &str) -> Result<EnvName, Error> {
    Ok(crate::store::environments::resolve(repo.path(), given).map_err(Error::NotFound)?.0)
}

/// Every environment of the data directory's projects: those deployed here, then those that
/// run nothing anywhere (inactive; a branch or a declared staging or production never
/// deployed; a first deploy under way), each with what to do.
pub fn list(data: &DataDir, store: &dyn JobStore) -> Result<Vec<crate::store::deployed::Environment>, Error> {
    let mut all = crate::store::deployed::environments(data.root());
    let jobs = store.jobs()?;
    for repo in store.projects()? {
        let Ok(declared) = Environments::load(repo.path()) else { continue };
        let project = crate::activity::project_name(&repo);
        // Declared ones, then every branch's (an environment each).
        let mut names = declared.declared();
        for branch in branches(&repo) {
            let name = crate::core::ids::environment_name(&branch);
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name.clone(), declared.of(&name)));
            }
        }
        for (name, kind) in names {
            if all.iter().any(|e| e.repo.as_ref() == Some(&repo) && e.environment == name) {
                continue;
            }
            let of_it = |j: &&Job| j.repo == repo && j.environment.as_str() == name;
            let under_way =
                jobs.iter().filter(of_it).find(|j| matches!(j.state, JobState::Pending | JobState::Running));
            let deployed_once = jobs.iter().filter(of_it).any(|j| {
                j.state == JobState::Succeeded
                    && matches!(j.kind, JobKind::Push | JobKind::Promote | JobKind::Redeploy | JobKind::Rollback)
            });
            if deployed_once && !declared.is_inactive(&name) {
                continue; // deployed by a runner of another machine, which lists it
            }
            let (state, hint) = if let Some(job) = under_way {
                ("deploying", format!("its first deploy: pushgate-runner logs {} --follow", job.id))
            } else if declared.is_inactive(&name) {
                ("inactive", format!("activate it: pushgate-runner env activate {project} {name}"))
            } else if kind.pushed() {
                ("not deployed", format!("deploy its branch: pushgate-runner env activate {project} {name}"))
            } else {
                ("not deployed", format!("deployed by promotion: pushgate-runner promote {project} FROM {name}"))
            };
            all.push(crate::store::deployed::Environment {
                environment: name,
                release: String::new(),
                commit: None,
                repo: Some(repo.clone()),
                path: String::new(),
                state,
                deployed_at: None,
                releases: Vec::new(),
                urls: Vec::new(),
                primary_url: None,
                kind,
                parent: None,
                hint: Some(hint),
            });
        }
    }
    Ok(all)
}

/// The branches of `repo` (none if it cannot be read).
fn branches(repo: &RepoId) -> Vec<String> {
    let Ok(git) = git2::Repository::open_bare(repo.path()) else { return Vec::new() };
    let Ok(all) = git.branches(Some(git2::BranchType::Local)) else { return Vec::new() };
    all.flatten().filter_map(|(b, _)| b.name().ok().flatten().map(str::to_owned)).collect()
}

/// What runs in `env`, or that nothing does.
fn deployed(env: &EnvDir, name: &str) -> Result<ReleaseInfo, Error> {
    env.current_release()
        .and_then(|r| env.info(&r))
        .ok_or_else(|| Error::NotFound(format!("environment {name} is not deployed")))
}

/// The release a rollback of `env` goes back to (`to`, else the one before what runs), and
/// its description; never the release it runs.
pub fn rollback_target(env: &EnvDir, name: &str, to: Option<&str>) -> Result<(String, ReleaseInfo), Error> {
    let current = deployed(env, name)?;
    if to == Some(current.release.as_str()) {
        return Err(Error::Conflict(format!("environment {name} already runs release {}", current.release)));
    }
    let target = crate::runner::rollback_target(env, to).map_err(|e| Error::Conflict(e.to_string()))?;
    let info = env.info(&target).ok_or_else(|| Error::NotFound(format!("release {target} has no description")))?;
    Ok((target, info))
}

/// What a rollback did.
pub struct RolledBack {
    /// The job, as queued.
    pub job: Job,
    /// The release it goes back to.
    pub target: String,
    /// Done at once (the environment was idle), else queued after the job that runs in it.
    pub at_once: bool,
}

/// Rolls `env` back to release `to`, else to the one before what runs now: a job in the
/// environment's slot, so a deploy's switch never takes a rollback back. Where `config` can
/// run it (the command line on the server), it is claimed and done at once when nothing of
/// the environment runs; else a runner does it. The target is chosen now, when asked.
pub fn rollback(
    data: &DataDir,
    config: Option<&Config>,
    queue: &mut dyn JobStore,
    env: &EnvDir,
    name: &str,
    to: Option<&str>,
    actor: &Actor,
) -> Result<RolledBack, Error> {
    let (target, info) = rollback_target(env, name, to)?;
    let options = serde_json::json!({ "release": target }).to_string();
    let job = super::jobs::enqueue(data, queue, &request_on(JobKind::Rollback, info, options, actor))?;
    let Some(config) = config else { return Ok(RolledBack { job, target, at_once: false }) };
    let at_once = match queue.claim_job(job.id, &config.runner_id, config.lease)? {
        Some(claimed) => {
            crate::runner::process(config, queue, &claimed, &crate::runner::shutdown::Shutdown::default())?;
            true
        }
        None => false,
    };
    Ok(RolledBack { job, target, at_once })
}

/// What a redeploy queued.
pub struct Redeployed {
    pub job: Job,
    /// When the environment was never deployed: the failed push run again, and its commit.
    pub retried: Option<(JobId, CommitId)>,
}

/// Deploys what environment `name` runs again (its slug; new variables take effect). One that
/// never deployed, whose last push failed (a service not ready, a variable missing), gets that
/// push's commit again: no commit is needed to retry.
pub fn redeploy(
    data: &DataDir,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    name: &EnvName,
    actor: &Actor,
) -> Result<Redeployed, Error> {
    let env = EnvDir::new(data.root(), repo, name);
    if let Some(info) = env.current_release().and_then(|r| env.info(&r)) {
        let job = super::jobs::enqueue(data, queue, &request_on(JobKind::Redeploy, info, "{}".into(), actor))?;
        return Ok(Redeployed { job, retried: None });
    }
    let failed = queue
        .jobs()?
        .into_iter()
        .filter(|j| j.repo == *repo && j.environment == *name && j.kind == JobKind::Push)
        .max_by_key(|j| j.id)
        .filter(|j| j.state == JobState::Failed)
        .ok_or_else(|| Error::NotFound(format!("environment {name} runs nothing to redeploy")))?;
    // A push run again: what a push may not do, it may not either.
    let declared = Environments::load(repo.path()).map_err(Error::Invalid)?;
    let project = crate::activity::project_name(repo);
    if declared.is_inactive(name.as_str()) {
        return Err(Error::Conflict(format!(
            "environment {name} is inactive: an admin activates it (pushgate-runner env activate {project} {name})"
        )));
    }
    let kind = declared.of(name.as_str());
    if !kind.pushed() {
        return Err(Error::Conflict(format!(
            "environment {name} is the project's {} environment: it is deployed by promotion only",
            kind.as_str()
        )));
    }
    if let Some(limit) = declared.limit() {
        let counted = |n: &String| declared.of(n).pushed() && !declared.is_inactive(n);
        let active: Vec<String> = data.deployed_environments(repo).into_iter().filter(counted).collect();
        if !active.iter().any(|n| n == name.as_str()) && active.len() >= limit as usize {
            return Err(Error::Conflict(format!(
                "{project} may have {limit} active integration environments and has {} ({})",
                active.len(),
                active.join(", ")
            )));
        }
    }
    let request = Request {
        kind: JobKind::Push,
        repo: repo.clone(),
        ref_name: failed.ref_name,
        environment: name.clone(),
        commit: failed.commit.clone(),
        options: "{}".into(),
        pusher: actor.name.clone(),
    };
    let job = super::jobs::enqueue(data, queue, &request)?;
    Ok(Redeployed { job, retried: Some((failed.id, failed.commit)) })
}

/// The request for a job of `kind` on the environment a release describes (its repository,
/// branch and commit), asked by `actor`.
pub fn request_on(kind: JobKind, info: ReleaseInfo, options: String, actor: &Actor) -> Request {
    Request {
        kind,
        ref_name: format!("refs/heads/{}", info.branch.clone().unwrap_or_else(|| info.environment.to_string())),
        repo: info.repo,
        environment: info.environment,
        commit: info.commit,
        options,
        pusher: actor.name.clone(),
    }
}

/// Copies the parent's data (`data`: its databases; `mounts`: its mounts' files) into `env`
/// again, from `from` or the default branch's environment, whose own data is never overwritten
/// this way. The job queued, and the parent.
#[allow(clippy::too_many_arguments)]
pub fn sync(
    data: &DataDir,
    queue: &mut dyn JobStore,
    env: &EnvDir,
    name: &str,
    (with_data, with_mounts): (bool, bool),
    from: Option<String>,
    actor: &Actor,
) -> Result<(Job, String), Error> {
    let info = deployed(env, name)?;
    let default = crate::platform::default_branch(info.repo.as_str()).map(|b| crate::core::ids::environment_name(&b));
    if default.as_deref() == Some(name) {
        return Err(Error::Conflict(format!(
            "environment {name} is the default branch's: its data is never overwritten by another environment's"
        )));
    }
    let parent =
        from.or(default).ok_or_else(|| Error::Invalid("no parent environment: name one with --from".into()))?;
    if parent == name {
        return Err(Error::Invalid("an environment cannot be synced from itself".into()));
    }
    let options = crate::runner::sync::Sync { parent: parent.clone(), data: with_data, mounts: with_mounts };
    let options = serde_json::to_string(&options).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((super::jobs::enqueue(data, queue, &request_on(JobKind::Sync, info, options, actor))?, parent))
}

/// Deletes `env`: off the router, its services dropped, its files removed (a job).
pub fn delete(data: &DataDir, queue: &mut dyn JobStore, env: &EnvDir, name: &str, actor: &Actor) -> Result<Job, Error> {
    super::jobs::enqueue(data, queue, &request_on(JobKind::Delete, deployed(env, name)?, "{}".into(), actor))
}

/// Makes environment `given` (its name or its branch) of `repo` active: pushes deploy it
/// again, and its branch's last commit is deployed now. The job queued.
pub fn activate(
    data: &DataDir,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    given: &str,
    actor: &Actor,
) -> Result<Job, Error> {
    let (name, branch) = crate::store::environments::resolve(repo.path(), given).map_err(Error::NotFound)?;
    let project = crate::activity::project_name(repo);
    let branch =
        branch.ok_or_else(|| Error::NotFound(format!("{project} has no branch of environment {name} to deploy")))?;
    let head = git2::Repository::open_bare(repo.path())
        .and_then(|git| git.refname_to_id(&format!("refs/heads/{branch}")))
        .map_err(|e| Error::NotFound(format!("{}: {e}", repo.as_str())))?;
    Environments::set_inactive(repo.path(), name.as_str(), false).map_err(Error::Invalid)?;
    let request = Request {
        kind: JobKind::Push,
        repo: repo.clone(),
        ref_name: format!("refs/heads/{branch}"),
        environment: name,
        commit: CommitId::from_oid(head),
        options: "{}".into(),
        pusher: actor.name.clone(),
    };
    super::jobs::enqueue(data, queue, &request)
}

/// Makes environment `name` of `repo` inactive: pushes to its branch keep the code without
/// deploying it, and what it runs is stopped after a final backup (a job; None when nothing of
/// it was deployed).
pub fn deactivate(
    data: &DataDir,
    queue: &mut dyn JobStore,
    repo: &RepoId,
    name: &EnvName,
    actor: &Actor,
) -> Result<Option<Job>, Error> {
    Environments::set_inactive(repo.path(), name.as_str(), true).map_err(Error::Invalid)?;
    let env = EnvDir::new(data.root(), repo, name);
    let Some(info) = env.current_release().and_then(|r| env.info(&r)) else { return Ok(None) };
    super::jobs::enqueue(data, queue, &request_on(JobKind::Delete, info, r#"{"backup": true}"#.into(), actor)).map(Some)
}

/// Declares environment `environment` of `project` of type `kind` (staging, production,
/// integration); its type.
pub fn create(store: &dyn JobStore, project: &str, environment: &str, kind: &str) -> Result<EnvType, Error> {
    let kind = EnvType::parse(kind)
        .ok_or_else(|| Error::Invalid(format!("--type {kind}: staging, production or integration")))?;
    EnvName::parse(environment).map_err(|e| Error::Invalid(e.to_string()))?;
    let repo = self::project(store, project)?;
    Environments::declare(repo.path(), environment, kind).map_err(Error::Invalid)?;
    Ok(kind)
}

/// Bounds the active integration environments of `project` (`none`: no bound); the bound.
pub fn limit(store: &dyn JobStore, project: &str, limit: &str) -> Result<Option<u32>, Error> {
    let repo = self::project(store, project)?;
    let limit = match limit {
        "none" => None,
        n => Some(n.parse::<u32>().map_err(|_| Error::Invalid(format!("the limit is a number, or none: {n}")))?),
    };
    Environments::set_limit(repo.path(), limit).map_err(Error::Invalid)?;
    Ok(limit)
}

/// An environment's variables as its apps get them, each with where it comes from.
pub struct Variables {
    pub repo: RepoId,
    pub kind: EnvType,
    /// Values shown as `****` unless asked for.
    pub rows: Vec<Layered>,
}

/// The variables of environment `environment` of `project`, layered (project, type,
/// environment); their values only if `values`.
pub fn variables(
    data: &DataDir,
    store: &dyn JobStore,
    project: &str,
    environment: &str,
    values: bool,
) -> Result<Variables, Error> {
    let repo = self::project(store, project)?;
    let declared = Declared::load(data.root(), repo.path())?;
    let mut rows = declared.layered(environment);
    if !values {
        for row in &mut rows {
            row.value = serde_json::Value::String("****".into());
        }
    }
    Ok(Variables { kind: declared.environments.of(environment), rows, repo })
}
