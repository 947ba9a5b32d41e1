//! Jobs and what developers see of them: the list, logs, cancel; the git-shell commands.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use pushgate::core::JobId;
use pushgate::git::GitRefLog;
use pushgate::queue::JobState;
use pushgate::runner;

use crate::cli::ShellCommand;
use crate::{location, ops, store, Result};

/// Whether this user may push to the repository (git-shell users see only those projects).
fn can_push(repo: &pushgate::core::RepoId) -> bool {
    let Ok(path) = std::ffi::CString::new(repo.as_str()) else { return false };
    // SAFETY: access reads a NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

pub fn shell(data: &Path, command: Option<ShellCommand>, out: &mut dyn Write) -> Result<()> {
    let queue = store()?;
    let project = |repo: &pushgate::core::RepoId| pushgate::activity::project_name(repo);
    match command {
        None => {
            writeln!(
                out,
                "pushgate over ssh: pushgate activities [--limit N] | pushgate envs | pushgate logs ID [--follow]"
            )?;
        }
        Some(ShellCommand::Activities { limit }) => {
            let jobs: Vec<_> = queue
                .activities(None, None, limit.saturating_mul(20).max(200))?
                .into_iter()
                .filter(|j| can_push(&j.repo))
                .take(limit)
                .collect();
            if jobs.is_empty() {
                writeln!(out, "No activity in the projects you can push to.")?;
            }
            for j in jobs {
                writeln!(
                    out,
                    "#{:<6} {:<12} {:<16} {:<9} {:<11} {} {:<10} {}",
                    j.id.to_string(),
                    project(&j.repo),
                    j.environment.to_string(),
                    j.kind.as_str(),
                    j.state.result().unwrap_or(if j.state == JobState::Running { "running" } else { "pending" }),
                    j.commit.short(),
                    j.pusher.as_deref().unwrap_or("-"),
                    j.created_at
                )?;
            }
        }
        Some(ShellCommand::Envs) => {
            let all = ops::environment::list(&pushgate::store::DataDir::new(data), queue.as_ref())?;
            let envs: Vec<_> = all.into_iter().filter(|e| e.repo.as_ref().is_some_and(can_push)).collect();
            if envs.is_empty() {
                writeln!(out, "No environment deployed in the projects you can push to.")?;
            }
            for e in envs {
                let name = e.repo.as_ref().map(project).unwrap_or_default();
                if e.release.is_empty() {
                    writeln!(out, "{name:<12} {:<16} {}", e.environment, e.state)?;
                    continue;
                }
                writeln!(
                    out,
                    "{:<12} {:<16} release {:<4} {} {:<11} {}",
                    e.repo.as_ref().map(project).unwrap_or_default(),
                    e.environment,
                    e.release,
                    e.commit.as_ref().map_or("?", |c| c.short()),
                    e.state,
                    e.primary_url.as_deref().unwrap_or("-")
                )?;
            }
        }
        Some(ShellCommand::Logs { id, follow }) => {
            match queue.job(id)? {
                Some(j) if can_push(&j.repo) => {}
                _ => return Err(format!("there is no activity #{id} in the projects you can push to").into()),
            }
            drop(queue);
            return logs(data, id, follow, out);
        }
    }
    Ok(())
}

/// Prints a job's log as it grows, as a push does; Ok when the job succeeded, else how it ended.
pub fn follow_to_its_end(data: &Path, id: JobId, out: &mut dyn Write) -> Result<()> {
    logs(data, id, true, out)?;
    match store()?.job(id)? {
        Some(job) if job.state == JobState::Succeeded => Ok(()),
        Some(job) => Err(format!("job #{id} ended {}", job.state.as_str()).into()),
        None => Err(format!("job #{id} is gone").into()),
    }
}

pub fn list(json: bool, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    // Settle pushes whose post-receive did not run, so the list is the truth.
    if let Err(e) = queue.reconcile(&GitRefLog::default()) {
        eprintln!("warning: {e}");
    }
    let jobs = queue.jobs()?;
    if !json {
        return Ok(pushgate::report::jobs_table(out, &jobs)?);
    }
    let views: Vec<_> = jobs.iter().map(|job| pushgate::queue::JobView { job, runner: job.runners() }).collect();
    serde_json::to_writer_pretty(&mut *out, &views)?;
    Ok(writeln!(out)?)
}

pub fn logs(data: &Path, job: JobId, follow: bool, out: &mut dyn Write) -> Result<()> {
    let path = runner::Config::new(data.to_owned()).log_path(job);
    let queue = store()?;
    let found = queue.job(job)?.ok_or_else(|| format!("there is no job #{job} (pushgate-runner jobs lists them)"))?;
    let at = pushgate::follow::LogAt::beside(location().is_embedded(), &path);
    if follow {
        pushgate::follow::follow(queue.as_ref(), at, &found, Duration::MAX, None, out)?;
        return Ok(());
    }
    let text = at.read_from(queue.as_ref(), job, 0).map_err(|e| format!("reading the log of job #{job}: {e}"))?;
    if text.is_empty() {
        // Never started: nothing to show yet, and that is not an error.
        writeln!(
            out,
            "Job #{job} is {} and has no log yet{}",
            found.state.as_str(),
            if found.state == JobState::Pending { "; --follow waits for a runner to start it" } else { "" }
        )?;
    } else {
        out.write_all(&pushgate::follow::printable(&text))?;
    }
    Ok(())
}

pub fn cancel(data: &Path, job: JobId, out: &mut dyn Write) -> Result<()> {
    let data = pushgate::store::DataDir::new(data);
    let done = ops::jobs::cancel(&data, store()?.as_mut(), job, &crate::actor(ops::Via::CommandLine))?;
    writeln!(out, "Job #{job} cancelled (it was {}).", done.was.as_str())?;
    Ok(())
}
