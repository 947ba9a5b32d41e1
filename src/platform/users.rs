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

/// Gives `path` and everything below it to `user` (links themselves, never their targets).
pub fn chown_tree(path: &std::path::Path, user: &User) -> std::io::Result<()> {
    let mut todo = vec![path.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        std::os::unix::fs::lchown(&p, Some(user.uid), Some(user.gid))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                todo.push(entry?.path());
            }
        }
    }
    Ok(())
}
