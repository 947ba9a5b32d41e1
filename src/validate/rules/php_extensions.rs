//! PHP extensions: `json` is built into PHP 8, and the platform refuses it from PHP 8.1 on.
//!
//! Why: Adobe's knowledge base documents the deployment failure "The \"json\" extension is not
//! supported for php:8.1"; listing it is harmless on 7.x and fatal from 8.1.

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::Diagnostics;
use crate::registry::{split_type, version_key};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        let Some(t) = app.node.get("type").and_then(Node::as_str) else {
            continue;
        };
        let ("php", Some(version)) = split_type(t) else {
            continue;
        };
        if version_key(version) < vec![8, 1] {
            continue;
        }
        let extensions = app.node.get("runtime").and_then(|r| r.get("extensions")).map(Node::items).unwrap_or_default();
        for (i, ext) in extensions.iter().enumerate() {
            let name = ext.as_str().or_else(|| ext.get("name").and_then(Node::as_str));
            if name == Some("json") {
                diags.error(
                    "php-extension",
                    app.loc(ext, &format!("runtime.extensions[{i}]")),
                    format!("the `json` extension is not supported for {t}: it is built into PHP 8"),
                    "remove `json` from runtime.extensions",
                );
            }
        }
    }
}
