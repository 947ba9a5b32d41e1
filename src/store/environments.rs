//! What the admin declares about a project's environments (`REPO/pushgate/environments.json`,
//! written by `pushgate-runner env create|activate|deactivate|limit`):
//!
//! ```text
//! {"types": {"staging": "staging", "production": "production"},
//!  "inactive": ["old-feature"], "limit": 3}
//! ```
//!
//! - every branch is an `integration` environment unless declared `staging` or `production`,
//!   which are reached by promotion, never by a push;
//! - an inactive environment is not deployed by pushes to its branch (`env activate` deploys it);
//! - `limit` bounds the active integration environments: a push that would make one more is
//!   refused.
//!
//! The file is in the bare repository, beside the project's other declarations: the hook reads
//! it on every push, developers' commits cannot change it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment `given` names in the bare repository `repo`, and its branch: `given` may be
/// the environment's name (`feature-checkout`) or its branch (`feature/Checkout`), as people
/// have both in front of them (the push prints the first, git the second). The branch is None
/// when none gives that environment (it was deleted, or never pushed).
pub fn resolve(repo: &Path, given: &str) -> Result<(crate::core::EnvName, Option<String>), String> {
    let git = git2::Repository::open_bare(repo).map_err(|e| format!("{}: {e}", repo.display()))?;
    if git.find_reference(&format!("refs/heads/{given}")).is_ok() {
        return Ok((crate::core::EnvName::of_branch(given)?, Some(given.to_owned())));
    }
    let name = crate::core::EnvName::parse(given)
        .or_else(|_| crate::core::EnvName::of_branch(given))
        .map_err(|_| format!("`{given}` is neither an environment's name nor a branch of this project"))?;
    let branches = git.branches(Some(git2::BranchType::Local)).map_err(|e| e.to_string())?;
    let branch = branches
        .flatten()
        .filter_map(|(b, _)| b.name().ok().flatten().map(str::to_owned))
        .find(|b| crate::core::ids::environment_name(b) == name.as_str());
    Ok((name, branch))
}

/// Magento Cloud's three kinds of system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EnvType {
    /// A branch's own environment: built and deployed by every push.
    #[default]
    Integration,
    /// Runs like production; reached by promotion.
    Staging,
    /// The live store; reached by promotion from staging.
    Production,
}

impl EnvType {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvType::Integration => "integration",
            EnvType::Staging => "staging",
            EnvType::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<EnvType> {
        [EnvType::Integration, EnvType::Staging, EnvType::Production].into_iter().find(|t| t.as_str() == s)
    }

    /// Whether a push deploys it.
    pub fn pushed(self) -> bool {
        self == EnvType::Integration
    }
}

/// A project's declarations about its environments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environments {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    types: BTreeMap<String, EnvType>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    inactive: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
}

impl Environments {
    pub fn file(repo: &Path) -> PathBuf {
        repo.join("pushgate").join("environments.json")
    }

    /// The declarations of the bare repository at `repo` (none when the file is missing).
    pub fn load(repo: &Path) -> Result<Environments, String> {
        let path = Environments::file(repo);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: {e} (expected {{\"types\": {{ENV: \"staging\"|\"production\"}}, \"inactive\": [ENV], \
                     \"limit\": N}})",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Environments::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The first environment declared of type `kind`.
    pub fn named(&self, kind: EnvType) -> Option<String> {
        self.types.iter().find(|(_, t)| **t == kind).map(|(n, _)| n.clone())
    }

    pub fn of(&self, environment: &str) -> EnvType {
        self.types.get(environment).copied().unwrap_or_default()
    }

    /// The staging environments, then the production ones: where promotions go.
    pub fn promotion_targets(&self) -> Vec<String> {
        [EnvType::Staging, EnvType::Production]
            .into_iter()
            .flat_map(|kind| self.types.iter().filter(move |(_, t)| **t == kind).map(|(n, _)| n.clone()))
            .collect()
    }

    /// Every environment declared (of a type, or inactive), with its type.
    pub fn declared(&self) -> Vec<(String, EnvType)> {
        let mut all: Vec<(String, EnvType)> = self.types.iter().map(|(n, t)| (n.clone(), *t)).collect();
        all.extend(self.inactive.iter().filter(|n| !self.types.contains_key(*n)).map(|n| (n.clone(), self.of(n))));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn is_inactive(&self, environment: &str) -> bool {
        self.inactive.contains(environment)
    }

    /// The most active integration environments the project may have.
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// Changes the declarations of `repo`: loaded, changed, written whole under another name,
    /// then renamed.
    pub fn change(repo: &Path, change: impl FnOnce(&mut Environments)) -> Result<(), String> {
        let mut declared = Environments::load(repo)?;
        change(&mut declared);
        let path = Environments::file(repo);
        let dir = path.parent().unwrap_or(repo);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let partial = dir.join("environments.json.partial");
        let text = serde_json::to_string_pretty(&declared).unwrap_or_default();
        std::fs::write(&partial, text + "\n").map_err(|e| format!("{}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Declares `environment` of type `kind`.
    pub fn declare(repo: &Path, environment: &str, kind: EnvType) -> Result<(), String> {
        Environments::change(repo, |d| {
            if kind == EnvType::Integration {
                d.types.remove(environment);
            } else {
                d.types.insert(environment.to_owned(), kind);
            }
        })
    }

    pub fn set_inactive(repo: &Path, environment: &str, inactive: bool) -> Result<(), String> {
        Environments::change(repo, |d| {
            if inactive {
                d.inactive.insert(environment.to_owned());
            } else {
                d.inactive.remove(environment);
            }
        })
    }

    pub fn set_limit(repo: &Path, limit: Option<u32>) -> Result<(), String> {
        Environments::change(repo, |d| d.limit = limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_kept_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pushgate-envs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Environments::declare(&dir, "production", EnvType::Production).unwrap();
        Environments::set_inactive(&dir, "old", true).unwrap();
        Environments::set_limit(&dir, Some(3)).unwrap();
        let read = Environments::load(&dir).unwrap();
        assert_eq!(read.of("production"), EnvType::Production);
        assert_eq!(read.of("feature"), EnvType::Integration);
        assert!(read.is_inactive("old") && !read.is_inactive("production"));
        assert_eq!(read.limit(), Some(3));
        std::fs::write(Environments::file(&dir), "{\"typo\": 1}").unwrap();
        assert!(Environments::load(&dir).unwrap_err().contains("unknown field `typo`"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
