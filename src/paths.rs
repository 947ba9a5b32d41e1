//! Paths built from untrusted input, and where they are allowed to lead.
//!
//! A push controls the names in its trees (git does not check them unless
//! `receive.fsckObjects` is on), its symlinks, and the paths in its configuration (mounts).
//! Nothing built from them may reach outside the directory it belongs to:
//! - [`unsafe_entry_name`] says which tree entry names may never be written to disk;
//! - [`resolve_beneath`] follows a path through symlinks the way the kernel would, but inside a
//!   root that `..` and links cannot leave: the commit's tree at push time and the unpacked
//!   release at deploy time both answer through a [`Lookup`];
//! - [`mkdirs_beneath`] creates directories below a root without following a link.

use std::path::{Path, PathBuf};

/// Why a tree entry name cannot be written to disk; None when it is safe.
pub fn unsafe_entry_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("an empty name")
    } else if name == b"." || name == b".." {
        Some("a name that is a relative path component")
    } else if name.contains(&b'/') {
        Some("a name containing `/`")
    } else if name.contains(&0) {
        Some("a name containing a NUL byte")
    } else if name.eq_ignore_ascii_case(b".git") {
        Some("a `.git` entry (it would be taken for a repository)")
    } else {
        None
    }
}

/// Normalises a relative path lexically (`/var/../x` → `x`); None when `..` climbs above its
/// start. Links are not looked at: see [`resolve_beneath`] for that.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in components(path) {
        match part {
            "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// What stands at a path, as far as resolving a path needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Missing,
    Dir,
    /// A file, submodule or anything that is not a directory or a link.
    Other,
    /// A symbolic link and its target as written.
    Link(String),
}

/// Answers what stands at a path relative to the root (`a/b`, never empty, no `.` or `..`).
pub trait Lookup {
    fn node(&mut self, path: &str) -> std::io::Result<Node>;
}

/// Why a path cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    #[error("`{0}` climbs above the root")]
    Above(String),
    #[error("the symbolic link `{link}` points to the absolute path `{target}`")]
    Absolute { link: String, target: String },
    #[error("the symbolic link `{link}` leads out: `{target}`")]
    LinkOut { link: String, target: String },
    #[error("too many symbolic links (a loop?) at `{0}`")]
    Loop(String),
    #[error("`{0}` is not a directory")]
    NotADir(String),
    #[error("reading `{path}`: {message}")]
    Io { path: String, message: String },
}

/// Links followed while resolving one path, as the kernel allows (`ELOOP`).
const MAX_LINKS: usize = 40;

/// Resolves `path` inside the root, following every link it passes through except its last
/// component (which is what a mount replaces). Returns the resolved path relative to the root
/// (empty for the root itself). `..` and links may move about inside the root, never above it;
/// absolute link targets are refused since they mean a place outside it.
pub fn resolve_beneath(path: &str, lookup: &mut dyn Lookup) -> Result<String, Escape> {
    let mut done: Vec<String> = Vec::new();
    // Components still to walk, in reverse order (a link pushes its target's components).
    let mut todo: Vec<String> = components(path).rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                if done.pop().is_none() {
                    return Err(Escape::Above(path.to_owned()));
                }
                continue;
            }
            _ => {}
        }
        done.push(part);
        if todo.is_empty() {
            break; // the last component is not followed
        }
        let here = done.join("/");
        match lookup.node(&here).map_err(|e| Escape::Io { path: here.clone(), message: e.to_string() })? {
            Node::Missing | Node::Dir => {}
            Node::Other => return Err(Escape::NotADir(here)),
            Node::Link(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Escape::Loop(here));
                }
                if target.starts_with('/') {
                    return Err(Escape::Absolute { link: here, target });
                }
                done.pop();
                // The target is relative to the link's directory; an escape is the link's fault.
                let climbs_out = components(&target)
                    .try_fold(done.len(), |depth, c| match c {
                        ".." => depth.checked_sub(1),
                        "." => Some(depth),
                        _ => Some(depth + 1),
                    })
                    .is_none();
                if climbs_out {
                    return Err(Escape::LinkOut { link: here, target });
                }
                todo.extend(components(&target).rev().map(str::to_owned));
            }
        }
    }
    Ok(done.join("/"))
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// A directory on disk as a [`Lookup`], never following a link itself.
pub struct Disk<'a>(pub &'a Path);

impl Lookup for Disk<'_> {
    fn node(&mut self, path: &str) -> std::io::Result<Node> {
        let full = self.0.join(path);
        match std::fs::symlink_metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
            Err(e) => Err(e),
            Ok(m) if m.file_type().is_symlink() => {
                Ok(Node::Link(std::fs::read_link(&full)?.to_string_lossy().into_owned()))
            }
            Ok(m) if m.is_dir() => Ok(Node::Dir),
            Ok(_) => Ok(Node::Other),
        }
    }
}

/// Creates `rel` and its parents under `root`, one component at a time, refusing to pass
/// through a link or a file (so nothing is created outside `root`, whatever stands in it).
pub fn mkdirs_beneath(root: &Path, rel: &str) -> std::io::Result<PathBuf> {
    let mut at = root.to_owned();
    for part in components(rel) {
        if part == "." || part == ".." {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("`{rel}` is not a plain path")));
        }
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is a link or a file, not a directory", at.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Tree(HashMap<&'static str, Node>);

    impl Lookup for Tree {
        fn node(&mut self, path: &str) -> std::io::Result<Node> {
            Ok(self.0.get(path).cloned().unwrap_or(Node::Missing))
        }
    }

    fn tree(entries: &[(&'static str, Node)]) -> Tree {
        Tree(entries.iter().cloned().collect())
    }

    #[test]
    fn names_that_are_never_written() {
        for bad in [&b""[..], b".", b"..", b"x/../../pwned.txt", b".git", b".GIT", b"a\0b"] {
            assert!(unsafe_entry_name(bad).is_some(), "{bad:?}");
        }
        for good in [&b"..."[..], b".gitignore", b".magento", b"a..b", b"caf\xc3\xa9"] {
            assert_eq!(unsafe_entry_name(good), None, "{good:?}");
        }
    }

    #[test]
    fn the_attack_through_a_link_to_the_parent_is_refused() {
        let mut t = tree(&[("d", Node::Dir), ("d/l1", Node::Link("..".into()))]);
        let attack = "d/l1/d/l1/d/l1/../../../environments/OTHER/staging/current";
        assert!(matches!(resolve_beneath(attack, &mut t), Err(Escape::Above(_))));
        // The same link, used to go only a little way up, stays inside.
        assert_eq!(resolve_beneath("d/l1/var", &mut t).unwrap(), "var");
    }

    #[test]
    fn links_resolve_inside_the_root_and_never_out() {
        let mut t = tree(&[
            ("pub", Node::Link("web".into())),
            ("web", Node::Dir),
            ("up", Node::Link("../x".into())),
            ("abs", Node::Link("/etc".into())),
            ("loop", Node::Link("loop".into())),
            ("file", Node::Other),
        ]);
        assert_eq!(resolve_beneath("pub/media", &mut t).unwrap(), "web/media");
        assert_eq!(resolve_beneath("var", &mut t).unwrap(), "var");
        assert_eq!(resolve_beneath("a/../b", &mut t).unwrap(), "b");
        // The last component is not followed: a mount replaces the link itself.
        assert_eq!(resolve_beneath("pub", &mut t).unwrap(), "pub");
        assert!(matches!(resolve_beneath("up/y", &mut t), Err(Escape::LinkOut { .. })));
        assert!(matches!(resolve_beneath("abs/passwd", &mut t), Err(Escape::Absolute { .. })));
        assert!(matches!(resolve_beneath("loop/x", &mut t), Err(Escape::Loop(_))));
        assert!(matches!(resolve_beneath("file/x", &mut t), Err(Escape::NotADir(_))));
        assert!(matches!(resolve_beneath("../x", &mut t), Err(Escape::Above(_))));
    }
}
