//! Our JSON Schemas (`schemas/*.json`, embedded in the binary), applied to the YAML tree.
//!
//! Schema errors come back as JSON pointers; we walk the same pointer through the YAML tree to
//! point at `file:line:col`, and take the hint from the nearest `description` along the schema
//! path (unknown keys also list the keys that are allowed there). Each schema is compiled once
//! per process, on first use.

use std::sync::OnceLock;

use jsonschema::paths::LocationSegment;
use jsonschema::{error::ValidationErrorKind, ValidationError, Validator};
use serde_json::Value as Json;

use crate::config::yaml::{Node, Value};
use crate::diag::{join, Diagnostics, Location};

/// The three file shapes.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    App,
    Services,
    Routes,
}

struct Compiled {
    raw: Json,
    validator: Validator,
}

fn compiled(schema: Schema) -> &'static Compiled {
    static APP: OnceLock<Compiled> = OnceLock::new();
    static SERVICES: OnceLock<Compiled> = OnceLock::new();
    static ROUTES: OnceLock<Compiled> = OnceLock::new();
    let (cell, text) = match schema {
        Schema::App => (&APP, include_str!("../../schemas/app.json")),
        Schema::Services => (&SERVICES, include_str!("../../schemas/services.json")),
        Schema::Routes => (&ROUTES, include_str!("../../schemas/routes.json")),
    };
    cell.get_or_init(|| {
        // The schemas are part of the binary and tested; failing here is a build defect.
        let raw: Json = serde_json::from_str(text).expect("embedded schema is JSON");
        let validator = jsonschema::draft7::new(&raw).expect("embedded schema compiles");
        Compiled { raw, validator }
    })
}

/// The raw JSON of an embedded schema (for tests and tools).
pub fn raw(schema: Schema) -> &'static Json {
    &compiled(schema).raw
}

/// The YAML tree as JSON, for the validator. Depth is bounded by the loader.
pub fn to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => Json::Object(entries.iter().map(|(k, v)| (k.name.clone(), to_json(v))).collect()),
    }
}

/// Validates `node` (standing at dotted `path` in `file`) against `schema`.
pub fn check(schema: Schema, node: &Node, file: &str, path: &str, diags: &mut Diagnostics) {
    let compiled = compiled(schema);
    let instance = to_json(node);
    for error in compiled.validator.iter_errors(&instance) {
        report(&compiled.raw, &error, node, file, path, diags);
    }
}

fn report(raw: &Json, error: &ValidationError<'_>, root: &Node, file: &str, path: &str, diags: &mut Diagnostics) {
    let (node, dotted) = follow(root, path, error);
    let at = Location::new(node.file_or(file), node.pos, dotted.clone());
    let chain = schema_chain(raw, error.schema_path().as_str());
    let hint = chain.iter().rev().find_map(|s| s.get("description").and_then(Json::as_str));
    let shown = node.scalar_text().map(|t| format!("`{t}`")).unwrap_or_else(|| format!("a {}", node.kind_name()));
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = chain
                .iter()
                .rev()
                .nth(1)
                .and_then(|s| s.get("properties"))
                .and_then(Json::as_object)
                .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            for name in unexpected {
                let key_pos = node.entry(name).map_or(node.pos, |(k, _)| k.pos);
                let suggestion = crate::validate::closest(name, allowed.split(", "));
                let hint = match suggestion {
                    Some(s) => format!("did you mean `{s}`? Keys allowed here: {allowed}"),
                    None => format!("remove it; keys allowed here: {allowed}"),
                };
                diags.error(
                    "unknown-key",
                    Location::new(&at.file, key_pos, join(&dotted, name)),
                    format!("unknown key `{name}`"),
                    hint,
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            diags.error(
                "missing-key",
                at,
                format!("missing required key `{name}`"),
                hint.map_or_else(|| format!("add `{name}:` here"), str::to_owned),
            );
        }
        ValidationErrorKind::Type { .. } => {
            let expected = chain.last().and_then(|s| s.get("type")).map(type_names).unwrap_or_default();
            diags.error(
                "type",
                at,
                format!("expected {expected}, found {shown}"),
                hint.map_or_else(|| format!("write {expected} here"), str::to_owned),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let list = options.as_array().map(|a| a.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", "));
            diags.error(
                "enum",
                at,
                format!("{shown} is not one of {}", list.unwrap_or_default()),
                hint.unwrap_or("use one of the listed values").to_owned(),
            );
        }
        _ => {
            let message = match error.kind() {
                ValidationErrorKind::Pattern { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                    format!("{shown} is not a valid value here")
                }
                ValidationErrorKind::OneOfMultipleValid { .. } => {
                    format!("{shown} is ambiguous here")
                }
                _ => error.to_string(),
            };
            diags.error("schema", at, message, hint.unwrap_or("check the value against the documentation").to_owned());
        }
    }
}

/// The YAML node an error's instance path points at, and its dotted config path.
fn follow<'a>(root: &'a Node, path: &str, error: &ValidationError<'_>) -> (&'a Node, String) {
    let mut node = root;
    let mut dotted = path.to_owned();
    for segment in error.instance_path().segments() {
        let next = match segment {
            LocationSegment::Property(key) => {
                dotted = join(&dotted, &key);
                node.get(&key)
            }
            LocationSegment::Index(i) => {
                dotted = format!("{dotted}[{i}]");
                node.items().get(i)
            }
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    (node, dotted)
}

/// The schema objects along a keyword location such as `/properties/web/$ref/properties/x`.
fn schema_chain<'a>(root: &'a Json, pointer: &str) -> Vec<&'a Json> {
    let mut chain = vec![root];
    let mut current = root;
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        let next = if segment == "$ref" {
            current.get("$ref").and_then(Json::as_str).and_then(|r| r.strip_prefix('#')).and_then(|p| root.pointer(p))
        } else {
            match current {
                Json::Object(map) => map.get(&segment),
                Json::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            }
        };
        match next {
            Some(n) => {
                current = n;
                if n.is_object() {
                    chain.push(n);
                }
            }
            None => break,
        }
    }
    chain
}

fn type_names(t: &Json) -> String {
    let name = |v: &Json| match v.as_str().unwrap_or("?") {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        "null" => "nothing".to_owned(),
        other => format!("a {other}"),
    };
    match t {
        Json::Array(items) => {
            items.iter().filter(|i| i.as_str() != Some("null")).map(name).collect::<Vec<_>>().join(" or ")
        }
        other => name(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        for s in [Schema::App, Schema::Services, Schema::Routes] {
            assert!(raw(s).is_object());
        }
    }
}
