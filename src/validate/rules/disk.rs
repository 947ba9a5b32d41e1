//! Disks: only where an image keeps data, and at least the image's minimum.
//!
//! Why: a `disk` on a memory-only service (redis, valkey, memcached, varnish) is refused by
//! the platform, and a disk below an image's minimum cannot be provisioned. An app without a
//! disk cannot keep its writable mounts; Magento's documentation requires one, so it warns.
//! An app's disk has a minimum of its own (128 MB, Platform.sh's documentation).

use super::services;

/// Platform.sh documents 128 MB as the smallest disk an app may have.
const APP_MIN_DISK: i64 = 128;
use crate::config::{ConfigSet, Format};
use crate::diag::{Code, Diagnostics, Location};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for service in services(config) {
        let (Some(disk), Some(image)) = (service.node.get("disk"), service.image()) else {
            continue;
        };
        let Some(size) = disk.as_i64() else { continue };
        let t = service.node.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if !image.disk {
            diags.error(
                Code::DiskOnMemoryService,
                service.loc(disk, "disk"),
                format!("`{t}` keeps its data in memory and takes no disk"),
                format!("remove `disk`, or use `{}-persistent` if the data must survive restarts", image.base),
            );
        } else if let Some(min) = image.image.min_disk.filter(|m| size < i64::from(*m)) {
            diags.error(
                Code::DiskTooSmall,
                service.loc(disk, "disk"),
                format!("disk {size} MB is below the {min} MB minimum of `{}`", image.base),
                format!("set `disk: {min}` or more"),
            );
        }
    }
    for app in &config.apps {
        if let Some(disk) = app.node.get("disk") {
            if let Some(size) = disk.as_i64().filter(|s| *s < APP_MIN_DISK) {
                diags.error(
                    Code::DiskTooSmall,
                    app.loc(disk, "disk"),
                    format!("disk {size} MB is below the {APP_MIN_DISK} MB an app's disk needs at least"),
                    format!("set `disk: {APP_MIN_DISK}` or more (MB)"),
                );
            }
            continue;
        }
        if !app.node.is_map() {
            continue;
        }
        let local_mounts = app.node.get("mounts").is_some_and(|m| {
            m.entries()
                .iter()
                .any(|(_, v)| v.as_str().is_some() || v.get("source").and_then(|s| s.as_str()) == Some("local"))
        });
        let at = Location::new(&app.file, app.node.pos, app.path.clone());
        if local_mounts || config.format == Format::Magento {
            diags.warn(
                Code::NoDisk,
                at.clone(),
                "the app has no `disk`",
                "add `disk: 2048` (MB): writable mounts and Magento's var/ and pub/media need it",
            );
        }
        if config.format == Format::Magento && app.node.get("web").is_none() && app.node.get("workers").is_none() {
            diags.warn(
                Code::NoWeb,
                at,
                "the app has neither `web` nor `workers`",
                "add a `web.locations` block so that the app serves requests",
            );
        }
    }
}
