//! Relationships point at a service (or app) that exists, through an endpoint it offers.
//!
//! Why: a relationship to a missing service or endpoint leaves the app without its database
//! or cache at deploy time; the push is the cheap moment to catch the typo. A service that
//! nothing uses still costs resources, so it warns.

use std::collections::HashSet;

use super::{services, Service};
use crate::config::yaml::{Node, Value};
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics, Location};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    let services = services(config);
    let apps: Vec<&str> = config.apps.iter().filter_map(|a| a.name.as_deref()).collect();
    let mut used: HashSet<&str> = HashSet::new();
    for app in &config.apps {
        for (key, value) in app.node.get("relationships").map(Node::entries).unwrap_or_default() {
            let at = app.loc(value, &format!("relationships.{}", key.name));
            check_one(&key.name, value, at, &services, &apps, &mut used, diags);
        }
        for (_, m) in app.node.get("mounts").map(Node::entries).unwrap_or_default() {
            used.extend(m.get("service").and_then(Node::as_str));
        }
    }
    for service in &services {
        for (key, value) in service.node.get("relationships").map(Node::entries).unwrap_or_default() {
            let at = service.loc(value, &format!("relationships.{}", key.name));
            check_one(&key.name, value, at, &services, &apps, &mut used, diags);
        }
    }
    for (_, route) in config.routes.as_ref().map(|r| r.root.entries()).unwrap_or_default() {
        if let Some(up) = route.get("upstream").and_then(Node::as_str) {
            used.insert(up.split(':').next().unwrap_or(up));
        }
    }
    // An app whose `relationships` key is misspelt (`relationship:`, which the schema reports)
    // uses services this rule cannot see: calling them unused would only be noise.
    let misspelt = config.apps.iter().any(|a| {
        a.node
            .entries()
            .iter()
            .any(|(k, _)| k.name != "relationships" && crate::validate::closest(&k.name, ["relationships"]).is_some())
    });
    for service in services.iter().filter(|_| !misspelt) {
        if !used.contains(service.name) {
            diags.warn(
                Code::UnusedService,
                Location::new(service.file, service.key_pos, crate::diag::join("", service.name)),
                format!("service `{}` is not used by any relationship, route or mount", service.name),
                "add a relationship to it in the app, or remove it (removing a service deletes its data)",
            );
        }
    }
}

fn check_one<'a>(
    name: &'a str,
    value: &'a Node,
    at: Location,
    services: &[Service<'a>],
    apps: &[&'a str],
    used: &mut HashSet<&'a str>,
    diags: &mut Diagnostics,
) {
    let (target, endpoint) = match &value.value {
        Value::Str(s) => match s.split_once(':') {
            _ if !is_reference(s) => {
                diags.error(
                    Code::RelationshipFormat,
                    at,
                    format!("relationship `{name}` is `{s}`, not `service:endpoint`"),
                    "write it as `service:endpoint`, for example `database: \"mysql:mysql\"`",
                );
                return;
            }
            Some((t, e)) => (t, Some(e)),
            None => (s.as_str(), None),
        },
        Value::Null => (name, None),
        Value::Map(_) => match value.get("service").and_then(Node::as_str) {
            Some(t) => (t, value.get("endpoint").and_then(Node::as_str)),
            None => return,
        },
        _ => return,
    };
    used.insert(target);
    if let Some(service) = services.iter().find(|s| s.name == target) {
        let Some(endpoint) = endpoint else { return };
        let Some(image) = service.image() else { return };
        let mut offered: Vec<&str> = image.image.endpoints.iter().map(String::as_str).collect();
        offered.push(image.base);
        let custom = service.node.get("configuration").and_then(|c| c.get("endpoints"));
        offered.extend(custom.map(Node::entries).unwrap_or_default().iter().map(|(k, _)| k.name.as_str()));
        if !offered.contains(&endpoint) {
            diags.error(
                Code::UnknownEndpoint,
                at,
                format!("service `{target}` has no endpoint `{endpoint}`"),
                format!(
                    "use `{target}:{}`, or declare `{endpoint}` under the service's configuration.endpoints",
                    offered[0]
                ),
            );
        }
    } else if apps.contains(&target) {
        if endpoint.is_some_and(|e| e != "http") {
            diags.error(
                Code::UnknownEndpoint,
                at,
                format!("app `{target}` offers only the `http` endpoint, not `{}`", endpoint.unwrap_or_default()),
                format!("write `{target}:http`"),
            );
        }
    } else {
        let known = services.iter().map(|s| s.name).chain(apps.iter().copied());
        let hint = match crate::validate::closest(target, known) {
            Some(s) => {
                format!("did you mean `{s}`? Declare the service in services.yaml, or fix the name")
            }
            None => "declare the service in services.yaml, or fix the name".to_owned(),
        };
        diags.error(
            Code::UnknownService,
            at,
            format!("relationship `{name}` points at `{target}`, which is no service or app of this project"),
            hint,
        );
    }
}

/// `service` or `service:endpoint`, with names of letters, digits, `_`, `-` (endpoints also `+`).
fn is_reference(s: &str) -> bool {
    let name = |p: &str, extra: &[char]| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    };
    match s.split_once(':') {
        Some((t, e)) => name(t, &[]) && name(e, &['+']),
        None => name(s, &[]),
    }
}
