//! Where configuration files come from: a commit in git's object store, or a directory on disk.
//!
//! Validation reads every file through [`Source`], so the same code checks a pushed commit (in the
//! hook) and a checkout (`pushgate-hook check DIR`). Each read also yields an [`EntryId`]; a
//! [`ReadLog`] of those ids lets the hook prove that another ref would read exactly the same
//! bytes and reuse the result, with lookups by object id instead of parsing again.

use std::path::{Path, PathBuf};

/// Configuration files and include targets larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What stands at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Missing,
    File(Vec<u8>),
    /// A file over [`MAX_FILE_BYTES`]; its content was not read.
    TooLarge(u64),
    Dir,
    Symlink,
    Submodule,
}

impl Entry {
    pub fn describe(&self) -> &'static str {
        match self {
            Entry::Missing => "missing",
            Entry::File(_) | Entry::TooLarge(_) => "a file",
            Entry::Dir => "a directory",
            Entry::Symlink => "a symbolic link",
            Entry::Submodule => "a submodule",
        }
    }
}

/// The identity of what stands at a path, without its content (a git object id and mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryId {
    Missing,
    Object { mode: i32, id: [u8; 20] },
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path} from the repository: {message}")]
    Git { path: String, message: String },
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// A tree of files at one point in time.
pub trait Source {
    /// What stands at a repository-relative path (`a/b.yaml`).
    fn entry(&self, path: &str) -> Result<Entry, SourceError>;
    /// The identity of what stands at `path`, if this source has stable ids (git does).
    fn entry_id(&self, path: &str) -> Result<Option<EntryId>, SourceError>;
    /// Names of the directories directly under the root, sorted.
    fn root_dirs(&self) -> Result<Vec<String>, SourceError>;
    /// What stands at `path` for resolving paths through it: a directory, a link (with its
    /// target), something else, or nothing. Never follows a link.
    fn node(&self, path: &str) -> Result<crate::paths::Node, SourceError>;
    /// Whether [`Source::entry_id`] gives ids (a git tree does; a directory on disk does not).
    fn has_ids(&self) -> bool;
}

/// A source seen from one of its directories, for [`crate::paths::resolve_beneath`].
pub struct Beneath<'a> {
    pub source: &'a dyn Source,
    /// Repository-relative directory (empty for the root).
    pub base: &'a str,
    /// The first error the source gave; the lookup then answers "missing".
    pub error: Option<SourceError>,
}

impl crate::paths::Lookup for Beneath<'_> {
    fn node(&mut self, path: &str) -> std::io::Result<crate::paths::Node> {
        let full = if self.base.is_empty() { path.to_owned() } else { format!("{}/{path}", self.base) };
        self.source.node(&full).or_else(|e| {
            self.error.get_or_insert(e);
            Ok(crate::paths::Node::Missing)
        })
    }
}

/// One read made during validation, to be replayed against another source.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    Entry(String, EntryId),
    RootDirs(Vec<String>),
    /// Only what kind of entry stands there (a directory, a link and its target...): resolving
    /// `app/etc` needs `app` to be a directory, whatever files it holds, so another branch that
    /// changed a file under `app/` still reuses the result.
    Node(String, crate::paths::Node),
}

/// Everything a validation read, by identity. Replaying it on another source tells whether
/// that source would give the same answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadLog {
    reads: Vec<Read>,
    /// False when a read had no stable id (a directory on disk): such a log never matches.
    complete: bool,
}

impl ReadLog {
    /// True when every read gives the same identity in `other`.
    pub fn matches(&self, other: &dyn Source) -> Result<bool, SourceError> {
        if !self.complete {
            return Ok(false);
        }
        for read in &self.reads {
            let same = match read {
                Read::Entry(path, id) => other.entry_id(path)?.as_ref() == Some(id),
                Read::RootDirs(dirs) => &other.root_dirs()? == dirs,
                Read::Node(path, node) => &other.node(path)? == node,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Wraps a source and records every read into a [`ReadLog`].
pub struct Recording<'a> {
    inner: &'a dyn Source,
    log: std::cell::RefCell<ReadLog>,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn Source) -> Self {
        Recording { inner, log: std::cell::RefCell::new(ReadLog { reads: Vec::new(), complete: true }) }
    }

    pub fn into_log(self) -> ReadLog {
        self.log.into_inner()
    }
}

impl Source for Recording<'_> {
    fn entry(&self, path: &str) -> Result<Entry, SourceError> {
        let id = self.inner.entry_id(path)?;
        let mut log = self.log.borrow_mut();
        match id {
            Some(id) => log.reads.push(Read::Entry(path.to_owned(), id)),
            None => log.complete = false,
        }
        drop(log);
        self.inner.entry(path)
    }

    fn entry_id(&self, path: &str) -> Result<Option<EntryId>, SourceError> {
        self.inner.entry_id(path)
    }

    fn root_dirs(&self) -> Result<Vec<String>, SourceError> {
        let dirs = self.inner.root_dirs()?;
        self.log.borrow_mut().reads.push(Read::RootDirs(dirs.clone()));
        Ok(dirs)
    }

    fn node(&self, path: &str) -> Result<crate::paths::Node, SourceError> {
        let node = self.inner.node(path)?;
        let mut log = self.log.borrow_mut();
        if self.inner.has_ids() {
            log.reads.push(Read::Node(path.to_owned(), node.clone()));
        } else {
            log.complete = false;
        }
        Ok(node)
    }

    fn has_ids(&self) -> bool {
        self.inner.has_ids()
    }
}

/// A directory on disk (a checkout), for `pushgate-hook check`.
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource { root: root.into() }
    }

    fn io(path: &Path, source: std::io::Error) -> SourceError {
        SourceError::Io { path: path.to_owned(), source }
    }

    /// Metadata of `path` without following a link anywhere on it. A path that passes through
    /// a link (or a file) is not there, as in a git tree: `check` must not read where a push
    /// would not (a `.magento` that links to `/etc`).
    fn metadata(&self, path: &str) -> Result<Option<std::fs::Metadata>, SourceError> {
        let mut full = self.root.clone();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            full.push(part);
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                // `a/b` where `a` is a file: nothing stands at that path.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(Self::io(&full, e)),
            };
            if i + 1 == parts.len() {
                return Ok(Some(meta));
            }
            if !meta.is_dir() || meta.file_type().is_symlink() {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

impl Source for DirSource {
    fn entry(&self, path: &str) -> Result<Entry, SourceError> {
        let full = self.root.join(path);
        let Some(meta) = self.metadata(path)? else { return Ok(Entry::Missing) };
        if meta.file_type().is_symlink() {
            return Ok(Entry::Symlink);
        }
        if meta.is_dir() {
            return Ok(if full.join(".git").is_file() { Entry::Submodule } else { Entry::Dir });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Ok(Entry::TooLarge(meta.len()));
        }
        std::fs::read(&full).map(Entry::File).map_err(|e| Self::io(&full, e))
    }

    fn entry_id(&self, _path: &str) -> Result<Option<EntryId>, SourceError> {
        Ok(None)
    }

    fn root_dirs(&self) -> Result<Vec<String>, SourceError> {
        let mut dirs = Vec::new();
        let read = std::fs::read_dir(&self.root).map_err(|e| Self::io(&self.root, e))?;
        for entry in read {
            let entry = entry.map_err(|e| Self::io(&self.root, e))?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && entry.file_name() != ".git" {
                dirs.extend(entry.file_name().to_str().map(str::to_owned));
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    fn node(&self, path: &str) -> Result<crate::paths::Node, SourceError> {
        use crate::paths::Node;
        let Some(meta) = self.metadata(path)? else { return Ok(Node::Missing) };
        let full = self.root.join(path);
        Ok(if meta.file_type().is_symlink() {
            Node::Link(std::fs::read_link(&full).map_err(|e| Self::io(&full, e))?.to_string_lossy().into_owned())
        } else if meta.is_dir() {
            Node::Dir
        } else {
            Node::Other
        })
    }

    fn has_ids(&self) -> bool {
        false
    }
}
