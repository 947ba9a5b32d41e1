//! Web locations: URL paths as keys, document roots inside the app, passthru as URL paths.
//!
//! Why: a location that does not start with `/` never matches a request, and a root that climbs
//! out of the app (`../`) would serve files the build never produced.

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        let Some(locations) = app.node.get("web").and_then(|w| w.get("locations")) else {
            continue;
        };
        for (key, location) in locations.entries() {
            let path = format!("web.locations.{}", crate::diag::join("", &key.name));
            if !key.name.starts_with('/') {
                diags.error(
                    Code::WebLocation,
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
                        Code::WebRoot,
                        app.loc(root, &format!("{path}.root")),
                        format!("root `{}` leaves the app directory", root.as_str().unwrap_or_default()),
                        "give a directory inside the app, relative to its root (for Magento: `pub`)",
                    );
                }
            }
            for (sub, node) in expires(location) {
                if let Some(e) = node.as_str().filter(|e| !is_duration(e)) {
                    diags.error(
                        Code::WebExpires,
                        app.loc(node, &format!("{path}.{sub}")),
                        format!("expires `{e}` is not a duration"),
                        "write seconds (`3600`, `-1` for no caching) or a number with a unit: ms, s, m, h, d, w, M, y (`1y`)",
                    );
                }
            }
            for (sub, node) in passthrus(location) {
                if let Some(p) = node.as_str().filter(|p| !p.starts_with('/')) {
                    diags.error(
                        Code::WebPassthru,
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
    with_rules(location, "passthru")
}

fn expires(location: &Node) -> Vec<(String, &Node)> {
    with_rules(location, "expires")
}

/// `key` of the location and of each of its rules, with their dotted sub-paths.
fn with_rules<'a>(location: &'a Node, key: &str) -> Vec<(String, &'a Node)> {
    let mut found: Vec<(String, &Node)> = location.get(key).map(|p| (key.to_owned(), p)).into_iter().collect();
    for (k, rule) in location.get("rules").map(Node::entries).unwrap_or_default() {
        if let Some(p) = rule.get(key) {
            found.push((format!("rules.{}.{key}", crate::diag::join("", &k.name)), p));
        }
    }
    found
}

/// `-1`, `3600`, `1h`, `500ms`, `1y`.
fn is_duration(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    end > 0 && matches!(&digits[end..], "" | "ms" | "s" | "m" | "h" | "d" | "w" | "M" | "y")
}
