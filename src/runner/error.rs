//! How a job's work ends when it does not succeed: the runner's errors (typed, each with what
//! an operator or developer needs to read), and interruptions, which are not errors.

use std::path::PathBuf;
use std::time::Duration;

use super::slug;
use crate::queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("reading the repository: {}", .0.message())]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Commit(#[from] crate::git::GitError),
    #[error("reading the commit: {0}")]
    Source(#[from] crate::source::SourceError),
    #[error("tree {tree} has an entry {name:?}: {why}; it cannot be written to disk")]
    UnsafeEntry { tree: git2::Oid, name: String, why: &'static str },
    #[error("hook `{name}` failed: it {why}")]
    Hook { name: &'static str, why: HookFailure },
    #[error("the configuration at this commit is invalid: {0}")]
    Config(#[from] Invalid),
    #[error("{}: {why}; fix it (or move it aside) and push again", path.display())]
    DataFile { path: PathBuf, why: String },
    #[error(transparent)]
    Rollback(#[from] Rollback),
    #[error(transparent)]
    Deployed(#[from] crate::store::deployed::Error),
    /// The platform's reason an environment cannot be served (a missing runtime, a router
    /// configuration nginx refuses, a process that does not start).
    #[error("the environment cannot be served: {0}")]
    Platform(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Slug(#[from] slug::SlugError),
    #[error("the shared slugs: {0}")]
    SlugStore(#[from] super::slugs::SlugStoreError),
}

/// How a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    #[error("exited with status {0}")]
    Exited(i32),
    #[error("was killed by a signal")]
    Signalled,
    #[error("timed out after {} s", .0.as_secs())]
    TimedOut(Duration),
    /// A limit of its sandbox stopped it (what `sandbox::explain` says).
    #[error("{0}")]
    Limit(String),
}

/// What in a job's configuration cannot be built or deployed.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("the topology stored with the job cannot be read: {0}")]
    StoredTopology(serde_json::Error),
    #[error("{file}:{line}:{col}: {message}")]
    Diagnostic { file: String, line: u32, col: u32, message: String },
    #[error("the app directory `{0}` is missing or not a directory of the commit")]
    AppDir(String),
    #[error("mount `{path}`: bad source path `{source_path}`")]
    MountSource { path: String, source_path: String },
    #[error("mount `{path}` cannot be made: it leads outside the app: {escape}")]
    MountOutside { path: String, escape: crate::paths::Escape },
    #[error("mount `{0}` cannot be made: it names the app root itself")]
    MountIsRoot(String),
}

/// Why a job stopped before its end that is not the job's failure: it is recorded otherwise
/// (cancelled, or returned to the queue), and nothing about it goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The job was cancelled, or its lease taken over by another runner.
    Lost,
    /// The runner is stopping and the grace period is over.
    Stopped,
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Lost => "the job was cancelled or taken over by another runner",
            Interrupt::Stopped => "the runner is stopping",
        })
    }
}

/// How a phase ends when it does not complete: the job failed, or it was interrupted.
#[derive(Debug)]
pub enum Halt {
    Failed(RunnerError),
    Interrupted(Interrupt),
}

impl<E: Into<RunnerError>> From<E> for Halt {
    fn from(e: E) -> Halt {
        Halt::Failed(e.into())
    }
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Halt::Failed(e) => e.fmt(f),
            Halt::Interrupted(i) => i.fmt(f),
        }
    }
}

impl From<Interrupt> for Halt {
    fn from(i: Interrupt) -> Halt {
        Halt::Interrupted(i)
    }
}

/// Why an environment cannot be switched back.
#[derive(Debug, thiserror::Error)]
pub enum Rollback {
    #[error("release {release} is not kept (kept: {})", kept.join(", "))]
    NotKept { release: String, kept: Vec<String> },
    #[error("there is no earlier release to roll back to")]
    NoEarlier,
}
