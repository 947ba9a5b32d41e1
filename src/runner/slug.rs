//! Slugs: the built app as a deterministic, compressed archive in a content-addressed store.
//!
//! Packing sorts entries and zeroes times and owners, so the same tree gives the same bytes.
//! It stores regular files, directories and symlinks, and refuses a symlink that points out of
//! the app (absolute, or climbing above the app root): the slug must not carry a way out of its
//! release. Unpacking refuses any entry that would write outside the release directory.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("`{}` is a symbolic link to `{target}`, outside the app: a slug may not point out of its release", path.display())]
    EscapingLink { path: PathBuf, target: String },
    #[error("the slug entry `{entry}` would be written outside the release directory")]
    EscapingEntry { entry: String },
    #[error("the slug entry `{entry}` is of an unsupported kind")]
    Unsupported { entry: String },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SlugError + 'p {
    move |source| SlugError::Io { action, path: path.to_owned(), source }
}

/// Packs `dir` into `out` (tar, zstd level 3). Returns the archive's size in bytes.
pub fn pack(dir: &Path, out: &Path) -> Result<u64, SlugError> {
    let entries = sorted_entries(dir)?;
    let links: Vec<PathBuf> = entries.iter().filter(|(_, k)| *k == Kind::Link).map(|(p, _)| p.clone()).collect();
    links_resolve_inside(dir, &links)?;
    // Two runners may pack the same tree at once (two branches, one tree): each writes its own
    // file, and the last rename wins with the same bytes.
    static PACKING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PACKING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_extension(format!("partial.{}.{n}", std::process::id()));
    let written = write_archive(dir, &entries, &tmp).and_then(|()| {
        std::fs::rename(&tmp, out).map_err(io_err("storing", out))?;
        Ok(std::fs::metadata(out).map_err(io_err("reading", out))?.len())
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp); // a full disk must not keep the half-written slug
    }
    written
}

fn write_archive(dir: &Path, entries: &[(PathBuf, Kind)], tmp: &Path) -> Result<(), SlugError> {
    let file = File::create(tmp).map_err(io_err("creating", tmp))?;
    let mut encoder = zstd::stream::Encoder::new(BufWriter::new(file), 3).map_err(io_err("compressing", tmp))?;
    // Compression on every core (up to four) while this thread reads the files. zstd's
    // multithreaded mode writes the same bytes whatever the number of workers, so machines
    // with different cores still pack one tree into one slug.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u32;
    encoder.multithread(workers).map_err(io_err("compressing", tmp))?;
    let mut tar = tar::Builder::new(encoder);
    // The tree may be the project's user's (a build's copy): each file is opened from the
    // tree's top without following a link on the way, so a directory swapped for a link after
    // the links were checked leads nowhere.
    let top = crate::platform::beneath::open_top(dir).map_err(io_err("opening", dir))?;
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    // One lookup of each path: its kind comes from its directory's listing, a file's size and
    // mode from the file opened (a Magento tree has tens of thousands; in a build in layers,
    // each lookup searches two of them).
    for (rel, kind) in entries {
        let full = dir.join(rel);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match kind {
            Kind::Link => {
                // links_resolve_inside checked it stays in the app; read again here, it must
                // still (the tree may have changed since).
                let target = std::fs::read_link(&full).map_err(io_err("reading the link", &full))?;
                if !stays_inside(rel, &target) {
                    return Err(SlugError::Io {
                        action: "packing",
                        path: full,
                        source: io::Error::other("a link that leads out of the app"),
                    });
                }
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, rel, &target).map_err(io_err("packing", &full))?;
            }
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, rel, io::empty()).map_err(io_err("packing", &full))?;
            }
            Kind::File => {
                use std::os::unix::fs::PermissionsExt;
                let f = crate::platform::beneath::open(&top, rel, libc::O_RDONLY | libc::O_NONBLOCK)
                    .map_err(io_err("reading", &full))?;
                let meta = f.metadata().map_err(io_err("reading", &full))?;
                if !meta.is_file() {
                    return Err(SlugError::Io {
                        action: "reading",
                        path: full,
                        source: io::Error::other("it was replaced while the slug was packed"),
                    });
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                tar.append_data(&mut header, rel, BufReader::new(f)).map_err(io_err("packing", &full))?;
            }
            Kind::Other => {} // fifos, sockets, devices: a slug holds none
        }
    }
    let encoder = tar.into_inner().map_err(io_err("packing", tmp))?;
    let writer = encoder.finish().map_err(io_err("compressing", tmp))?;
    writer
        .into_inner()
        .map_err(|e| SlugError::Io { action: "writing", path: tmp.to_owned(), source: e.into_error() })?
        .sync_all()
        .map_err(io_err("syncing", tmp))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    Other,
}

/// Every path under `dir`, relative, sorted, with its kind, without following symlinks.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, Kind)>, SlugError> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let full = dir.join(&rel);
        for entry in std::fs::read_dir(&full).map_err(io_err("listing", &full))? {
            let entry = entry.map_err(io_err("listing", &full))?;
            let child = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(io_err("reading", &dir.join(&child)))?;
            let kind = if kind.is_symlink() {
                Kind::Link
            } else if kind.is_dir() {
                todo.push(child.clone());
                Kind::Dir
            } else if kind.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            out.push((child, kind));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether a symlink at `link` (relative to the app root) pointing at `target` stays inside.
pub(crate) fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Whether every symlink among `entries` (relative to `root`) resolves inside `root` once the
/// links it goes through are followed: the lexical check alone lets `s -> .` and `t -> s/..`
/// pass, and `t` then names the directory above the app.
pub(super) fn links_resolve_inside(root: &Path, entries: &[PathBuf]) -> Result<(), SlugError> {
    let root_real = std::fs::canonicalize(root).map_err(io_err("resolving", root))?;
    for rel in entries {
        let full = root.join(rel);
        let meta = std::fs::symlink_metadata(&full).map_err(io_err("reading", &full))?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        let target = std::fs::read_link(&full).map_err(io_err("reading the link", &full))?;
        let escaping = || SlugError::EscapingLink { path: rel.clone(), target: target.display().to_string() };
        if !stays_inside(rel, &target) {
            return Err(escaping());
        }
        // Resolve as far as the filesystem goes; what does not exist yet must only descend.
        let mut existing = full.parent().unwrap_or(root).join(&target);
        let mut rest = Vec::new();
        let resolved = loop {
            match std::fs::canonicalize(&existing) {
                Ok(real) => break real,
                Err(_) => {
                    let Some(name) = existing.file_name().map(|n| n.to_owned()) else { return Err(escaping()) };
                    rest.push(name);
                    if !existing.pop() {
                        return Err(escaping());
                    }
                }
            }
        };
        let descends = rest.iter().all(|n| n != ".." && n != ".");
        if !resolved.starts_with(&root_real) || !descends {
            return Err(escaping());
        }
    }
    Ok(())
}

/// Unpacks `slug` into `dest` (which must not exist yet), refusing anything that leaves it.
pub fn unpack(slug: &Path, dest: &Path) -> Result<(), SlugError> {
    std::fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let file = File::open(slug).map_err(io_err("opening", slug))?;
    let decoder = zstd::stream::Decoder::new(BufReader::new(file)).map_err(io_err("decompressing", slug))?;
    let mut archive = tar::Archive::new(decoder);
    let mut links = Vec::new();
    for entry in archive.entries().map_err(io_err("reading", slug))? {
        let mut entry = entry.map_err(io_err("reading", slug))?;
        let rel = entry.path().map_err(io_err("reading", slug))?.into_owned();
        let name = rel.display().to_string();
        if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(SlugError::EscapingEntry { entry: name });
        }
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target).map_err(io_err("creating", &target))?,
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                }
                // An earlier symlink must not redirect this write out of the release.
                refuse_links_on_the_way(dest, &rel)?;
                let mode = entry.header().mode().unwrap_or(0o644);
                // create_new: never write through a link an earlier entry of the same name left.
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_err("writing", &target))?;
                io::copy(&mut entry, &mut out).map_err(io_err("writing", &target))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o755))
                    .map_err(io_err("setting the mode of", &target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name().map_err(io_err("reading", slug))?.unwrap_or_default().into_owned();
                if !stays_inside(&rel, &link) {
                    return Err(SlugError::EscapingLink { path: rel, target: link.display().to_string() });
                }
                refuse_links_on_the_way(dest, &rel)?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_err("linking", &target))?;
                links.push(rel);
            }
            _ => return Err(SlugError::Unsupported { entry: name }),
        }
    }
    links_resolve_inside(dest, &links)
}

/// Refuses a path whose parent directories include a symlink (it could lead elsewhere).
fn refuse_links_on_the_way(dest: &Path, rel: &Path) -> Result<(), SlugError> {
    let mut at = dest.to_owned();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            if std::fs::symlink_metadata(&at).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
                return Err(SlugError::EscapingEntry { entry: rel.display().to_string() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pushgate-slug-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let dir = temp("src");
        std::fs::create_dir_all(dir.join("pub/static")).unwrap();
        std::fs::write(dir.join("pub/index.php"), "<?php\n").unwrap();
        std::fs::write(dir.join("bin"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("pub/index.php", dir.join("index.php")).unwrap();
        let out = temp("out");
        pack(&dir, &out.join("a.tar.zst")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join("pub/index.php"), "<?php\n").unwrap(); // new mtime, same content
        pack(&dir, &out.join("b.tar.zst")).unwrap();
        assert_eq!(std::fs::read(out.join("a.tar.zst")).unwrap(), std::fs::read(out.join("b.tar.zst")).unwrap());
        let dest = out.join("release");
        unpack(&out.join("a.tar.zst"), &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("pub/index.php")).unwrap(), "<?php\n");
        assert_eq!(std::fs::read_link(dest.join("index.php")).unwrap(), PathBuf::from("pub/index.php"));
        assert!(std::fs::metadata(dest.join("bin")).unwrap().permissions().mode() & 0o111 != 0);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn runners_packing_the_same_tree_at_once_store_one_good_slug() {
        let dir = temp("same-tree");
        for i in 0..200 {
            std::fs::write(dir.join(format!("f{i}.php")), format!("<?php // {i}\n").repeat(50)).unwrap();
        }
        let out = temp("same-tree-out");
        let slug = out.join("s.tar.zst");
        let packers: Vec<_> = (0..4)
            .map(|_| {
                let (dir, slug) = (dir.clone(), slug.clone());
                std::thread::spawn(move || pack(&dir, &slug).map(|_| ()))
            })
            .collect();
        for p in packers {
            p.join().unwrap().unwrap();
        }
        let alone = out.join("alone.tar.zst");
        pack(&dir, &alone).unwrap();
        assert_eq!(std::fs::read(&slug).unwrap(), std::fs::read(&alone).unwrap());
        let names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no partial file left: {names:?}");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn links_out_of_the_app_are_refused() {
        assert!(stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!stays_inside(Path::new("a"), Path::new("/etc/passwd")));
        let dir = temp("escape");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        let out = temp("escape-out");
        assert!(matches!(pack(&dir, &out.join("s.tar.zst")), Err(SlugError::EscapingLink { .. })));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn links_through_links_out_of_the_app_are_refused() {
        // Each link looks inside on its own; followed, `up` is the app's parent.
        let dir = temp("chain");
        std::os::unix::fs::symlink(".", dir.join("here")).unwrap();
        std::os::unix::fs::symlink("here/..", dir.join("up")).unwrap();
        assert!(stays_inside(Path::new("up"), Path::new("here/..")));
        let out = temp("chain-out");
        assert!(matches!(pack(&dir, &out.join("s.tar.zst")), Err(SlugError::EscapingLink { .. })));
        // A dangling link that only descends is fine (it may point at something made later).
        std::fs::remove_file(dir.join("up")).unwrap();
        std::os::unix::fs::symlink("here/not-yet/file", dir.join("later")).unwrap();
        pack(&dir, &out.join("s.tar.zst")).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(out);
    }

    /// A hand-made slug: `(name, Some(target))` is a symlink, `(name, None)` a 4-byte file.
    fn crafted(slug: &Path, entries: &[(&str, Option<&str>)]) {
        let encoder = zstd::stream::Encoder::new(File::create(slug).unwrap(), 3).unwrap().auto_finish();
        let mut tar = tar::Builder::new(encoder);
        for (name, target) in entries {
            let mut header = tar::Header::new_gnu();
            match target {
                Some(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    tar.append_link(&mut header, name, target).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(4);
                    header.set_mode(0o644);
                    tar.append_data(&mut header, name, &b"evil"[..]).unwrap();
                }
            }
        }
        drop(tar.into_inner().unwrap());
    }

    #[test]
    fn a_slug_with_a_chained_escape_is_refused() {
        let out = temp("chain-evil");
        let slug = out.join("evil.tar.zst");
        crafted(&slug, &[("here", Some(".")), ("up", Some("here/.."))]);
        assert!(matches!(unpack(&slug, &out.join("release")), Err(SlugError::EscapingLink { .. })));
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn a_file_entry_never_writes_through_a_link_of_the_same_name() {
        let out = temp("dup");
        std::fs::write(out.join("victim"), "safe").unwrap();
        let slug = out.join("dup.tar.zst");
        crafted(&slug, &[("here", Some(".")), ("f", Some("here/../victim")), ("f", None)]);
        assert!(unpack(&slug, &out.join("release")).is_err());
        assert_eq!(std::fs::read_to_string(out.join("victim")).unwrap(), "safe");
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn entries_out_of_the_release_are_refused() {
        let out = temp("evil");
        let slug = out.join("evil.tar.zst");
        let file = File::create(&slug).unwrap();
        let encoder = zstd::stream::Encoder::new(file, 3).unwrap().auto_finish();
        let mut tar = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // tar::Builder refuses `..` itself; write the name into the header directly.
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        tar.append(&header, &b"evil"[..]).unwrap();
        drop(tar.into_inner().unwrap());
        let dest = out.join("release");
        assert!(matches!(unpack(&slug, &dest), Err(SlugError::EscapingEntry { .. })));
        assert!(!out.join("escaped").exists());
        let _ = std::fs::remove_dir_all(out);
    }
}
