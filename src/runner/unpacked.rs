//! Slugs unpacked once per machine (`DATA/unpacked/KEY/`), read-only, and releases made of
//! hard links to them: a release of a slug already unpacked here costs a directory and a link
//! per entry, not an unpacking of every file (a Magento tree has tens of thousands). On a first
//! deploy the built tree itself becomes the shared tree (it was just packed from it), so
//! nothing is unpacked at all.
//!
//! What keeps a release read-only and its own:
//! - the shared tree's files belong to the runner and have no write bits; a release's links
//!   are those same files, so nothing served or run as the project's user can write them
//!   (hooks also see their release through a read-only bind: root in the sandbox cannot);
//! - each release has directories of its own (only files are shared), so each environment's
//!   mounts are links in its own release;
//! - a shared tree exists only complete: it is made under another name and renamed into place;
//! - collecting a tree never breaks a release: its links keep the files.

use std::path::{Path, PathBuf};

use super::RunnerError;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunnerError {
    let path = path.to_owned();
    move |source| RunnerError::Io { action, path, source }
}

/// The key of a slug (`KEY` of `slugs/KEY.tar.zst`).
pub fn key_of(slug: &Path) -> String {
    let name = slug.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_suffix(".tar.zst").unwrap_or(name).to_owned()
}

/// The shared tree of `slug`, if this machine has it.
pub fn existing(data: &crate::store::DataDir, slug: &Path) -> Option<PathBuf> {
    let tree = data.unpacked().join(key_of(slug));
    tree.is_dir().then_some(tree)
}

/// A unique name beside the tree's, for making it.
fn partial(tree: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tree.with_extension(format!("partial-{}-{n}", std::process::id()))
}

/// Puts a complete tree in place; another runner's tree of the same slug may have won.
fn install(made: &Path, tree: &Path) -> Result<PathBuf, RunnerError> {
    if let Some(dir) = tree.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    match std::fs::rename(made, tree) {
        Ok(()) => Ok(tree.to_owned()),
        Err(_) if tree.is_dir() => {
            remove(made)?;
            Ok(tree.to_owned())
        }
        Err(e) => Err(io("completing", tree)(e)),
    }
}

/// The shared tree of `slug`, unpacked now if this machine does not have it yet.
pub fn ensure(data: &crate::store::DataDir, slug: &Path) -> Result<PathBuf, RunnerError> {
    if let Some(tree) = existing(data, slug) {
        return Ok(tree);
    }
    let tree = data.unpacked().join(key_of(slug));
    let made = partial(&tree);
    super::slug::unpack(slug, &made)?;
    seal(&made, false)?;
    install(&made, &tree)
}

/// Makes the directory `built` (the build's copy of an app, just packed into `slug`) the shared
/// tree of `slug`: what the slug holds and nothing else (entries a slug cannot carry are
/// removed), the runner's, read-only. The build directory is the runner's to take.
pub fn adopt(data: &crate::store::DataDir, slug: &Path, built: &Path) -> Result<PathBuf, RunnerError> {
    if let Some(tree) = existing(data, slug) {
        return Ok(tree);
    }
    let tree = data.unpacked().join(key_of(slug));
    let made = partial(&tree);
    if let Some(dir) = made.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    std::fs::rename(built, &made).map_err(io("moving", built))?;
    seal(&made, true)?;
    install(&made, &tree)
}

/// Makes the shared tree of `slug` from a build in layers ([`crate::platform::layers`]), the
/// merged tree `merged` just packed into `slug`: each file is a link to the build's own file
/// (in `upper`, given to the runner and made read-only) or, for a file the build left as it was,
/// to the exported tree's (`lower`, the runner's, never written in place). Nothing is copied.
/// Files keep `0644` (`0755` when executable): the exported tree's must stay writable for the
/// build's user through the overlay; they belong to the runner, and the releases linking them
/// are bound read-only into the hooks' sandbox.
pub fn adopt_layers(
    data: &crate::store::DataDir,
    slug: &Path,
    merged: &Path,
    upper: &Path,
    lower: &Path,
) -> Result<PathBuf, RunnerError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(tree) = existing(data, slug) {
        return Ok(tree);
    }
    let tree = data.unpacked().join(key_of(slug));
    let made = partial(&tree);
    std::fs::create_dir_all(&made).map_err(io("creating", &made))?;
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
    let own = files_of(upper)?; // the build's own files: few, listed once
    let made_tree = link_tree(merged, &made, |rel| {
        if !own.contains(rel) {
            return Ok(lower.join(rel));
        }
        let file = upper.join(rel);
        let meta = std::fs::symlink_metadata(&file).map_err(io("reading", &file))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&file, Some(uid), Some(gid)).map_err(io("owning", &file))?;
        }
        let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of", &file))?;
        Ok(file)
    });
    let links = match made_tree {
        Ok(links) => links,
        Err(e) => {
            remove(&made)?;
            return Err(e);
        }
    };
    // A link out of the app is refused here, as packing would: before any release is made of it.
    if let Err(e) = super::slug::links_resolve_inside(&made, &links) {
        remove(&made)?;
        return Err(e.into());
    }
    seal_directories(&made)?;
    install(&made, &tree)
}

/// Runs `work` on `first` and on every item it returns, on up to four threads: a directory of
/// a tree at a time, so that making tens of thousands of links uses every core (about 40% less
/// time on two). The first error stops the walk and is returned.
fn in_parallel<T: Send>(first: T, work: impl Fn(T) -> Result<Vec<T>, RunnerError> + Sync) -> Result<(), RunnerError> {
    struct Queue<T> {
        todo: Vec<T>,
        busy: usize,
        failed: Option<RunnerError>,
    }
    let queue = std::sync::Mutex::new(Queue { todo: vec![first], busy: 0, failed: None });
    let more = std::sync::Condvar::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let item = {
                    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if q.failed.is_some() {
                            break None;
                        }
                        if let Some(item) = q.todo.pop() {
                            q.busy += 1;
                            break Some(item);
                        }
                        if q.busy == 0 {
                            break None;
                        }
                        q = more.wait(q).unwrap_or_else(|p| p.into_inner());
                    }
                };
                let Some(item) = item else {
                    more.notify_all();
                    return;
                };
                let done = work(item);
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                q.busy -= 1;
                match done {
                    Ok(items) => q.todo.extend(items),
                    Err(e) => {
                        q.failed.get_or_insert(e);
                    }
                }
                more.notify_all();
            });
        }
    });
    let queue = queue.into_inner().unwrap_or_else(|p| p.into_inner());
    queue.failed.map_or(Ok(()), Err)
}

/// The regular files below `dir`, relative to it (none if it does not exist).
fn files_of(dir: &Path) -> Result<std::collections::HashSet<PathBuf>, RunnerError> {
    let mut files = std::collections::HashSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let from = dir.join(&rel);
        let entries = match std::fs::read_dir(&from) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            entries => entries.map_err(io("listing", &from))?,
        };
        for entry in entries {
            let entry = entry.map_err(io("listing", &from))?;
            let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
            if kind.is_dir() {
                todo.push(rel.join(entry.file_name()));
            } else if kind.is_file() {
                files.insert(rel.join(entry.file_name()));
            }
        }
    }
    Ok(files)
}

/// Makes a tree read-only and the runner's: files `0444` (`0555` when executable, as the slug
/// keeps them), directories `0555`; `normalize` also removes what a slug cannot hold (fifos,
/// sockets, devices) and gives everything back to the runner (the build ran as the project's
/// user). A tree to normalize was the project's user's: every entry is reached and changed
/// without following a link (`platform::beneath`), whatever that user's processes change
/// meanwhile.
fn seal(dir: &Path, normalize: bool) -> Result<(), RunnerError> {
    use crate::platform::beneath;
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
    let top = beneath::open_top(dir).map_err(io("opening", dir))?;
    let mut dirs = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let d = dir.join(&rel);
        if normalize {
            // The directory becomes the runner's before it is listed: from then on, nobody else
            // changes it (not even a process of the user's that kept it open), so what is
            // listed is what is sealed.
            let f = beneath::open(&top, &rel, libc::O_PATH | libc::O_DIRECTORY).map_err(io("reading", &d))?;
            beneath::chown(&f, uid, gid).map_err(io("owning", &d))?;
            beneath::chmod(&top, &rel, 0o755, true).map_err(io("setting the mode of", &d))?;
        }
        for entry in std::fs::read_dir(&d).map_err(io("listing", &d))? {
            let entry = entry.map_err(io("listing", &d))?;
            let (rel, path) = (rel.join(entry.file_name()), entry.path());
            let (kind, exec) = if normalize {
                let f = beneath::open(&top, &rel, libc::O_PATH).map_err(io("reading", &path))?;
                let st = beneath::stat(&f).map_err(io("reading", &path))?;
                if st.st_uid != uid || st.st_gid != gid {
                    beneath::chown(&f, uid, gid).map_err(io("owning", &path))?;
                }
                (st.st_mode & libc::S_IFMT, st.st_mode & 0o111 != 0)
            } else {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                let meta = std::fs::symlink_metadata(&path).map_err(io("reading", &path))?;
                let t = meta.file_type();
                let kind = if t.is_symlink() {
                    libc::S_IFLNK
                } else if t.is_dir() {
                    libc::S_IFDIR
                } else if t.is_file() {
                    libc::S_IFREG
                } else if t.is_fifo() {
                    libc::S_IFIFO
                } else {
                    libc::S_IFSOCK
                };
                (kind, meta.permissions().mode() & 0o111 != 0)
            };
            match kind {
                libc::S_IFLNK if normalize => {
                    // Checked when packed; one made since (by a process of the user's, before
                    // its directory was the runner's) is not kept.
                    let target = std::fs::read_link(&path).map_err(io("reading the link", &path))?;
                    if !super::slug::stays_inside(&rel, &target) {
                        beneath::remove(&top, &rel).map_err(io("removing", &path))?;
                    }
                }
                libc::S_IFLNK => {}
                libc::S_IFDIR => todo.push(rel),
                libc::S_IFREG if normalize => beneath::chmod(&top, &rel, if exec { 0o555 } else { 0o444 }, false)
                    .map_err(io("setting the mode of", &path))?,
                libc::S_IFREG => {
                    // (A tree the runner just unpacked, that nobody else reaches.)
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if exec { 0o555 } else { 0o444 };
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(io("setting the mode of", &path))?
                }
                _ if normalize => beneath::remove(&top, &rel).map_err(io("removing", &path))?,
                _ => {}
            }
        }
        dirs.push(rel);
    }
    for rel in dirs.iter().rev() {
        let path = dir.join(rel);
        beneath::chmod(&top, rel, 0o555, true).map_err(io("setting the mode of", &path))?;
    }
    Ok(())
}

/// Makes `dest` a copy of `tree` whose files are hard links to the tree's: directories and
/// symbolic links of its own, writable until the release is sealed. Err when a link cannot be
/// made (another file system): the caller unpacks instead.
pub fn link_into(tree: &Path, dest: &Path) -> Result<(), RunnerError> {
    std::fs::create_dir_all(dest).map_err(io("creating", dest))?;
    link_tree(tree, dest, |rel| Ok(tree.join(rel))).map(drop)
}

/// Makes in `dest` the directories and symbolic links of `from` and, for each regular file,
/// a hard link to the file `file_of` names for its path (relative to `from`); other kinds are
/// left out. Returns the paths of the symbolic links, sorted.
fn link_tree(
    from: &Path,
    dest: &Path,
    file_of: impl Fn(&Path) -> Result<PathBuf, RunnerError> + Sync,
) -> Result<Vec<PathBuf>, RunnerError> {
    let links = std::sync::Mutex::new(Vec::new());
    in_parallel(PathBuf::new(), |rel: PathBuf| {
        let dir = from.join(&rel);
        let mut below = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let entry = entry.map_err(io("listing", &dir))?;
            let rel = rel.join(entry.file_name());
            let (source, target) = (from.join(&rel), dest.join(&rel));
            let kind = entry.file_type().map_err(io("reading", &source))?;
            if kind.is_dir() {
                std::fs::create_dir(&target).map_err(io("creating", &target))?;
                below.push(rel);
            } else if kind.is_symlink() {
                let link = std::fs::read_link(&source).map_err(io("reading the link", &source))?;
                std::os::unix::fs::symlink(link, &target).map_err(io("linking", &target))?;
                links.lock().unwrap_or_else(|p| p.into_inner()).push(rel);
            } else if kind.is_file() {
                std::fs::hard_link(file_of(&rel)?, &target).map_err(io("linking", &target))?;
            } // fifos, sockets, devices: a slug does not hold them
        }
        Ok(below)
    })?;
    let mut links = links.into_inner().unwrap_or_else(|p| p.into_inner());
    links.sort();
    Ok(links)
}

/// Makes the directories of a linked release read-only (its files are the shared tree's, which
/// are already): one change per directory.
pub fn seal_directories(dir: &Path) -> Result<(), RunnerError> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(io("listing", &d))? {
            let entry = entry.map_err(io("listing", &d))?;
            if entry.file_type().map_err(io("reading", &entry.path()))?.is_dir() {
                todo.push(entry.path());
            }
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).map_err(io("setting the mode of", d))?;
    }
    Ok(())
}

/// Removes a shared tree (or one made halfway); the releases linked to it keep their files.
pub fn remove(tree: &Path) -> Result<(), RunnerError> {
    Ok(crate::store::deployed::remove_release(tree)?)
}
