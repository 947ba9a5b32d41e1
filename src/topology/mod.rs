//! The topology of an environment: its apps, services and routes, as one commit declares them.
//!
//! A topology is what the platform provisions from the configuration: containers (image, size,
//! disk), the data they keep (disks, mounts) and how requests reach them (routes). Pushes are
//! compared topology to topology (`diff`), and a change that would destroy data is refused
//! unless the pusher says otherwise (`policy`).

pub mod diff;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::node::Node;
use crate::config::ConfigSet;
use crate::registry::{split_type, Registry};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub apps: BTreeMap<String, App>,
    pub services: BTreeMap<String, Service>,
    pub routes: BTreeMap<String, Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// `php:8.4`
    #[serde(rename = "type")]
    pub kind: String,
    pub size: String,
    pub disk: Option<i64>,
    pub relationships: BTreeMap<String, String>,
    pub mounts: BTreeMap<String, Mount>,
}

/// Where a mount keeps its files. Changing the source loses what the old one held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: String,
    pub source_path: String,
    pub service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `mysql:11.4`
    #[serde(rename = "type")]
    pub kind: String,
    pub size: String,
    pub disk: Option<i64>,
    /// Whether the image keeps data (a disk); memory-only services lose nothing when replaced.
    pub keeps_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Route {
    /// Served by `app:endpoint`.
    Upstream {
        upstream: String,
    },
    Redirect {
        to: String,
    },
}

impl Service {
    pub fn image(&self) -> &str {
        split_type(&self.kind).0
    }

    pub fn version(&self) -> Option<&str> {
        split_type(&self.kind).1
    }
}

impl Topology {
    /// The topology a configuration set declares. Call it on a valid set; values of the wrong
    /// shape are skipped.
    pub fn from_config(config: &ConfigSet) -> Topology {
        let text = |n: Option<&Node>| n.and_then(Node::scalar_text).unwrap_or_default();
        let mut topology = Topology::default();
        for app in &config.apps {
            let Some(name) = app.name.clone() else { continue };
            let relationships = app
                .node
                .get("relationships")
                .map(Node::entries)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.name.clone(), relationship_target(&k.name, v)))
                .collect();
            let mounts = app
                .node
                .get("mounts")
                .map(Node::entries)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.name.trim_matches('/').to_owned(), mount(&k.name, v)))
                .collect();
            topology.apps.insert(
                name,
                App {
                    kind: text(app.node.get("type")),
                    size: size(app.node.get("size")),
                    disk: app.node.get("disk").and_then(Node::as_i64),
                    relationships,
                    mounts,
                },
            );
        }
        if let Some(doc) = &config.services {
            for (key, node) in doc.root.entries() {
                let kind = text(node.get("type"));
                let keeps_data = Registry::get().resolve(split_type(&kind).0).is_none_or(|r| r.disk);
                topology.services.insert(
                    key.name.clone(),
                    Service {
                        kind,
                        size: size(node.get("size")),
                        disk: node.get("disk").and_then(Node::as_i64),
                        keeps_data,
                    },
                );
            }
        }
        match &config.routes {
            Some(doc) => {
                for (key, node) in doc.root.entries() {
                    let route = match node.get("type").and_then(Node::as_str) {
                        Some("redirect") => Route::Redirect { to: text(node.get("to")) },
                        _ => Route::Upstream { upstream: text(node.get("upstream")) },
                    };
                    topology.routes.insert(key.name.clone(), route);
                }
            }
            None => topology.routes = default_routes(&topology),
        }
        topology
    }
}

/// Without a routes file, the first app serves `https://{default}/` and http redirects there.
fn default_routes(topology: &Topology) -> BTreeMap<String, Route> {
    let mut routes = BTreeMap::new();
    if let Some(app) = topology.apps.keys().next() {
        routes.insert("https://{default}/".to_owned(), Route::Upstream { upstream: format!("{app}:http") });
        routes.insert("http://{default}/".to_owned(), Route::Redirect { to: "https://{default}/".to_owned() });
    }
    routes
}

fn size(node: Option<&Node>) -> String {
    node.and_then(Node::as_str).unwrap_or("AUTO").to_owned()
}

/// `service:endpoint`, whichever way the relationship was written.
fn relationship_target(name: &str, node: &Node) -> String {
    if let Some(s) = node.as_str() {
        return s.to_owned();
    }
    match node.get("service").and_then(Node::as_str) {
        Some(service) => match node.get("endpoint").and_then(Node::as_str) {
            Some(endpoint) => format!("{service}:{endpoint}"),
            None => service.to_owned(),
        },
        None => name.to_owned(),
    }
}

/// A mount in its long form; the legacy `shared:files/PATH` is a local mount of PATH.
fn mount(path: &str, node: &Node) -> Mount {
    if let Some(legacy) = node.as_str() {
        return Mount {
            source: "local".to_owned(),
            source_path: legacy.strip_prefix("shared:files/").unwrap_or(legacy).trim_matches('/').to_owned(),
            service: None,
        };
    }
    let text = |k: &str| node.get(k).and_then(Node::as_str).map(str::to_owned);
    Mount {
        source: text("source").unwrap_or_else(|| "local".to_owned()),
        source_path: text("source_path")
            .unwrap_or_else(|| path.trim_matches('/').to_owned())
            .trim_matches('/')
            .to_owned(),
        service: text("service"),
    }
}
