//! Jobs on an environment that are not pushes, each with its log.
//!
//! `env sync`: an environment gets its parent's data again. `env delete`: it is removed.
//! A rollback asked through the API: it switches to a kept release.
//! The databases are emptied and copied anew under the same credentials (the running apps keep
//! theirs); the mounts' files are copied beside the current ones and swapped in. A runner
//! killed halfway leaves the job to the next one, which does it all again.

use serde::{Deserialize, Serialize};

use super::hooks::JobLog;
use super::{Config, Control, Halt, RunnerError};
use crate::queue::Job;
use crate::store::deployed::EnvDir;

/// What `env sync` asks (the job's options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    pub parent: String,
    pub data: bool,
    pub mounts: bool,
}

/// Deletes the job's environment: off the router with its processes, its services dropped, its
/// releases and mounts removed. Each step can be done again: a runner killed halfway leaves
/// the rest to the next.
pub(super) fn delete(config: &Config, job: &Job, log: &mut JobLog) -> Result<(), Halt> {
    let env_dir = EnvDir::new(&config.data_dir, &job.repo, &job.environment);
    let data = config.data();
    crate::platform::deactivate(&data, &env_dir.root);
    log.phase("delete", &format!("Environment {} is off the router; its processes are stopped", job.environment));
    let options: serde_json::Value = serde_json::from_str(job.options.as_deref().unwrap_or("{}")).unwrap_or_default();
    if options.get("backup").and_then(serde_json::Value::as_bool) == Some(true) {
        // A deactivation keeps a final backup: its services' data and its mounts' files.
        let into = data.backup(&job.repo, &job.environment, job.id);
        let mut written = crate::platform::services::backup(&data, &crate::platform::site_key(&env_dir.root), &into)
            .map_err(RunnerError::Platform)?;
        if env_dir.mounts().is_dir() {
            super::slug::pack(&env_dir.mounts(), &into.join("mounts.tar.zst"))?;
            written.push("mounts.tar.zst".into());
        }
        log.phase("delete", &format!("Final backup in {}: {}", into.display(), written.join(", ")));
    }
    let dropped = crate::platform::services::deprovision(&data, &crate::platform::site_key(&env_dir.root))
        .map_err(RunnerError::Platform)?;
    if !dropped.is_empty() {
        log.phase("delete", &format!("Its services are dropped: {}", dropped.join(", ")));
    }
    crate::platform::network::Network::of(&data, &crate::platform::site_key(&env_dir.root)).remove();
    crate::platform::disk::release(&env_dir.root).map_err(RunnerError::Platform)?;
    crate::store::deployed::remove_release(&env_dir.root)?;
    log.phase("delete", &format!("Its releases and mounts are removed ({})", env_dir.root.display()));
    Ok(())
}

/// Copies the parent's data into the job's environment; the release it runs, unchanged.
pub(super) fn sync(config: &Config, job: &Job, log: &mut JobLog, control: &Control) -> Result<String, Halt> {
    let options: Sync = serde_json::from_str(job.options.as_deref().unwrap_or("{}"))
        .map_err(|e| RunnerError::Platform(format!("the sync job's options cannot be read: {e}")))?;
    let env_dir = EnvDir::new(&config.data_dir, &job.repo, &job.environment);
    let parent_name = crate::core::EnvName::parse(&options.parent).map_err(RunnerError::Platform)?;
    let parent = EnvDir::new(&config.data_dir, &job.repo, &parent_name);
    let Some(release) = env_dir.current_release() else {
        return Err(RunnerError::Platform(format!("environment {} is not deployed", job.environment)).into());
    };
    if parent.current_release().is_none() {
        return Err(RunnerError::Platform(format!("the parent environment {parent_name} is not deployed")).into());
    }
    let user = crate::platform::users::app_user(&crate::store::DataDir::project_key(&job.repo))
        .map_err(RunnerError::Platform)?;
    log.phase("sync", &format!("Copying the data of environment {parent_name} into environment {}", job.environment));
    if options.data {
        let copied = crate::platform::services::resync(
            &config.data(),
            &crate::platform::site_key(&env_dir.root),
            &crate::platform::site_key(&parent.root),
        )
        .map_err(RunnerError::Platform)?;
        for name in &copied {
            log.phase("sync", &format!("Service `{name}`: emptied, then copied from {parent_name}"));
        }
        if copied.is_empty() {
            log.phase("sync", "No provisioned database to copy");
        }
    }
    control.check()?;
    if options.mounts {
        super::release::copy_mounts(&config.data(), &parent, &env_dir, user.as_ref(), log)?;
    }
    log.phase(
        "sync",
        &format!("Environment {} has the data of {parent_name}; it still runs release {release}", job.environment),
    );
    Ok(release)
}

/// What a rollback job asks (its options): the release to go back to, else the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTo {
    pub release: Option<String>,
}

/// Switches the job's environment back to a kept release and restarts its apps; the release.
pub(super) fn roll_back(config: &Config, job: &Job, log: &mut JobLog) -> Result<String, Halt> {
    let options: RollbackTo = serde_json::from_str(job.options.as_deref().unwrap_or("{}"))
        .map_err(|e| RunnerError::Platform(format!("the rollback job's options cannot be read: {e}")))?;
    let env_dir = EnvDir::new(&config.data_dir, &job.repo, &job.environment);
    let from = env_dir.current_release().unwrap_or_else(|| "none".into());
    let to = super::rollback(&env_dir, options.release.as_deref())?;
    log.phase(
        "rollback",
        &format!("Environment {}: `current` switched from release {from} to release {to}", job.environment),
    );
    crate::platform::restart_apps(&config.data(), &env_dir.root).map_err(RunnerError::Platform)?;
    Ok(to)
}
