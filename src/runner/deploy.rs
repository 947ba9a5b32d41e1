//! Environments on disk: releases, writable mounts, maintenance, the atomic switch of
//! `current`, rollback and pruning.
//!
//! ```text
//! DATA/environments/REPO-KEY/ENV/
//!     releases/ID/APP/...      one read-only release per deployed job, one directory per app
//!     releases/ID.json         what the release is: job, commit, slugs, topology, time
//!     mounts/APP/SOURCE_PATH   writable directories kept across releases
//!     current -> releases/ID   switched with one rename
//!     maintenance              present while a deploy hook runs
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunnerError;

/// What a release is, next to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub release: String,
    pub job: i64,
    pub repo: String,
    pub environment: String,
    pub commit: String,
    pub slugs: Vec<String>,
    pub topology: serde_json::Value,
    pub created_at: String,
}

/// One environment's directory.
pub struct EnvDir {
    pub root: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunnerError {
    let path = path.to_owned();
    move |source| RunnerError::Io { action, path, source }
}

impl EnvDir {
    /// `DATA/environments/NAME-HASH/ENV`, where NAME-HASH tells repositories apart.
    pub fn new(data: &Path, repo: &str, environment: &str) -> EnvDir {
        let name = Path::new(repo).file_name().and_then(|n| n.to_str()).unwrap_or("repo").trim_end_matches(".git");
        let hash = git2::Oid::hash_object(git2::ObjectType::Blob, repo.as_bytes())
            .map(|o| o.to_string()[..8].to_owned())
            .unwrap_or_default();
        EnvDir { root: data.join("environments").join(format!("{name}-{hash}")).join(environment) }
    }

    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }

    pub fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
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

    /// The release `current` points at.
    pub fn current_release(&self) -> Option<String> {
        std::fs::read_link(self.current()).ok()?.file_name()?.to_str().map(str::to_owned)
    }

    pub fn info(&self, release: &str) -> Option<ReleaseInfo> {
        let text = std::fs::read_to_string(self.releases().join(format!("{release}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write_info(&self, info: &ReleaseInfo) -> Result<(), RunnerError> {
        let path = self.releases().join(format!("{}.json", info.release));
        let text = serde_json::to_string_pretty(info).unwrap_or_default();
        std::fs::write(&path, text).map_err(io("writing", &path))
    }

    /// Release ids, oldest first (ids are job ids: they grow).
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<u64> = std::fs::read_dir(self.releases())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|i| i.to_string()).collect()
    }

    /// Points `current` at `release` in one step (a symlink renamed over the old one).
    pub fn switch(&self, release: &str) -> Result<(), RunnerError> {
        let tmp = self.root.join(".current.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(release), &tmp).map_err(io("linking", &tmp))?;
        std::fs::rename(&tmp, self.current()).map_err(io("switching", &self.current()))
    }

    pub fn set_maintenance(&self, on: bool, why: &str) -> Result<(), RunnerError> {
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
    pub fn prune(&self, keep: usize) -> Result<Vec<String>, RunnerError> {
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

/// Every environment under a data directory.
pub fn all(data: &Path) -> Vec<EnvDir> {
    let mut out = Vec::new();
    for repo in std::fs::read_dir(data.join("environments")).into_iter().flatten().flatten() {
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
pub fn make_read_only(dir: &Path) -> Result<(), RunnerError> {
    set_writable(dir, false)
}

/// Removes a (read-only) release.
pub fn remove_release(dir: &Path) -> Result<(), RunnerError> {
    if !dir.exists() {
        return Ok(());
    }
    set_writable(dir, true)?;
    std::fs::remove_dir_all(dir).map_err(io("removing", dir))
}

fn set_writable(dir: &Path, writable: bool) -> Result<(), RunnerError> {
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
            } else {
                let mode = meta.permissions().mode();
                let mode = if writable { mode | 0o200 } else { mode & !0o222 };
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
