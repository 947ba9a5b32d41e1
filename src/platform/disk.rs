//! A bound on what an environment's apps write: each app's mounts live on a filesystem of the
//! size it declares (`disk`, in MB).
//!
//! ```text
//! ENV/disks/APP.ext4   the app's filesystem: an ext4 image, its space reserved on the host
//!                      (or sparse, `disk_reserve: false`), root's alone
//! ENV/mounts/          root's (mode 755): nothing but root puts a name where root mounts
//! ENV/mounts/APP/      the image mounted (a loop device, freed when unmounted), its root the
//!                      project's user's; `APP/SOURCE_PATH` are the app's mounts
//! ```
//!
//! An image rather than quotas: project quotas need a filesystem made or tuned for them (ext4's
//! `project,quota` features, xfs' `prjquota`), which the admin's data directory seldom is; an
//! image works on any filesystem, gives `ENOSPC` at exactly the declared size
//! to that app alone, and grows while mounted. A declared size smaller than the image's is kept
//! as it is (ext4 does not shrink while mounted) unless more than that is already in use.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::users::User;

/// The size a disk is given, and whether the host's space is reserved for all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub mb: u64,
    /// The image's blocks allocated on the host at once (`fallocate`): a full host can then
    /// never fail a write inside it. Without, the image is sparse.
    pub reserve: bool,
}

/// What an app declaring no `disk` gets (or the policy's most, if smaller).
pub const DEFAULT_MB: u64 = 2048;
/// The most an app may declare, unless the project's policy says otherwise (`disk_mb`).
pub const MAX_MB: u64 = 51200;

const MIB: u64 = 1024 * 1024;

/// The images of environment `env`.
pub fn images(env: &Path) -> PathBuf {
    env.join("disks")
}

/// Whether this runner can give apps their own filesystems: as root, with loop devices and
/// `mkfs.ext4` (e2fsprogs). Without, the mounts stay plain directories of the data directory.
pub fn usable() -> Result<(), String> {
    if !super::users::is_root() {
        return Err("the runner is not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("this host has no loop devices (/dev/loop-control)".into());
    }
    match Command::new("mkfs.ext4").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("mkfs.ext4 is not installed (Debian: apt-get install e2fsprogs)".into()),
    }
}

/// Makes `ENV/mounts/APP` app `app`'s own filesystem of `mb` MB (`None`: as it is), the project
/// user's: made, mounted again (after a restart of the host), grown; files a plain directory
/// held there (an environment deployed before disks were bounded, or a copy of its parent's) are
/// moved onto it, and where a disk cannot grow in use, it grows unmounted. Both stop the
/// environment's processes first (`stop`): they would keep the old view. Returns what the deploy
/// log should say.
pub fn bound(
    env: &Path,
    app: &str,
    size: Option<Size>,
    user: &User,
    stop: &mut dyn FnMut(),
) -> Result<Vec<String>, String> {
    if app.is_empty() || app.contains('/') || app.starts_with('.') {
        return Err(format!("`{app}` cannot name a disk"));
    }
    let mounts = env.join("mounts");
    root_dir(&mounts, 0o755)?;
    root_dir(&images(env), 0o700)?;
    // One at a time (the deploy, the serving runner mounting again after a restart): an image
    // mounted twice would be damaged.
    let _lock = lock(env)?;
    let image = images(env).join(format!("{app}.ext4"));
    let dir = mounts.join(app);
    // Only a directory stays where root mounts (mounts/ was the project's user's before).
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if !m.is_dir() => {
            std::fs::remove_file(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            make_dir(&dir)?;
        }
        Ok(_) => {}
        Err(_) => make_dir(&dir)?,
    }
    let mut said = Vec::new();
    if !is_mounted(&dir)? {
        let fresh = !image.exists();
        if fresh {
            let size = size.unwrap_or(Size { mb: DEFAULT_MB, reserve: true });
            let mb = size.mb;
            make(&image, size, user)?;
            said.push(format!("app `{app}` has its own disk of {mb} MB"));
        }
        if is_empty(&dir) {
            mount(&image, &dir)?;
        } else {
            // Files kept in a plain directory: copied onto the disk (as the project's user:
            // they are its files), which then takes the directory's place; the processes that
            // write there stopped first, so that nothing they write is left behind.
            stop();
            // Names the project's user may have put there while mounts/ was its own (a link
            // to another environment's disk): whatever stands there goes, never followed.
            let side = mounts.join(format!(".{app}.moving"));
            fresh_dir(&side)?;
            mount(&image, &side)?;
            let copied = copy_as(user, &dir, &side);
            unmount(&side)?;
            let _ = std::fs::remove_dir(&side);
            let old = mounts.join(format!(".{app}.moved"));
            fresh_dir(&old)?;
            std::fs::remove_dir(&old).map_err(|e| format!("{}: {e}", old.display()))?;
            std::fs::rename(&dir, &old).map_err(|e| format!("{}: {e}", dir.display()))?;
            make_dir(&dir)?;
            mount(&image, &dir)?;
            match copied {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&old);
                    said.push(format!("app `{app}`: the files of its mounts were moved onto its disk"));
                }
                Err(why) => {
                    // What its user made unreadable to itself stays with the admin, out of its
                    // reach; the disk bounds the app from now on either way.
                    let kept = set_aside(env, &old)?;
                    said.push(format!(
                        "W: app `{app}`: some files of its mounts could not be moved onto its disk ({why}); \
                         they are kept for the admin in {}",
                        kept.display()
                    ));
                }
            }
        }
    }
    if let Some(size) = size {
        said.extend(resize(&image, &dir, app, size, stop)?);
    }
    Ok(said)
}

/// After the apps' disks are made: `ENV/mounts` holds nothing but them. What else stands
/// there (a directory of an app without mounts, an environment's files from before disks, a
/// name its user planted) would be written without a bound, or followed by root: it is set
/// aside where only the admin reaches it. Returns what the deploy log should say.
pub fn confine(env: &Path) -> Result<Vec<String>, String> {
    let mounts = env.join("mounts");
    root_dir(&mounts, 0o755)?;
    root_dir(&images(env), 0o700)?;
    let _lock = lock(env)?;
    let disks = apps(env);
    let mut said = Vec::new();
    for entry in std::fs::read_dir(&mounts).map_err(|e| format!("{}: {e}", mounts.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let mounted = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) && is_mounted(&path)?;
        match (mounted, disks.contains(&name)) {
            (true, true) => continue,
            (true, false) => unmount(&path)?,
            (false, _) => {}
        }
        let kept = set_aside(env, &path)?;
        said.push(format!("W: mounts/{name} is on no app's disk: set aside for the admin ({})", kept.display()));
    }
    Ok(said)
}

/// Moves `path` (the entry itself, a link as a link) into `ENV/disks/aside/`, root's alone.
fn set_aside(env: &Path, path: &Path) -> Result<PathBuf, String> {
    let aside = images(env).join("aside");
    root_dir(&aside, 0o700)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let to = aside.join(format!("{}-{}", name.trim_start_matches('.'), crate::core::Timestamp::now()));
    std::fs::rename(path, &to).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(to)
}

/// `dir` made an empty directory of root's: whatever stood there (a link, a file, a directory
/// or a filesystem mounted there) goes first, never followed.
fn fresh_dir(dir: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if is_mounted(dir)? {
                unmount(dir)?;
            }
            std::fs::remove_dir_all(dir).map_err(err)?;
        }
        Ok(_) => std::fs::remove_file(dir).map_err(err)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    make_dir(dir)
}

/// Mounts again every disk of environment `env` (after a restart of the host), at its size.
pub fn mount_all(env: &Path, user: &User, stop: &mut dyn FnMut()) -> Result<(), String> {
    for app in apps(env) {
        bound(env, &app, None, user, stop)?;
    }
    Ok(())
}

/// Unmounts every disk of environment `env` (its processes stopped), before it is removed or
/// its mounts replaced. Their images stay.
pub fn release(env: &Path) -> Result<(), String> {
    if apps(env).is_empty() {
        return Ok(());
    }
    let _lock = lock(env)?;
    for app in apps(env) {
        for dir in [env.join("mounts").join(&app), env.join("mounts").join(format!(".{app}.moving"))] {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) && is_mounted(&dir)? {
                unmount(&dir)?;
            }
        }
    }
    Ok(())
}

/// The apps of `env` that have a disk.
pub fn apps(env: &Path) -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(images(env))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".ext4")).map(str::to_owned))
        .collect();
    apps.sort();
    apps
}

/// The environment's disks' lock (in `ENV/disks`, root's alone), held until dropped.
fn lock(env: &Path) -> Result<std::fs::File, String> {
    super::lock_file(&images(env).join(".lock"))
}

/// Whether `dir` is a filesystem's root (its device differs from its parent's).
pub fn is_mounted(dir: &Path) -> Result<bool, String> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let (a, b) = (std::fs::symlink_metadata(dir), std::fs::symlink_metadata(parent));
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a.dev() != b.dev()),
        (Err(e), _) | (_, Err(e)) => Err(format!("{}: {e}", dir.display())),
    }
}

/// `dir`, created if needed, root's with `mode`: opened without following a link.
fn root_dir(dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(err)?;
    std::os::unix::fs::fchown(&file, Some(0), Some(0)).map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o755).create(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// A new image of `mb` MB whose root is `user`'s: reserved on the host (or sparse), no
/// blocks kept for root (the app gets all of it), no `lost+found` (a copy made as the
/// project's user could not read it). `nodiscard`: mkfs would otherwise punch the reserved
/// blocks out of the file.
fn make(image: &Path, Size { mb, reserve }: Size, user: &User) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| format!("{}: {e}", image.display());
    let partial = image.with_extension("ext4.new");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(err)?;
    file.set_len(mb * MIB).map_err(err)?;
    if reserve {
        if let Err(e) = allocate(&file, 0, mb * MIB) {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    drop(file);
    let owner = format!("root_owner={}:{},lazy_itable_init=1,lazy_journal_init=1,nodiscard", user.uid, user.gid);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0", "-E", &owner]).arg(&partial))?;
    // Its lost+found goes (e2fsck makes it again if it ever needs one).
    let at = partial.with_extension("mnt");
    let _ = std::fs::remove_dir(&at);
    make_dir(&at)?;
    mount(&partial, &at)?;
    let removed = std::fs::remove_dir(at.join("lost+found"));
    unmount(&at)?;
    let _ = std::fs::remove_dir(&at);
    removed.map_err(|e| format!("{}: {e}", at.display()))?;
    std::fs::rename(&partial, image).map_err(err)
}

/// Mounted without zeroing its inode tables in the background (`noinit_itable`): the image
/// stays as sparse as what is written in it.
fn mount(image: &Path, at: &Path) -> Result<(), String> {
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nodev,nosuid,noatime,noinit_itable,errors=remount-ro"])
        .arg(image)
        .arg(at))
}

fn unmount(at: &Path) -> Result<(), String> {
    if umount(at, 0).is_ok() {
        return Ok(());
    }
    // A process that kept a file open there (its environment's processes are stopped): it
    // goes once that process lets go, and the name is free now.
    umount(at, libc::MNT_DETACH)
}

/// umount2(2) of `at`, never following a link there (`UMOUNT_NOFOLLOW`): the last component
/// of a name in a directory a project's user could once write may be a link to anything.
fn umount(at: &Path, flags: libc::c_int) -> Result<(), String> {
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags | libc::UMOUNT_NOFOLLOW) } == 0 {
        return Ok(());
    }
    Err(format!("unmounting {}: {}", at.display(), std::io::Error::last_os_error()))
}

/// Grows the image mounted at `dir` to `mb` MB; a smaller size is kept as it is unless more
/// is in use.
fn resize(
    image: &Path,
    dir: &Path,
    app: &str,
    Size { mb, reserve }: Size,
    stop: &mut dyn FnMut(),
) -> Result<Vec<String>, String> {
    let size = std::fs::metadata(image).map_err(|e| format!("{}: {e}", image.display()))?.len();
    let want = mb * MIB;
    // A grow cut short leaves the image longer than its filesystem: grown again.
    let behind = used_and_total(dir)?.1 < size / 8 * 7;
    if want == size && !behind {
        return Ok(Vec::new());
    }
    if want < size {
        let used = used_and_total(dir)?.0;
        if used > want {
            return Err(format!(
                "app `{app}` declares a disk of {mb} MB, but {} MB of its disk are in use: free space first",
                used.div_ceil(MIB)
            ));
        }
        return Ok(vec![format!(
            "W: app `{app}` declares {mb} MB: its disk stays at {} MB (a disk in use is not shrunk)",
            size / MIB
        )]);
    }
    if want > size {
        let file =
            std::fs::OpenOptions::new().write(true).open(image).map_err(|e| format!("{}: {e}", image.display()))?;
        if reserve {
            allocate(&file, size, want - size)?;
        }
        file.set_len(want).map_err(|e| format!("{}: {e}", image.display()))?;
    }
    let device = loop_device(image)?.ok_or_else(|| format!("the loop device of {} is not found", image.display()))?;
    run(Command::new("losetup").args(["-c", &device]))?;
    let grew = format!("app `{app}`: its disk grew from {} MB to {mb} MB", size.min(want) / MIB);
    if run(Command::new("resize2fs").arg(&device)).is_ok() {
        return Ok(vec![grew]);
    }
    // The kernel lets only CAP_SYS_RESOURCE grow a mounted ext4, which a runner in a container
    // may lack: grown unmounted, the environment's processes stopped meanwhile.
    stop();
    unmount_whole(dir)?;
    if mounted_elsewhere(image)? {
        // A process outside the environment's holds it in a namespace of its own: not touched.
        mount(image, dir)?;
        return Err(format!(
            "app `{app}`'s disk cannot grow: it cannot be grown in use here, and a process outside the \
             environment's keeps it mounted"
        ));
    }
    let checked = Command::new("e2fsck").args(["-f", "-p"]).arg(image).output();
    let grown = match checked {
        // 0: clean, 1: errors corrected.
        Ok(out) if matches!(out.status.code(), Some(0 | 1)) => run(Command::new("resize2fs").arg(image)),
        Ok(out) => Err(format!("e2fsck: {}", String::from_utf8_lossy(&out.stdout).trim())),
        Err(e) => Err(format!("e2fsck: {e}")),
    };
    mount(image, dir)?;
    grown?;
    Ok(vec![format!("{grew} (its processes stopped meanwhile: this runner cannot grow a disk in use)")])
}

/// Allocates `len` bytes of `file` from `offset` on the host (fallocate(2)), or says the host
/// has not the room.
fn allocate(file: &std::fs::File, offset: u64, len: u64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate(2) on a descriptor this function borrows.
    let done = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, len as libc::off_t) };
    if done == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::ENOSPC) => format!(
            "the host has not {} MB free to reserve for this disk: free space on the host, lower the disk, or \
             let disks be sparse (`disk_reserve: false` in sandbox.json)",
            len.div_ceil(MIB)
        ),
        _ => format!("reserving the disk's space: {e}"),
    })
}

/// The loop device `image` is attached to, if any.
fn loop_device(image: &Path) -> Result<Option<String>, String> {
    let out = Command::new("losetup").arg("-j").arg(image).output().map_err(|e| format!("losetup: {e}"))?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let device = listed.lines().next().and_then(|l| l.split(':').next()).unwrap_or("");
    Ok(device.starts_with("/dev/loop").then(|| device.to_owned()))
}

/// Whether the filesystem of `image` is still mounted somewhere once unmounted here (a mount
/// namespace that kept it): its loop device is then held exclusively. One left attached but
/// free (its release is not immediate) is detached.
fn mounted_elsewhere(image: &Path) -> Result<bool, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(device) = loop_device(image)? else { return Ok(false) };
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&device) {
        Ok(free) => {
            drop(free);
            let _ = run(Command::new("losetup").args(["-d", &device]));
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
        Err(_) => Ok(false), // gone meanwhile
    }
}

/// Unmounts `at`, not lazily: a file open there keeps it (and says so).
fn unmount_whole(at: &Path) -> Result<(), String> {
    umount(at, 0)
}

/// Bytes in use on the filesystem at `dir`, and its size.
fn used_and_total(dir: &Path) -> Result<(u64, u64), String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(format!("{}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    let block = s.f_frsize as u64;
    Ok(((s.f_blocks - s.f_bfree) as u64 * block, s.f_blocks as u64 * block))
}

/// Copies what `from` holds into `to` as `user` (links as links).
fn copy_as(user: &User, from: &Path, to: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cp = Command::new("cp");
    cp.args(["-a", "--no-target-directory"]).arg(from).arg(to).uid(user.uid).gid(user.gid);
    run(&mut cp)
}

fn run(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim()))
}
