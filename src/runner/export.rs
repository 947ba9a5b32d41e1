//! A commit's tree written into a fresh directory, straight from the object store: no checkout
//! of the bare repository, no index, no hooks of the repository run.
//!
//! Tree entry names come from the pusher: with `receive.fsckObjects` off (git's default) a tree
//! may hold `..`, `x/../../pwned` or `.git`. Such a name is refused before anything is written
//! under it ([`crate::paths::unsafe_entry_name`]); the hook refuses such trees at push time too.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::RunnerError;

/// Writes the tree `tree` of `repo` under `dest` (files, executable bits, symlinks; submodules
/// become empty directories).
pub fn export_tree(repo: &Repository, tree: Oid, dest: &Path) -> Result<(), RunnerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RunnerError::Io { action: "exporting", path, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut todo: Vec<(Oid, PathBuf)> = vec![(tree, dest.to_owned())];
    while let Some((id, dir)) = todo.pop() {
        let tree = repo.find_tree(id).map_err(RunnerError::Git)?;
        for entry in tree.iter() {
            let name = entry.name_bytes();
            if let Some(why) = crate::paths::unsafe_entry_name(name) {
                return Err(RunnerError::UnsafeEntry {
                    tree: id,
                    name: String::from_utf8_lossy(name).into_owned(),
                    why,
                });
            }
            let path = dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Tree), _) => {
                    // Its parent was made a moment ago: one mkdir, no walk up the path.
                    std::fs::create_dir(&path).map_err(io(&path))?;
                    todo.push((entry.id(), path));
                }
                (Some(ObjectType::Blob), 0o120000) => {
                    let blob = repo.find_blob(entry.id()).map_err(RunnerError::Git)?;
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    std::os::unix::fs::symlink(target, &path).map_err(io(&path))?;
                }
                (Some(ObjectType::Blob), mode) => {
                    let blob = repo.find_blob(entry.id()).map_err(RunnerError::Git)?;
                    write_file(&path, blob.content(), mode == 0o100755).map_err(io(&path))?;
                }
                _ => std::fs::create_dir_all(&path).map_err(io(&path))?,
            }
        }
    }
    Ok(())
}

/// Writes a new file `0644`, or `0755` when `executable`, whatever the runner's umask (the
/// exported tree's files become the releases' files, which the apps must read).
fn write_file(path: &Path, content: &[u8], executable: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let umask = *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap_or("0022");
        u32::from_str_radix(line.trim(), 8).unwrap_or(0o022)
    });
    let mode = if executable { 0o755 } else { 0o644 };
    let mut file = std::fs::File::options().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(content)?;
    if umask & mode != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Brings `dest`, an export of the tree `old`, to the tree `new`: only what changed between
/// them is written. Returns the number of paths changed.
///
/// Files of `dest` may be shared (hard links of the unpacked slugs): a file is never written in
/// place; a changed file is a new file renamed over the old one. Removed paths go first (deepest
/// first, emptied directories with them), so a path that changes kind is free when its new
/// entry is written; no path is followed through a symbolic link.
///
/// `scratch` is an empty directory on the same file system, outside `dest`, where each new
/// entry is made before its rename.
pub fn update_tree(repo: &Repository, old: Oid, new: Oid, dest: &Path, scratch: &Path) -> Result<usize, RunnerError> {
    let (old_tree, new_tree) = (repo.find_tree(old)?, repo.find_tree(new)?);
    let mut options = git2::DiffOptions::new();
    options.skip_binary_check(true).ignore_submodules(false);
    let diff = repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), Some(&mut options))?;
    let mut removed = Vec::new();
    let mut written = Vec::new();
    for delta in diff.deltas() {
        use git2::Delta;
        let (before, after) = (delta.old_file(), delta.new_file());
        if matches!(delta.status(), Delta::Deleted | Delta::Modified | Delta::Typechange) {
            removed.push(before.path_bytes().unwrap_or_default().to_vec());
        }
        if matches!(delta.status(), Delta::Added | Delta::Modified | Delta::Typechange) {
            written.push((after.path_bytes().unwrap_or_default().to_vec(), after.id(), after.mode()));
        }
    }
    removed.sort();
    for path in removed.iter().rev() {
        let full = inside(dest, path, false)?;
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(&full), // a submodule's empty directory
            Ok(_) => std::fs::remove_file(&full),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|source| RunnerError::Io { action: "removing", path: full.clone(), source })?;
        // Git keeps no empty directories: neither does the export.
        let mut dir = full.parent();
        while let Some(d) = dir.filter(|d| *d != dest) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    for (path, id, mode) in &written {
        let full = inside(dest, path, true)?;
        let io = |source| RunnerError::Io { action: "exporting", path: full.clone(), source };
        let fresh = scratch.join("new");
        let _ = std::fs::remove_file(&fresh);
        match mode {
            git2::FileMode::Commit | git2::FileMode::Tree => {
                std::fs::create_dir(&full).or_else(|e| if full.is_dir() { Ok(()) } else { Err(e) }).map_err(io)?;
                continue;
            }
            git2::FileMode::Link => {
                let blob = repo.find_blob(*id)?;
                std::os::unix::fs::symlink(String::from_utf8_lossy(blob.content()).as_ref(), &fresh).map_err(io)?;
            }
            _ => {
                let blob = repo.find_blob(*id)?;
                write_file(&fresh, blob.content(), *mode == git2::FileMode::BlobExecutable).map_err(io)?;
            }
        }
        std::fs::rename(&fresh, &full).map_err(io)?;
    }
    Ok(diff.deltas().len())
}

/// `dest/path`, each name of `path` checked as the export checks tree entries, and each
/// directory on the way a real directory (made when `make` and missing).
fn inside(dest: &Path, path: &[u8], make: bool) -> Result<PathBuf, RunnerError> {
    use std::os::unix::ffi::OsStrExt;
    let names: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    if let Some(why) = names.iter().find_map(|name| crate::paths::unsafe_entry_name(name)) {
        let name = String::from_utf8_lossy(path).into_owned();
        return Err(RunnerError::UnsafeEntry { tree: Oid::zero(), name, why });
    }
    let mut full = dest.to_owned();
    for (i, name) in names.iter().enumerate() {
        full.push(std::ffi::OsStr::from_bytes(name));
        if i + 1 == names.len() || !make && std::fs::symlink_metadata(&full).is_err() {
            continue; // (nothing to check below a directory that is not there)
        }
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Err(e) if make && e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&full)
                .map_err(|source| RunnerError::Io { action: "exporting", path: full.clone(), source })?,
            _ => {
                return Err(RunnerError::Io {
                    action: "exporting",
                    path: full.clone(),
                    source: std::io::Error::other("not a directory of the exported tree"),
                })
            }
        }
    }
    Ok(full)
}
