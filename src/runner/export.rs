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
                    std::fs::write(&path, blob.content()).map_err(io(&path))?;
                    if mode == 0o100755 {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io(&path))?;
                    }
                }
                _ => std::fs::create_dir_all(&path).map_err(io(&path))?,
            }
        }
    }
    Ok(())
}
