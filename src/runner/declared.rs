//! What the admin declares for the hooks, read once per job before anything is built. Each file
//! exists server-wide in the data directory and per project in the bare repository's
//! `pushgate/` directory (out of developers' reach: it is not in any commit); the project's
//! entries win.
//!
//! - `services.json`: each service's endpoint, for `*_RELATIONSHIPS`
//!   (`{"mysql": {"host": "127.0.0.1", "port": 3306, "scheme": "mysql", ...}}`). Two shops on
//!   one server need their own databases: declare them in each repository.
//! - `variables.json`: the project's and each environment's variables, as Magento Cloud's
//!   `magento-cloud variable:set` keeps them (`{"project": {"env:COMPOSER_AUTH": "..."},
//!   "environments": {"main": {"env:ADMIN_EMAIL": "..."}}}`), and per type of environment
//!   (`"types": {"production": {...}}`: staging and production can differ). Project variables
//!   reach the build and every deploy; type and environment variables only the deploy hooks
//!   of those environments (the build is shared by every environment with the same tree, so it
//!   must not depend on them). An environment's own value overrides its type's, which
//!   overrides the project's.
//! - `sandbox.json`: the hooks' sandbox (`{"network": false, "memory_mb": 2048, "processes":
//!   256, "time_limit_s": 1800}`, each key optional; see `platform::sandbox::Policy`).
//!
//! A file that is missing declares nothing. A file that cannot be read as the JSON object above
//! fails the job before anything changes: hooks told of no database or no credentials would
//! run against nothing.

use std::path::Path;

use serde_json::{Map, Value};

use super::build::AppPlan;
use super::hooks::JobLog;
use super::RunnerError;
use crate::platform::sandbox::Policy;
use crate::store::environments::{EnvType, Environments};
use crate::topology::Topology;

pub struct Declared {
    pub services: Map<String, Value>,
    pub project_variables: Map<String, Value>,
    environment_variables: Map<String, Value>,
    /// Variables per environment type (`integration`, `staging`, `production`).
    type_variables: Map<String, Value>,
    /// What the admin declared of the project's environments (their types, for the variables).
    pub environments: Environments,
    pub sandbox: Policy,
}

/// One variable an environment sees, and where it comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layered {
    pub name: String,
    pub value: Value,
    /// `project`, `type staging`, `environment production`.
    pub from: String,
    /// The levels whose value it overrides.
    pub overrides: Vec<String>,
}

impl Declared {
    /// The server-wide declarations of `data_dir`, under those of the repository at `repo`.
    pub fn load(data_dir: &Path, repo: &Path) -> Result<Declared, RunnerError> {
        let mut declared = Declared::read(data_dir)?;
        let project = Declared::read(&repo.join("pushgate"))?;
        declared.environments =
            Environments::load(repo).map_err(|why| RunnerError::DataFile { path: Environments::file(repo), why })?;
        declared.services.extend(project.services);
        declared.project_variables.extend(project.project_variables);
        declared.sandbox = declared.sandbox.overridden(project.sandbox);
        for (from, into) in [
            (project.environment_variables, &mut declared.environment_variables),
            (project.type_variables, &mut declared.type_variables),
        ] {
            for (key, vars) in from {
                match into.get_mut(&key).and_then(Value::as_object_mut) {
                    Some(mine) => mine.extend(object_entries(&vars)),
                    None => {
                        into.insert(key, vars);
                    }
                }
            }
        }
        Ok(declared)
    }

    /// `services.json` and `variables.json` of one directory.
    fn read(dir: &Path) -> Result<Declared, RunnerError> {
        let services = read_object(&crate::store::services_file(dir), "service name to endpoint")?;
        let path = crate::store::variables_file(dir);
        let variables = read_object(&path, "`project` and `environments` variables")?;
        let group = |key: &str| -> Result<Map<String, Value>, RunnerError> {
            match variables.get(key) {
                None => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(RunnerError::DataFile { path: path.clone(), why: format!("`{key}` must be an object") }),
            }
        };
        let project_variables = group("project")?;
        check_names(&path, "project", &project_variables)?;
        let environment_variables = group("environments")?;
        let type_variables = group("types")?;
        for (within, groups) in [("environments", &environment_variables), ("types", &type_variables)] {
            for (key, vars) in groups {
                let Some(vars) = vars.as_object() else {
                    return Err(RunnerError::DataFile {
                        path,
                        why: format!("`{within}.{key}` must be an object of variables"),
                    });
                };
                if within == "types" && EnvType::parse(key).is_none() {
                    return Err(RunnerError::DataFile {
                        path,
                        why: format!("`types.{key}`: the types are integration, staging and production"),
                    });
                }
                check_names(&path, &format!("{within}.{key}"), vars)?;
            }
        }
        let sandbox_file = crate::store::sandbox_file(dir);
        let sandbox = read_object(&sandbox_file, "sandbox settings")?;
        let sandbox = serde_json::from_value(Value::Object(sandbox))
            .map_err(|e| RunnerError::DataFile { path: sandbox_file, why: e.to_string() })?;
        Ok(Declared {
            services,
            project_variables,
            environment_variables,
            type_variables,
            environments: Environments::default(),
            sandbox,
        })
    }

    /// The variables an environment's deploy hooks see: the project's, its type's over them,
    /// then its own.
    pub fn runtime_variables(&self, environment: &str) -> Map<String, Value> {
        self.layered(environment).into_iter().map(|v| (v.name, v.value)).collect()
    }

    /// Each variable an environment sees, with the level it comes from and those it overrides.
    pub fn layered(&self, environment: &str) -> Vec<Layered> {
        let kind = self.environments.of(environment);
        let empty = Value::Object(Map::new());
        let levels = [
            ("project".to_owned(), Value::Object(self.project_variables.clone())),
            (
                format!("type {}", kind.as_str()),
                self.type_variables.get(kind.as_str()).cloned().unwrap_or(empty.clone()),
            ),
            (
                format!("environment {environment}"),
                self.environment_variables.get(environment).cloned().unwrap_or(empty),
            ),
        ];
        let mut all: Vec<Layered> = Vec::new();
        for (level, vars) in levels {
            for (name, value) in object_entries(&vars) {
                match all.iter_mut().find(|v| v.name == name) {
                    Some(v) => {
                        let before = std::mem::replace(&mut v.from, level.clone());
                        v.overrides.push(before);
                        v.value = value;
                    }
                    None => all.push(Layered { name, value, from: level.clone(), overrides: Vec::new() }),
                }
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Says which relationships the deploy hooks will see empty, and how to fill them.
    pub(super) fn warn_unresolved(
        &self,
        plans: &[AppPlan],
        topology: &Topology,
        services: &Map<String, Value>,
        log: &mut JobLog,
    ) {
        for plan in plans {
            let Some(app) = topology.apps.get(&plan.name) else { continue };
            for (name, target) in &app.relationships {
                let service = target.split_once(':').map_or(target.as_str(), |(s, _)| s);
                if services.get(service).and_then(Value::as_object).is_none() {
                    log.phase(
                        "deploy",
                        &format!(
                            "W: relationship `{name}` of `{}` ({target}): no endpoint for service `{service}` in \
                             services.json (the repository's pushgate/ or the data directory's); its entry in \
                             the relationships is empty",
                            plan.name
                        ),
                    );
                }
            }
        }
    }
}

/// The entries of a JSON object (none for anything else), owned.
fn object_entries(v: &Value) -> impl Iterator<Item = (String, Value)> + '_ {
    v.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone()))
}

/// A JSON object from `path`; an empty one when the file does not exist.
fn read_object(path: &Path, of_what: &str) -> Result<Map<String, Value>, RunnerError> {
    let err = |why: String| RunnerError::DataFile { path: path.to_owned(), why };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(err(format!("cannot be read: {e}"))),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err(format!("must be a JSON object of {of_what}"))),
        Err(e) => Err(err(format!("is not valid JSON at line {}, column {}: {e}", e.line(), e.column()))),
    }
}

/// Variable names are `group:name` (`env:COMPOSER_AUTH`, `php:memory_limit`), as in the app's
/// `variables`.
fn check_names(path: &Path, within: &str, vars: &Map<String, Value>) -> Result<(), RunnerError> {
    match vars.keys().find(|k| !matches!(k.split_once(':'), Some((g, n)) if !g.is_empty() && !n.is_empty())) {
        Some(bad) => Err(RunnerError::DataFile {
            path: path.to_owned(),
            why: format!("`{within}.{bad}` is not a variable name of the form group:name (env:NAME, php:NAME)"),
        }),
        None => Ok(()),
    }
}
