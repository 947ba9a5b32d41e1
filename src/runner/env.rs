//! The environment hooks see, as Magento Cloud (and Platform.sh) documents it.
//!
//! Build hooks get `*_TREE_ID`, `*_APPLICATION_NAME`, `*_APPLICATION` (the app's configuration,
//! base64 JSON), `*_VARIABLES` (base64 JSON of the app's `variables` and the admin's project
//! variables over them, keys `env:NAME`, `php:NAME`), `*_APP_DIR` and `*_PROJECT`; every
//! `env:NAME` variable is also exported as `NAME`. No services exist during the build. Deploy hooks also get `*_ENVIRONMENT`, `*_BRANCH`,
//! `*_RELATIONSHIPS` (resolved from the admin's `services.json`, see `declared`) and `*_ROUTES`. The
//! prefix is `MAGENTO_CLOUD_` for `.magento` projects and `PLATFORM_` for `.platform` ones.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::config::Format;
use crate::topology::{Route, Topology};

/// What the hooks of one app are told.
pub struct AppContext<'a> {
    pub format: Format,
    pub app_name: &'a str,
    pub app_dir: &'a Path,
    pub tree_id: &'a str,
    pub project: &'a str,
    /// The app's configuration.
    pub config: &'a Value,
    /// The admin's variables for this phase (`group:name` keys), over the app's `variables`.
    pub variables: &'a Map<String, Value>,
}

fn prefix(format: Format) -> &'static str {
    match format {
        Format::Magento => "MAGENTO_CLOUD_",
        Format::Platform => "PLATFORM_",
    }
}

/// The build phase's environment.
pub fn build(ctx: &AppContext<'_>) -> Vec<(String, String)> {
    let p = prefix(ctx.format);
    let mut flat = Map::new();
    if let Some(groups) = ctx.config.get("variables").and_then(Value::as_object) {
        for (group, vars) in groups {
            for (name, value) in vars.as_object().into_iter().flatten() {
                flat.insert(format!("{group}:{name}"), value.clone());
            }
        }
    }
    flat.extend(ctx.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    // `env:NAME` variables are also plain environment variables.
    let mut env: Vec<(String, String)> = flat
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("env:")?;
            Some((name.to_owned(), value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())))
        })
        .collect();
    env.extend([
        (format!("{p}TREE_ID"), ctx.tree_id.to_owned()),
        (format!("{p}APPLICATION_NAME"), ctx.app_name.to_owned()),
        (format!("{p}APPLICATION"), base64(ctx.config.to_string().as_bytes())),
        (format!("{p}VARIABLES"), base64(Value::Object(flat).to_string().as_bytes())),
        (format!("{p}APP_DIR"), ctx.app_dir.display().to_string()),
        (format!("{p}PROJECT"), ctx.project.to_owned()),
    ]);
    env
}

/// The deploy and post_deploy hooks' environment.
pub fn runtime(
    ctx: &AppContext<'_>,
    environment: &str,
    branch: &str,
    topology: &Topology,
    services: &Map<String, Value>,
) -> Vec<(String, String)> {
    let p = prefix(ctx.format);
    let mut env = build(ctx);
    let host = format!("{environment}.localhost");
    let routes: Map<String, Value> = topology
        .routes
        .iter()
        .map(|(url, route)| {
            let concrete = url.replace("{default}", &host).replace("{all}", &host);
            let value = match route {
                Route::Upstream { upstream } => json!({"type": "upstream", "upstream": upstream.split(':').next().unwrap_or(upstream), "original_url": url}),
                Route::Redirect { to } => json!({"type": "redirect", "to": to.replace("{default}", &host).replace("{all}", &host), "original_url": url}),
            };
            (concrete, value)
        })
        .collect();
    env.extend([
        (format!("{p}ENVIRONMENT"), environment.to_owned()),
        (format!("{p}BRANCH"), branch.to_owned()),
        (format!("{p}RELATIONSHIPS"), base64(relationships(ctx, topology, services).to_string().as_bytes())),
        (format!("{p}ROUTES"), base64(Value::Object(routes).to_string().as_bytes())),
    ]);
    env
}

/// `{"database": [{"service": "mysql", "rel": "mysql", "host": ..., "port": ...}]}` from the
/// app's relationships and the endpoints the admin declared in `services.json`
/// (`{"mysql": {"host": "127.0.0.1", "port": 3306, "scheme": "mysql", ...}}`).
fn relationships(ctx: &AppContext<'_>, topology: &Topology, services: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    let Some(app) = topology.apps.get(ctx.app_name) else { return Value::Object(out) };
    for (name, target) in &app.relationships {
        let (service, endpoint) = target.split_once(':').unwrap_or((target, ""));
        let mut entries = Vec::new();
        if let Some(declared) = services.get(service).and_then(Value::as_object) {
            // A service with endpoints of its own (MariaDB's `configuration.endpoints`): the
            // relationship's endpoint, else the service's default one.
            let declared = declared
                .get("endpoints")
                .and_then(Value::as_object)
                .and_then(|eps| eps.get(if endpoint.is_empty() { "mysql" } else { endpoint }))
                .and_then(Value::as_object)
                .unwrap_or(declared);
            let mut entry = declared.clone();
            entry.remove("endpoints");
            entry.remove("privileges");
            entry.insert("service".into(), json!(service));
            entry.insert("rel".into(), json!(if endpoint.is_empty() { service } else { endpoint }));
            entries.push(Value::Object(entry));
        }
        out.insert(name.clone(), Value::Array(entries));
    }
    Value::Object(out)
}

/// Standard base64 with padding, as Magento Cloud encodes its variables.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"{\"a\":1}"), "eyJhIjoxfQ==");
    }
}
