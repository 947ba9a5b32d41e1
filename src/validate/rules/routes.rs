//! Routes: valid URL templates, upstreams that exist, redirects that go somewhere, one primary.
//!
//! Why: the router is configured from these; an upstream naming no app sends every request of
//! that host to an error page after deployment. `:php` upstreams are the pre-2018 spelling of
//! `:http` and still work, so they warn.

use std::collections::HashMap;

use super::services;
use crate::config::yaml::{Node, Pos};
use crate::config::ConfigSet;
use crate::diag::{join, Code, Diagnostics, Location};

/// Which of the files an upstream may name were read (a file that could not be read leaves its
/// names unknown).
#[derive(Clone, Copy)]
pub struct Known {
    pub apps: bool,
    pub services: bool,
}

pub fn check(config: &ConfigSet, known: Known, diags: &mut Diagnostics) {
    let Some(doc) = &config.routes else { return };
    let apps: Vec<&str> = config.apps.iter().filter_map(|a| a.name.as_deref()).collect();
    let services = services(config);
    let mut primary: Option<Pos> = None;
    let mut ids: HashMap<&str, Pos> = HashMap::new();
    for (key, route) in doc.root.entries() {
        let path = join("", &key.name);
        let at = |node: &Node, sub: &str| Location::new(node.file_or(&doc.file), node.pos, join(&path, sub));
        if let Err(why) = check_template(&key.name) {
            diags.error(
                Code::RouteUrl,
                Location::new(&doc.file, key.pos, path.clone()),
                format!("`{}` is not a valid route URL template: {why}", key.name),
                "write routes as `https://{default}/`, `http://www.{default}/` or `https://example.com/path`",
            );
        }
        if let Some(up) = route.get("upstream").filter(|_| route.get("type").and_then(Node::as_str) == Some("upstream"))
        {
            if let Some(text) = up.as_str() {
                let (target, endpoint) = text.split_once(':').map_or((text, None), |(t, e)| (t, Some(e)));
                let is_app = apps.contains(&target);
                let is_service = services.iter().any(|s| s.name == target);
                if !known.apps && !is_app {
                    // An app whose file could not be read may be its target.
                } else if !is_app && !is_service && !known.services {
                    diags.error(
                        Code::RouteUpstream,
                        at(up, "upstream"),
                        format!("upstream `{text}` names no app"),
                        format!(
                            "point it at an app ({}), or fix services.yaml if it names a service there",
                            crate::diag::few(apps.iter(), |a| format!("`{a}:http`"))
                        ),
                    );
                } else if !is_app && !is_service {
                    let known = apps.iter().copied().chain(services.iter().map(|s| s.name));
                    let hint = match crate::validate::closest(target, known) {
                        Some(s) => {
                            format!(
                                "did you mean `{s}:http`? Apps here: {}",
                                crate::diag::few(apps.iter(), |a| a.to_string())
                            )
                        }
                        None => {
                            format!("point it at an app: {}", crate::diag::few(apps.iter(), |a| format!("`{a}:http`")))
                        }
                    };
                    diags.error(
                        Code::RouteUpstream,
                        at(up, "upstream"),
                        format!("upstream `{text}` names no app or service"),
                        hint,
                    );
                } else if endpoint == Some("php") {
                    diags.warn(
                        Code::RouteUpstreamPhp,
                        at(up, "upstream"),
                        format!("upstream `{text}` uses the deprecated `:php` endpoint"),
                        format!("write `{target}:http`"),
                    );
                } else if is_app && endpoint.is_some_and(|e| e != "http") {
                    diags.error(
                        Code::RouteUpstream,
                        at(up, "upstream"),
                        format!("app `{target}` has no endpoint `{}`", endpoint.unwrap_or_default()),
                        format!("write `{target}:http`"),
                    );
                }
            }
        }
        if let Some(to) = route.get("to").and_then(|t| t.as_str().map(|s| (t, s))) {
            if route.get("type").and_then(Node::as_str) == Some("redirect")
                && !(to.1.starts_with("http://") || to.1.starts_with("https://"))
            {
                diags.error(
                    Code::RouteRedirect,
                    at(to.0, "to"),
                    format!("redirect target `{}` is not an absolute URL", to.1),
                    "write the target as `https://{default}/` or a full URL",
                );
            }
        }
        if let Some(p) = route.get("primary").filter(|p| p.as_bool() == Some(true)) {
            match primary {
                Some(first) => diags.error(
                    Code::RoutePrimary,
                    at(p, "primary"),
                    format!("a second primary route (the first is at line {})", first.line),
                    "mark at most one route `primary: true`",
                ),
                None => primary = Some(p.pos),
            }
        }
        if let Some(id) = route.get("id").and_then(|i| i.as_str().map(|s| (i, s))) {
            if let Some(first) = ids.insert(id.1, id.0.pos) {
                diags.error(
                    Code::RouteId,
                    at(id.0, "id"),
                    format!("route id `{}` is already used at line {}", id.1, first.line),
                    "give every route a unique id",
                );
            }
        }
    }
}

/// `scheme://host[:port]/path` where host may use `{default}` and `{all}`.
fn check_template(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("it must start with `http://` or `https://`")?;
    let (host, _path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if url.chars().any(char::is_whitespace) {
        return Err("it contains white space".into());
    }
    let mut rest = host;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').ok_or("a `{` is not closed")? + start;
        let name = &rest[start + 1..end];
        if name != "default" && name != "all" {
            return Err(format!("unknown placeholder `{{{name}}}` (use `{{default}}` or `{{all}}`)"));
        }
        rest = &rest[end + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` has no opening `{`".into());
    }
    check_host(host)
}

/// A route's host is a DNS name: labels of letters, digits and `-`, `{default}` or `{all}` as
/// whole labels, and at most a leading `*.`. Anything else would reach the router's
/// configuration as more than a name (`;`, `#`, a space end nginx's `server_name`).
fn check_host(host: &str) -> Result<(), String> {
    let labels = host.strip_prefix("*.").unwrap_or(host);
    let count = labels.split('.').count();
    for (i, label) in labels.split('.').enumerate() {
        if label == "{default}" || label == "{all}" {
            if i + 1 != count {
                // `{default}.shop.example.com` would be a name under another project's domain.
                return Err(format!("`{label}` must end the host, as in `www.{label}`"));
            }
            continue;
        }
        let bare = label.replace("{default}", "").replace("{all}", "");
        if bare.len() != label.len() && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("`{label}`: a placeholder is a whole part of the host, as in `www.{{default}}`"));
        }
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            let shown = label.escape_debug();
            return Err(if label.is_empty() {
                "the host has an empty part (two dots, or a dot at an end)".to_owned()
            } else {
                format!(
                    "the host part `{shown}` is not a DNS label (letters, digits and `-`, not at an end; a `*.` only \
                     in front of the host)"
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_template;

    #[test]
    fn templates() {
        for ok in [
            "http://{default}/",
            "https://www.{default}/",
            "https://{all}/",
            "https://example.com/shop",
            "http://{default}",
        ] {
            assert!(check_template(ok).is_ok(), "{ok}");
        }
        for bad in [
            "{default}/",
            "ftp://{default}/",
            "https://{defualt}/",
            "https:///x",
            "https://{default/",
            "http://main.shop.localhost;#{default}/",
            "http://x.*.{default}/",
            "http://{default}:8080/",
            "http://www-{default}/",
            "http://a..{default}/",
            "http://-a.{default}/",
            "https://{default}.shop.example.com/",
        ] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
    }
}
