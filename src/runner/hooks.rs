//! Running `hooks.build`, `hooks.deploy` and `hooks.post_deploy`, and the job's log.
//!
//! A hook runs as `sh -e -c SCRIPT` in its own process group, with only the environment the
//! platform documents (plus PATH and HOME), its output appended to the job's log, and a time
//! limit after which the whole group is killed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RunnerError;
use crate::clock::now_rfc3339;

/// The log of one job: phases with timestamps, and every command's output.
pub struct JobLog {
    path: PathBuf,
    file: File,
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
        Ok(JobLog { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `2026-11-22T01:02:03.456Z [deploy] Switching current to release 12`
    pub fn phase(&mut self, phase: &str, text: &str) {
        let _ = writeln!(self.file, "{} [{phase}] {text}", now_rfc3339());
        let _ = self.file.flush();
    }

    fn sink(&self) -> Result<File, RunnerError> {
        self.file.try_clone().map_err(|source| RunnerError::Io {
            action: "writing the log",
            path: self.path.clone(),
            source,
        })
    }
}

/// One hook to run.
pub struct Hook<'a> {
    /// `build`, `deploy`, `post_deploy`
    pub name: &'a str,
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

/// Runs a hook; its output goes to the log. Err says what failed and how.
pub fn run(hook: &Hook<'_>, log: &mut JobLog, control: &super::Control<'_>) -> Result<(), RunnerError> {
    log.phase(hook.name, &format!("Running hook `{}` in {}:", hook.name, hook.cwd.display()));
    for line in hook.script.lines().filter(|l| !l.trim().is_empty()) {
        log.phase(hook.name, &format!("  $ {line}"));
    }
    let out = log.sink()?;
    let err = log.sink()?;
    let mut command = Command::new("sh");
    command
        .arg("-e")
        .arg("-c")
        .arg(hook.script)
        .current_dir(hook.cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", hook.cwd)
        .envs(hook.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let mut child = command.spawn().map_err(|source| RunnerError::Io {
        action: "starting sh for",
        path: hook.cwd.to_owned(),
        source,
    })?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| RunnerError::Io {
            action: "waiting for",
            path: hook.cwd.to_owned(),
            source,
        })? {
            break status;
        }
        if let Err(interrupted) = control.check() {
            let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
            log.phase(hook.name, &format!("Hook `{}` killed: {interrupted}", hook.name));
            return Err(interrupted);
        }
        if started.elapsed() > hook.timeout {
            // The whole group: the script's children too.
            let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
            log.phase(
                hook.name,
                &format!("Hook `{}` killed after its time limit of {} s", hook.name, hook.timeout.as_secs()),
            );
            return Err(RunnerError::Hook {
                name: hook.name.to_owned(),
                why: format!("timed out after {} s", hook.timeout.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.success() {
        log.phase(hook.name, &format!("Hook `{}` succeeded in {:.1} s", hook.name, started.elapsed().as_secs_f64()));
        Ok(())
    } else {
        let why = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        log.phase(hook.name, &format!("Hook `{}` failed: the script {why} (its output is above)", hook.name));
        Err(RunnerError::Hook { name: hook.name.to_owned(), why })
    }
}
