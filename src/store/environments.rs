//! The kinds of environment a project has (`REPO/pushgate/environments.json`, written by
//! `pushgate-runner env create`): every branch is an `integration` environment unless the admin
//! declared it `staging` or `production`, which are reached by promotion, never by a push.
//!
//! ```text
//! {"staging": "staging", "production": "production"}
//! ```
//!
//! The file is in the bare repository, beside the project's other declarations: the hook reads
//! it on every push, developers' commits cannot change it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// A project's declared environment types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvTypes {
    types: BTreeMap<String, EnvType>,
}

impl EnvTypes {
    pub fn file(repo: &Path) -> PathBuf {
        repo.join("pushgate").join("environments.json")
    }

    /// The types declared for the bare repository at `repo` (none when the file is missing).
    pub fn load(repo: &Path) -> Result<EnvTypes, String> {
        let path = EnvTypes::file(repo);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(|types| EnvTypes { types })
                .map_err(|e| format!("{}: {e} (expected {{\"ENV\": \"staging\"|\"production\"}})", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnvTypes::default()),
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

    /// Declares `environment` of type `kind`, written whole under another name, then renamed.
    pub fn declare(repo: &Path, environment: &str, kind: EnvType) -> Result<(), String> {
        let mut types = EnvTypes::load(repo)?;
        if kind == EnvType::Integration {
            types.types.remove(environment);
        } else {
            types.types.insert(environment.to_owned(), kind);
        }
        let path = EnvTypes::file(repo);
        let dir = path.parent().unwrap_or(repo);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let partial = dir.join("environments.json.partial");
        let text = serde_json::to_string_pretty(&types.types).unwrap_or_default();
        std::fs::write(&partial, text + "\n").map_err(|e| format!("{}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}
