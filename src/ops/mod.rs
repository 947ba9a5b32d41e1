//! Operations: what a person asks of pushgate, written once for every front end (the command
//! line, the API, the git-shell commands). A front end parses, calls an operation, prints.
//! This is where the verbs move as they are touched; `environment` is the first.

pub mod environment;
