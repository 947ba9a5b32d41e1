//! Where a job's commit is read from. A runner on the git server's machine opens the bare
//! repository by its path. A runner elsewhere keeps a mirror of it in its data directory
//! (`mirrors/NAME-HASH.git`) and fetches into it over the URL the admin recorded
//! (`git config pushgate.url`, carried by the job's plan; later jobs use the mirror's own
//! record of it): only what the mirror lacks crosses the network, as build agents do. The
//! commit is then looked up by its id in the mirror's object store, which checked every
//! object's hash when it indexed the fetched pack.

use std::process::Command;

use git2::Repository;

use super::hooks::JobLog;
use super::{Config, RunnerError};
use crate::queue::Job;

/// The repository holding the job's commit: the server's, or this runner's mirror, fetched
/// from `url` when it lacks the commit.
pub(super) fn repository(
    config: &Config,
    job: &Job,
    url: Option<&str>,
    log: &mut JobLog,
) -> Result<Repository, RunnerError> {
    if let Ok(repo) = Repository::open_bare(job.repo.path()) {
        return Ok(repo);
    }
    let mirror = config.data().mirror(&job.repo);
    let has_commit =
        |m: &std::path::Path| Repository::open_bare(m).ok().is_some_and(|r| r.find_commit(job.commit.oid()).is_ok());
    if has_commit(&mirror) {
        log.phase("build", &format!("Commit {} is in this runner's mirror {}", job.commit.short(), mirror.display()));
        return Repository::open_bare(&mirror).map_err(RunnerError::Git);
    }
    let recorded = git(&mirror, &["config", "--get", "remote.origin.url"]).ok().map(|u| u.trim().to_owned());
    let Some(url) = url.map(str::to_owned).or(recorded).filter(|u| !u.is_empty()) else {
        return Err(RunnerError::Platform(format!(
            "the repository {} cannot be read here, and it has no URL to fetch it from: set `git config pushgate.url \
             URL` in it on the git server (ssh, http(s) or git://), then push again",
            job.repo
        )));
    };
    if !mirror.join("objects").is_dir() {
        std::fs::create_dir_all(&mirror).map_err(|source| RunnerError::Io {
            action: "creating",
            path: mirror.clone(),
            source,
        })?;
        git(&mirror, &["init", "--quiet", "--bare"]).map_err(RunnerError::Platform)?;
        git(&mirror, &["remote", "add", "origin", &url]).map_err(RunnerError::Platform)?;
    } else {
        git(&mirror, &["remote", "set-url", "origin", &url]).map_err(RunnerError::Platform)?;
    }
    let started = std::time::Instant::now();
    git(&mirror, &["fetch", "--quiet", "--prune", "--no-tags", "origin", "+refs/heads/*:refs/heads/*"])
        .map_err(|e| RunnerError::Platform(format!("fetching {} from {}: {e}", job.repo, shown(&url))))?;
    // The server's default branch, for environments that start from its data.
    if let Ok(head) = git(&mirror, &["ls-remote", "--symref", "origin", "HEAD"]) {
        if let Some(target) = head.lines().find_map(|l| l.strip_prefix("ref: ")?.split('\t').next()) {
            let _ = git(&mirror, &["symbolic-ref", "HEAD", target]);
        }
    }
    log.phase(
        "build",
        &format!(
            "Fetched {} from {} into this runner's mirror in {:.1} s",
            job.repo,
            shown(&url),
            started.elapsed().as_secs_f64()
        ),
    );
    if !has_commit(&mirror) {
        return Err(RunnerError::Platform(format!(
            "commit {} is not on any branch of {} (fetched from {}): was the branch force-pushed since?",
            job.commit,
            job.repo,
            shown(&url)
        )));
    }
    Repository::open_bare(&mirror).map_err(RunnerError::Git)
}

/// A URL without its password.
fn shown(url: &str) -> String {
    crate::queue::postgres::masked(url)
}

/// Runs git on the mirror; its output, or why it failed (without the URL's password).
fn git(dir: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(said)
    }
}
