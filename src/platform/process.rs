//! The processes a site needs (nginx, PHP-FPM masters, supervisors of start commands) outlive
//! the runner that starts them: they are started in a session of their own, and found again by
//! their pid files, so a runner restart does not take a site down. (Under systemd, give the
//! runner's unit `KillMode=process` so stopping it does not stop them.)
//!
//! A start command (`web.commands.start`) runs under `pushgate-runner supervise`, which restarts
//! it when it dies (after 1 s, doubling to 30 s while it keeps dying) and stops its whole
//! process group on SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runner::shutdown::Shutdown;

/// Whose pid a pid file holds: what the process's command line must say for the pid to be
/// trusted. A pid file outlives its process (a crash, a reboot) and its pid may by then be
/// any other process's: signalling it, or taking it for a running server, would kill or hide
/// the wrong thing.
#[derive(Debug, Clone, Copy)]
pub enum Whose<'a> {
    /// nginx's master process for this configuration file (`-c FILE`).
    Nginx(&'a Path),
    /// A PHP-FPM master for this configuration file.
    PhpFpm(&'a Path),
    /// `pushgate-runner supervise` writing this very pid file.
    Supervisor,
}

impl Whose<'_> {
    /// Whether `cmdline` (the NUL-separated arguments of `/proc/PID/cmdline`) is this process,
    /// for `pid_file`.
    fn is(&self, cmdline: &[u8], pid_file: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // nginx and PHP-FPM rewrite their titles into one space-separated string.
        let title =
            String::from_utf8_lossy(&cmdline.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect::<Vec<_>>())
                .trim_end()
                .to_owned();
        match self {
            Whose::Nginx(conf) => {
                title.starts_with("nginx: master process ") && title.ends_with(&format!(" -c {}", conf.display()))
            }
            // Or its command line as started, before it titles itself (just started, and for an
            // instant after each reload, which executes it again).
            Whose::PhpFpm(conf) => {
                title == format!("php-fpm: master process ({})", conf.display())
                    || (args
                        .first()
                        .is_some_and(|a| a.rsplit(|b| *b == b'/').next().is_some_and(|n| n.starts_with(b"php-fpm")))
                        && args.windows(2).any(|w| w[0] == b"-y" && w[1] == conf.as_os_str().as_bytes()))
            }
            Whose::Supervisor => {
                args.get(1) == Some(&&b"supervise"[..])
                    && args.windows(2).any(|w| w[0] == b"--pid-file" && w[1] == pid_file.as_os_str().as_bytes())
            }
        }
    }
}

/// The pid a pid file names, when that process is alive (not a zombie) and is `whose`: never
/// a pid that another process took since (after a reboot, or a crash that left the file).
pub fn alive(pid_file: &Path, whose: Whose<'_>) -> Option<i32> {
    let pid = read_pid(pid_file)?;
    is_alive(pid, whose, pid_file).then_some(pid)
}

/// The number a pid file holds, read without trusting the file: not through a link, not from a
/// FIFO or a device (whose open or read would block the runner, or never end), at most a few
/// bytes. A pid file an earlier layout left in a project's directory is read this way too.
pub fn read_pid(pid_file: &Path) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(pid_file)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// Whether process `pid` is alive (not a zombie) and is `whose` (for `pid_file`).
pub fn is_alive(pid: i32, whose: Whose<'_>, pid_file: &Path) -> bool {
    is_alive_inner(pid, whose, pid_file).is_some()
}

fn is_alive_inner(pid: i32, whose: Whose<'_>, pid_file: &Path) -> Option<()> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // nginx's master and supervisors are the runner's own processes: one of another user with
    // the same command line (`exec -a`) is not taken for them. (A PHP-FPM master in the
    // sandbox runs as its project's user.)
    let owner_ok = match whose {
        Whose::PhpFpm(_) => true,
        // SAFETY: geteuid has no preconditions.
        Whose::Nginx(_) | Whose::Supervisor => owner(pid) == Some(unsafe { libc::geteuid() }),
    };
    (state != 'Z' && owner_ok && whose.is(&cmdline, pid_file)).then_some(())
}

/// Whether process `pid` is there and not a zombie, whatever it runs.
pub fn exists(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// The real user id of process `pid`.
fn owner(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Stops the process of a pid file (SIGTERM, then SIGKILL after `patience`) and removes the
/// file; a pid file naming another process than `whose` is only removed.
pub fn stop(pid_file: &Path, whose: Whose<'_>, patience: Duration) {
    if let Some(pid) = alive(pid_file, whose) {
        signal(pid, libc::SIGTERM);
        // Waited for by its pid, known to be its own: a server removes its pid file as it
        // begins to stop, not when it is gone.
        let since = Instant::now();
        while running(pid) && since.elapsed() < patience {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
        .is_some_and(|state| state != 'Z')
}

/// Stops processes that no pid file names (`first`, then SIGKILL after `patience` for those
/// still there).
pub fn stop_all(pids: &[i32], first: i32, patience: Duration) {
    let running = |pid: &i32| running(*pid);
    for pid in pids {
        signal(*pid, first);
    }
    let since = Instant::now();
    while pids.iter().any(running) && since.elapsed() < patience {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids.iter().filter(|p| running(p)) {
        signal(*pid, libc::SIGKILL);
    }
}

/// Runs `command` to its end in a session of its own (so it and what it forks never get the
/// runner's signals); Err with its output when it fails. For daemons that fork and return.
pub fn run_detached(command: &mut Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    let out = command.stdin(Stdio::null()).output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        Err(format!("{} {}", out.status, text.trim()))
    }
}

/// Starts `command` in a session of its own and does not wait for it: a thread reaps it if it
/// ends while the runner lives; otherwise it goes on after the runner.
pub fn spawn_detached(command: &mut Command) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    let mut child = command.stdin(Stdio::null()).spawn().map_err(|e| format!("{command:?}: {e}"))?;
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Starts `command` (a sandboxed app, see `Sandbox::app_command`) in a session of its own, not
/// waiting for it, and returns the pid the host knows the sandboxed process by, as bubblewrap
/// writes it on `status`. The command is dropped first: its copy of the pipe's other end with
/// it, so a bubblewrap that fails before it starts anything ends the wait.
pub fn spawn_reporting(mut command: Command, status: std::fs::File) -> Result<i32, String> {
    let what = format!("{command:?}");
    command.stdout(Stdio::null()).stderr(Stdio::null());
    spawn_detached(&mut command)?;
    drop(command);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(status), &mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("child-pid")?.as_i64())
        .map(|pid| pid as i32)
        .ok_or_else(|| format!("{what}: the sandbox did not start (bubblewrap said {:?})", line.trim()))
}

/// What `pushgate-runner supervise` runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Supervised {
    pub pid_file: PathBuf,
    pub log: PathBuf,
    pub dir: PathBuf,
    pub user: Option<(u32, u32)>,
    pub program: Vec<String>,
    /// The cgroup it runs in (its directories), joined by the supervisor before it starts the
    /// program; none: the supervisor's.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The network namespace it runs in (its environment's), joined by the supervisor (root)
    /// before it starts the program; none: the host's.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

impl Supervised {
    pub fn load(spec: &Path) -> Result<Supervised, String> {
        let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", spec.display()))
    }
}

/// The runner's binary (beside this one: the hook and the tests call it too).
pub fn runner_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let runner = exe.with_file_name("pushgate-runner");
    Ok(if runner.exists() { runner } else { exe })
}

/// Starts `pushgate-runner supervise` for `s` in a session of its own (it goes on after the
/// runner), with `env` as the program's whole environment.
pub fn start_supervisor(s: &Supervised, env: &[(String, String)]) -> Result<(), String> {
    let mut command = Command::new(runner_exe()?);
    command.arg("supervise").arg("--pid-file").arg(&s.pid_file).arg("--log").arg(&s.log).arg("--dir").arg(&s.dir);
    if let Some((uid, gid)) = s.user {
        command.arg("--uid").arg(uid.to_string()).arg("--gid").arg(gid.to_string());
    }
    for dir in &s.cgroups {
        command.arg("--cgroup").arg(dir);
    }
    if let Some(ns) = &s.netns {
        command.arg("--netns").arg(ns);
    }
    command.arg("--").args(&s.program);
    command.env_clear().envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.stdout(Stdio::null()).stderr(Stdio::null());
    spawn_detached(&mut command).map(|_| ())
}

/// Starts a supervised server (a service's instance), keeping its description in `spec` so
/// that it can be started again (after a reboot, or once its environment is active again).
pub fn start_supervised(s: &Supervised, spec: &Path) -> Result<(), String> {
    write_spec(s, spec)?;
    stop(&s.pid_file, Whose::Supervisor, Duration::from_secs(10));
    start_supervisor(s, &[("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())])
}

/// Writes the spec of a supervised server (mode 0600, in a directory of mode 0700): what root
/// reads to start it again.
pub fn write_spec(s: &Supervised, spec: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = spec.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    super::write_if_changed(spec, &serde_json::to_string_pretty(s).unwrap_or_default(), 0o600).map(|_| ())
}

/// Waits until `port` on 127.0.0.1 accepts connections (a server just started is handed to
/// the hooks only once it answers); Err when it does not within `within` or its supervisor
/// is gone.
pub fn wait_listening(port: u16, pid_file: &Path, within: Duration) -> Result<(), String> {
    let since = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if since.elapsed() > within {
            return Err(format!("nothing listens on port {port} after {} s", within.as_secs()));
        }
        // The supervisor writes its pid file first thing; without it after a second, it died.
        if since.elapsed() > Duration::from_secs(1) && alive(pid_file, Whose::Supervisor).is_none() {
            return Err(format!("its supervisor ended (pid file {})", pid_file.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server a spec describes: started again if its supervisor is gone (`run`), or stopped.
pub fn ensure_supervised(spec: &Path, run: bool) -> Result<(), String> {
    let s = Supervised::load(spec)?;
    match (run, alive(&s.pid_file, Whose::Supervisor)) {
        (true, None) => start_supervisor(&s, &[("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]),
        (false, Some(_)) => {
            stop(&s.pid_file, Whose::Supervisor, Duration::from_secs(10));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Keeps `s.program` running until SIGTERM: restarted when it ends, its output appended to the
/// log. Returns when stopped.
pub fn supervise(s: &Supervised) -> std::io::Result<()> {
    let stop = Arc::new(Shutdown::default());
    let child_pid = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])?;
    {
        let (stop, child_pid) = (stop.clone(), child_pid.clone());
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                stop.stop();
                let pid = child_pid.load(Ordering::SeqCst);
                if pid > 0 {
                    signal(-pid, libc::SIGTERM);
                }
            }
        });
    }
    // Its cgroup first: what it starts is in it from the start.
    for dir in &s.cgroups {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())?;
    }
    std::fs::write(&s.pid_file, std::process::id().to_string())?;
    let mut backoff = Duration::from_secs(1);
    while !stop.is_stopping() {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log)?;
        let mut command = Command::new(&s.program[0]);
        command.args(&s.program[1..]).current_dir(&s.dir).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        match &s.netns {
            Some(ns) => {
                // Opened for each start: the namespace is made again after a reboot. Entered
                // as root, then the user changes (std would change it before any pre_exec).
                let ns = std::fs::File::open(ns)?;
                let user = s.user;
                // SAFETY: the closure only calls setns, setgroups, setgid and setuid,
                // async-signal-safe, as a child between fork and exec must.
                unsafe {
                    command.pre_exec(move || {
                        super::network::enter(&ns)?;
                        super::sandbox::become_user(user)
                    })
                };
            }
            // std drops root's supplementary groups when it changes the uid.
            None => {
                if let Some((uid, gid)) = s.user {
                    command.uid(uid).gid(gid);
                }
            }
        }
        let started = Instant::now();
        let status = match command.spawn() {
            Ok(mut child) => {
                child_pid.store(child.id() as i32, Ordering::SeqCst);
                if stop.is_stopping() {
                    signal(-(child.id() as i32), libc::SIGTERM);
                }
                let status = child.wait();
                signal(-(child.id() as i32), libc::SIGKILL); // what it left behind in its group
                child_pid.store(0, Ordering::SeqCst);
                status.map(|s| s.to_string())
            }
            Err(e) => Err(e),
        };
        if stop.is_stopping() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log)?;
        let said = match status {
            Ok(status) => format!("ended ({status})"),
            Err(e) => format!("could not start ({e})"),
        };
        let _ = writeln!(log, "pushgate: the app {said}; restarting in {} s", backoff.as_secs());
        if stop.sleep(backoff) {
            break;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    let _ = std::fs::remove_file(&s.pid_file);
    Ok(())
}
