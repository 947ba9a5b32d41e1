//! pushgate: Magento Commerce Cloud style push-to-deploy for a plain git server.
//!
//! The data flow, one module per stage: `git` and `source` read a commit's files, `config`
//! parses them (YAML with positions, tags, budgets), `validate` checks schema and cross-file
//! rules into `diag` findings, `report` shows them to the pusher, `hook` runs it all in git's
//! pre-receive hook and stores its verdict (`core::plan`) with the job in the `queue`. The
//! `runner` claims jobs and runs their phases; `store` owns the data directory and the one
//! record of what is deployed. `core` holds the types all of them share, with no I/O.

pub mod activity;
pub mod config;
pub mod core;
pub mod diag;
pub mod follow;
pub mod git;
pub mod hook;
pub mod notify;
pub mod ops;
pub mod paths;
pub mod platform;
pub mod queue;
pub mod registry;
pub mod report;
pub mod runner;
pub mod secret;
pub mod settings;
pub mod source;
pub mod store;
pub mod topology;
pub mod validate;
pub mod web;
