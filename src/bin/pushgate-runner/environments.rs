//! Commands on environments: each asks `pushgate::ops` and prints what was done; those that
//! queue a job follow its log to its end, as a push does.

use std::io::Write;
use std::path::Path;

use pushgate::ops::{self, environment as operation};
use pushgate::store::deployed;
use pushgate::store::DataDir;

use crate::cli::EnvCommand;
use crate::jobs::follow_to_its_end;
use crate::{store, Result};

fn actor() -> ops::Actor {
    crate::actor(ops::Via::CommandLine)
}

/// `env ...`
pub fn env(data: &Path, command: EnvCommand, out: &mut dyn Write) -> Result<()> {
    let dir = DataDir::new(data);
    match command {
        EnvCommand::Sync { environment, services, mounts, from, repo } => {
            let env = deployed::find(data, &environment, repo.as_deref())?;
            let parts = (services || !mounts, mounts || !services);
            let (job, parent) = operation::sync(&dir, store()?.as_mut(), &env, &environment, parts, from, &actor())?;
            writeln!(
                out,
                "Job #{} queued: sync of environment {environment} from {parent}. Follow it with: pushgate-runner \
                 logs {} --follow",
                job.id, job.id
            )?;
        }
        EnvCommand::Delete { environment, repo, yes } => {
            let env = deployed::find(data, &environment, repo.as_deref())?;
            if !yes {
                return Err(format!(
                    "this deletes environment `{environment}` ({}): its services' data, its releases and its \
                     mounts' files; pass --yes to do it",
                    env.root.display()
                )
                .into());
            }
            let job = operation::delete(&dir, store()?.as_mut(), &env, &environment, &actor())?;
            writeln!(
                out,
                "Job #{} queued: deletion of environment {environment} (off the router, its services dropped, its \
                 files removed). Follow it with: pushgate-runner logs {} --follow",
                job.id, job.id
            )?;
        }
        EnvCommand::Create { project, environment, kind } => {
            let kind = operation::create(store()?.as_ref(), &project, &environment, &kind)?;
            let how = if kind.pushed() {
                "deployed by pushing its branch".to_owned()
            } else {
                format!(
                    "deployed by promotion only (pushgate-runner promote {project} FROM {environment}); pushes to \
                     its branch are refused"
                )
            };
            writeln!(out, "Environment {environment} of {project} is a {} environment: {how}.", kind.as_str())?;
        }
        EnvCommand::Redeploy { project, environment } => {
            let mut queue = store()?;
            let repo = operation::project(queue.as_ref(), &project)?;
            let name = operation::named(&repo, &environment)?;
            let done = operation::redeploy(&dir, queue.as_mut(), &repo, &name, &actor())?;
            drop(queue);
            match &done.retried {
                Some((failed, commit)) => writeln!(
                    out,
                    "Job #{}: environment {name} was never deployed; its last push (job #{failed}, commit {}) is \
                     tried again.",
                    done.job.id,
                    commit.short()
                )?,
                None => writeln!(
                    out,
                    "Job #{}: redeploy of environment {name} (its slug, its hooks run again).",
                    done.job.id
                )?,
            }
            follow_to_its_end(data, done.job.id, out)?;
        }
        EnvCommand::List { json } => list(data, json, out)?,
        EnvCommand::Activate { project, environment } => {
            let mut queue = store()?;
            let repo = operation::project(queue.as_ref(), &project)?;
            let job = operation::activate(&dir, queue.as_mut(), &repo, &environment, &actor())?;
            drop(queue);
            writeln!(
                out,
                "Environment {} is active. Job #{}: deploying its branch ({}).",
                job.environment,
                job.id,
                job.commit.short()
            )?;
            follow_to_its_end(data, job.id, out)?;
        }
        EnvCommand::Deactivate { project, environment, yes } => {
            let mut queue = store()?;
            let repo = operation::project(queue.as_ref(), &project)?;
            let name = operation::named(&repo, &environment)?;
            if !yes {
                return Err(format!(
                    "this deactivates environment `{name}` of {project}: off the router, its services' databases \
                     dropped and its files removed, after a final backup into {}/backups/; pushes to its branch then \
                     keep the code without deploying it. Pass --yes to do it",
                    data.display()
                )
                .into());
            }
            let Some(job) = operation::deactivate(&dir, queue.as_mut(), &repo, &name, &actor())? else {
                writeln!(out, "Environment {name} is inactive (nothing of it was deployed).")?;
                return Ok(());
            };
            drop(queue);
            writeln!(out, "Environment {name} is inactive. Job #{}: stopping it, after a final backup.", job.id)?;
            follow_to_its_end(data, job.id, out)?;
        }
        EnvCommand::Limit { project, limit } => match operation::limit(store()?.as_ref(), &project, &limit)? {
            Some(n) => writeln!(out, "{project} may have {n} active integration environments.")?,
            None => writeln!(out, "{project} may have any number of active integration environments.")?,
        },
    }
    Ok(())
}

/// `envs`, `env list`: each deployed environment.
pub fn list(data: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let rows = operation::list(&DataDir::new(data), store()?.as_ref())?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else {
        pushgate::report::environments(out, &rows)?;
    }
    Ok(())
}

/// `promote`: queued, then followed unless asked not to.
pub fn promote(data: &Path, promotion: ops::promote::Promotion<'_>, follow: bool, out: &mut dyn Write) -> Result<()> {
    let (from, to) = (promotion.from.to_owned(), promotion.to.to_owned());
    let job = ops::promote::promote(&DataDir::new(data), store()?.as_mut(), promotion, &actor())?;
    writeln!(out, "Job #{}: promotion of {from} (commit {}) to {to}.", job.id, job.commit.short())?;
    if !follow {
        return Ok(());
    }
    follow_to_its_end(data, job.id, out)
}

/// `rollback`: a job in the environment's slot, done at once here when nothing of it runs.
pub fn rollback(
    data: &Path,
    environment: &str,
    to: Option<&str>,
    repo: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let env = deployed::find(data, environment, repo)?;
    let mut config = pushgate::runner::Config::new(data.to_owned());
    config.queue = crate::location().clone();
    let mut queue = store()?;
    let done =
        operation::rollback(&DataDir::new(data), Some(&config), queue.as_mut(), &env, environment, to, &actor())?;
    drop(queue);
    if !done.at_once {
        writeln!(
            out,
            "Job #{}: rollback of environment {environment} to release {}, once the job of {environment} that runs \
             now has ended.",
            done.job.id, done.target
        )?;
    }
    follow_to_its_end(data, done.job.id, out)
}

/// `variables`: an environment's variables, layered, their values masked unless asked.
pub fn variables(
    data: &Path,
    project: &str,
    environment: &str,
    values: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let found = operation::variables(&DataDir::new(data), store()?.as_ref(), project, environment, values)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&found.rows)?)?;
        return Ok(());
    }
    writeln!(out, "Variables of {project}'s {} environment {environment}:", found.kind.as_str())?;
    if found.rows.is_empty() {
        writeln!(out, "  none (variables.json in the data directory or {}/pushgate/)", found.repo.as_str())?;
    }
    for row in found.rows {
        let value = match &row.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let how = if row.overrides.is_empty() {
            format!("from {}", row.from)
        } else {
            format!("from {}, overriding {}", row.from, row.overrides.join(" and "))
        };
        writeln!(out, "  {} = {value}  ({how})", row.name)?;
    }
    Ok(())
}
