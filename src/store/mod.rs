//! The store: what pushgate keeps on the host, and where. This module owns the data directory:
//! every path in it is named here ([`DataDir`]) and nowhere else; the wake-up channel between
//! the hooks and the runners ([`wake`]) lives here because both sides use it.
//!
//! ```text
//! DATA/queue.sqlite3          the job queue (src/queue), with its integrity stamp beside it
//! DATA/logs/JOB.log           one log per job, what developers see
//! DATA/builds/JOB/            a job's copy of its commit while it builds (or, in layers, where
//!                             its overlay is mounted; JOB.layers/ holds the build's own layer)
//! DATA/exported/KEY/          each project's export, kept between builds (src/runner/exported.rs)
//! DATA/slugs/KEY.tar.zst      built apps, reused for an unchanged tree
//! DATA/unpacked/KEY/          each slug unpacked once, read-only; releases hard-link it
//! DATA/environments/REPO-KEY/ENV/   releases (with what each is: ReleaseInfo), mounts,
//!                             `current`: what is deployed (store/deployed.rs reads and writes them)
//! DATA/keys/REPO-KEY         which repository a project key is (the first to run a job)
//! DATA/wakeup                 the FIFO idle runners wait on
//! DATA/backups/REPO-KEY/ENV-JOB/   the final backup of a deactivated environment
//! DATA/services.json, DATA/variables.json   the admin's declarations (also REPO/pushgate/)
//! ```

pub mod deployed;
pub mod environments;
pub mod wake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::{CommitId, EnvName, JobId, RepoId, Timestamp};

/// How long a hook or a command waits for the queue's lock before giving up (hooks can be
/// told otherwise with `git config pushgate.queueTimeoutMs`).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// A data directory and the paths in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`, made absolute: paths in it are shown to people and
    /// written into links, so they must not depend on the working directory.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        let root = root.into();
        DataDir { root: std::path::absolute(&root).unwrap_or(root) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite queue's file name, and its path.
    pub const QUEUE_FILE: &'static str = "queue.sqlite3";

    pub fn queue_file(&self) -> PathBuf {
        self.root.join(Self::QUEUE_FILE)
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where a job's log is.
    pub fn log(&self, job: JobId) -> PathBuf {
        self.logs().join(format!("{job}.log"))
    }

    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// Where a job exports and builds its commit; removed whatever the job's outcome.
    pub fn build(&self, job: JobId) -> PathBuf {
        self.builds().join(job.to_string())
    }

    /// The layers of a job's build when it builds over its project's exported tree.
    pub fn build_layers(&self, job: JobId) -> PathBuf {
        self.builds().join(format!("{job}.layers"))
    }

    /// Each project's exported tree, kept between builds: `exported/KEY/` (src/runner/exported.rs).
    pub fn exported(&self) -> PathBuf {
        self.root.join("exported")
    }

    pub fn slugs(&self) -> PathBuf {
        self.root.join("slugs")
    }

    pub fn slug(&self, key: &str) -> PathBuf {
        self.slugs().join(format!("{key}.tar.zst"))
    }

    /// Slugs unpacked once, read-only, shared by the releases of every environment through
    /// hard links: `unpacked/KEY/`.
    pub fn unpacked(&self) -> PathBuf {
        self.root.join("unpacked")
    }

    pub fn environments(&self) -> PathBuf {
        self.root.join("environments")
    }

    /// How environments are reached (`src/platform`).
    pub fn platform_file(&self) -> PathBuf {
        self.root.join("platform.json")
    }

    /// The runtimes the admin declares.
    pub fn runtimes_file(&self) -> PathBuf {
        self.root.join("runtimes.json")
    }

    /// The service backends the admin declared (admin credentials: mode 0600).
    pub fn backends_file(&self) -> PathBuf {
        self.root.join("backends.json")
    }

    /// The version each backend runs, for the hooks (no credentials).
    pub fn backend_versions_file(&self) -> PathBuf {
        self.root.join("backends.public.json")
    }

    /// What each environment's services were given (`KEY.json`, mode 0600).
    pub fn services_dir(&self) -> PathBuf {
        self.root.join("services")
    }

    /// The router's and the apps' files (`src/platform` names what is inside).
    pub fn router(&self) -> PathBuf {
        self.root.join("router")
    }

    /// The FIFO idle runners wait on.
    pub fn wakeup(&self) -> PathBuf {
        self.root.join("wakeup")
    }

    /// An environment's directory: `environments/NAME-HASH/ENV`, where NAME-HASH tells
    /// repositories apart (`shop-aaf68fee` for `/srv/git/shop.git`).
    pub fn environment(&self, repo: &RepoId, environment: &EnvName) -> PathBuf {
        self.environments().join(Self::project_key(repo)).join(environment.as_str())
    }

    /// Where the final backup of an environment deactivated by job `job` is kept.
    pub fn backup(&self, repo: &RepoId, environment: &EnvName, job: JobId) -> PathBuf {
        self.root.join("backups").join(Self::project_key(repo)).join(format!("{environment}-{job}"))
    }

    /// The environments of a repository that run a release (their names, sorted).
    pub fn deployed_environments(&self, repo: &RepoId) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.environments().join(Self::project_key(repo)))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("current").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// `NAME-HASH`: a project's name on this host (its environments' directory, its apps' user).
    /// Where a runner on another machine keeps its copy of a repository it fetches.
    pub fn mirror(&self, repo: &RepoId) -> PathBuf {
        self.root.join("mirrors").join(format!("{}.git", Self::project_key(repo)))
    }

    /// The repository as this machine reads it: by its path on the git server's machine, else
    /// the mirror a runner here fetched.
    pub fn repository(&self, repo: &RepoId) -> PathBuf {
        if repo.path().join("objects").is_dir() {
            repo.path().to_owned()
        } else {
            self.mirror(repo)
        }
    }

    pub fn project_key(repo: &RepoId) -> String {
        let name = repo.path().file_name().and_then(|n| n.to_str()).unwrap_or("repo").trim_end_matches(".git");
        let hash = git2::Oid::hash_object(git2::ObjectType::Blob, repo.as_str().as_bytes())
            .map(|o| o.to_string()[..8].to_owned())
            .unwrap_or_default();
        format!("{name}-{hash}")
    }

    /// The SQLite queue's files: the database, its WAL, shared memory, journal and integrity
    /// stamp.
    fn queue_files() -> [String; 5] {
        let queue = Self::QUEUE_FILE;
        [
            queue.to_owned(),
            format!("{queue}-wal"),
            format!("{queue}-shm"),
            format!("{queue}-journal"),
            format!("{queue}.checked"),
        ]
    }

    /// Takes from the host's other users what they have no business reading: the data
    /// directory cannot be listed (it keeps `o+x`: a project's user reaches its own releases
    /// and mounts by name, the router's workers the static files), and the queue (webhook
    /// URLs, tokens' hashes), the admin's declarations (`variables.json`, `services.json`),
    /// final backups (SQL dumps, mounts), provisioned credentials, slugs, key claims and job
    /// logs lose every right of `other`. Owner and group keep theirs: the hooks (the data
    /// directory's owner) still write the queue and show a push's log.
    pub fn keep_private(&self) -> std::io::Result<()> {
        let without = |path: &Path, bits: u32| -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            match std::fs::symlink_metadata(path) {
                Ok(meta) if !meta.is_symlink() && meta.permissions().mode() & bits != 0 => std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777 & !bits),
                ),
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        };
        without(&self.root, 0o004)?;
        let others = ["variables.json", "services.json", "backups", "services", "slugs", "keys", "logs"];
        for name in Self::queue_files().into_iter().chain(others.map(str::to_owned)) {
            without(&self.root.join(name), 0o007)?;
        }
        Ok(())
    }

    /// Gives what a root process made in the data directory, of what the hooks and a runner
    /// of the data directory's owner use, to that owner: the queue (its WAL, shared memory,
    /// journal and integrity stamp), the logs' directory, the wake-up FIFO, the backends'
    /// files. Following the README's order (a root runner started, a backend declared, then the
    /// first push as `git`), root made them first, and every push was refused ("attempt to
    /// write a readonly database"). Nothing where the data directory is root's, or the caller
    /// is not root. What root reads to decide what to run (`router/`) stays root's.
    pub fn give_to_owner(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(());
        }
        let top = std::fs::metadata(&self.root)?;
        if top.uid() == 0 {
            return Ok(());
        }
        let others = ["logs", "wakeup", "backends.json", "backends.public.json"];
        for name in Self::queue_files().into_iter().chain(others.map(str::to_owned)) {
            let path = self.root.join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.uid() == 0 && !meta.is_symlink() => {
                    std::os::unix::fs::lchown(&path, Some(top.uid()), Some(top.gid()))?
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Claims the project key of `repo` for it (`DATA/keys/KEY` names the repository that has
    /// it): a key is a project's directories, user, services and URLs, so a second repository
    /// with the same name and a path whose 32-bit hash collides with the first's (a search of
    /// minutes on a large machine; install.sh refuses a second project of one name, hooks
    /// installed by hand do not) is refused, naming the owner, instead of sharing them. The
    /// first repository to run a job with a key keeps it.
    pub fn claim_key(&self, repo: &RepoId) -> Result<(), String> {
        let key = Self::project_key(repo);
        let dir = self.root.join("keys");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = dir.join(&key);
        let owner = || std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()));
        if !file.exists() {
            // Written whole, then linked into place: a reader never sees half a name, and of
            // two runners claiming at once, one link wins.
            // A name of this claim's own: a runner's workers claim at once, in one process.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!(".{key}.{}.{n}", std::process::id()));
            std::fs::write(&tmp, repo.as_str()).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let linked = std::fs::hard_link(&tmp, &file);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("{}: {e}", file.display())),
            }
        }
        let owner = owner()?;
        if owner == repo.as_str() {
            return Ok(());
        }
        Err(format!(
            "the project key {key} is the repository {owner}'s: this repository ({repo}) has the same name and a \
             path whose hash is the same, so it would share that project's environments, user, services and URLs. \
             Refused: install it under another name (install.sh refuses a second project of one name)"
        ))
    }

    /// What an environment runs: the description of the release `current` points at (None when
    /// nothing was deployed). This is the one record of what is deployed: the switch of
    /// `current` is one rename, and a release exists only with its description. Err says why it
    /// cannot be read; the data-loss guard then refuses rather than compare with less.
    pub fn deployed(&self, repo: &RepoId, environment: &EnvName) -> Result<Option<ReleaseInfo>, Unreadable> {
        let env = self.environment(repo, environment);
        let current = env.join("current");
        let release = match std::fs::read_link(&current) {
            Ok(target) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Unreadable::Io { path: current, source }),
        };
        let id = release.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let path = env.join("releases").join(format!("{id}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(Unreadable::Io { path, source }),
        };
        serde_json::from_str(&text).map(Some).map_err(|source| Unreadable::Json { path, source })
    }
}

/// Why a record of the store cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
}

/// What a release is, beside it (`releases/ID.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReleaseInfo {
    pub release: String,
    pub job: JobId,
    pub repo: RepoId,
    pub environment: EnvName,
    pub commit: CommitId,
    pub slugs: Vec<String>,
    pub topology: serde_json::Value,
    pub created_at: Timestamp,
    /// The branch deployed (releases made before routing existed have none).
    #[serde(default)]
    pub branch: Option<String>,
    /// The configuration deployed: apps (web, runtime) and routes.
    #[serde(default)]
    pub plan: Option<crate::core::plan::Plan>,
}

/// The admin's declarations in a directory (the data directory for every repository, or a
/// bare repository's `pushgate/` for that project).
pub fn services_file(dir: &Path) -> PathBuf {
    dir.join("services.json")
}

pub fn variables_file(dir: &Path) -> PathBuf {
    dir.join("variables.json")
}

/// The hooks' sandbox policy (`platform::sandbox::Policy`).
pub fn sandbox_file(dir: &Path) -> PathBuf {
    dir.join("sandbox.json")
}
