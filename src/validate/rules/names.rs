//! App and service names: present, well formed, unique.
//!
//! Why: names identify what keeps data (renaming an app or service destroys it), they are the
//! targets of relationships and routes, and Magento Cloud's documentation asks for lowercase
//! alphanumeric app names. Underscores and dashes work on the platform, so they only warn.

use std::collections::HashMap;

use super::services;
use crate::config::yaml::Pos;
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics, Location};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, (&str, Pos)> = HashMap::new();
    for app in &config.apps {
        let at = Location::new(&app.file, app.name_pos, crate::diag::join(&app.path, "name"));
        let Some(name) = app.name.as_deref() else {
            if app.node.is_map() {
                diags.error(
                    Code::MissingKey,
                    Location::new(&app.file, app.node.pos, app.path.clone()),
                    "missing required key `name`",
                    "add `name: myapp` (lowercase letters and digits); routes and relationships refer to it",
                );
            }
            continue;
        };
        check_name(name, at.clone(), "app", diags);
        if let Some((file, first)) = seen.insert(name, (&app.file, app.name_pos)) {
            diags.error(
                Code::DuplicateName,
                at,
                format!("app name `{name}` is already used in {file}:{}:{}", first.line, first.col),
                "give every app a unique name",
            );
        }
    }
    for service in services(config) {
        let at = Location::new(service.file, service.key_pos, crate::diag::join("", service.name));
        let valid = service.name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && service.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            diags.error(
                Code::Name,
                at.clone(),
                format!("service name `{}` may contain only letters, digits, `-` and `_`", service.name),
                "rename the service (and the relationships that point at it)",
            );
        }
        if let Some((file, first)) = seen.get(service.name) {
            diags.error(
                Code::DuplicateName,
                at,
                format!("service `{}` has the name of the app at {file}:{}:{}", service.name, first.line, first.col),
                "rename the service or the app: relationships and routes could not tell them apart",
            );
        }
    }
}

fn check_name(name: &str, at: Location, what: &str, diags: &mut Diagnostics) {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        diags.error(
            Code::Name,
            at,
            format!("{what} name `{name}` may contain only lowercase letters, digits, `-` and `_`"),
            format!(
                "rename it, for example `{}`",
                name.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
        );
    } else if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        diags.warn(
            Code::Name,
            at,
            format!("{what} name `{name}` is not lowercase alphanumeric as Magento Cloud recommends"),
            "it works, but renaming later destroys the app's data: choose the final name now",
        );
    }
}
