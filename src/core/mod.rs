//! The typed core that the hook and the runner share, with no I/O: what the hook decides about
//! a commit is stored with its job in these types, and the runner acts on them.

pub mod ids;
pub mod plan;

pub use ids::{CommitId, EnvName, JobId, RefUpdate, RepoId, Timestamp};

/// A 1-based line and column (counted in characters) in a file: where the YAML loader found a
/// node, and where a diagnostic points. Here so that `config` and `diag` need not import each
/// other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}
