//! What is deployed, on disk: each environment's releases, writable mounts, maintenance, the
//! atomic switch of `current`, pruning; the one reader and writer of it (the runner deploys
//! through it, the platform, the operations and the console read it).
//!
//! ```text
//! DATA/environments/REPO-KEY/ENV/
//!     releases/ID/APP/...      one read-only release per deployed job, one directory per app
//!     releases/ID.json         what the release is: job, commit, slugs, topology, time
//!     releases/.partial-ID/    a release being unpacked; renamed to ID once complete, so a
//!                              runner killed halfway leaves nothing rollback could offer
//!     mounts/APP/SOURCE_PATH   writable directories kept across releases
//!     current -> releases/ID   switched with one rename
//!     maintenance              present while a deploy hook runs
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::core::{CommitId, EnvName, RepoId, Timestamp};
pub use crate::store::ReleaseInfo;

/// Why what is deployed cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("no deployed environment `{name}`")]
    NoEnvironment { name: String },
    #[error("several repositories have an environment `{name}`: name one with --repo")]
    Ambiguous { name: String },
}

/// One environment's directory.
pub struct EnvDir {
    pub root: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { action, path, source }
}

impl EnvDir {
    /// `DATA/environments/NAME-HASH/ENV`, where NAME-HASH tells repositories apart.
    pub fn new(data: &Path, repo: &RepoId, environment: &EnvName) -> EnvDir {
        EnvDir { root: super::DataDir::new(data).environment(repo, environment) }
    }

    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }

    /// Where release `id` is unpacked before it exists.
    pub fn partial_release(&self, id: &str) -> PathBuf {
        self.releases().join(format!(".partial-{id}"))
    }

    /// Removes what a runner killed mid-deploy left: releases still being unpacked, and
    /// release directories without their description (left by versions that unpacked in
    /// place). Returns what was removed.
    pub fn remove_partial(&self) -> Result<Vec<String>, Error> {
        let current = self.current_release();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(self.releases()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let partial = name.starts_with(".partial-")
                || (name.parse::<u64>().is_ok()
                    && Some(&name) != current.as_ref()
                    && !self.releases().join(format!("{name}.json")).exists());
            if partial && entry.path().is_dir() {
                remove_release(&entry.path())?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    pub fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// The mounts directory, created if needed (mount paths below it are created with
    /// [`crate::paths::mkdirs_beneath`]: hooks write in there).
    pub fn mounts_created(&self) -> Result<PathBuf, Error> {
        let dir = self.mounts();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        Ok(dir)
    }

    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn maintenance(&self) -> PathBuf {
        self.root.join("maintenance")
    }

    /// The process group of the hook running for this environment (host, pid, start time), so
    /// a runner taking the environment over after another one died can stop what it left.
    pub fn hook_record(&self) -> PathBuf {
        self.root.join("hook.pid")
    }

    /// The environment this one started from (recorded when it was created with its data).
    pub fn parent(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("parent")).ok().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty())
    }

    pub fn set_parent(&self, parent: &str) -> Result<(), Error> {
        std::fs::write(self.root.join("parent"), format!("{parent}\n"))
            .map_err(io("writing", &self.root.join("parent")))
    }

    /// The release `current` points at.
    pub fn current_release(&self) -> Option<String> {
        std::fs::read_link(self.current()).ok()?.file_name()?.to_str().map(str::to_owned)
    }

    pub fn info(&self, release: &str) -> Option<ReleaseInfo> {
        let text = std::fs::read_to_string(self.releases().join(format!("{release}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write_info(&self, info: &ReleaseInfo) -> Result<(), Error> {
        // Written whole or not at all: its presence is what makes a release complete.
        let path = self.releases().join(format!("{}.json", info.release));
        let tmp = self.releases().join(format!(".{}.json.new", info.release));
        let text = serde_json::to_string_pretty(info).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("writing", &path))
    }

    /// Complete release ids (a directory and its description), oldest first (ids are job ids:
    /// they grow).
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<u64> = std::fs::read_dir(self.releases())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|id| self.releases().join(format!("{id}.json")).is_file())
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|i| i.to_string()).collect()
    }

    /// Points `current` at `release` in one step (a symlink renamed over the old one).
    pub fn switch(&self, release: &str) -> Result<(), Error> {
        let tmp = self.root.join(".current.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(release), &tmp).map_err(io("linking", &tmp))?;
        std::fs::rename(&tmp, self.current()).map_err(io("switching", &self.current()))
    }

    pub fn set_maintenance(&self, on: bool, why: &str) -> Result<(), Error> {
        let path = self.maintenance();
        if on {
            std::fs::write(&path, why).map_err(io("writing", &path))
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
                _ => Ok(()),
            }
        }
    }

    pub fn in_maintenance(&self) -> bool {
        self.maintenance().exists()
    }

    /// Keeps the newest `keep` releases and the current one; removes the others.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>, Error> {
        let current = self.current_release();
        let all = self.list();
        let cut = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for id in &all[..cut] {
            if Some(id) == current.as_ref() {
                continue;
            }
            remove_release(&self.release(id))?;
            let _ = std::fs::remove_file(self.releases().join(format!("{id}.json")));
            removed.push(id.clone());
        }
        Ok(removed)
    }
}

/// An environment as `pushgate-runner envs` shows it (and `--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub environment: String,
    pub release: String,
    pub commit: Option<CommitId>,
    pub repo: Option<RepoId>,
    /// The release `current` points at.
    pub path: String,
    /// `active`, or `maintenance` while a deploy hook runs.
    pub state: &'static str,
    pub deployed_at: Option<Timestamp>,
    /// The complete releases kept, oldest first.
    pub releases: Vec<String>,
    /// Where the environment answers (empty without a router, or once its branch is deleted).
    pub urls: Vec<String>,
    pub primary_url: Option<String>,
    /// `integration`, `staging` or `production` (`env create --type`).
    #[serde(rename = "type")]
    pub kind: crate::store::environments::EnvType,
    /// The environment it started from, when it started with a copy of one's data.
    pub parent: Option<String>,
    /// What to do with one that runs nothing (inactive, declared and never promoted to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Every deployed environment of a data directory.
pub fn environments(data: &Path) -> Vec<Environment> {
    all(data)
        .into_iter()
        .filter_map(|env| {
            let release = env.current_release()?;
            let info = env.info(&release);
            let site = crate::platform::SiteRecord::read(&env.root).filter(|s| s.active);
            let name = env.root.file_name()?.to_str()?.to_owned();
            let kind = info
                .as_ref()
                .and_then(|i| crate::store::environments::Environments::load(i.repo.path()).ok())
                .map(|t| t.of(&name))
                .unwrap_or_default();
            Some(Environment {
                kind,
                parent: env.parent(),
                environment: name,
                commit: info.as_ref().map(|i| i.commit.clone()),
                repo: info.as_ref().map(|i| i.repo.clone()),
                path: env.release(&release).display().to_string(),
                state: if env.in_maintenance() { "maintenance" } else { "active" },
                deployed_at: info.map(|i| i.created_at),
                releases: env.list(),
                urls: site.as_ref().map(|s| s.urls.clone()).unwrap_or_default(),
                primary_url: site.and_then(|s| s.primary_url),
                release,
                hint: None,
            })
        })
        .collect()
}

/// The deployed environment called `name` (of repository `repo`, when several have one).
pub fn find(data: &Path, name: &str, repo: Option<&str>) -> Result<EnvDir, Error> {
    let mut matches: Vec<EnvDir> = all(data)
        .into_iter()
        .filter(|e| e.root.file_name().and_then(|n| n.to_str()) == Some(name))
        .filter(|e| {
            repo.is_none()
                || e.current_release()
                    .and_then(|r| e.info(&r))
                    .map(|i| i.repo.as_str() == repo.unwrap_or_default())
                    .unwrap_or(false)
        })
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::NoEnvironment { name: name.to_owned() }),
        _ => Err(Error::Ambiguous { name: name.to_owned() }),
    }
}

/// Every environment under a data directory.
pub fn all(data: &Path) -> Vec<EnvDir> {
    let mut out = Vec::new();
    for repo in std::fs::read_dir(crate::store::DataDir::new(data).environments()).into_iter().flatten().flatten() {
        for env in std::fs::read_dir(repo.path()).into_iter().flatten().flatten() {
            if env.path().is_dir() {
                out.push(EnvDir { root: env.path() });
            }
        }
    }
    out.sort_by(|a, b| a.root.cmp(&b.root));
    out
}

/// Makes a release read-only (files and directories), without following symlinks.
pub fn make_read_only(dir: &Path) -> Result<(), Error> {
    set_writable(dir, false)
}

/// Removes a (read-only) release. Only its directories are made writable (removing an entry
/// needs no more): its files may be links to a shared tree that other releases use.
pub fn remove_release(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Ok(());
    }
    set_writable(dir, true)?;
    std::fs::remove_dir_all(dir).map_err(io("removing", dir))
}

fn set_writable(dir: &Path, writable: bool) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("listing", &d))? {
            let entry = entry.map_err(io("listing", &d))?;
            let meta = std::fs::symlink_metadata(entry.path()).map_err(io("reading", &entry.path()))?;
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                todo.push(entry.path());
            } else if !writable {
                let mode = meta.permissions().mode();
                let mode = mode & !0o222;
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of", &entry.path()))?;
            }
        }
        dirs.push(d);
    }
    // Directories last when locking (and first when unlocking, done above by the walk order).
    for d in dirs.iter().rev() {
        let mode = if writable { 0o755 } else { 0o555 };
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).map_err(io("setting the mode of", d))?;
    }
    Ok(())
}
