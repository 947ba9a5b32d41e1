//! Running `hooks.build`, `hooks.deploy` and `hooks.post_deploy`, and the job's log.
//!
//! A hook runs as `sh -e -c SCRIPT` in its sandbox (`platform::sandbox`: its own namespaces and
//! cgroup) and its own process group, with only the environment the platform documents (plus
//! PATH and HOME), its output appended to the job's log, and a time limit after which the whole
//! sandbox is killed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Halt, HookFailure, RunnerError};
use crate::core::Timestamp;
use crate::platform::sandbox::{self, Jail, Prepared, Sandbox};
use crate::queue::Receiver;

/// How much of its hooks' output a job's log keeps: a hook that prints without end fills the
/// log, not the data directory's disk (where the queue must still record the job).
pub const HOOK_OUTPUT_LIMIT: u64 = 64 << 20;

/// The log of one job: phases with timestamps, and every command's output.
pub struct JobLog {
    path: PathBuf,
    file: File,
    /// The phase of the last line: the runner's own log notes each phase once, as it begins.
    phase: String,
    /// What its hooks may still write to it (of [`HOOK_OUTPUT_LIMIT`]).
    output_left: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// `text` with the paths of the data directory `data` as developers read them: an
/// environment's relative to it (`releases/3`, `mounts/app/var`), the others relative to the
/// data directory (`builds/2/`, `slugs/KEY.tar.zst`). The server's layout is the admin's.
pub fn developers_paths<'a>(data: &Path, text: &'a str) -> std::borrow::Cow<'a, str> {
    let prefix = format!("{}/", data.display().to_string().trim_end_matches('/'));
    if prefix == "/" || !text.contains(&prefix) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        out.push_str(&rest[..at]);
        rest = &rest[at + prefix.len()..];
        if let Some(inner) = rest.strip_prefix("environments/").and_then(|r| r.splitn(3, '/').nth(2)) {
            rest = inner;
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

impl JobLog {
    pub fn open(path: PathBuf) -> Result<JobLog, RunnerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RunnerError::Io {
                action: "creating",
                path: dir.to_owned(),
                source,
            })?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|source| RunnerError::Io {
            action: "opening the log",
            path: path.clone(),
            source,
        })?;
        let output_left = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(HOOK_OUTPUT_LIMIT));
        Ok(JobLog { path, file, phase: String::new(), output_left })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `2026-11-22T01:02:03.456Z [deploy] Switching current to release 12`. The developer reads
    /// paths of the data directory as [`developers_paths`] writes them; the runner's own log
    /// keeps them whole, for the admin.
    pub fn phase(&mut self, phase: &str, text: &str) {
        let data = self.path.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
        let _ = writeln!(self.file, "{} [{phase}] {}", Timestamp::now(), developers_paths(data, text));
        let _ = self.file.flush();
        if self.phase != phase {
            // In the job's span: the operator's log carries its id, environment and runner.
            tracing::info!(phase, "{text}");
            phase.clone_into(&mut self.phase);
        }
    }

    fn sink(&self) -> Result<File, RunnerError> {
        self.file.try_clone().map_err(|source| RunnerError::Io {
            action: "writing the log",
            path: self.path.clone(),
            source,
        })
    }

    /// A pipe for a command's output, copied into the log by a thread of its own up to what the
    /// job may still write; past that, the output is read and dropped (the command is not
    /// blocked), and the log says how much was left out. The thread ends when every writer
    /// is closed.
    fn capped_sink(&self) -> Result<(std::io::PipeWriter, std::thread::JoinHandle<()>), RunnerError> {
        let err = |source| RunnerError::Io { action: "writing the log", path: self.path.clone(), source };
        let (mut reader, writer) = std::io::pipe().map_err(err)?;
        let mut file = self.sink()?;
        let left = self.output_left.clone();
        let copier = std::thread::spawn(move || {
            use std::io::Read;
            use std::sync::atomic::Ordering;
            let mut buf = vec![0u8; 64 * 1024];
            let mut dropped = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let allowed =
                    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(l.saturating_sub(n as u64)));
                let keep = (allowed.unwrap_or(0)).min(n as u64) as usize;
                if keep > 0 && file.write_all(&buf[..keep]).is_err() {
                    dropped += keep as u64; // a full disk: the output is dropped, not the job
                }
                dropped += (n - keep) as u64;
            }
            if dropped > 0 {
                let _ = writeln!(
                    file,
                    "\n{} [log] W: {dropped} bytes of output were left out of this log (a job's log keeps {} MiB of \
                     its hooks' output)",
                    Timestamp::now(),
                    HOOK_OUTPUT_LIMIT >> 20
                );
            }
        });
        Ok((writer, copier))
    }
}

/// The verdict a previous attempt of this job wrote in its log and could not record (the queue
/// could not be written: a full disk, a database gone): its failure, if it failed. Such a job
/// is recorded as it ended, not run again.
pub fn unrecorded_failure(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(256 * 1024))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let last_claim = tail.rfind("[job] Job #")?;
    tail[last_claim..]
        .lines()
        .filter_map(|l| l.split_once(" [job] Failed: ").map(|(_, why)| why.to_owned()))
        .next_back()
}

/// One hook to run.
pub struct Hook<'a> {
    /// `build`, `deploy`, `post_deploy`
    pub name: &'static str,
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    /// Where the hook's process group is recorded while it runs.
    pub record: &'a Path,
    /// The project's user, when the runner can switch to it (it runs as root).
    pub user: Option<&'a crate::platform::users::User>,
    pub sandbox: &'a Sandbox,
    /// What the hook may see and use, and its limits.
    pub jail: Jail<'a>,
}

/// Kills a process group (a hook and everything it started).
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
    unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
}

/// Whether any process of the group is left.
fn group_exists(pgid: u32) -> bool {
    // SAFETY: as above; signal 0 only checks.
    unsafe { libc::kill(-(pgid as libc::pid_t), 0) == 0 }
}

/// The record of a running hook's process group, removed when the hook ends.
struct Recorded<'a>(&'a Path);

impl<'a> Recorded<'a> {
    fn write(path: &'a Path, pgid: u32) -> Recorded<'a> {
        let me = Receiver::of(pgid);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, format!("{} {} {}\n", me.host, me.pid, me.started.unwrap_or(0)));
        Recorded(path)
    }
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Stops the hook a dead runner left running in an environment (its record says which), so it
/// cannot run beside the next one. Returns what was done, for the log.
pub fn stop_leftover(record: &Path) -> Option<String> {
    let text = std::fs::read_to_string(record).ok()?;
    let _ = std::fs::remove_file(record);
    let mut fields = text.split_whitespace();
    let (host, pid, started) = (fields.next()?, fields.next()?.parse::<u32>().ok()?, fields.next()?.parse().ok()?);
    let left = Receiver { host: host.to_owned(), pid, started: Some(started).filter(|s| *s != 0) };
    let here = Receiver::of(pid);
    if left.host != here.host {
        return Some(format!("a hook left by a runner on {host} (process group {pid}) may still run there: stop it"));
    }
    // A pid is not reused while its group has members: if another process has the pid now,
    // nothing of the old group is left.
    if here.started.is_some() && left.alive() == Some(false) {
        return None;
    }
    if !group_exists(pid) {
        return None;
    }
    kill_group(pid);
    let since = Instant::now();
    while group_exists(pid) && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(format!("stopped the hooks an earlier attempt left running (process group {pid})"))
}

/// How a hook's wait ended when the hook did not end by itself.
enum Ended {
    Interrupted(super::Interrupt),
    TimedOut,
    Wait(std::io::Error),
}

/// Waits for a hook's process: a thread reaps it and rings the job's bell, which the lease's
/// loss and the runner's abort ring too. On an interruption or at the time limit, the whole
/// process group is killed (the script's children too) and reaped.
fn wait(mut child: std::process::Child, hook: &Hook<'_>, control: &super::Control) -> Result<ExitStatus, Ended> {
    let bell = control.bell();
    let pid = child.id();
    let started = Instant::now();
    let exited: std::sync::Mutex<Option<std::io::Result<ExitStatus>>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let status = child.wait();
            *exited.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            bell.ring();
        });
        let reaped = || exited.lock().unwrap_or_else(|e| e.into_inner()).take();
        loop {
            let seen = bell.generation();
            if let Some(status) = reaped() {
                return status.map_err(Ended::Wait);
            }
            let ended = match control.check() {
                Err(interrupted) => Some(Ended::Interrupted(interrupted)),
                Ok(()) if started.elapsed() >= hook.timeout => Some(Ended::TimedOut),
                Ok(()) => None,
            };
            if let Some(ended) = ended {
                kill_group(pid);
                return Err(ended); // the reaping thread ends with the process, before the scope does
            }
            bell.wait_change(seen, hook.timeout.saturating_sub(started.elapsed()));
        }
    })
}

/// Runs a hook; its output goes to the log. Err says what failed and how.
pub fn run(hook: &Hook<'_>, log: &mut JobLog, control: &super::Control) -> Result<(), Halt> {
    log.phase(hook.name, &format!("Running hook `{}` in {}:", hook.name, hook.cwd.display()));
    for line in hook.script.lines().filter(|l| !l.trim().is_empty()) {
        log.phase(hook.name, &format!("  $ {line}"));
    }
    if !hook.sandbox.is_on() {
        log.phase(
            hook.name,
            "W: this runner runs hooks without a sandbox (--no-sandbox): the hook can read and write what the \
             runner can",
        );
    }
    let (out, copier) = log.capped_sink()?;
    let err = out.try_clone().map_err(|source| RunnerError::Io {
        action: "writing the log",
        path: log.path.clone(),
        source,
    })?;
    let Prepared { mut command, cgroup } = hook
        .sandbox
        .command(&hook.jail, hook.user, hook.cwd, "sh", &["-e", "-c", hook.script])
        .map_err(RunnerError::Platform)?;
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", hook.cwd)
        .envs(hook.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let child = command.spawn().map_err(|source| RunnerError::Io {
        action: "starting sh for",
        path: hook.cwd.to_owned(),
        source,
    });
    drop(command); // its ends of the output pipe: the copier ends with the hook's last writer
    let child = child?;
    let _recorded = Recorded::write(hook.record, child.id());
    let started = Instant::now();
    let status = wait(child, hook, control);
    // Whatever the hook left (in its cgroup) dies with it; a limit hit is the hook's failure.
    let hit = cgroup.as_ref().and_then(|cgroup| {
        cgroup.kill();
        cgroup.hit()
    });
    // The output is in the log before the verdict. (Without a sandbox, a process the hook
    // left may hold the pipe: its output goes on being copied, within the job's limit.)
    let until = Instant::now() + Duration::from_secs(2);
    while !copier.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let (Some(hit), Ok(_)) = (hit, &status) {
        let why = sandbox::explain(hit, hook.jail.limits);
        log.phase(hook.name, &format!("Hook `{}` failed: {why}", hook.name));
        return Err(RunnerError::Hook { name: hook.name, why: HookFailure::Limit(why) }.into());
    }
    let status = match status {
        Ok(status) => status,
        Err(Ended::Interrupted(interrupted)) => {
            log.phase(hook.name, &format!("Hook `{}` killed: {interrupted}", hook.name));
            return Err(interrupted.into());
        }
        Err(Ended::TimedOut) => {
            log.phase(
                hook.name,
                &format!("Hook `{}` killed after its time limit of {} s", hook.name, hook.timeout.as_secs()),
            );
            return Err(RunnerError::Hook { name: hook.name, why: HookFailure::TimedOut(hook.timeout) }.into());
        }
        Err(Ended::Wait(source)) => {
            return Err(RunnerError::Io { action: "waiting for", path: hook.cwd.to_owned(), source }.into())
        }
    };
    if status.success() {
        log.phase(hook.name, &format!("Hook `{}` succeeded in {:.1} s", hook.name, started.elapsed().as_secs_f64()));
        Ok(())
    } else {
        let why = match status.code() {
            Some(code) => HookFailure::Exited(code),
            None => HookFailure::Signalled,
        };
        log.phase(hook.name, &format!("Hook `{}` failed: the script {why} (its output is above)", hook.name));
        Err(RunnerError::Hook { name: hook.name, why }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::developers_paths;
    use std::path::Path;

    #[test]
    fn developers_read_paths_of_their_environment_not_of_the_server() {
        let data = Path::new("/var/lib/pushgate");
        let said = |t: &str| developers_paths(data, t).into_owned();
        assert_eq!(
            said("Release 3 linked into /var/lib/pushgate/environments/shop-aa2ebe06/main/releases/3"),
            "Release 3 linked into releases/3"
        );
        assert_eq!(
            said(
                "Mount var of `app` -> /var/lib/pushgate/environments/shop-aa2ebe06/main/mounts/app/var, twice: \
                  /var/lib/pushgate/environments/shop-aa2ebe06/main/mounts/app/x"
            ),
            "Mount var of `app` -> mounts/app/var, twice: mounts/app/x"
        );
        assert_eq!(said("Building in /var/lib/pushgate/builds/2/"), "Building in builds/2/");
        assert_eq!(said("Slug /srv/other/slugs/k.tar.zst"), "Slug /srv/other/slugs/k.tar.zst");
        assert_eq!(developers_paths(Path::new("/"), "/etc/passwd"), "/etc/passwd");
    }
}
