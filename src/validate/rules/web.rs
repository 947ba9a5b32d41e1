//! Web locations: URL paths as keys, document roots inside the app, passthru as URL paths.
//!
//! Why: a location that does not start with `/` never matches a request, and a root that climbs
//! out of the app (`../`) would serve files the build never produced.

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::Diagnostics;

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        let Some(locations) = app.node.get("web").and_then(|w| w.get("locations")) else {
            continue;
        };
        for (key, location) in locations.entries() {
            let path = format!("web.locations.{}", crate::diag::join("", &key.name));
            if !key.name.starts_with('/') {
                diags.error(
                    "web-location",
                    crate::diag::Location::new(
                        locations.file_or(&app.file),
                        key.pos,
                        crate::diag::join(&app.path, &path),
                    ),
                    format!("location `{}` does not start with `/`", key.name),
                    format!("write `\"/{}\"`", key.name.trim_start_matches('/')),
                );
            }
            if let Some(root) = location.get("root").filter(|r| r.as_str().is_some()) {
                if super::inside(root.as_str().unwrap_or_default()).is_none() {
                    diags.error(
                        "web-root",
                        app.loc(root, &format!("{path}.root")),
                        format!("root `{}` leaves the app directory", root.as_str().unwrap_or_default()),
                        "give a directory inside the app, relative to its root (for Magento: `pub`)",
                    );
                }
            }
            for (sub, node) in passthrus(location) {
                if let Some(p) = node.as_str().filter(|p| !p.starts_with('/')) {
                    diags.error(
                        "web-passthru",
                        app.loc(node, &format!("{path}.{sub}")),
                        format!("passthru `{p}` is not a URL path"),
                        format!("write `/{p}`"),
                    );
                }
            }
        }
    }
}

/// The location's own passthru and those of its rules.
fn passthrus(location: &Node) -> Vec<(String, &Node)> {
    let mut found: Vec<(String, &Node)> =
        location.get("passthru").map(|p| ("passthru".to_owned(), p)).into_iter().collect();
    for (k, rule) in location.get("rules").map(Node::entries).unwrap_or_default() {
        if let Some(p) = rule.get("passthru") {
            found.push((format!("rules.{}.passthru", crate::diag::join("", &k.name)), p));
        }
    }
    found
}
