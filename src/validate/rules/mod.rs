//! Cross-file and value rules. One rule per file; each file's doc comment says why it exists.
//!
//! Rules see the whole [`ConfigSet`] (apps, services, routes) and report into [`Diagnostics`].
//! They skip values of the wrong shape: the schema stage has reported those.

mod crons;
mod disk;
mod image_types;
mod mounts;
mod names;
mod php_extensions;
mod pipeline;
mod relationships;
mod routes;
mod web;

use crate::config::yaml::{Node, Pos};
use crate::config::ConfigSet;
use crate::diag::{concat, join, Code, Diagnostics, Location};
use crate::registry::{split_type, Registry, Resolved};

pub fn run_all(config: &ConfigSet, diags: &mut Diagnostics) {
    // Rules within one file run on every file that parsed: a syntax error in one file does
    // not hide the problems of the others.
    image_types::check(config, diags);
    names::check(config, diags);
    disk::check(config, diags);
    web::check(config, diags);
    mounts::check(config, diags);
    php_extensions::check(config, diags);
    crons::check(config, diags);
    // Rules across files run whenever the files they read parsed: a syntax error in
    // services.yaml does not hide an upstream naming no app. What one could not read would
    // only make them repeat its error as noise ("no such service"): they say what they left.
    let unread = |file: &str| config.unreadable.iter().any(|f| f == file);
    let apps_read = !config.unreadable.iter().any(|f| config.app_files.contains(f));
    let services_read = !unread(&config.format.services_file());
    if apps_read && services_read {
        relationships::check(config, diags);
    }
    routes::check(config, routes::Known { apps: apps_read, services: services_read }, diags);
    if !config.unreadable.is_empty() {
        let files = config.unreadable.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
        diags.warn(
            Code::NotChecked,
            Location::new(&config.unreadable[0], Pos { line: 1, col: 1 }, ""),
            format!("relationships and upstreams were not fully checked against {files}: it could not be read"),
            "fix the errors above; the next push checks them",
        );
    }
}

/// Rules that also read the pushed tree itself (not only the configuration files).
pub fn run_on_tree(
    source: &dyn crate::source::Source,
    config: &ConfigSet,
    diags: &mut Diagnostics,
) -> Result<(), crate::source::SourceError> {
    mounts::check_in_tree(source, config, diags)?;
    pipeline::check_in_tree(source, config, diags)
}

/// One entry of the services file.
pub(crate) struct Service<'a> {
    pub name: &'a str,
    pub key_pos: Pos,
    pub node: &'a Node,
    pub file: &'a str,
}

impl<'a> Service<'a> {
    pub fn loc(&self, node: &Node, path: &str) -> Location {
        Location::new(node.file_or(self.file), node.pos, concat(&join("", self.name), path))
    }

    /// The image this service runs, when its type names a known one.
    pub fn image(&self) -> Option<Resolved<'static>> {
        let t = self.node.get("type")?.as_str()?;
        Registry::get().resolve(split_type(t).0)
    }
}

pub(crate) fn services(config: &ConfigSet) -> Vec<Service<'_>> {
    let Some(doc) = &config.services else {
        return Vec::new();
    };
    doc.root
        .entries()
        .iter()
        .map(|(k, v)| Service { name: &k.name, key_pos: k.pos, node: v, file: &doc.file })
        .collect()
}

/// Normalises a path inside an app (`/var/../x` → `x`); None when it leaves the app.
pub(crate) fn inside(path: &str) -> Option<String> {
    crate::paths::normalize(path)
}
