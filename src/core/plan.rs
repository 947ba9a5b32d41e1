//! A job's plan: the configuration the hook validated, as the runner needs it to build and
//! deploy. The hook stores it with the job (`plan_id` in the queue), so the runner never
//! validates the commit again and never acts on a configuration the pusher did not see judged.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigSet, Format};

/// What to build and deploy for one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Which names the project uses (`MAGENTO_CLOUD_*` or `PLATFORM_*` variables).
    pub format: Format,
    pub apps: Vec<App>,
    /// `routes.yaml` as validated (JSON), None without one (the default routes apply). Plans
    /// stored before routing existed have none either.
    #[serde(default)]
    pub routes: Option<serde_json::Value>,
    /// `services.yaml` as validated (JSON): the services' `configuration` (schemas, endpoints).
    #[serde(default)]
    pub services: Option<serde_json::Value>,
    /// How the environment starts if this push creates it.
    #[serde(default)]
    pub new_environment: NewEnvironment,
    /// Where a runner that cannot read the repository by path fetches it from (the
    /// repository's `git config pushgate.url`: ssh, http(s) or git://).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

/// How a new environment starts: with a copy of its parent's data (its databases and its
/// mounts' files) unless the push says otherwise; the parent is the default branch's
/// environment unless the push names another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEnvironment {
    pub clone_parent: bool,
    pub parent: Option<String>,
}

impl Default for NewEnvironment {
    fn default() -> NewEnvironment {
        NewEnvironment { clone_parent: true, parent: None }
    }
}

/// One application of the commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    /// Its directory, relative to the repository root (empty for the root).
    pub dir: String,
    /// Its configuration as validated (includes resolved), as JSON.
    pub config: serde_json::Value,
}

impl Plan {
    /// The plan of a configuration set that passed validation.
    pub fn of(config: &ConfigSet) -> Plan {
        Plan {
            format: config.format,
            apps: config
                .apps
                .iter()
                .map(|a| App { name: a.name.clone().unwrap_or_default(), dir: a.dir.clone(), config: a.node.to_json() })
                .collect(),
            routes: config.routes.as_ref().map(|d| d.root.to_json()),
            services: config.services.as_ref().map(|d| d.root.to_json()),
            new_environment: NewEnvironment::default(),
            source_url: None,
        }
    }
}
