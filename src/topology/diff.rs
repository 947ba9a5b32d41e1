//! What changes between two topologies, and which changes destroy data.
//!
//! Refused (the data is gone once the change is deployed): a service version downgrade (data
//! files are not downgraded in place), a change of a data-keeping service's image (except the
//! documented in-place switches), removing or renaming a service that keeps data (a rename is
//! a delete plus a create), renaming or removing an app with a disk, and changing where a mount
//! keeps its files. A disk shrink is only a warning: it fails at deploy time if the data does
//! not fit, and loses nothing. `git push -o pushgate.allow-data-loss` accepts the loss.

use serde::{Deserialize, Serialize};

use super::{Mount, Route, Topology};
use crate::registry::version_key;

/// Image switches the platform performs in place, keeping the data.
const IN_PLACE: &[(&str, &str)] =
    &[("redis-persistent", "valkey-persistent"), ("redis", "valkey"), ("mysql", "mariadb"), ("mariadb", "mysql")];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    App,
    Service,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Removed,
    Renamed,
    Upgraded,
    Downgraded,
    Retyped,
    Resized,
    Retargeted,
    Changed,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Removed => "removed",
            Kind::Renamed => "renamed",
            Kind::Upgraded => "upgraded",
            Kind::Downgraded => "downgraded",
            Kind::Retyped => "type changed",
            Kind::Resized => "resized",
            Kind::Retargeted => "retargeted",
            Kind::Changed => "changed",
        }
    }
}

/// One difference, with what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub subject: Subject,
    /// The app, service or route it concerns.
    pub name: String,
    pub kind: Kind,
    /// What changed, for people: `mysql:10.6 -> mysql:11.4`.
    pub detail: String,
    /// When deploying this change destroys data: what is lost.
    pub destroys: Option<String>,
    /// What to do instead (with `destroys`), or a caution.
    pub advice: Option<String>,
}

impl Change {
    fn new(subject: Subject, name: &str, kind: Kind, detail: impl Into<String>) -> Change {
        Change { subject, name: name.to_owned(), kind, detail: detail.into(), destroys: None, advice: None }
    }

    fn destroying(mut self, what: impl Into<String>, instead: impl Into<String>) -> Change {
        self.destroys = Some(what.into());
        self.advice = Some(instead.into());
        self
    }

    fn advising(mut self, advice: impl Into<String>) -> Change {
        self.advice = Some(advice.into());
        self
    }
}

/// Every change from `old` to `new`, services first, then apps, then routes.
pub fn diff(old: &Topology, new: &Topology) -> Vec<Change> {
    let mut changes = Vec::new();
    services(old, new, &mut changes);
    apps(old, new, &mut changes);
    routes(old, new, &mut changes);
    changes
}

/// The changes that destroy data.
pub fn destructive(changes: &[Change]) -> Vec<&Change> {
    changes.iter().filter(|c| c.destroys.is_some()).collect()
}

fn services(old: &Topology, new: &Topology, out: &mut Vec<Change>) {
    for (name, before) in &old.services {
        let Some(after) = new.services.get(name) else {
            let change = Change::new(Subject::Service, name, Kind::Removed, before.kind.clone());
            let renamed_to =
                new.services.iter().find(|(n, s)| !old.services.contains_key(*n) && s.image() == before.image());
            out.push(match (before.keeps_data, renamed_to) {
                (false, _) => change,
                (true, Some((to, _))) => Change { kind: Kind::Renamed, detail: format!("{name} -> {to}"), ..change }
                    .destroying(
                        format!("renaming service `{name}` to `{to}` deletes `{name}` and its data, and creates an empty `{to}`"),
                        format!("keep the name `{name}` (relationships can use any name: `{to}: \"{name}:...\"`)"),
                    ),
                (true, None) => change.destroying(
                    format!("removing service `{name}` ({}) deletes its data", before.kind),
                    "keep the service until its data is migrated or no longer needed",
                ),
            });
            continue;
        };
        if before.image() != after.image() {
            let in_place = IN_PLACE.contains(&(before.image(), after.image()));
            let change =
                Change::new(Subject::Service, name, Kind::Retyped, format!("{} -> {}", before.kind, after.kind));
            out.push(if in_place || !before.keeps_data {
                change
            } else {
                change.destroying(
                    format!(
                        "changing service `{name}` from {} to {} replaces it with an empty one",
                        before.kind, after.kind
                    ),
                    format!("add the new service under another name, migrate the data, then remove `{name}`"),
                )
            });
        } else if before.version() != after.version() {
            let (a, b) = (before.version().unwrap_or(""), after.version().unwrap_or(""));
            let detail = format!("{} -> {}", before.kind, after.kind);
            out.push(if version_key(b) > version_key(a) {
                Change::new(Subject::Service, name, Kind::Upgraded, detail)
            } else if before.keeps_data {
                Change::new(Subject::Service, name, Kind::Downgraded, detail).destroying(
                    format!("downgrading service `{name}` from {a} to {b}: data files are not downgraded in place"),
                    format!("keep {}, or dump the data, add a service with {} and import it", before.kind, after.kind),
                )
            } else {
                Change::new(Subject::Service, name, Kind::Downgraded, detail)
            });
        }
        resized(Subject::Service, name, (&before.size, before.disk), (&after.size, after.disk), out);
    }
    for (name, after) in &new.services {
        let renamed = out.iter().any(|c| c.kind == Kind::Renamed && c.detail.ends_with(&format!("-> {name}")));
        if !old.services.contains_key(name) && !renamed {
            out.push(Change::new(Subject::Service, name, Kind::Added, after.kind.clone()));
        }
    }
}

fn apps(old: &Topology, new: &Topology, out: &mut Vec<Change>) {
    let gone: Vec<&String> = old.apps.keys().filter(|n| !new.apps.contains_key(*n)).collect();
    let came: Vec<&String> = new.apps.keys().filter(|n| !old.apps.contains_key(*n)).collect();
    if let ([from], [to]) = (gone.as_slice(), came.as_slice()) {
        out.push(Change::new(Subject::App, to, Kind::Renamed, format!("{from} -> {to}")).destroying(
            format!("renaming app `{from}` to `{to}` deletes `{from}` with its disk and mounts, and creates an empty `{to}`"),
            format!("keep `name: {from}`"),
        ));
    } else {
        for name in gone {
            let before = &old.apps[name];
            let change = Change::new(Subject::App, name, Kind::Removed, before.kind.clone());
            out.push(if before.disk.is_some() || !before.mounts.is_empty() {
                change.destroying(
                    format!("removing app `{name}` deletes its disk and mounts"),
                    "keep the app until its files are copied elsewhere",
                )
            } else {
                change
            });
        }
        for name in came {
            out.push(Change::new(Subject::App, name, Kind::Added, new.apps[name].kind.clone()));
        }
    }
    for (name, before) in &old.apps {
        let Some(after) = new.apps.get(name) else { continue };
        if before.kind != after.kind {
            let same_image = before.kind.split(':').next() == after.kind.split(':').next();
            let (a, b) = (before.kind.split(':').nth(1).unwrap_or(""), after.kind.split(':').nth(1).unwrap_or(""));
            let kind = match (same_image, version_key(b) > version_key(a)) {
                (true, true) => Kind::Upgraded,
                (true, false) => Kind::Downgraded,
                (false, _) => Kind::Retyped,
            };
            out.push(Change::new(Subject::App, name, kind, format!("{} -> {}", before.kind, after.kind)));
        }
        resized(Subject::App, name, (&before.size, before.disk), (&after.size, after.disk), out);
        mounts(name, &before.mounts, &after.mounts, out);
        if before.relationships != after.relationships {
            out.push(Change::new(Subject::App, name, Kind::Changed, "relationships changed"));
        }
    }
}

fn mounts(
    app: &str,
    before: &std::collections::BTreeMap<String, Mount>,
    after: &std::collections::BTreeMap<String, Mount>,
    out: &mut Vec<Change>,
) {
    for (path, a) in before {
        let Some(b) = after.get(path) else { continue };
        if a != b {
            let describe = |m: &Mount| match &m.service {
                Some(s) => format!("{}:{}/{}", m.source, s, m.source_path),
                None => format!("{}:{}", m.source, m.source_path),
            };
            out.push(
                Change::new(
                    Subject::App,
                    app,
                    Kind::Changed,
                    format!("mount {path}: {} -> {}", describe(a), describe(b)),
                )
                .destroying(
                    format!("mount `{path}` of app `{app}` would start empty: its files stay in {}", describe(a)),
                    format!("keep the mount's source (`source_path: {}`)", a.source_path),
                ),
            );
        }
    }
}

fn resized(
    subject: Subject,
    name: &str,
    before: (&str, Option<i64>),
    after: (&str, Option<i64>),
    out: &mut Vec<Change>,
) {
    if let (Some(a), Some(b)) = (before.1, after.1) {
        if a != b {
            let change = Change::new(subject, name, Kind::Resized, format!("disk {a} -> {b} MB"));
            out.push(if b < a {
                change.advising(format!("shrinking the disk fails at deployment if more than {b} MB is in use"))
            } else {
                change
            });
        }
    }
    if before.0 != after.0 {
        out.push(Change::new(subject, name, Kind::Resized, format!("size {} -> {}", before.0, after.0)));
    }
}

fn routes(old: &Topology, new: &Topology, out: &mut Vec<Change>) {
    let target = |r: &Route| match r {
        Route::Upstream { upstream } => upstream.clone(),
        Route::Redirect { to } => format!("redirect to {to}"),
    };
    for (url, before) in &old.routes {
        match new.routes.get(url) {
            None => out.push(Change::new(Subject::Route, url, Kind::Removed, target(before))),
            Some(after) if after != before => out.push(Change::new(
                Subject::Route,
                url,
                Kind::Retargeted,
                format!("{} -> {}", target(before), target(after)),
            )),
            Some(_) => {}
        }
    }
    for (url, after) in &new.routes {
        if !old.routes.contains_key(url) {
            out.push(Change::new(Subject::Route, url, Kind::Added, target(after)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Service;

    fn svc(kind: &str, disk: Option<i64>, keeps: bool) -> Service {
        Service { kind: kind.into(), size: "AUTO".into(), disk, keeps_data: keeps }
    }

    fn topo(services: &[(&str, Service)]) -> Topology {
        Topology { services: services.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(), ..Default::default() }
    }

    #[test]
    fn downgrades_and_retypes_destroy_upgrades_do_not() {
        let old = topo(&[("mysql", svc("mysql:10.4", Some(2048), true))]);
        let down = diff(&old, &topo(&[("mysql", svc("mysql:10.3", Some(2048), true))]));
        assert_eq!(down[0].kind, Kind::Downgraded);
        assert!(down[0].destroys.is_some());
        let up = diff(&old, &topo(&[("mysql", svc("mysql:10.11", Some(2048), true))]));
        assert_eq!((up[0].kind, up[0].destroys.is_none()), (Kind::Upgraded, true), "10.11 > 10.4 numerically");
        let retype = diff(&old, &topo(&[("mysql", svc("postgresql:16", Some(2048), true))]));
        assert!(retype[0].destroys.is_some());
        let in_place = diff(&old, &topo(&[("mysql", svc("mariadb:10.4", Some(2048), true))]));
        assert!(in_place[0].destroys.is_none());
    }

    #[test]
    fn memory_services_may_go_and_renames_are_delete_plus_create() {
        let old = topo(&[("redis", svc("redis:7.2", None, false)), ("db", svc("mysql:10.6", Some(1024), true))]);
        let new = topo(&[("cache", svc("valkey:8.0", None, false)), ("database", svc("mysql:10.6", Some(1024), true))]);
        let changes = diff(&old, &new);
        assert!(changes.iter().any(|c| c.name == "redis" && c.kind == Kind::Removed && c.destroys.is_none()));
        assert!(changes.iter().any(|c| c.name == "cache" && c.kind == Kind::Added));
        let rename = changes.iter().find(|c| c.kind == Kind::Renamed).unwrap();
        assert_eq!(rename.detail, "db -> database");
        assert!(rename.destroys.is_some());
        assert!(!changes.iter().any(|c| c.name == "database" && c.kind == Kind::Added));
    }

    #[test]
    fn disk_shrink_warns_only() {
        let old = topo(&[("db", svc("mysql:10.6", Some(10240), true))]);
        let changes = diff(&old, &topo(&[("db", svc("mysql:10.6", Some(2048), true))]));
        assert_eq!(changes[0].kind, Kind::Resized);
        assert!(changes[0].destroys.is_none() && changes[0].advice.is_some());
    }
}
