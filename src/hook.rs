//! The hook commands: `pre-receive` (the protective block) and `check DIR`.
//!
//! `pre-receive` validates the configuration at the new commit of every branch in the push and
//! refuses the whole push when one branch is invalid (git applies pre-receive's verdict to all
//! refs). Deletions pass; tags and other refs are not deployed and pass. Within one process,
//! a branch whose configuration files have the same object ids as one already checked reuses
//! that result: a 1,000-branch push parses and validates each distinct configuration once.

use std::io::Write;
use std::path::Path;

use git2::Repository;

use crate::git::{self, CommitTree, GitError, RefUpdate};
use crate::report;
use crate::source::{DirSource, Entry, ReadLog, Recording, Source, SourceError};
use crate::validate::{self, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("reading the ref updates from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("running the chained hook {}: {source}", hook.display())]
    Chained { hook: std::path::PathBuf, source: std::io::Error },
}

/// Validation results of this process, keyed by what they read.
#[derive(Default)]
pub struct Cache {
    entries: Vec<(ReadLog, Outcome)>,
}

impl Cache {
    /// Validates `source`, or reuses a result whose reads give the same ids in `source`.
    /// Returns the result's index in this cache and whether it was computed now.
    pub fn validate(&mut self, source: &dyn Source) -> Result<(usize, bool), SourceError> {
        for (i, (log, _)) in self.entries.iter().enumerate() {
            if log.matches(source)? {
                return Ok((i, false));
            }
        }
        let recording = Recording::new(source);
        let outcome = validate::validate(&recording)?;
        self.entries.push((recording.into_log(), outcome));
        Ok((self.entries.len() - 1, true))
    }

    pub fn outcome(&self, index: usize) -> &Outcome {
        &self.entries[index].1
    }
}

/// Runs the protective block over `updates`. Returns true when the push may proceed.
///
/// Each distinct configuration is reported in full once; a branch with the same configuration
/// files as one reported above gets one line (a push of many branches stays readable).
pub fn pre_receive(repo: &Repository, updates: &[RefUpdate], out: &mut dyn Write) -> Result<bool, HookError> {
    let mut cache = Cache::default();
    let mut first_branch: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for update in updates {
        let Some(branch) = update.branch() else { continue };
        if update.is_delete() {
            let _ = writeln!(out, "Deleting branch {branch}: nothing to validate");
            continue;
        }
        let tree = CommitTree::new(repo, update.new, &update.name)?;
        let (index, fresh) = cache.validate(&tree)?;
        let outcome = cache.outcome(index);
        let short = &update.new.to_string()[..10];
        let valid = !outcome.diags.has_errors();
        if !valid {
            refused.push(branch.to_owned());
        }
        if !fresh {
            let verdict = if valid { "valid" } else { "invalid, see above" };
            let first = &first_branch[index];
            let _ = writeln!(out, "Validating configuration files of {branch} ({short}): same as {first}, {verdict}");
            continue;
        }
        first_branch.push(branch.to_owned());
        let _ = writeln!(out, "Validating configuration files of {branch} ({short})");
        let lines = |file: &str, line: u32| line_of(&tree, file, line);
        let _ = report::diagnostics(out, &outcome.diags, &lines);
        if valid {
            let _ = report::summary(out, &outcome.config);
        }
    }
    if refused.is_empty() {
        return Ok(true);
    }
    let _ = writeln!(
        out,
        "Push refused: the configuration of {} is invalid (see E: above). No ref was updated; fix the files, commit and push again.",
        refused.join(", ")
    );
    Ok(false)
}

/// Runs `pre-receive` as git calls it: ref updates on stdin, the repository from the environment.
/// When pushgate accepts and `chain` names a hook that was installed before pushgate, that hook
/// runs next with the same input, and its verdict is the push's.
pub fn pre_receive_main(
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
    chain: Option<&Path>,
) -> Result<bool, HookError> {
    let mut input = String::new();
    stdin.read_to_string(&mut input).map_err(HookError::Stdin)?;
    let updates = git::parse_updates(&input)?;
    if updates.iter().any(|u| u.branch().is_some() && !u.is_delete()) {
        let repo = git::open_from_env()?;
        if !pre_receive(&repo, &updates, out)? {
            return Ok(false);
        }
    }
    match chain.filter(|c| c.exists()) {
        Some(hook) => {
            let _ = out.flush();
            run_chained(hook, &input)
        }
        None => Ok(true),
    }
}

/// Runs a hook that was there before pushgate, feeding it the same ref updates.
fn run_chained(hook: &Path, input: &str) -> Result<bool, HookError> {
    let chained = |source| HookError::Chained { hook: hook.to_owned(), source };
    let mut child = std::process::Command::new(hook).stdin(std::process::Stdio::piped()).spawn().map_err(chained)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading its input is not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    Ok(child.wait().map_err(chained)?.success())
}

/// `pushgate-hook check DIR`: the same validation on a checkout. Returns true when valid.
pub fn check_dir(dir: &Path, out: &mut dyn Write) -> Result<bool, HookError> {
    let source = DirSource::new(dir);
    let outcome = validate::validate(&source)?;
    let _ = writeln!(out, "Validating configuration files in {}", dir.display());
    let lines = |file: &str, line: u32| line_of(&source, file, line);
    let _ = report::diagnostics(out, &outcome.diags, &lines);
    if outcome.diags.has_errors() {
        return Ok(false);
    }
    let _ = report::summary(out, &outcome.config);
    let _ = writeln!(out, "Configuration is valid.");
    Ok(true)
}

/// The text of one line of a file, for the excerpt under an error.
fn line_of(source: &dyn Source, file: &str, line: u32) -> Option<String> {
    let Ok(Entry::File(bytes)) = source.entry(file) else {
        return None;
    };
    let text = String::from_utf8(bytes).ok()?;
    text.lines().nth(line.checked_sub(1)? as usize).map(str::to_owned)
}
