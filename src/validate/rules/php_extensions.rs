//! PHP extensions: each one an image of that PHP version offers; `json` is built into PHP 8,
//! and the platform refuses it from PHP 8.1 on.
//!
//! Why: the build fails on an extension the PHP image does not have (a typo, or one dropped
//! from a newer PHP), after the push was accepted; the lists per PHP version are Platform.sh's
//! and Adobe Commerce Cloud's (`data/registry.json`). Adobe's knowledge base documents the
//! deployment failure "The \"json\" extension is not supported for php:8.1"; listing it is
//! harmless on 7.x and fatal from 8.1.

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics};
use crate::registry::{split_type, version_key, Registry};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        let Some(t) = app.node.get("type").and_then(Node::as_str) else {
            continue;
        };
        let ("php", Some(version)) = split_type(t) else {
            continue;
        };
        let offered = Registry::get().php_extensions(version);
        for key in ["extensions", "disabled_extensions"] {
            let listed = app.node.get("runtime").and_then(|r| r.get(key)).map(Node::items).unwrap_or_default();
            for (i, ext) in listed.iter().enumerate() {
                let Some(name) = ext.as_str().or_else(|| ext.get("name").and_then(Node::as_str)) else { continue };
                let Some(offered) = offered else { continue };
                let normal = name.to_ascii_lowercase().replace('-', "_");
                if offered.contains(&normal) {
                    continue;
                }
                let hint = match crate::validate::closest(&normal, offered.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the extensions of {t} are listed in Platform.sh's and Adobe's PHP documentation"),
                };
                diags.error(
                    Code::PhpExtension,
                    app.loc(ext, &format!("runtime.{key}[{i}]")),
                    format!("no PHP extension `{name}` for {t}"),
                    hint,
                );
            }
        }
        if version_key(version) < vec![8, 1] {
            continue;
        }
        let extensions = app.node.get("runtime").and_then(|r| r.get("extensions")).map(Node::items).unwrap_or_default();
        for (i, ext) in extensions.iter().enumerate() {
            let name = ext.as_str().or_else(|| ext.get("name").and_then(Node::as_str));
            if name == Some("json") {
                diags.error(
                    Code::PhpExtension,
                    app.loc(ext, &format!("runtime.extensions[{i}]")),
                    format!("the `json` extension is not supported for {t}: it is built into PHP 8"),
                    "remove `json` from runtime.extensions",
                );
            }
        }
    }
}
