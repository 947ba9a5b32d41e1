//! Who the served processes run as. A runner started as root drops privileges for everything
//! it serves: each project's apps (PHP-FPM pools, start commands) run as a system user of
//! their own, `pgapp-NAME-HASH`, and the router's workers as `pushgate-web`; none of them is
//! root or the user that owns the repositories, and none can write a release. A runner that
//! is not root cannot switch users: its apps run as itself, and every deploy says so.

use std::ffi::CString;

/// A system user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user of the web server's workers.
pub const WEB_USER: &str = "pushgate-web";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The user named `name`, if it exists.
pub fn lookup(name: &str) -> Option<User> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage, read at once, or null.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points at a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(User { name: name.to_owned(), uid, gid })
}

/// The system user `name`, created (no home, no login) when missing. Needs root.
pub fn ensure(name: &str) -> Result<User, String> {
    if let Some(user) = lookup(name) {
        return Ok(user);
    }
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
        ])
        .arg(name)
        .output()
        .map_err(|e| format!("creating user {name}: useradd: {e}"))?;
    // Two runners may create it at once: the user existing afterwards is what matters.
    lookup(name)
        .ok_or_else(|| format!("creating user {name}: useradd failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

/// The user a project's apps run as (`pgapp-` and the project's directory name, at most 32
/// characters), or None when the runner cannot switch users.
pub fn app_user(project_key: &str) -> Result<Option<User>, String> {
    if !is_root() {
        return Ok(None);
    }
    ensure(&app_user_name(project_key)).map(Some)
}

/// The name of a project's user: `pgapp-NAME-HASH`.
pub fn app_user_name(project_key: &str) -> String {
    let (name, hash) = project_key.rsplit_once('-').unwrap_or((project_key, ""));
    let name: String = super::routes::label(name).chars().take(16).collect();
    format!("pgapp-{name}-{hash}")
}

/// The user of the router's workers: `pushgate-web` under root, else the runner itself.
pub fn web_user() -> Result<Option<User>, String> {
    if is_root() {
        ensure(WEB_USER).map(Some)
    } else {
        Ok(None)
    }
}

/// Gives `path` (below `within`, below `data`) and everything in it to `user`, and lets it
/// reach `path`: `data` and `within` become traversable (not listable) by others.
pub fn give(
    data: &std::path::Path,
    within: &std::path::Path,
    path: &std::path::Path,
    user: &User,
) -> std::io::Result<()> {
    reachable(data, within, user)?;
    chown_tree(path, user)
}

/// Makes `within` (below the data directory `data`) reachable by `user`, or says which
/// directory above the data directory, the admin's, shuts the user out.
pub fn reachable(data: &std::path::Path, within: &std::path::Path, user: &User) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Directories above the data directory are the admin's: say which one shuts the user out.
    for above in data.ancestors().skip(1) {
        let mode = std::fs::metadata(above)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(std::io::Error::other(format!(
                "{} (mode {:o}) keeps other users out, so the project's user {} cannot reach the data directory \
                 below it: make it traversable (chmod o+x) or move the data directory",
                above.display(),
                mode & 0o777,
                user.name
            )));
        }
    }
    for dir in [data, within] {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
        }
    }
    Ok(())
}

/// Gives `path` and everything below it to `user`: links themselves, never their targets.
///
/// Root walks a tree the project's user can change while it walks (its running app, a process
/// that kept a directory open): by file descriptor, never by path. Each entry is opened from its
/// parent's descriptor without following a link (`O_PATH | O_NOFOLLOW`), checked and changed
/// through that descriptor; a directory is entered through it. A directory swapped for a link
/// meanwhile is a link when opened: it is given as a link and not entered. A file with other
/// hard links that is not the user's already is left as it is (a link to a file elsewhere).
pub fn chown_tree(path: &std::path::Path, user: &User) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let fd = beneath::open_path(libc::AT_FDCWD, &c)?;
    beneath::chown_entry(fd, user, 0)
}

mod beneath {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use super::User;

    /// How deep a tree is walked (a tree deeper than this is refused, not followed).
    const MAX_DEPTH: usize = 256;

    fn check(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// `name` below `dir`, the entry itself (a link is not followed).
    pub fn open_path(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
        // SAFETY: openat with a valid C string; the descriptor is owned at once.
        let fd = check(unsafe { libc::openat(dir, name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
        // SAFETY: fd is a new descriptor of ours.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn stat(fd: &OwnedFd) -> io::Result<libc::stat> {
        // SAFETY: fstat writes into the struct it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        Ok(st)
    }

    /// Gives the entry `fd` (opened by `open_path`) to `user`, and what is below it.
    pub fn chown_entry(fd: OwnedFd, user: &User, depth: usize) -> io::Result<()> {
        let st = stat(&fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        let foreign_link = kind != libc::S_IFDIR && st.st_nlink > 1 && st.st_uid != user.uid;
        if !foreign_link && (st.st_uid != user.uid || st.st_gid != user.gid) {
            // SAFETY: fchownat on our descriptor itself (AT_EMPTY_PATH): the entry checked above.
            check(unsafe {
                libc::fchownat(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    user.uid,
                    user.gid,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if kind != libc::S_IFDIR {
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Err(io::Error::other(format!("a tree deeper than {MAX_DEPTH} directories")));
        }
        // The directory itself, to list it: through the entry's descriptor, so it is the one
        // checked.
        // SAFETY: openat relative to our O_PATH descriptor of a directory.
        let dir = check(unsafe {
            libc::openat(fd.as_raw_fd(), c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
        })?;
        // SAFETY: dir is ours; fdopendir takes it over (closedir closes it).
        let stream = unsafe { libc::fdopendir(dir) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: dir is still ours when fdopendir failed.
            unsafe { libc::close(dir) };
            return Err(e);
        }
        struct Stream(*mut libc::DIR);
        impl Drop for Stream {
            fn drop(&mut self) {
                // SAFETY: the stream is ours and closed once.
                unsafe { libc::closedir(self.0) };
            }
        }
        let stream = Stream(stream);
        let mut names: Vec<CString> = Vec::new();
        loop {
            // SAFETY: readdir on our open stream; the entry is read before the next call.
            let entry = unsafe { libc::readdir(stream.0) };
            if entry.is_null() {
                break;
            }
            // SAFETY: d_name is a NUL-terminated name inside the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        // SAFETY: dirfd of our open stream.
        let dir_fd = unsafe { libc::dirfd(stream.0) };
        for name in names {
            match open_path(dir_fd, &name) {
                Ok(child) => chown_entry(child, user, depth + 1)?,
                // Gone meanwhile: nothing to give.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
