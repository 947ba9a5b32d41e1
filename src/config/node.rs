//! The configuration tree: what the YAML loader builds and every later stage reads.
//!
//! Each node and mapping key carries its position, so findings point at `file:line:col`;
//! nodes spliced in by `!include` also carry the file they came from.

use std::sync::Arc;

pub use crate::core::Pos;

/// A mapping key: its text and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// One node of a loaded document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// A local tag such as `!include`, without the leading `!`. Core tags (`!!str`) are applied.
    pub tag: Option<String>,
    /// The file this node was read from when it came in through `!include`; None for the
    /// document's own file.
    pub file: Option<Arc<str>>,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Node {
        Node { value, pos, tag: None, file: None }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(s) => s,
            _ => &[],
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value under `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<&(Key, Node)> {
        self.entries().iter().find(|(k, _)| k.name == key)
    }

    /// Scalars as text (numbers and booleans as YAML would print them); None for collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The file this node stands in, given the file of the document it belongs to.
    pub fn file_or<'a>(&'a self, document: &'a str) -> &'a str {
        self.file.as_deref().unwrap_or(document)
    }

    /// Marks this node and everything below it as read from `file`.
    pub fn set_file(&mut self, file: &Arc<str>) {
        let mut todo = vec![self];
        while let Some(n) = todo.pop() {
            n.file = Some(file.clone());
            match &mut n.value {
                Value::Seq(items) => todo.extend(items.iter_mut()),
                Value::Map(entries) => todo.extend(entries.iter_mut().map(|(_, v)| v)),
                _ => {}
            }
        }
    }

    /// The node as JSON (the value the platform's `*_APPLICATION` variables carry).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// A short name of the node's kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }
}
