//! The sandbox every hook runs in: code anyone with push access wrote, run on the server.
//!
//! Three layers, each stopping what the others do not:
//! - **bubblewrap** (Debian's `bwrap`) builds a new mount, PID, IPC, UTS and user namespace: the
//!   hook sees the system's programs and libraries read-only (`/usr`, `/etc`, `/opt`), a private
//!   `/tmp`, `/proc` of its own PID namespace, and only the directories of its own job: the build
//!   directory for `build`; the release (read-only, whoever the hook is) and the environment's
//!   mounts for `deploy` and `post_deploy`. Nothing else of the data directory (queue, logs,
//!   other projects, their variables), no repository. Bind mounts are not permission bits: a
//!   read-only bind stays read-only for root in the namespace too. Its user namespace has no
//!   capabilities and may not make another (`--disable-userns`). A build's network is the host's
//!   unless the project's policy turns it off (then only a loopback of its own); a deploy hook's
//!   and an app's is their environment's (`network`: only its services, where the runner is
//!   root), joined before bubblewrap starts.
//! - **The PID namespace** ends with its first process: when the hook's shell ends, is killed at
//!   its time limit, cancelled, or when the runner dies (`--die-with-parent`), the kernel kills
//!   every process the hook left (`sleep &`, double forks, `setsid`).
//! - **A cgroup per hook** (`cgroup`) bounds its memory (no swap) and its number of processes,
//!   and says afterwards which limit was hit, for the job's log; it is emptied and removed when
//!   the hook ends.
//!
//! Hooks also run as the project's own unprivileged user (`users`) when the runner is root.
//! A host where the sandbox cannot be built (no bubblewrap, user namespaces forbidden, as
//! AppArmor does on recent Ubuntu, no cgroup to write) makes `serve` refuse to start and say how
//! to fix it, unless the admin passes `--no-sandbox`, which every job's log then repeats.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::cgroup::{Cgroup, Cgroups, Hit, Limits};
use super::users::User;

/// How hooks are run on this runner.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// `--no-sandbox`: as the project's user (when root), with the runner's view of the host.
    Off,
    On {
        bwrap: PathBuf,
        cgroups: Cgroups,
        disable_userns: bool,
    },
}

/// The admin's policy for a project's hooks: `sandbox.json` in the data directory (for every
/// project) and in the bare repository's `pushgate/` (for one; its keys win).
/// `{"network": false, "memory_mb": 2048, "processes": 256, "time_limit_s": 1800, "connections": 50}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The build hook's network (default on: composer and npm need it). Deploy hooks always
    /// reach the network: their services are on it.
    pub network: Option<bool>,
    pub memory_mb: Option<u64>,
    pub processes: Option<u32>,
    pub time_limit_s: Option<u64>,
    /// Connections a project may hold at once on a shared MariaDB or PostgreSQL, shared among
    /// all its database users there (every environment's, every endpoint's): one project cannot
    /// take the server's `max_connections`.
    pub connections: Option<u32>,
    /// Where an environment's apps and deploy hooks may go out, through their proxy (`HOST:PORT`
    /// rules, see `egress`); HTTPS to any public address by default, `[]` nowhere.
    pub egress: Option<Vec<String>>,
    /// The largest disk (MB) an app may declare; an app declaring none gets 2048 MB, or this if
    /// smaller.
    pub disk_mb: Option<u64>,
    /// Whether an app's disk has its host space reserved when made or grown (true by
    /// default); `false` makes disks sparse, taking only what is written.
    pub disk_reserve: Option<bool>,
}

pub const DEFAULT_CONNECTIONS: u32 = 100;
pub const DEFAULT_MEMORY_MB: u64 = 4096;
pub const DEFAULT_PROCESSES: u32 = 1024;

impl Policy {
    /// `self` with the keys `over` sets replaced.
    pub fn overridden(self, over: Policy) -> Policy {
        Policy {
            network: over.network.or(self.network),
            memory_mb: over.memory_mb.or(self.memory_mb),
            processes: over.processes.or(self.processes),
            time_limit_s: over.time_limit_s.or(self.time_limit_s),
            connections: over.connections.or(self.connections),
            egress: over.egress.or(self.egress),
            disk_mb: over.disk_mb.or(self.disk_mb),
            disk_reserve: over.disk_reserve.or(self.disk_reserve),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB).max(16) * 1024 * 1024,
            processes: self.processes.unwrap_or(DEFAULT_PROCESSES).max(4),
        }
    }

    /// The egress rules, the default's where the policy names none.
    pub fn egress(&self) -> Vec<String> {
        match &self.egress {
            Some(rules) => rules.clone(),
            None => super::egress::DEFAULT_RULES.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// The disk (MB) an app gets for its mounts: what it declares, within the policy's most.
    pub fn disk(&self, declared: Option<i64>) -> Result<u64, String> {
        let most = self.disk_mb.unwrap_or(super::disk::MAX_MB);
        match declared {
            None => Ok(super::disk::DEFAULT_MB.min(most)),
            Some(mb) if mb > 0 && mb as u64 <= most => Ok(mb as u64),
            Some(mb) => Err(format!(
                "declares a disk of {mb} MB; this server gives an app at most {most} MB (`disk_mb` in the \
                 project's sandbox.json, set by the admin)"
            )),
        }
    }

    pub fn disk_reserve(&self) -> bool {
        self.disk_reserve.unwrap_or(true)
    }

    pub fn connections(&self) -> u32 {
        self.connections.unwrap_or(DEFAULT_CONNECTIONS).max(1)
    }

    pub fn time_limit(&self, default: Duration) -> Duration {
        self.time_limit_s.map(Duration::from_secs).unwrap_or(default)
    }
}

/// What one hook may see and use.
pub struct Jail<'a> {
    /// Directories it may write (the build directory, the environment's mounts).
    pub writable: Vec<&'a Path>,
    /// Directories it may read (the release).
    pub readable: Vec<&'a Path>,
    /// Directories that must stay out of sight even if they lie under a system directory (the
    /// data directory, the repository).
    pub hidden: Vec<&'a Path>,
    pub network: bool,
    /// The network it is on when `network` (its environment's namespace, joined before the
    /// sandbox is built); none: the host's.
    pub netns: Option<&'a Path>,
    pub limits: Limits,
}

/// A hook's command, ready to spawn, and the cgroup it will run in.
pub struct Prepared {
    pub command: Command,
    pub cgroup: Option<Cgroup>,
}

/// Where an app's bubblewrap writes its status (the sandboxed process's pid on the host).
const STATUS_FD: i32 = 9;

/// The system's directories a hook sees, read-only.
const SYSTEM: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

impl Sandbox {
    /// The sandbox this host can build, or why it cannot and how to fix that.
    pub fn detect() -> Result<Sandbox, String> {
        let escape = "or pass --no-sandbox to run hooks without one (every hook can then read and write \
                      what the runner can: other projects, the queue, the repositories)";
        let bwrap = find_program("bwrap")
            .ok_or_else(|| format!("bubblewrap is not installed (Debian: apt-get install bubblewrap); {escape}"))?;
        let cgroups = Cgroups::detect().map_err(|e| {
            format!(
                "the hooks' memory and process limits need a cgroup the runner may write ({e}): run the runner as \
                 root, or in a delegated cgroup v2 subtree (systemd: Delegate=yes); {escape}"
            )
        })?;
        let mut sandbox = Sandbox::On { bwrap, cgroups, disable_userns: true };
        // What fails before bubblewrap runs (making the probe's cgroup, joining it) is the
        // cgroup's fault, not the user namespaces': said as such.
        let probe = |sandbox: &Sandbox| -> Result<(), Failure> {
            let jail = Jail {
                writable: vec![],
                readable: vec![],
                hidden: vec![],
                network: false,
                netns: None,
                limits: probe_limits(),
            };
            let nobody = super::users::is_root().then(|| User { name: "nobody".into(), uid: 65534, gid: 65534 });
            let mut prepared =
                sandbox.command(&jail, nobody.as_ref(), Path::new("/"), "true", &[]).map_err(Failure::Cgroup)?;
            let out = prepared.command.output().map_err(|e| Failure::Cgroup(format!("starting bwrap in it: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Failure::Bwrap(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
            }
        };
        match probe(&sandbox) {
            Ok(()) => Ok(sandbox),
            Err(Failure::Bwrap(e)) if e.contains("disable-userns") => {
                // bubblewrap before 0.8: the rest of the sandbox still stands.
                if let Sandbox::On { disable_userns, .. } = &mut sandbox {
                    *disable_userns = false;
                }
                probe(&sandbox).map(|()| sandbox).map_err(|e| e.explain(escape))
            }
            Err(e) => Err(e.explain(escape)),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Sandbox::On { .. })
    }

    /// `program args` in `jail`, in the directory `cwd`, as `user` (when the runner is root).
    pub fn command(
        &self,
        jail: &Jail<'_>,
        user: Option<&User>,
        cwd: &Path,
        program: &str,
        args: &[&str],
    ) -> Result<Prepared, String> {
        use std::os::unix::process::CommandExt;
        let Sandbox::On { bwrap, cgroups, disable_userns } = self else {
            let mut command = Command::new(program);
            command.args(args).current_dir(cwd);
            if let Some(user) = user {
                command.uid(user.uid).gid(user.gid);
            }
            return Ok(Prepared { command, cgroup: None });
        };
        let mut command = Command::new(bwrap);
        command.args(bwrap_args(jail, cwd, *disable_userns, Kind::Hook)).arg("--").arg(program).args(args);
        // bwrap needs a working directory it can enter before it builds the namespace.
        command.current_dir("/");
        let cgroup = cgroups.create(jail.limits)?;
        let joiner = cgroup.joiner()?;
        let entry = Entry { joiner, netns: open_netns(jail)?, ids: user.map(|u| (u.uid, u.gid)) };
        let runner = std::process::id() as libc::pid_t;
        // SAFETY: the closure only calls async-signal-safe functions (write, setns, setgroups,
        // setgid, setuid, prctl, getppid), as a child between fork and exec must.
        unsafe {
            command.pre_exec(move || {
                entry.enter()?;
                // bubblewrap ties the sandbox to itself; this ties bubblewrap to the runner, from
                // the start (after the change of user, which clears it). A runner already gone
                // fails the spawn.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 || libc::getppid() != runner
                {
                    return Err(std::io::Error::other("the runner ended"));
                }
                Ok(())
            });
        }
        Ok(Prepared { command, cgroup: Some(cgroup) })
    }
}

impl Sandbox {
    /// `program args` of an app (a PHP-FPM master) in `jail`, as `user`, in the cgroup `name`
    /// (kept: the app outlives the runner, and is bounded by it whenever it starts again). In a
    /// PID namespace of its own, as its first process (it sees its own processes, not the
    /// host's), not tied to the runner: it must not daemonize. Bubblewrap tells the pid the
    /// host knows it by on the returned status pipe (`{"child-pid": N}`), read by
    /// `process::spawn_reporting`. None where apps run without a sandbox (`--no-sandbox`, or
    /// no sandbox on this host).
    pub fn app_command(
        &self,
        jail: &Jail<'_>,
        user: Option<&User>,
        cwd: &Path,
        name: &str,
        program: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Result<Option<(Command, Vec<PathBuf>, std::fs::File)>, String> {
        use std::os::unix::process::CommandExt;
        let Sandbox::On { bwrap, cgroups, disable_userns } = self else { return Ok(None) };
        let mut command = Command::new(bwrap);
        command.args(bwrap_args(jail, cwd, *disable_userns, Kind::App));
        command.args(["--json-status-fd", &STATUS_FD.to_string()]).arg("--").arg(program).args(args);
        command.current_dir("/");
        let cgroup = cgroups.named(&format!("app-{name}"), jail.limits)?;
        let joiner = cgroup.joiner()?;
        let dirs = cgroup.dirs().to_vec();
        cgroup.keep();
        let entry = Entry { joiner, netns: open_netns(jail)?, ids: user.map(|u| (u.uid, u.gid)) };
        let (status, status_w) = std::io::pipe().map_err(|e| format!("a pipe for the sandbox's status: {e}"))?;
        // SAFETY: the closure only calls async-signal-safe functions (write, setns, setgroups,
        // setgid, setuid, dup2, fcntl), as a child between fork and exec must.
        unsafe {
            command.pre_exec(move || {
                entry.enter()?;
                use std::os::fd::AsRawFd;
                let w = status_w.as_raw_fd();
                // The status pipe at its number, open across exec (dup2 clears close-on-exec;
                // already there, the flag is cleared by hand).
                let ok = if w == STATUS_FD {
                    libc::fcntl(w, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(w, STATUS_FD) == STATUS_FD
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Some((command, dirs, std::fs::File::from(std::os::fd::OwnedFd::from(status)))))
    }
}

impl Sandbox {
    /// The program line of a supervised app (a start command) in `jail`: bubblewrap, then
    /// `program args`; and the directories of its cgroup `app-NAME` (kept), which its
    /// supervisor joins before it starts it. The supervisor runs it as the project's user; the
    /// sandbox dies with the supervisor and shares its process group (the supervisor stops the
    /// group). None where apps run without a sandbox.
    pub fn supervised(
        &self,
        jail: &Jail<'_>,
        cwd: &Path,
        name: &str,
        program: &str,
        args: &[&str],
    ) -> Result<Option<(Vec<String>, Vec<PathBuf>)>, String> {
        let Sandbox::On { bwrap, cgroups, disable_userns } = self else { return Ok(None) };
        let mut argv = vec![bwrap.display().to_string()];
        argv.extend(
            bwrap_args(jail, cwd, *disable_userns, Kind::Supervised).iter().map(|a| a.to_string_lossy().into_owned()),
        );
        argv.push("--".into());
        argv.push(program.to_owned());
        argv.extend(args.iter().map(|a| a.to_string()));
        let cgroup = cgroups.named(&format!("app-{name}"), jail.limits)?;
        let dirs = cgroup.dirs().to_vec();
        cgroup.keep();
        Ok(Some((argv, dirs)))
    }
}

/// How a sandboxed process enters its jail, between fork and exec: its cgroup first, as root
/// (nothing it starts can ever be outside it), then its network, then its user.
struct Entry {
    joiner: super::cgroup::Joiner,
    netns: Option<std::fs::File>,
    ids: Option<(u32, u32)>,
}

impl Entry {
    /// Only async-signal-safe calls (write, setns, setgroups, setgid, setuid).
    fn enter(&self) -> std::io::Result<()> {
        self.joiner.join()?;
        if let Some(ns) = &self.netns {
            super::network::enter(ns)?;
        }
        become_user(self.ids)
    }
}

/// The network namespace a jail joins, opened (by the runner, before the fork).
fn open_netns(jail: &Jail<'_>) -> Result<Option<std::fs::File>, String> {
    match jail.netns.filter(|_| jail.network) {
        Some(ns) => std::fs::File::open(ns).map(Some).map_err(|e| format!("{}: {e}", ns.display())),
        None => Ok(None),
    }
}

/// Becomes `ids` (uid, gid) with no supplementary groups, in a child between fork and exec
/// (only async-signal-safe calls).
pub(crate) fn become_user(ids: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = ids {
        // SAFETY: setgroups, setgid and setuid have no memory-safety preconditions.
        if unsafe { libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 } {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whose sandbox: a hook's (its own PID namespace, dying with the runner), a daemon app's
/// (a PHP-FPM master: the first process of its own PID namespace, outliving the runner) or a
/// supervised app's (a PID namespace of its own, dying with its supervisor, in its process
/// group).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hook,
    App,
    Supervised,
}

/// What a limit hit means, for the job's log.
pub fn explain(hit: Hit, limits: Limits) -> String {
    match hit {
        Hit::OutOfMemory => format!(
            "out of memory: the hook's processes reached their limit of {} MB and the kernel killed one \
             (`memory_mb` in the project's sandbox.json)",
            limits.memory_bytes / 1024 / 1024
        ),
        Hit::TooManyProcesses => format!(
            "too many processes: the hook reached its limit of {} processes and a fork failed (`processes` in \
             the project's sandbox.json)",
            limits.processes
        ),
    }
}

fn probe_limits() -> Limits {
    Limits { memory_bytes: 64 * 1024 * 1024, processes: 16 }
}

/// Why the probe's sandbox could not be built: its cgroup (made, or joined before bubblewrap
/// starts), or bubblewrap itself (what it said).
#[derive(Debug)]
enum Failure {
    Cgroup(String),
    Bwrap(String),
}

impl Failure {
    fn explain(&self, escape: &str) -> String {
        match self {
            Failure::Cgroup(e) => format!(
                "the hooks' cgroup cannot be made or joined ({e}): the runner needs to write its cgroup's \
                 subtree (run it as root, or in a delegated cgroup v2 subtree: systemd's Delegate=yes); {escape}"
            ),
            Failure::Bwrap(stderr) => cannot(stderr, escape),
        }
    }
}

fn cannot(stderr: &str, escape: &str) -> String {
    format!(
        "bubblewrap cannot build a sandbox on this host ({stderr}). It needs unprivileged user namespaces: \
         `sysctl user.max_user_namespaces` above 0 (and `kernel.unprivileged_userns_clone=1` where it exists); \
         on Ubuntu 23.10 and later AppArmor forbids them unless bwrap has a profile that allows `userns` (or \
         `sysctl kernel.apparmor_restrict_unprivileged_userns=0`); {escape}"
    )
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// bubblewrap's arguments for `jail`.
fn bwrap_args(jail: &Jail<'_>, cwd: &Path, disable_userns: bool, kind: Kind) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        args.extend(items.iter().map(|i| i.as_ref().to_owned()));
    };
    match kind {
        Kind::Hook => push(&[&"--unshare-all", &"--die-with-parent", &"--new-session"]),
        Kind::App | Kind::Supervised => {
            // A PID namespace of its own: the app sees its own processes in /proc, never the
            // host's (other projects' pools and commands, the runner, the router).
            push(&[&"--unshare-user", &"--unshare-ipc", &"--unshare-uts", &"--unshare-cgroup-try", &"--unshare-pid"]);
            // A PHP-FPM master is its namespace's first process: the host signals it by the pid
            // bubblewrap reports (reload, stop), and it reaps what its workers leave.
            push(if kind == Kind::App { &[&"--new-session", &"--as-pid-1"] } else { &[&"--die-with-parent"] });
            if !jail.network {
                push(&[&"--unshare-net"]);
            }
        }
    }
    if disable_userns {
        push(&[&"--disable-userns"]);
    }
    if jail.network && kind == Kind::Hook {
        push(&[&"--share-net"]);
    }
    for dir in SYSTEM {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_symlink() => {
                if let Ok(target) = std::fs::read_link(dir) {
                    push(&[&"--symlink", &target, dir]);
                }
            }
            Ok(meta) if meta.is_dir() => push(&[&"--ro-bind", dir, dir]),
            _ => {}
        }
    }
    // A resolver configuration that links into /run (systemd-resolved) is followed.
    if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf") {
        if resolv.starts_with("/run") {
            push(&[&"--ro-bind-try", &resolv, &resolv]);
        }
    }
    push(&[&"--proc", &"/proc", &"--dev", &"/dev", &"--tmpfs", &"/tmp", &"--tmpfs", &"/var/tmp"]);
    if kind != Kind::Hook {
        // PHP's sessions where Debian keeps them: the app's own.
        push(&[&"--tmpfs", &"/var/lib/php/sessions"]);
    }
    // The data directory and the repository are an empty, read-only directory, wherever they
    // are (under /opt, or under the private /tmp when the data directory is in /tmp), with only
    // the job's own directories bound inside.
    let hidden: Vec<&&Path> = jail.hidden.iter().filter(|h| h.is_dir()).collect();
    for dir in &hidden {
        push(&[&"--tmpfs", dir]);
    }
    for dir in &jail.readable {
        push(&[&"--ro-bind", dir, dir]);
    }
    for dir in &jail.writable {
        push(&[&"--bind", dir, dir]);
    }
    for dir in &hidden {
        push(&[&"--remount-ro", dir]);
    }
    // The rest of the sandbox's own root (where bubblewrap made the mount points) is read-only.
    push(&[&"--remount-ro", &"/", &"--chdir", &cwd]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_cannot_be_written_is_not_called_a_user_namespace_problem() {
        let cgroup = Failure::Cgroup("/sys/fs/cgroup/pushgate/hook-1/cgroup.procs: Permission denied".into());
        let said = cgroup.explain("or pass --no-sandbox");
        assert!(said.contains("cgroup cannot be made or joined") && said.contains("Permission denied"), "{said}");
        assert!(!said.contains("user namespaces"), "{said}");
        let bwrap = Failure::Bwrap("bwrap: setting up uid map: Permission denied".into());
        assert!(bwrap.explain("or pass --no-sandbox").contains("unprivileged user namespaces"));
    }

    #[test]
    fn a_projects_policy_overrides_the_servers_key_by_key() {
        let server = Policy {
            network: Some(true),
            memory_mb: Some(1024),
            processes: None,
            time_limit_s: Some(60),
            ..Policy::default()
        };
        let project = Policy { network: Some(false), processes: Some(64), ..Policy::default() };
        let both = server.overridden(project);
        assert_eq!(both.network, Some(false));
        assert_eq!(both.limits(), Limits { memory_bytes: 1024 * 1024 * 1024, processes: 64 });
        assert_eq!(both.time_limit(Duration::from_secs(5)), Duration::from_secs(60));
        assert_eq!(Policy::default().limits().processes, DEFAULT_PROCESSES);
    }

    #[test]
    fn the_jail_binds_only_its_own_directories_after_the_system() {
        let tmp = std::env::temp_dir().join(format!("pushgate-jail-{}", std::process::id()));
        let (data, build) = (tmp.join("data"), tmp.join("data/builds/7"));
        std::fs::create_dir_all(&build).unwrap();
        let release = Path::new("/d/env/r/1");
        let jail = Jail {
            writable: vec![&build],
            readable: vec![release],
            hidden: vec![&data, Path::new("/nonexistent/repo.git")],
            network: false,
            netns: None,
            limits: probe_limits(),
        };
        let args: Vec<String> =
            bwrap_args(&jail, &build, true, Kind::Hook).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let _ = std::fs::remove_dir_all(&tmp);
        let line = args.join(" ");
        let (data, build) = (data.display(), build.display());
        assert!(!line.contains("--share-net") && !line.contains("repo.git"), "{line}");
        assert!(line.contains("--ro-bind /d/env/r/1 /d/env/r/1") && line.contains(&format!("--bind {build} {build}")));
        // The system first, then the hidden directory emptied, the job's directories inside it,
        // and the hidden directory made read-only.
        let at = |s: &str| line.find(s).unwrap_or(usize::MAX);
        assert!(at("--tmpfs /tmp") < at(&format!("--tmpfs {data}")), "{line}");
        assert!(at(&format!("--tmpfs {data}")) < at(&format!("--bind {build}")), "{line}");
        assert!(at(&format!("--bind {build}")) < at(&format!("--remount-ro {data}")), "{line}");
        assert!(line.ends_with(&format!("--remount-ro / --chdir {build}")), "{line}");
    }
}
