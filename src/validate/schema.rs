//! Our JSON Schemas (`schemas/*.json`, embedded in the binary), applied to the YAML tree.
//!
//! The schemas are standard draft-07 and are checked against the `jsonschema` crate in tests
//! (tests/it/schema.rs: they are valid, and both validators agree on the whole corpus and on
//! broken variants of it). At push time we interpret them directly on the positioned YAML tree:
//! compiling them with `jsonschema` costs about 2 ms per process, the whole budget of a hook
//! that runs once per push. Interpreting needs no compilation, no conversion to JSON, and every
//! error already knows its node, so it points at `file:line:col`.
//!
//! Supported keywords (a test fails if a schema uses another): `$ref` (local), `type`, `enum`,
//! `const`, `properties`, `additionalProperties`, `required`, `items`, `minimum`, `minLength`,
//! `maxLength`, `oneOf`, `if`/`then`/`else`, and the annotations `title`, `description`,
//! `$schema`, `$id`, `definitions`.

use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::config::yaml::{Node, Value};
use crate::diag::{join, Code, Diagnostics, Location};

/// The three file shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    App,
    Services,
    Routes,
}

impl Schema {
    pub const ALL: [Schema; 3] = [Schema::App, Schema::Services, Schema::Routes];

    /// The schema file's text, as committed in `schemas/`.
    pub fn text(self) -> &'static str {
        match self {
            Schema::App => include_str!("../../schemas/app.json"),
            Schema::Services => include_str!("../../schemas/services.json"),
            Schema::Routes => include_str!("../../schemas/routes.json"),
        }
    }

    /// The parsed schema (parsed once per process).
    pub fn json(self) -> &'static Json {
        static PARSED: [OnceLock<Json>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let i = Schema::ALL.iter().position(|s| *s == self).unwrap_or(0);
        // The schemas are part of the binary and tested; failing here is a build defect.
        PARSED[i].get_or_init(|| serde_json::from_str(self.text()).expect("embedded schema is JSON"))
    }
}

/// Keywords the interpreter implements or may ignore (annotations).
pub const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "properties",
    "additionalProperties",
    "required",
    "items",
    "minimum",
    "minLength",
    "maxLength",
    "oneOf",
    "if",
    "then",
    "else",
    "title",
    "description",
    "$schema",
    "$id",
    "definitions",
];

/// One schema violation, before it becomes a diagnostic.
#[derive(Debug, Clone)]
struct Violation<'n> {
    node: &'n Node,
    /// Where to point: the node, or a key's position for unknown keys.
    pos: crate::config::yaml::Pos,
    path: String,
    code: Code,
    message: String,
    hint: String,
}

/// Validates `node` (standing at dotted `path` in `file`) against `schema`.
pub fn check(schema: Schema, node: &Node, file: &str, path: &str, diags: &mut Diagnostics) {
    let root = schema.json();
    let mut found = Vec::new();
    Walker { root }.validate(root, node, path, None, &mut found);
    for v in found {
        diags.error(v.code, Location::new(v.node.file_or(file), v.pos, v.path), v.message, v.hint);
    }
}

/// True when `node` is valid against `schema` (for tests).
pub fn is_valid(schema: Schema, node: &Node) -> bool {
    let root = schema.json();
    let mut found = Vec::new();
    Walker { root }.validate(root, node, "", None, &mut found);
    found.is_empty()
}

struct Walker<'s> {
    root: &'s Json,
}

impl<'s> Walker<'s> {
    fn resolve(&self, mut schema: &'s Json) -> &'s Json {
        // `$ref` chains are short and acyclic in our schemas; bound them anyway.
        for _ in 0..16 {
            match schema.get("$ref").and_then(Json::as_str).and_then(|r| r.strip_prefix('#')) {
                Some(pointer) => match self.root.pointer(pointer) {
                    Some(target) => schema = target,
                    None => break,
                },
                None => break,
            }
        }
        schema
    }

    fn validate<'n>(
        &self,
        schema: &'s Json,
        node: &'n Node,
        path: &str,
        hint: Option<&'s str>,
        out: &mut Vec<Violation<'n>>,
    ) {
        let schema = self.resolve(schema);
        let Some(obj) = schema.as_object() else { return };
        let hint = obj.get("description").and_then(Json::as_str).or(hint);
        let violation = |code, message: String, default_hint: String| Violation {
            node,
            pos: node.pos,
            path: path.to_owned(),
            code,
            message,
            hint: hint.map_or(default_hint, str::to_owned),
        };

        if let Some(t) = obj.get("type") {
            if !type_matches(t, node) {
                let expected = type_names(t);
                out.push(violation(
                    Code::Type,
                    format!("expected {expected}, found {}", shown(node)),
                    format!("write {expected} here"),
                ));
                return;
            }
        }
        if let Some(options) = obj.get("enum").and_then(Json::as_array) {
            if !options.iter().any(|o| equals(o, node)) {
                let list = options.iter().map(Json::to_string).collect::<Vec<_>>().join(", ");
                out.push(violation(
                    Code::Enum,
                    format!("{} is not one of {list}", shown(node)),
                    "use one of the listed values".into(),
                ));
            }
        }
        if let Some(c) = obj.get("const") {
            if !equals(c, node) {
                out.push(violation(Code::Enum, format!("{} is not {c}", shown(node)), format!("write {c}")));
            }
        }
        self.check_numbers_and_strings(obj, node, &violation, out);
        if let Value::Map(entries) = &node.value {
            self.check_object(obj, node, entries, path, hint, out);
        }
        if let (Value::Seq(items), Some(item_schema)) = (&node.value, obj.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(item_schema, item, &format!("{path}[{i}]"), hint, out);
            }
        }
        if let Some(branches) = obj.get("oneOf").and_then(Json::as_array) {
            self.check_one_of(branches, node, path, hint, &violation, out);
        }
        if let Some(condition) = obj.get("if") {
            let mut scratch = Vec::new();
            self.validate(condition, node, path, hint, &mut scratch);
            let branch = if scratch.is_empty() { obj.get("then") } else { obj.get("else") };
            if let Some(branch) = branch {
                self.validate(branch, node, path, hint, out);
            }
        }
    }

    fn check_numbers_and_strings<'n>(
        &self,
        obj: &serde_json::Map<String, Json>,
        node: &'n Node,
        violation: &dyn Fn(Code, String, String) -> Violation<'n>,
        out: &mut Vec<Violation<'n>>,
    ) {
        if let Some(min) = obj.get("minimum").and_then(Json::as_f64) {
            let value = match node.value {
                Value::Int(i) => Some(i as f64),
                Value::Float(f) => Some(f),
                _ => None,
            };
            if value.is_some_and(|v| v < min) {
                out.push(violation(
                    Code::Minimum,
                    format!("{} is below the minimum {min}", shown(node)),
                    format!("use {min} or more"),
                ));
            }
        }
        if let Some(s) = node.as_str() {
            let len = s.chars().count() as u64;
            if obj.get("minLength").and_then(Json::as_u64).is_some_and(|m| len < m) {
                out.push(violation(
                    Code::Length,
                    "the value is empty or too short".into(),
                    "write a value here".into(),
                ));
            }
            if let Some(max) = obj.get("maxLength").and_then(Json::as_u64).filter(|m| len > *m) {
                out.push(violation(
                    Code::Length,
                    format!("the value is longer than {max} characters"),
                    "shorten it".into(),
                ));
            }
        }
    }

    fn check_object<'n>(
        &self,
        obj: &'s serde_json::Map<String, Json>,
        node: &'n Node,
        entries: &'n [(crate::config::yaml::Key, Node)],
        path: &str,
        hint: Option<&'s str>,
        out: &mut Vec<Violation<'n>>,
    ) {
        let properties = obj.get("properties").and_then(Json::as_object);
        if let Some(required) = obj.get("required").and_then(Json::as_array) {
            for name in required.iter().filter_map(Json::as_str) {
                if node.get(name).is_none() {
                    out.push(Violation {
                        node,
                        pos: node.pos,
                        path: path.to_owned(),
                        code: Code::MissingKey,
                        message: format!("missing required key `{name}`"),
                        hint: hint.map_or_else(|| format!("add `{name}:` here"), str::to_owned),
                    });
                }
            }
        }
        for (key, value) in entries {
            let sub = join(path, &key.name);
            if let Some(prop) = properties.and_then(|p| p.get(&key.name)) {
                self.validate(prop, value, &sub, None, out);
                continue;
            }
            match obj.get("additionalProperties") {
                Some(Json::Bool(false)) => {
                    let allowed: Vec<&str> =
                        properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                    let hint = match crate::validate::closest(&key.name, allowed.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? Keys allowed here: {}", allowed.join(", ")),
                        None => format!("remove it; keys allowed here: {}", allowed.join(", ")),
                    };
                    out.push(Violation {
                        node,
                        pos: key.pos,
                        path: sub,
                        code: Code::UnknownKey,
                        message: format!("unknown key `{}`", key.name),
                        hint,
                    });
                }
                Some(extra) if extra.is_object() => self.validate(extra, value, &sub, None, out),
                _ => {}
            }
        }
    }

    /// Exactly one branch must match. When none does, report the errors of the branch whose
    /// `type` fits the value (the one the author most likely meant), else one summary.
    fn check_one_of<'n>(
        &self,
        branches: &'s [Json],
        node: &'n Node,
        path: &str,
        hint: Option<&'s str>,
        violation: &dyn Fn(Code, String, String) -> Violation<'n>,
        out: &mut Vec<Violation<'n>>,
    ) {
        let results: Vec<Vec<Violation<'n>>> = branches
            .iter()
            .map(|b| {
                let mut v = Vec::new();
                self.validate(b, node, path, hint, &mut v);
                v
            })
            .collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid == 1 {
            return;
        }
        if valid > 1 {
            out.push(violation(
                Code::Schema,
                format!("{} is ambiguous here", shown(node)),
                "make the value match one form only".into(),
            ));
            return;
        }
        // Every form only misses a key: say which keys would do (a cron without `cmd`).
        if results.iter().all(|r| !r.is_empty() && r.iter().all(|v| v.code == Code::MissingKey)) {
            let keys: Vec<String> = results
                .iter()
                .flatten()
                .filter_map(|v| v.message.strip_prefix("missing required key "))
                .map(str::to_owned)
                .collect();
            let keys = keys.iter().fold(Vec::<&str>::new(), |mut all, k| {
                if !all.contains(&k.as_str()) {
                    all.push(k);
                }
                all
            });
            out.push(Violation {
                code: Code::MissingKey,
                message: format!("missing required key: one of {}", keys.join(", ")),
                hint: hint.map_or_else(|| format!("add {} here", keys.join(" or ")), str::to_owned),
                ..violation(Code::MissingKey, String::new(), String::new())
            });
            return;
        }
        let fitting: Vec<usize> = branches
            .iter()
            .enumerate()
            .filter(|(_, b)| self.resolve(b).get("type").is_none_or(|t| type_matches(t, node)))
            .map(|(i, _)| i)
            .collect();
        match fitting.as_slice() {
            [only] => out.extend(results.into_iter().nth(*only).unwrap_or_default()),
            _ => out.push(violation(
                Code::Schema,
                format!("{} is not a valid value here", shown(node)),
                "check the value against the documentation".into(),
            )),
        }
    }
}

fn type_matches(t: &Json, node: &Node) -> bool {
    let one = |name: &str| match name {
        "object" => matches!(node.value, Value::Map(_)),
        "array" => matches!(node.value, Value::Seq(_)),
        "string" => matches!(node.value, Value::Str(_)),
        "integer" => matches!(node.value, Value::Int(_)) || matches!(node.value, Value::Float(f) if f.fract() == 0.0),
        "number" => matches!(node.value, Value::Int(_) | Value::Float(_)),
        "boolean" => matches!(node.value, Value::Bool(_)),
        "null" => matches!(node.value, Value::Null),
        _ => false,
    };
    match t {
        Json::String(s) => one(s),
        Json::Array(items) => items.iter().filter_map(Json::as_str).any(one),
        _ => true,
    }
}

/// JSON value equality with a YAML scalar (numbers compare by value).
fn equals(json: &Json, node: &Node) -> bool {
    match (json, &node.value) {
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Bool(b)) => a == b,
        (Json::String(a), Value::Str(b)) => a == b,
        (Json::Number(a), Value::Int(b)) => a.as_f64() == Some(*b as f64),
        (Json::Number(a), Value::Float(b)) => a.as_f64() == Some(*b),
        _ => false,
    }
}

fn shown(node: &Node) -> String {
    match &node.value {
        Value::Seq(_) | Value::Map(_) => format!("a {}", node.kind_name()),
        Value::Null => "nothing".to_owned(),
        _ => format!("`{}`", node.scalar_text().unwrap_or_default()),
    }
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
    use crate::config::yaml::{load, Limits};

    /// Every keyword used in the committed schemas is one the interpreter implements.
    #[test]
    fn schemas_use_only_supported_keywords() {
        fn walk(v: &Json, in_properties: bool, path: &str) {
            if let Json::Object(map) = v {
                for (k, child) in map {
                    if !in_properties {
                        assert!(KEYWORDS.contains(&k.as_str()), "{path}: unsupported keyword `{k}`");
                    }
                    let child_is_map_of_schemas = !in_properties && matches!(k.as_str(), "properties" | "definitions");
                    walk(child, child_is_map_of_schemas, &format!("{path}/{k}"));
                }
            } else if let Json::Array(items) = v {
                for (i, item) in items.iter().enumerate() {
                    walk(item, false, &format!("{path}/{i}"));
                }
            }
        }
        for s in Schema::ALL {
            walk(s.json(), false, &format!("{s:?}"));
        }
    }

    fn errors(schema: Schema, yaml: &str) -> Vec<String> {
        let node = load(yaml, Limits::default(), &crate::config::yaml::Budget::per_commit()).unwrap();
        let mut d = Diagnostics::default();
        check(schema, &node, "f.yaml", "", &mut d);
        d.items.iter().map(|d| format!("{}:{} {} {}", d.pos.line, d.pos.col, d.path, d.message)).collect()
    }

    #[test]
    fn reports_at_the_node() {
        assert_eq!(
            errors(Schema::Services, "db:\n  type: mysql:10.6\n  disk: big\n"),
            ["3:9 db.disk expected an integer, found `big`"]
        );
        assert_eq!(errors(Schema::Services, "db:\n  disk: 5\n"), ["2:3 db missing required key `type`"]);
        assert_eq!(errors(Schema::Services, "db:\n  type: x:1\n  dsik: 5\n"), ["3:3 db.dsik unknown key `dsik`"]);
        assert_eq!(
            errors(Schema::Routes, "\"https://{default}/\":\n  type: upstream\n"),
            ["2:3 \"https://{default}/\" missing required key `upstream`"]
        );
        assert!(errors(
            Schema::App,
            "type: php:8.3\nmounts:\n  var: {source: local, source_path: var}\n  x: shared:files/x\n"
        )
        .is_empty());
        assert_eq!(
            errors(Schema::App, "type: php:8.3\nmounts:\n  var: {source: nfs}\n"),
            ["3:17 mounts.var.source `nfs` is not one of \"local\", \"service\", \"tmp\", \"storage\", \"instance\""]
        );
    }
}
