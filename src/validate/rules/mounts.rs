//! Mounts: writable paths inside the app, backed by the app disk or a storage service.
//!
//! Why: the deployed app is read-only except its mounts; a mount path or source path that climbs
//! out of the app (`../`) would write outside it, and a `service` mount needs a
//! `network-storage` service to hold the files. A path that looks inside the app can still lead
//! out through a symbolic link of the commit (`d/l1 -> ..`, then `d/l1/d/l1/../../../x`): mount
//! paths are also resolved through the pushed tree ([`check_in_tree`]), as the deploy will
//! resolve them through the release.

use super::services;
use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{join, Code, Diagnostics, Location};
use crate::paths::resolve_beneath;
use crate::source::{Beneath, Source, SourceError};

/// Resolves every mount path through the links of the pushed tree: it must stay in its app.
pub fn check_in_tree(source: &dyn Source, config: &ConfigSet, diags: &mut Diagnostics) -> Result<(), SourceError> {
    for app in &config.apps {
        let Some(mounts) = app.node.get("mounts") else { continue };
        for (key, _) in mounts.entries() {
            if super::inside(&key.name).is_none_or(|p| p.is_empty()) {
                continue; // reported by `check`
            }
            let mut tree = Beneath { source, base: &app.dir, error: None };
            let resolved = resolve_beneath(&key.name, &mut tree);
            if let Some(e) = tree.error {
                return Err(e);
            }
            if let Err(escape) = resolved {
                let path = format!("mounts.{}", join("", &key.name));
                diags.error(
                    Code::MountPath,
                    Location::new(mounts.file_or(&app.file), key.pos, join(&app.path, &path)),
                    format!("mount `{}` leads outside the app through this commit's links: {escape}", key.name),
                    "write the mount as a plain path inside the app (`var`, `pub/media`), not through a symbolic link",
                );
            }
        }
    }
    Ok(())
}

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    let services = services(config);
    for app in &config.apps {
        let Some(mounts) = app.node.get("mounts") else {
            continue;
        };
        for (key, mount) in mounts.entries() {
            let path = format!("mounts.{}", join("", &key.name));
            let key_at = Location::new(mounts.file_or(&app.file), key.pos, join(&app.path, &path));
            match super::inside(&key.name) {
                None => diags.error(
                    Code::MountPath,
                    key_at,
                    format!("mount `{}` leaves the app directory", key.name),
                    "mount paths are relative to the app root, for example `var` or `pub/media`",
                ),
                Some(p) if p.is_empty() => diags.error(
                    Code::MountPath,
                    key_at,
                    "a mount over the whole app",
                    "mount a subdirectory (`var`, `pub/media`): the app root holds the built code",
                ),
                Some(_) => {}
            }
            if let Some(legacy) = mount.as_str().filter(|m| !m.starts_with("shared:files/")) {
                diags.error(
                    Code::MountSource,
                    app.loc(mount, &path),
                    format!("mount `{}` is `{legacy}`: the short form must read `shared:files/PATH`", key.name),
                    format!(
                        "write `\"{}\": {{source: local, source_path: {}}}`",
                        key.name,
                        key.name.trim_start_matches('/')
                    ),
                );
            }
            let source_path = match mount.as_str() {
                Some(legacy) => legacy.strip_prefix("shared:files/").map(|p| (mount, p)),
                None => mount.get("source_path").and_then(|n| n.as_str().map(|s| (n, s))),
            };
            if let Some((node, sp)) = source_path {
                if super::inside(sp).is_none() {
                    diags.error(
                        Code::MountSource,
                        app.loc(node, &path),
                        format!("source path `{sp}` leaves the mount's volume"),
                        "give a path inside the volume, for example `files/var`",
                    );
                }
            }
            if !config.unreadable.iter().any(|f| f.ends_with("services.yaml")) {
                check_service_mount(mount, &services, app.loc(mount, &path), diags);
            }
        }
    }
}

fn check_service_mount(mount: &Node, services: &[super::Service<'_>], at: Location, diags: &mut Diagnostics) {
    if mount.get("source").and_then(Node::as_str) != Some("service") {
        return;
    }
    let Some(name) = mount.get("service").and_then(Node::as_str) else {
        diags.error(
            Code::MountService,
            at,
            "a `source: service` mount without `service`",
            "name the network-storage service",
        );
        return;
    };
    match services.iter().find(|s| s.name == name) {
        None => diags.error(
            Code::MountService,
            at,
            format!("mount service `{name}` is not declared in services.yaml"),
            "declare it with `type: network-storage:2.0`",
        ),
        Some(s) if s.image().is_some_and(|i| i.base != "network-storage") => diags.error(
            Code::MountService,
            at,
            format!("mount service `{name}` is not a network-storage service"),
            "mounts can use only `network-storage` services",
        ),
        Some(_) => {}
    }
}
