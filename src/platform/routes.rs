//! From `routes.yaml` to the URLs of one environment: `{default}` becomes `ENV.PROJECT.DOMAIN`
//! (the default branch's environment also owns `PROJECT.DOMAIN`), `{all}` every host of the
//! environment, a literal host `www.example.com` becomes `www-example-com.ENV.PROJECT.DOMAIN`.
//! Pure functions: the router renders what they return.
//!
//! The router serves plain HTTP on one address: `https://` and `http://` routes of one host
//! and path are the same place there, so a redirect from one to the other (the usual
//! `http://{default}/` to `https://{default}/`) would loop; it is left out with a warning.

use serde_json::{Map, Value};

/// Where an environment is reached.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    pub project: &'a str,
    pub environment: &'a str,
    pub domain: &'a str,
    /// The router's port (left out of URLs when it is 80).
    pub port: u16,
    /// The default branch's environment also answers at `PROJECT.DOMAIN`.
    pub default_environment: bool,
}

/// What a route does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Served by this app.
    Upstream { app: String },
    /// Answered with a redirect to this URL (the rest of the path appended).
    Redirect { to: String, code: u16 },
}

/// One route of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The key in `routes.yaml`.
    pub original: String,
    /// Where it answers: `http://HOST[:PORT]/PATH`.
    pub url: String,
    /// The host of the URL.
    pub host: String,
    /// Other names of the same host (`PROJECT.DOMAIN` for the default environment, wildcards
    /// for `{all}`).
    pub aliases: Vec<String>,
    /// The path prefix it serves, starting and ending with `/`.
    pub path: String,
    pub action: Action,
    pub primary: bool,
    pub id: Option<String>,
}

/// Lowercase letters, digits and `-`: what a DNS label of ours may hold (the same mapping as
/// branch names to environments).
pub fn label(name: &str) -> String {
    crate::core::ids::environment_name(name)
}

impl Site<'_> {
    /// `ENV.PROJECT.DOMAIN`.
    pub fn base(&self) -> String {
        format!("{}.{}.{}", label(self.environment), label(self.project), self.domain)
    }

    fn project_host(&self) -> String {
        format!("{}.{}", label(self.project), self.domain)
    }

    fn port_suffix(&self) -> String {
        if self.port == 80 {
            String::new()
        } else {
            format!(":{}", self.port)
        }
    }

    /// The host a route's host pattern names here, and its other names.
    fn host(&self, pattern: &str) -> (String, Vec<String>) {
        let pattern = &pattern.to_ascii_lowercase();
        let base = self.base();
        let mut aliases = Vec::new();
        let host = if pattern.contains("{default}") || pattern.contains("{all}") {
            let host = pattern.replace("{default}", &base).replace("{all}", &base);
            if self.default_environment {
                aliases.push(pattern.replace("{default}", &self.project_host()).replace("{all}", &self.project_host()));
            }
            if pattern.contains("{all}") {
                aliases.push(format!("*.{host}"));
            }
            host
        } else {
            format!("{}.{base}", label(pattern))
        };
        (host, aliases)
    }

    /// A route URL's `http://HOST:PORT/PATH` here.
    fn url(&self, original: &str) -> Option<(String, Vec<String>, String)> {
        let rest = original.strip_prefix("https://").or_else(|| original.strip_prefix("http://"))?;
        let (host_pattern, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, aliases) = self.host(host_pattern);
        Some((host, aliases, path.to_owned()))
    }

    fn full_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}{}{path}", self.port_suffix())
    }
}

/// Whether `host` is a DNS name (a leading `*.` allowed): lowercase letters, digits and `-`
/// in labels of 1 to 63, never at a label's ends.
pub fn is_host_name(host: &str) -> bool {
    let labels = host.strip_prefix("*.").unwrap_or(host);
    !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The environment's routes, and warnings about what the router does not do.
pub fn resolve(routes: &Map<String, Value>, site: &Site<'_>) -> (Vec<Resolved>, Vec<String>) {
    let mut out: Vec<Resolved> = Vec::new();
    let mut warnings = Vec::new();
    for (original, route) in routes {
        let Some((host, aliases, path)) = site.url(original) else {
            warnings.push(format!("route `{original}` is not an http(s) URL; left out"));
            continue;
        };
        let path = if path.ends_with('/') { path } else { format!("{path}/") };
        // What a push validates, checked again where it becomes configuration: a host that is
        // more than a name (`;`, `#`, a space) would end nginx's `server_name` early.
        if let Some(bad) = std::iter::once(&host).chain(&aliases).find(|h| !is_host_name(h)) {
            warnings.push(format!("route `{original}`: `{}` is not a host name; left out", bad.escape_debug()));
            continue;
        }
        // Every name is under the environment's own (or, for the default branch's other
        // names, the project's): never under another project's domain.
        let under = |h: &str, base: &str| h == base || h.ends_with(&format!(".{base}"));
        if !under(&host, &site.base()) || aliases.iter().any(|a| !under(a, &site.project_host())) {
            warnings.push(format!("route `{original}`: its host is not under {}; left out", site.base()));
            continue;
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'\\;{}".contains(c)) {
            warnings.push(format!("route `{original}`: its path has characters the router does not take; left out"));
            continue;
        }
        let action = match route.get("type").and_then(Value::as_str) {
            Some("redirect") => {
                let to = route.get("to").and_then(Value::as_str).unwrap_or("/");
                let to = match site.url(to) {
                    Some((h, _, p)) => site.full_url(&h, &p),
                    None => to.to_owned(),
                };
                let code = route.get("code").and_then(Value::as_u64).unwrap_or(301) as u16;
                Action::Redirect { to, code }
            }
            _ => {
                let upstream = route.get("upstream").and_then(Value::as_str).unwrap_or_default();
                Action::Upstream { app: upstream.split(':').next().unwrap_or(upstream).to_owned() }
            }
        };
        for feature in ["cache", "ssi"] {
            if route.get(feature).and_then(|c| c.get("enabled")).and_then(Value::as_bool) == Some(true) {
                warnings.push(format!(
                    "route `{original}`: `{feature}` is not implemented by pushgate's router; requests are not {}",
                    if feature == "cache" { "cached" } else { "processed for SSI" }
                ));
            }
        }
        out.push(Resolved {
            original: original.clone(),
            url: site.full_url(&host, &path),
            host,
            aliases,
            path,
            action,
            primary: route.get("primary").and_then(Value::as_bool) == Some(true),
            id: route.get("id").and_then(Value::as_str).map(str::to_owned),
        });
    }
    // Over plain HTTP, `http://X/` and `https://X/` are one place: an upstream wins over a
    // redirect there (the redirect would send the browser back to where it is).
    let places: Vec<(String, String, bool)> =
        out.iter().map(|r| (r.host.clone(), r.path.clone(), matches!(r.action, Action::Upstream { .. }))).collect();
    out.retain(|r| {
        let upstream_here = places.iter().any(|(h, p, up)| *up && *h == r.host && *p == r.path);
        if matches!(r.action, Action::Redirect { .. }) && upstream_here {
            warnings.push(format!(
                "route `{}` redirects to a place the router serves at the same URL over plain HTTP; left out",
                r.original
            ));
            return false;
        }
        true
    });
    // One route per place (the first by key).
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert((r.host.clone(), r.path.clone())));
    (out, warnings)
}

/// The environment's primary URL: the route marked `primary`, else the upstream route with
/// the shortest URL.
pub fn primary(routes: &[Resolved]) -> Option<&Resolved> {
    routes.iter().find(|r| r.primary).or_else(|| {
        routes
            .iter()
            .filter(|r| matches!(r.action, Action::Upstream { .. }))
            .min_by_key(|r| (r.url.len(), r.url.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site(default_environment: bool) -> Site<'static> {
        Site { project: "shop", environment: "main", domain: "localhost", port: 8080, default_environment }
    }

    #[test]
    fn magento_routes_resolve_to_the_environment_and_the_loop_is_left_out() {
        let routes = json!({
            "https://{default}/": {"type": "upstream", "upstream": "mymagento:http"},
            "http://{default}/": {"type": "redirect", "to": "https://{default}/"},
            "https://www.{default}/": {"type": "redirect", "to": "https://{default}/", "code": 302},
            "https://api.example.com/v1": {"type": "upstream", "upstream": "api:http", "cache": {"enabled": true}},
        });
        let (resolved, warnings) = resolve(routes.as_object().unwrap(), &site(true));
        let mut resolved = resolved;
        resolved.sort_by(|a, b| a.url.cmp(&b.url));
        let urls: Vec<&str> = resolved.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://api-example-com.main.shop.localhost:8080/v1/",
                "http://main.shop.localhost:8080/",
                "http://www.main.shop.localhost:8080/"
            ]
        );
        assert_eq!(resolved[1].aliases, ["shop.localhost"]);
        assert_eq!(resolved[2].action, Action::Redirect { to: "http://main.shop.localhost:8080/".into(), code: 302 });
        assert!(warnings.iter().any(|w| w.contains("`http://{default}/` redirects")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("`cache` is not implemented")), "{warnings:?}");
        assert_eq!(primary(&resolved).unwrap().url, "http://main.shop.localhost:8080/");
    }

    #[test]
    fn other_environments_and_all() {
        let routes = json!({"http://{all}/": {"type": "upstream", "upstream": "app:http", "primary": true}});
        let s = Site { environment: "Feature_X", port: 80, ..site(false) };
        let (resolved, _) = resolve(routes.as_object().unwrap(), &s);
        assert_eq!(resolved[0].url, "http://feature-x.main.shop.localhost/".replace("main.", ""));
        assert_eq!(resolved[0].aliases, ["*.feature-x.shop.localhost"]);
        assert!(primary(&resolved).unwrap().primary);
    }
}
