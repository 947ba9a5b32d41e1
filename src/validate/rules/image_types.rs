//! Every app and service names a known image with a version (`mysql:10.6`).
//!
//! Why: the platform provisions containers from these names. An unknown image or a missing
//! version fails the deployment long after the push; deprecated, retired and end-of-life
//! versions still deploy but should be upgraded, so they are warnings. A pre-release of a known
//! version (`12.3-rc`) is a warning too: Adobe's own test fixtures use them.

use super::services;
use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics, Location};
use crate::registry::{split_type, version_key, Registry, Status};

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for service in services(config) {
        if let Some(t) = service.node.get("type").filter(|t| t.as_str().is_some()) {
            check_type(t, service.loc(t, "type"), false, diags);
        }
    }
    for app in &config.apps {
        if let Some(t) = app.node.get("type").filter(|t| t.as_str().is_some()) {
            check_type(t, app.loc(t, "type"), true, diags);
        }
    }
}

fn check_type(node: &Node, at: Location, runtime: bool, diags: &mut Diagnostics) {
    let registry = Registry::get();
    let written = node.as_str().unwrap_or_default();
    let (name, version) = split_type(written);
    let what = if runtime { "application runtime" } else { "service image" };
    let Some(image) = registry.resolve(name) else {
        let names = registry.names(runtime);
        let hint = match crate::validate::closest(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("known {what}s: {}", names.join(", ")),
        };
        diags.error(Code::UnknownImage, at, format!("unknown {what} `{name}` in `{written}`"), hint);
        return;
    };
    if image.image.runtime != runtime {
        let (is, place) =
            if runtime { ("a service image", "services.yaml") } else { ("an application runtime", "an app's `type`") };
        diags.error(
            Code::WrongKind,
            at,
            format!("`{name}` is {is}, not an {what}"),
            format!("declare `{name}` in {place} instead"),
        );
        return;
    }
    let supported = image.image.versions_sorted(Some(Status::Supported));
    let supported = supported.join(", ");
    let Some(version) = version else {
        diags.error(
            Code::NoVersion,
            at,
            format!("`{written}` has no version"),
            format!(
                "pin a version, for example `{name}:{}` (supported: {supported})",
                supported.split(", ").next().unwrap_or("X")
            ),
        );
        return;
    };
    let status = match image.image.versions.get(version) {
        Some(status) => *status,
        None => {
            let release = version.split_once('-').map(|(base, _)| base);
            if release.is_some_and(|base| image.image.versions.contains_key(base)) {
                diags.warn(
                    Code::PrereleaseVersion,
                    at,
                    format!("`{written}` is a pre-release of {name}:{}", release.unwrap_or_default()),
                    "use a released version for production environments",
                );
            } else {
                diags.error(
                    Code::UnknownVersion,
                    at,
                    format!("unknown version `{version}` of `{name}`"),
                    format!("supported versions: {supported}"),
                );
            }
            return;
        }
    };
    // One warning per value: the most specific reason to upgrade, with the versions to go to.
    let eol = registry.eol(image.base, version).filter(|eol| *eol < crate::core::Timestamp::now().date().as_str());
    let (code, why) = match (status, eol) {
        (_, Some(eol)) => (Code::EndOfLife, format!("reached end of life on {eol}")),
        (Status::Deprecated, None) => (Code::DeprecatedVersion, "is deprecated".to_owned()),
        (Status::Retired, None) => (Code::RetiredVersion, "is no longer offered by current images".to_owned()),
        (Status::Supported, None) => return,
    };
    let current = version_key(version);
    let newer: Vec<&str> = image
        .image
        .versions_sorted(Some(Status::Supported))
        .into_iter()
        .filter(|v| {
            version_key(v) > current
                && registry.eol(image.base, v).is_none_or(|e| e >= crate::core::Timestamp::now().date().as_str())
        })
        .collect();
    // A service's versions this server's backend cannot give are not offered (apps' runtimes
    // are not judged here).
    let (here, beyond): (Vec<&str>, Vec<&str>) =
        newer.iter().partition(|v| runtime || crate::validate::offered(&format!("{name}:{v}")));
    let hint = match (here.is_empty(), beyond.is_empty()) {
        (true, true) => "plan a move to a maintained image".to_owned(),
        (false, true) => format!("upgrade to a newer supported version: {}", here.join(", ")),
        (false, false) => format!(
            "upgrade to a newer supported version: {} ({} when this server's backend is upgraded)",
            here.join(", "),
            beyond.join(", ")
        ),
        (true, false) => format!(
            "newer supported versions ({}) need this server's backend upgraded first: ask the admin",
            beyond.join(", ")
        ),
    };
    diags.warn(code, at, format!("`{written}` {why}"), hint);
}
