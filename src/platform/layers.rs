//! A build directory made of layers instead of a copy: the project's exported tree as a
//! read-only lower layer, the build's writes in an upper layer of its own (overlayfs), so that
//! a build of a commit that changed one file writes one file before its hook runs.
//!
//! The lower tree is the runner's (root's, as the shared unpacked trees are, whose files it
//! becomes). The build runs as the project's user and must be able to write any file of its
//! tree as it could in a copy: the lower tree is mounted *id-mapped* (root's files appear as the
//! project user's) and read-only, and the overlay copies a file up into the build's layer on
//! its first write. Nothing the build does reaches the lower tree.
//!
//! The mounts live in a mount namespace of one thread ([`in_private_mounts`]): the hooks it
//! starts inherit them, nothing else on the host sees them, and they go away with the thread.
//! This needs root (mounting an overlay and an id-mapped mount) and Linux 5.19 or later
//! (id-mapped overlay layers); [`Layered::mount`] fails otherwise and the caller exports a copy.
//!
//! No maintained crate wraps `open_tree`, `mount_setattr` and `move_mount` (nix and rustix stop
//! short of `mount_setattr`): they are called through libc here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The layers of one build: `lower` (read-only, the project's tree), `upper` and `work` (the
/// build's), mounted together at `merged`.
pub struct Layered {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub merged: PathBuf,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("a path holds a NUL byte"))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Runs `f` on a thread of its own whose mounts are its own (a private copy of the host's):
/// what `f` mounts, and the processes it starts see, vanishes with the thread.
pub fn in_private_mounts<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let span = tracing::Span::current(); // the job's, for what the thread logs
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _job = span.enter();
                // SAFETY: unshare and mount with valid arguments; they act on this thread only
                // (CLONE_NEWNS implies CLONE_FS: this thread's root and cwd become its own).
                unsafe {
                    check(libc::unshare(libc::CLONE_NEWNS) as libc::c_long)?;
                    let root = c"/";
                    check(libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) as libc::c_long)?;
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A user namespace whose root is `uid`/`gid` on the host: what an id-mapped mount needs to
/// show root's files as that user's. Made by a short-lived child (a multithreaded process
/// cannot enter a new user namespace itself).
fn user_namespace(uid: u32, gid: u32) -> io::Result<OwnedFd> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("cat");
    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    // SAFETY: unshare is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?; // returns once the child has exec'd: it is in the namespace
    let made = (|| {
        let proc = PathBuf::from(format!("/proc/{}", child.id()));
        std::fs::write(proc.join("uid_map"), format!("0 {uid} 1\n"))?;
        std::fs::write(proc.join("setgroups"), "deny")?;
        std::fs::write(proc.join("gid_map"), format!("0 {gid} 1\n"))?;
        let ns = cstring(&proc.join("ns/user"))?;
        // SAFETY: open with a valid path; the fd is owned below.
        let fd = check(unsafe { libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } as libc::c_long)?;
        // SAFETY: fd was just opened and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    })();
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    made
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts `source` at `target` read-only, its root-owned entries shown as `uid`/`gid`'s.
fn mount_idmapped(source: &Path, target: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let userns = user_namespace(uid, gid)?;
    let (source, target) = (cstring(source)?, cstring(target)?);
    // SAFETY: the new mount API with valid pointers; the tree fd is owned below.
    unsafe {
        let tree = check(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        ))?;
        let tree = OwnedFd::from_raw_fd(tree as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

impl Layered {
    /// The layers of a build whose merged tree is `merged`, kept in `layers` (a directory of
    /// the runner's that only it can enter: `lower` must not be reachable by the build's user
    /// other than through the overlay).
    pub fn new(lower: &Path, layers: &Path, merged: &Path) -> Layered {
        Layered { lower: lower.to_owned(), upper: layers.join("upper"), merged: merged.to_owned() }
    }

    /// Mounts the layers (in the calling thread's mount namespace: see [`in_private_mounts`]):
    /// the merged tree is `uid`/`gid`'s, as an exported copy given to them would be.
    pub fn mount(&self, uid: u32, gid: u32) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let layers = self.upper.parent().unwrap_or(&self.upper).to_owned();
        std::fs::DirBuilder::new().mode(0o700).create(&layers)?;
        let (lower, work) = (layers.join("lower"), layers.join("work"));
        for dir in [&lower, &self.upper, &work, &self.merged] {
            std::fs::create_dir_all(dir)?;
        }
        std::os::unix::fs::chown(&self.upper, Some(uid), Some(gid))?;
        std::fs::set_permissions(&self.upper, std::fs::Permissions::from_mode(0o755))?;
        mount_idmapped(&self.lower, &lower, uid, gid)?;
        // Every entry of the merged tree is then either the upper layer's own file or the lower
        // tree's at the same path: no redirected directories, no metadata-only copies. The
        // layers are thrown away after the build, never mounted again: `volatile`, or the
        // unmount would sync the whole file system under the upper layer (seconds on a busy
        // disk, during which the sandbox's last process cannot finish exiting).
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,volatile",
            lower.display(),
            self.upper.display(),
            work.display()
        );
        if [&lower, &self.upper, &work].iter().any(|p| p.to_string_lossy().contains([',', ':'])) {
            return Err(io::Error::other("a layer's path holds a comma or a colon"));
        }
        let (kind, merged, options) = (c"overlay", cstring(&self.merged)?, CString::new(options)?);
        // SAFETY: mount with valid C strings.
        check(unsafe { libc::mount(kind.as_ptr(), merged.as_ptr(), kind.as_ptr(), 0, options.as_ptr().cast()) }
            as libc::c_long)?;
        Ok(())
    }
}

/// Whether builds in layers work on this machine (root, overlayfs, id-mapped layers): tried
/// once per process on a tiny tree under `scratch` (a directory of the runner's).
pub fn supported(scratch: &Path) -> Result<(), String> {
    static SUPPORTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    SUPPORTED
        .get_or_init(|| {
            let dir = scratch.join(format!("layers-probe-{}", std::process::id()));
            let tried = (|| {
                std::fs::create_dir_all(dir.join("tree"))?;
                std::fs::write(dir.join("tree/file"), "")?;
                let layered = Layered::new(&dir.join("tree"), &dir.join("layers"), &dir.join("merged"));
                // SAFETY: getuid and getgid have no preconditions.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                in_private_mounts(|| {
                    layered.mount(uid.max(1), gid.max(1))?;
                    std::fs::write(dir.join("merged/file"), "written")?;
                    Ok::<_, io::Error>(())
                })?
            })();
            let _ = std::fs::remove_dir_all(&dir);
            tried.map_err(|e| e.to_string())
        })
        .clone()
}
