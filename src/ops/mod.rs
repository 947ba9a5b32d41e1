//! Operations: what a person asks of pushgate, written once for every front end (the command
//! line, the API, the git-shell commands). A front end parses, calls an operation, prints.
//! This is where the verbs move as they are touched: `environment`, then `admin`.

pub mod admin;
pub mod environment;

/// Why an operation was not done, for each front end to map once (an exit code, a status).
#[derive(Debug)]
pub enum Error {
    /// What was asked cannot be: a bad name, role, URL.
    Invalid(String),
    /// What it names does not exist.
    NotFound(String),
    /// The queue (the store of jobs, tokens and webhooks) failed.
    Queue(crate::queue::QueueError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(why) | Error::NotFound(why) => f.write_str(why),
            Error::Queue(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Queue(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::queue::QueueError> for Error {
    fn from(e: crate::queue::QueueError) -> Error {
        Error::Queue(e)
    }
}
