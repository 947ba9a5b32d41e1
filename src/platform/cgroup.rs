//! Control groups for hooks: each hook runs in a cgroup of its own with a memory and a process
//! limit, which tells afterwards which limit was hit, and kills whatever is left in it.
//!
//! Both layouts the kernel offers are handled: the unified hierarchy (cgroup v2, where `memory`
//! and `pids` are enabled in `/sys/fs/cgroup`), and the legacy one (v1, a mount per controller,
//! as on hosts that still mount them so). The runner needs to be root, or to be given a delegated
//! v2 subtree; the sandbox refuses to run hooks otherwise (see `sandbox`).
//!
//! The filesystem interface is a handful of files; the maintained crate (cgroups-rs) brings a
//! D-Bus stack it cannot leave out, for nothing used here.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where hooks' cgroups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v2: one directory, `memory` and `pids` enabled for its children.
    Unified(PathBuf),
    /// cgroup v1: a directory in the `memory` hierarchy and one in the `pids` hierarchy, and
    /// one in the `cpu` hierarchy where the kernel mounts it.
    Legacy { memory: PathBuf, pids: PathBuf, cpu: Option<PathBuf> },
}

/// Limits of one hook's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub processes: u32,
}

/// Which limit stopped something in a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    OutOfMemory,
    TooManyProcesses,
}

/// The mount points of the cgroup file systems: (v2 mount, v1 controller mounts).
fn mounts() -> (Option<PathBuf>, Vec<(String, PathBuf)>) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut unified = None;
    let mut legacy = Vec::new();
    for line in info.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        match (right.next(), right.nth(1)) {
            (Some("cgroup2"), _) => unified = Some(PathBuf::from(mount)),
            (Some("cgroup"), Some(options)) => {
                for option in options.split(',') {
                    legacy.push((option.to_owned(), PathBuf::from(mount)));
                }
            }
            _ => {}
        }
    }
    (unified, legacy)
}

/// This process's cgroup in the hierarchy of `controller` ("" for v2), from /proc/self/cgroup.
fn own(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.trim_start_matches('/').to_owned())
    })
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("creating the cgroup {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

impl Cgroups {
    /// Finds where hooks' cgroups can be made, and makes the `pushgate` directory there. Err
    /// says why none can.
    pub fn detect() -> Result<Cgroups, String> {
        let (unified, legacy) = mounts();
        if let Some(root) = unified {
            let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| available.split_whitespace().any(|a| a == c);
            if has("memory") && has("pids") {
                return Cgroups::unified(&root);
            }
        }
        let find = |controller: &str| -> Result<PathBuf, String> {
            let (_, mount) = legacy.iter().find(|(c, _)| c == controller).ok_or_else(|| {
                format!("the kernel offers no `{controller}` cgroup controller (neither cgroup v2 nor v1 mounts it)")
            })?;
            // Under the runner's own cgroup where it is visible: the admin's bounds stay above.
            let nested = own(controller).map(|p| mount.join(p)).filter(|p| p.is_dir());
            let dir = nested.unwrap_or_else(|| mount.clone()).join("pushgate");
            mkdir(&dir)?;
            Ok(dir)
        };
        let memory = find("memory")?;
        let pids = find("pids")?;
        // Each cgroup a share of the CPU equal to its siblings' (cpu.shares 1024 each), where
        // the kernel has the controller: a project's hundred processes weigh as one cgroup.
        let cpu = find("cpu").ok();
        Ok(Cgroups::Legacy { memory, pids, cpu })
    }

    /// cgroup v2: `pushgate` at the top when the runner is in the root cgroup; else in the
    /// runner's own (delegated) cgroup, into whose leaf `runner` the runner moves first, since
    /// a v2 cgroup that has processes cannot give controllers to its children.
    fn unified(root: &Path) -> Result<Cgroups, String> {
        let own = own("").unwrap_or_default();
        let parent = root.join(&own);
        // `cpu` too where the kernel offers it (each child then weighs as its siblings, 100).
        let enable = |dir: &Path| {
            write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")
                .or_else(|_| write(&dir.join("cgroup.subtree_control"), "+memory +pids"))
        };
        if !own.is_empty() {
            if let Err(first) = enable(&parent) {
                let leaf = parent.join("runner");
                mkdir(&leaf)?;
                write(&leaf.join("cgroup.procs"), &std::process::id().to_string())
                    .map_err(|e| format!("{first}; moving the runner into {}: {e}", leaf.display()))?;
                enable(&parent)?;
            }
        } else {
            enable(&parent)?;
        }
        let dir = parent.join("pushgate");
        mkdir(&dir)?;
        enable(&dir)?;
        Ok(Cgroups::Unified(dir))
    }

    /// A new cgroup for one hook, with its limits set.
    pub fn create(&self, limits: Limits) -> Result<Cgroup, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("hook-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.named(&name, limits)
    }

    /// The cgroup `name` (made if missing) with its limits set: an app's, which outlives the
    /// runner ([`Cgroup::keep`]) and is found again by its name when the app starts again.
    pub fn named(&self, name: &str, limits: Limits) -> Result<Cgroup, String> {
        let cgroup = match self {
            Cgroups::Unified(base) => Cgroup { dirs: vec![base.join(&name)], unified: true },
            Cgroups::Legacy { memory, pids, cpu } => {
                let mut dirs = vec![memory.join(name), pids.join(name)];
                dirs.extend(cpu.iter().map(|cpu| cpu.join(name)));
                Cgroup { dirs, unified: false }
            }
        };
        for dir in &cgroup.dirs {
            mkdir(dir)?;
        }
        let memory = limits.memory_bytes.to_string();
        let processes = limits.processes.to_string();
        if cgroup.unified {
            let dir = &cgroup.dirs[0];
            write(&dir.join("memory.max"), &memory)?;
            let _ = write(&dir.join("memory.swap.max"), "0"); // absent without swap accounting
            write(&dir.join("pids.max"), &processes)?;
        } else {
            write(&cgroup.dirs[0].join("memory.limit_in_bytes"), &memory)?;
            let memsw = cgroup.dirs[0].join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &memory)?; // no escape into swap
            }
            write(&cgroup.dirs[1].join("pids.max"), &processes)?;
        }
        Ok(cgroup)
    }
}

/// One hook's cgroup; its processes are killed and the cgroup removed when it is dropped.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    unified: bool,
}

/// The `cgroup.procs` files of a cgroup, opened before a fork so that the child can join them
/// with nothing but write(2), which is all a child may do between fork and exec.
pub struct Joiner {
    fds: Vec<libc::c_int>,
}

impl Joiner {
    /// Moves the calling process into the cgroup. Async-signal-safe: for a `pre_exec` hook.
    pub fn join(&self) -> std::io::Result<()> {
        for &fd in &self.fds {
            // SAFETY: write(2) on an fd this struct owns, from a buffer that lives through the call.
            if unsafe { libc::write(fd, b"0\n".as_ptr().cast(), 2) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        for &fd in &self.fds {
            // SAFETY: fd was opened by Cgroup::joiner and is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

impl Cgroup {
    pub fn joiner(&self) -> Result<Joiner, String> {
        let mut joiner = Joiner { fds: Vec::new() };
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: open(2) with a NUL-terminated path; close-on-exec, so no program keeps it.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(format!("opening {}: {}", path.display(), std::io::Error::last_os_error()));
            }
            joiner.fds.push(fd);
        }
        Ok(joiner)
    }

    /// The limit that stopped something in the cgroup, if one did.
    pub fn hit(&self) -> Option<Hit> {
        let count = |file: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        let (memory, pids) = if self.unified { (&self.dirs[0], &self.dirs[0]) } else { (&self.dirs[0], &self.dirs[1]) };
        let oom = if self.unified {
            count(memory.join("memory.events"), "oom_kill ")
        } else {
            count(memory.join("memory.oom_control"), "oom_kill ")
        };
        if oom > 0 {
            return Some(Hit::OutOfMemory);
        }
        (count(pids.join("pids.events"), "max ") > 0).then_some(Hit::TooManyProcesses)
    }

    /// Whether any process is left in it.
    fn populated(&self) -> bool {
        self.dirs.iter().any(|d| std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()))
    }

    /// Kills every process in it and waits (up to five seconds) for them to be gone.
    pub fn kill(&self) {
        let since = Instant::now();
        while self.populated() && since.elapsed() < Duration::from_secs(5) {
            if self.unified && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            for dir in &self.dirs {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
                        // SAFETY: kill(2) has no memory preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Cgroup {
    /// The cgroup of these directories (an app's, kept by an earlier runner): dropped, its
    /// processes are killed and it is removed.
    pub fn at(dirs: Vec<PathBuf>) -> Cgroup {
        let unified = dirs.len() == 1;
        Cgroup { dirs, unified }
    }

    /// Its directories (one under cgroup v2; memory's and pids' under v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Kills every process in it and leaves it (empty) for the next to start in it.
    pub fn kill_and_keep(self) {
        self.kill();
        self.keep();
    }

    /// Leaves the cgroup and its processes as they are when this value goes (an app's: its
    /// processes outlive the runner).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
