//! Each project's exported tree, kept between builds (`DATA/exported/KEY/tree`): the commit
//! last built, as files of the runner's. The next build brings it to its own commit by writing
//! only what changed, and builds in layers over it ([`crate::platform::layers`]) instead of in
//! a fresh copy of every file.
//!
//! ```text
//! DATA/exported/          the runner's only (0700): no project's user reaches a tree
//! DATA/exported/KEY.lock  held by the build using the tree (one at a time; others copy)
//! DATA/exported/KEY/tree  the export; its files are shared by the unpacked slugs built on it,
//!                         so a changed file is replaced, never written in place
//! DATA/exported/KEY/state the tree's id and the machine's boot, written once the tree is
//!                         complete and removed before it changes: a runner killed halfway
//!                         leaves no state, a machine that went down before the tree reached
//!                         the disk has booted since, and the next build exports it again
//!                         (no file is synced one by one)
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::RunnerError;

/// A project's exported tree, held by this build until dropped.
pub(super) struct Exported {
    dir: PathBuf,
    _lock: File,
}

/// What bringing the tree to the build's commit took.
pub(super) enum Brought {
    /// It was that commit's tree already.
    Same,
    /// These many paths changed since the tree it was.
    Updated(usize),
    /// Exported whole (no tree yet, or not a usable one).
    Exported,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunnerError {
    let path = path.to_owned();
    move |source| RunnerError::Io { action, path, source }
}

/// Makes a directory entry change durable (the state's removal before the tree changes).
fn sync_dir(dir: &Path) -> Result<(), RunnerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))
}

impl Exported {
    /// Takes the project's exported tree and brings it to `tree`; None when another build holds it.
    pub fn take(
        data: &crate::store::DataDir,
        project_key: &str,
        repo: &Repository,
        tree: Oid,
    ) -> Result<Option<(Exported, Brought)>, RunnerError> {
        use std::os::unix::fs::DirBuilderExt;
        let root = data.exported();
        match std::fs::DirBuilder::new().mode(0o700).create(&root) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io("creating", &root)(e)),
            _ => {}
        }
        let lock_path = root.join(format!("{project_key}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &lock_path)(e)),
        }
        let exported = Exported { dir: root.join(project_key), _lock: lock };
        let brought = exported.bring(repo, tree)?;
        Ok(Some((exported, brought)))
    }

    /// The exported tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    fn bring(&self, repo: &Repository, tree: Oid) -> Result<Brought, RunnerError> {
        let (state, files, scratch) = (self.dir.join("state"), self.tree(), self.dir.join("scratch"));
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let recorded = std::fs::read_to_string(&state).unwrap_or_default();
        let held = match recorded.split_once(' ') {
            Some((id, at)) if at.trim() == boot.trim() => Oid::from_str(id).ok(),
            _ => None,
        };
        if held == Some(tree) && files.is_dir() {
            return Ok(Brought::Same);
        }
        if !recorded.is_empty() {
            std::fs::remove_file(&state).map_err(io("removing", &state))?;
            sync_dir(&self.dir)?;
        }
        let brought = match held.filter(|old| files.is_dir() && repo.find_tree(*old).is_ok()) {
            Some(old) => {
                crate::store::deployed::remove_release(&scratch)?;
                std::fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
                Brought::Updated(super::export::update_tree(repo, old, tree, &files, &scratch)?)
            }
            None => {
                crate::store::deployed::remove_release(&files)?;
                std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
                super::export::export_tree(repo, tree, &files)?;
                Brought::Exported
            }
        };
        let partial = self.dir.join("state.partial");
        std::fs::write(&partial, format!("{tree} {}\n", boot.trim())).map_err(io("writing", &partial))?;
        std::fs::rename(&partial, &state).map_err(io("writing", &state))?;
        Ok(brought)
    }
}
