//! Git plumbing for the hooks: ref updates from stdin, the repository as git hands it to a hook,
//! and a commit's tree as a [`Source`].
//!
//! Inside `pre-receive` the pushed objects sit in a quarantine directory that git announces
//! through `GIT_OBJECT_DIRECTORY` / `GIT_ALTERNATE_OBJECT_DIRECTORIES`; only
//! `Repository::open_from_env()` sees them, so hooks must open the repository that way.

use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};

pub use crate::core::RefUpdate;
use crate::core::{CommitId, RepoId};
use crate::source::{Entry, EntryId, Source, SourceError, MAX_FILE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("malformed ref update line {line}: {text:?} (expected \"<old> <new> <ref>\")")]
    BadUpdate { line: usize, text: String },
    #[error("opening the repository: {0}")]
    Open(git2::Error),
    #[error("reading commit {commit} for {refname}: {source}")]
    Commit { commit: String, refname: String, source: git2::Error },
}

/// Parses the `<old> <new> <ref>` lines git writes to a receive hook's stdin.
pub fn parse_updates(input: &str) -> Result<Vec<RefUpdate>, GitError> {
    let mut updates = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || GitError::BadUpdate { line: i + 1, text: line.to_owned() };
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let old = CommitId::parse(old).map_err(|_| bad())?;
        let new = CommitId::parse(new).map_err(|_| bad())?;
        updates.push(RefUpdate { old, new, name: name.to_owned() });
    }
    Ok(updates)
}

/// Opens the repository the way a hook must (quarantined objects included).
pub fn open_from_env() -> Result<Repository, GitError> {
    Repository::open_from_env().map_err(GitError::Open)
}

/// Finds tree entries that can never be written to disk (`..`, `x/../../pwned`, `.git`) in the
/// trees a push brings. Only new trees are walked: those in the push's quarantine and not in the
/// repository's own object store (a tree already there was checked when it came, or predates
/// pushgate, and the runner's export refuses it anyway). So the cost follows the size of the
/// push, not of the repository's tree.
pub struct NewTrees {
    /// The repository's own object store, without the quarantine; None outside a quarantine.
    existing: Option<git2::Odb<'static>>,
    seen: std::collections::HashSet<Oid>,
}

/// An entry of a pushed tree that cannot be written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeEntry {
    /// The directory holding it, repository-relative (empty for the root).
    pub dir: String,
    pub name: String,
    pub why: &'static str,
}

impl NewTrees {
    /// Set up for the repository a hook runs in (`GIT_QUARANTINE_PATH` says a push is in
    /// quarantine, git 2.11 and later). Nothing is walked when git itself checked the pushed
    /// objects: `receive.fsckObjects` (install.sh turns it on) makes receive-pack check them
    /// strictly, refusing every name walked for here, unless one of those checks was relaxed.
    pub fn for_hook(repo: &Repository) -> NewTrees {
        if git_checked_names(repo) {
            return NewTrees { existing: None, seen: Default::default() };
        }
        let existing = std::env::var_os("GIT_QUARANTINE_PATH").and_then(|_| {
            let odb = git2::Odb::new().ok()?;
            odb.add_disk_alternate(repo.path().join("objects").to_str()?).ok()?;
            Some(odb)
        });
        NewTrees { existing, seen: Default::default() }
    }

    /// The first unsafe entry among the new trees of `commit`.
    pub fn check(&mut self, repo: &Repository, commit: Oid) -> Result<Option<UnsafeEntry>, git2::Error> {
        let Some(existing) = &self.existing else { return Ok(None) };
        let root = repo.find_commit(commit)?.tree_id();
        let mut todo = vec![(root, String::new())];
        while let Some((id, dir)) = todo.pop() {
            // No refresh: a new tree is never there, and a miss would rescan the pack directory.
            if !self.seen.insert(id) || existing.exists_ext(id, git2::OdbLookupFlags::NO_REFRESH) {
                continue;
            }
            let tree = repo.find_tree(id)?;
            for entry in tree.iter() {
                let name = entry.name_bytes();
                if let Some(why) = crate::paths::unsafe_entry_name(name) {
                    let name = String::from_utf8_lossy(name).into_owned();
                    return Ok(Some(UnsafeEntry { dir, name, why }));
                }
                if entry.kind() == Some(ObjectType::Tree) {
                    let name = String::from_utf8_lossy(name);
                    todo.push((entry.id(), if dir.is_empty() { name.into_owned() } else { format!("{dir}/{name}") }));
                }
            }
        }
        Ok(None)
    }
}

/// Whether receive-pack checked the pushed trees' entry names before the hooks ran:
/// `receive.fsckObjects` (or `transfer.fsckObjects`) on, and none of the checks of the names
/// [`crate::paths::unsafe_entry_name`] refuses set to `warn` or `ignore`.
fn git_checked_names(repo: &Repository) -> bool {
    let Ok(config) = repo.config() else { return false };
    let on = config.get_bool("receive.fsckObjects").or_else(|_| config.get_bool("transfer.fsckObjects"));
    if !on.unwrap_or(false) {
        return false;
    }
    ["hasDot", "hasDotdot", "hasDotgit", "fullPathname", "emptyName", "badTree"].iter().all(|id| {
        config.get_string(&format!("receive.fsck.{id}")).map_or(true, |level| level.eq_ignore_ascii_case("error"))
    })
}

/// The tree of one commit, read straight from the object store.
pub struct CommitTree<'r> {
    repo: &'r Repository,
    tree: Tree<'r>,
}

impl<'r> CommitTree<'r> {
    pub fn new(repo: &'r Repository, commit: Oid, refname: &str) -> Result<Self, GitError> {
        let wrap = |source| GitError::Commit { commit: commit.to_string(), refname: refname.to_owned(), source };
        let commit = repo.find_commit(commit).map_err(wrap)?;
        let tree = commit.tree().map_err(wrap)?;
        Ok(CommitTree { repo, tree })
    }

    fn git_err(path: &str, e: git2::Error) -> SourceError {
        SourceError::Git { path: path.to_owned(), message: e.message().to_owned() }
    }

    fn lookup(&self, path: &str) -> Result<Option<(i32, Oid)>, SourceError> {
        match self.tree.get_path(Path::new(path)) {
            Ok(e) => Ok(Some((e.filemode(), e.id()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(Self::git_err(path, e)),
        }
    }
}

const MODE_DIR: i32 = 0o040000;
const MODE_LINK: i32 = 0o120000;
const MODE_COMMIT: i32 = 0o160000;

impl Source for CommitTree<'_> {
    fn entry(&self, path: &str) -> Result<Entry, SourceError> {
        let Some((mode, id)) = self.lookup(path)? else {
            return Ok(Entry::Missing);
        };
        match mode {
            MODE_DIR => Ok(Entry::Dir),
            MODE_LINK => Ok(Entry::Symlink),
            MODE_COMMIT => Ok(Entry::Submodule),
            _ => {
                // Check the size from the object header before inflating anything.
                let odb = self.repo.odb().map_err(|e| Self::git_err(path, e))?;
                let (size, _) = odb.read_header(id).map_err(|e| Self::git_err(path, e))?;
                if size as u64 > MAX_FILE_BYTES {
                    return Ok(Entry::TooLarge(size as u64));
                }
                let blob = self.repo.find_blob(id).map_err(|e| Self::git_err(path, e))?;
                Ok(Entry::File(blob.content().to_vec()))
            }
        }
    }

    fn entry_id(&self, path: &str) -> Result<Option<EntryId>, SourceError> {
        let id = match self.lookup(path)? {
            None => EntryId::Missing,
            Some((mode, oid)) => {
                let mut id = [0u8; 20];
                id.copy_from_slice(&oid.as_bytes()[..20]);
                EntryId::Object { mode, id }
            }
        };
        Ok(Some(id))
    }

    fn root_dirs(&self) -> Result<Vec<String>, SourceError> {
        let mut dirs: Vec<String> = self
            .tree
            .iter()
            .filter(|e| e.kind() == Some(ObjectType::Tree))
            .filter_map(|e| e.name().map(str::to_owned))
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    fn node(&self, path: &str) -> Result<crate::paths::Node, SourceError> {
        use crate::paths::Node;
        Ok(match self.lookup(path)? {
            None => Node::Missing,
            Some((MODE_DIR, _)) => Node::Dir,
            Some((MODE_LINK, id)) => {
                let blob = self.repo.find_blob(id).map_err(|e| Self::git_err(path, e))?;
                // A link target longer than PATH_MAX cannot be followed by anyone.
                let target = &blob.content()[..blob.content().len().min(4096)];
                Node::Link(String::from_utf8_lossy(target).into_owned())
            }
            Some(_) => Node::Other,
        })
    }

    fn has_ids(&self) -> bool {
        true
    }
}

/// Answers the queue's questions about refs from the repositories on this host.
#[derive(Default)]
pub struct GitRefLog {
    repos: std::cell::RefCell<std::collections::HashMap<String, Option<Repository>>>,
}

impl GitRefLog {
    /// Starts with a repository already open (the hook's own), keyed by its queue path.
    pub fn with(path: &str, repo: Repository) -> GitRefLog {
        let log = GitRefLog::default();
        log.repos.borrow_mut().insert(path.to_owned(), Some(repo));
        log
    }

    fn with_repo<T>(&self, path: &str, f: impl FnOnce(&Repository) -> Option<T>) -> Option<T> {
        let mut repos = self.repos.borrow_mut();
        let repo = repos.entry(path.to_owned()).or_insert_with(|| Repository::open_bare(path).ok());
        repo.as_ref().and_then(f)
    }
}

impl crate::queue::RefLog for GitRefLog {
    fn was_updated(&self, repo: &RepoId, ref_name: &str, old: &CommitId, new: &CommitId) -> Option<bool> {
        self.with_repo(repo.as_str(), |r| {
            let (old, new) = (old.oid(), new.oid());
            // With core.logAllRefUpdates on, the reflog records every update git made.
            if let Ok(log) = r.reflog(ref_name) {
                if !log.is_empty() {
                    return Some(log.iter().any(|e| e.id_old() == old && e.id_new() == new));
                }
            }
            // Without a reflog: the update happened if the branch contains the commit.
            let tip = r.refname_to_id(ref_name).ok();
            Some(tip.is_some_and(|t| t == new || r.graph_descendant_of(t, new).unwrap_or(false)))
        })
    }

    fn tip(&self, repo: &RepoId, ref_name: &str) -> Option<CommitId> {
        self.with_repo(repo.as_str(), |r| r.refname_to_id(ref_name).ok().map(CommitId::from_oid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_updates() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = parse_updates(&format!("{z} {a} refs/heads/main\n{a} {z} refs/tags/v1\n")).unwrap();
        assert!(u[0].is_create() && u[0].branch() == Some("main"));
        assert!(u[1].is_delete() && u[1].branch().is_none());
        assert!(parse_updates("nonsense\n").is_err());
    }
}
