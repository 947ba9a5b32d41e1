//! The typed core that the hook and the runner share, with no I/O: what the hook decides about
//! a commit is stored with its job in these types, and the runner acts on them.

pub mod plan;
