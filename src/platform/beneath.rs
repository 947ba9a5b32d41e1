//! Root acting on a tree a project's user can change while root acts on it (a build's copy of
//! the app, an environment's mounts): every file is reached from a descriptor of the tree's top
//! without following a symbolic link on the way (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`; a component-by-component walk where the kernel has no `openat2`), and
//! then changed through its own descriptor. A directory swapped for a link meanwhile ends the
//! operation with an error; it never leads root elsewhere.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn c_string(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// The top of a tree, a directory itself (not a link to one).
pub fn open_top(path: &Path) -> io::Result<File> {
    let c = c_string(path)?;
    // SAFETY: open with a valid C string; the descriptor is owned at once.
    let fd =
        check(
            unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) }
                as libc::c_long,
        )?;
    // SAFETY: a new descriptor of ours.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// `rel` below `top`, opened with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` added): no component
/// may be a symbolic link, nor lead out of `top`. With `O_PATH`, a trailing link is opened as
/// itself.
pub fn open(top: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
    if rel.as_os_str().is_empty() {
        return top.try_clone();
    }
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let c = c_string(rel)?;
    // SAFETY: open_how is plain data; zero is a valid value of each field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid C string and an open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            top.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    match check(fd) {
        // SAFETY: a new descriptor of ours.
        Ok(fd) => Ok(unsafe { File::from_raw_fd(fd as i32) }),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_by_components(top, rel, flags),
        Err(e) => Err(e),
    }
}

/// The same, one component at a time (kernels before 5.6).
fn open_by_components(top: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
    let mut parts = Vec::new();
    for part in rel.components() {
        match part {
            Component::Normal(name) => parts.push(name),
            Component::CurDir => {}
            _ => return Err(io::Error::from_raw_os_error(libc::EXDEV)),
        }
    }
    let Some((last, dirs)) = parts.split_last() else { return top.try_clone() };
    let mut at: Option<OwnedFd> = None;
    for dir in dirs {
        let c = CString::new(dir.as_bytes()).map_err(io::Error::other)?;
        let from = at.as_ref().map_or(top.as_raw_fd(), |f| f.as_raw_fd());
        // SAFETY: openat relative to a directory descriptor of ours.
        let fd = check(unsafe {
            libc::openat(from, c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        } as libc::c_long)?;
        // SAFETY: a new descriptor of ours.
        at = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let c = CString::new(last.as_bytes()).map_err(io::Error::other)?;
    let from = at.as_ref().map_or(top.as_raw_fd(), |f| f.as_raw_fd());
    // SAFETY: as above.
    let fd = check(unsafe { libc::openat(from, c.as_ptr(), flags) } as libc::c_long)?;
    // SAFETY: a new descriptor of ours.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// The entry's status, through its descriptor.
pub fn stat(f: &File) -> io::Result<libc::stat> {
    // SAFETY: fstat writes into the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(f.as_raw_fd(), &mut st) } as libc::c_long)?;
    Ok(st)
}

/// Gives the entry of a descriptor (a link itself, when opened `O_PATH`) to `uid:gid`.
pub fn chown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchownat on the descriptor itself (AT_EMPTY_PATH).
    check(unsafe {
        libc::fchownat(f.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
    } as libc::c_long)
    .map(drop)
}

/// Sets the mode of the file or directory `rel` below `top` (never through a link).
pub fn chmod(top: &File, rel: &Path, mode: u32, dir: bool) -> io::Result<()> {
    let flags = if dir { libc::O_RDONLY | libc::O_DIRECTORY } else { libc::O_RDONLY | libc::O_NONBLOCK };
    let f = open(top, rel, flags)?;
    let kind = stat(&f)?.st_mode & libc::S_IFMT;
    if kind != if dir { libc::S_IFDIR } else { libc::S_IFREG } {
        return Err(io::Error::other("changed kind while the runner worked on it"));
    }
    // SAFETY: fchmod on our descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode) } as libc::c_long).map(drop)
}

/// Removes the entry `rel` below `top` (not a directory; a link itself, never its target).
pub fn remove(top: &File, rel: &Path) -> io::Result<()> {
    let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => open(top, p, libc::O_PATH | libc::O_DIRECTORY)?,
        None => top.try_clone()?,
    };
    let name = CString::new(rel.file_name().unwrap_or_default().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: unlinkat relative to a directory descriptor of ours.
    check(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) } as libc::c_long).map(drop)
}
