//! Operations: what a person asks of pushgate, written once for every front end (the command
//! line, the API, the git-shell commands). A front end parses, calls an operation, prints;
//! each maps [`Error`] once (an exit code, an HTTP status).
//!
//! - `jobs`: enqueue and wake the runners, cancel;
//! - `environment`: rollback, redeploy, sync, delete, activate, deactivate, create, limit,
//!   variables;
//! - `promote`: a slug from one environment to the next;
//! - `admin`: tokens and webhooks.

pub mod admin;
pub mod environment;
pub mod jobs;
pub mod promote;

/// Who acts, and through which front end: the activities an operation starts name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A person's name (the ssh user, the local user, the API token's name), if known.
    pub name: Option<String>,
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `pushgate-runner` on the server.
    CommandLine,
    /// `ssh git@server pushgate ...`.
    Ssh,
    /// The HTTP API and the console.
    Api,
}

impl Actor {
    /// Whoever runs this process, named as pushes name their pusher (the git server's user
    /// variables, else the local user).
    pub fn from_process(via: Via) -> Actor {
        Actor { name: crate::queue::pusher(&|k| std::env::var(k).ok()), via }
    }

    /// The holder of an API token.
    pub fn token(name: &str) -> Actor {
        Actor { name: Some(name.to_owned()), via: Via::Api }
    }

    /// The name activities record.
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("someone")
    }
}

/// Why an operation was not done, for each front end to map once (an exit code, a status).
#[derive(Debug)]
pub enum Error {
    /// What was asked cannot be: a bad name, role, URL.
    Invalid(String),
    /// What it names does not exist.
    NotFound(String),
    /// It exists, but is not in a state that allows this (an activity that has ended, a
    /// promotion the pipeline refuses, a release not kept).
    Conflict(String),
    /// The queue (the store of jobs, tokens and webhooks) failed.
    Queue(crate::queue::QueueError),
    /// The runner's work failed (a rollback done at once, reading an environment).
    Runner(crate::runner::RunnerError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(why) | Error::NotFound(why) | Error::Conflict(why) => f.write_str(why),
            Error::Queue(e) => e.fmt(f),
            Error::Runner(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Queue(e) => Some(e),
            Error::Runner(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::queue::QueueError> for Error {
    fn from(e: crate::queue::QueueError) -> Error {
        Error::Queue(e)
    }
}

impl From<crate::runner::RunnerError> for Error {
    fn from(e: crate::runner::RunnerError) -> Error {
        match e {
            crate::runner::RunnerError::Queue(e) => Error::Queue(e),
            e => Error::Runner(e),
        }
    }
}
