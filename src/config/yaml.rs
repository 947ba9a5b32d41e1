//! YAML with positions, tags and hard budgets.
//!
//! Configuration files arrive from untrusted pushes, so the loader is built on the event-level
//! parser of `saphyr-parser` and assembles the tree itself. That gives us, in one pass:
//! - a 1-based line and column for every node and every mapping key (diagnostics point there);
//! - custom tags kept on the node (`!include`, `!archive`), resolved later by `config::include`;
//! - duplicate keys reported as errors instead of silently overwritten;
//! - budgets that bound work and memory whatever the input: nesting depth, node count and
//!   scalar bytes *after* alias expansion (a size cap alone does not stop an alias bomb);
//! - no recursion over input depth, so no stack overflow on 20,000-deep documents.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

pub use super::node::{Key, Node, Pos, Value};

/// What a configuration file may cost us, whatever it contains.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of sequences and mappings.
    pub max_depth: usize,
    /// Nodes in the loaded tree, counting every copy an alias makes.
    pub max_nodes: usize,
    /// Bytes of scalar text in the loaded tree, counting every copy an alias makes.
    pub max_scalar_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The largest document of the 148 real sets has 369 nodes, nests 7 levels and is 20 KB:
        // these limits leave a wide margin and keep an alias bomb's cost to a few milliseconds.
        Limits { max_depth: 64, max_nodes: 20_000, max_scalar_bytes: 4 << 20 }
    }
}

/// What all the files of one commit may cost together, includes included: the budgets of one
/// document hold across every file and include an app brings, so neither 64 includes of one
/// 1 MiB file nor 24 apps multiply them. Shared by every load of one validation.
#[derive(Debug)]
pub struct Budget {
    nodes: std::cell::Cell<usize>,
    bytes: std::cell::Cell<usize>,
    max_nodes: usize,
    max_bytes: usize,
    /// Whether running out was reported already: once per commit is enough.
    reported: std::cell::Cell<bool>,
}

/// The cost of one commit's configuration: nodes, and bytes of text (files read plus scalar
/// text after alias expansion).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub nodes: usize,
    pub bytes: usize,
}

impl Budget {
    pub fn new(max_nodes: usize, max_bytes: usize) -> Budget {
        Budget {
            nodes: Default::default(),
            bytes: Default::default(),
            max_nodes,
            max_bytes,
            reported: Default::default(),
        }
    }

    /// One commit: the node budget of one document, and 8 MiB of text in all (the 4 MiB of
    /// scalars one document may expand to, plus the files read).
    pub fn per_commit() -> Budget {
        let one = Limits::default();
        Budget::new(one.max_nodes, 2 * one.max_scalar_bytes)
    }

    /// Charges `nodes` and `bytes`; false (and nothing charged past the limit) once over.
    pub fn charge(&self, nodes: usize, bytes: usize) -> bool {
        let (n, b) = (self.nodes.get() + nodes, self.bytes.get() + bytes);
        self.nodes.set(n.min(self.max_nodes + 1));
        self.bytes.set(b.min(self.max_bytes + 1));
        n <= self.max_nodes && b <= self.max_bytes
    }

    /// True once a charge went over: nothing more is read (an include of a large file would
    /// still cost its reading).
    pub fn exhausted(&self) -> bool {
        self.nodes.get() > self.max_nodes || self.bytes.get() > self.max_bytes
    }

    /// True the first time it is asked after running out: the one refusal to report.
    pub fn first_report(&self) -> bool {
        self.exhausted() && !self.reported.replace(true)
    }

    pub fn used(&self) -> Cost {
        Cost { nodes: self.nodes.get(), bytes: self.bytes.get() }
    }

    /// What a refusal says about it.
    pub fn describe(&self) -> String {
        format!(
            "the configuration of this commit, all files and includes together, is larger than pushgate checks \
             ({} nodes, {} MiB of text)",
            self.max_nodes,
            self.max_bytes >> 20
        )
    }
}

fn pos_from_span(span: &Span) -> Pos {
    pos_from_marker(span.start.line(), span.start.col())
}

/// saphyr counts lines from 1 and columns from 0.
fn pos_from_marker(line: usize, col: usize) -> Pos {
    Pos { line: line.max(1) as u32, col: col as u32 + 1 }
}

/// Why a document could not be loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
    }
}

impl std::error::Error for YamlError {}

fn err(pos: Pos, message: impl Into<String>, hint: impl Into<String>) -> YamlError {
    YamlError { pos, message: message.into(), hint: hint.into() }
}

/// Loads one YAML document. An empty file loads as `Null`. Its cost is charged to `budget`
/// as well as checked against `limits`.
pub fn load(text: &str, limits: Limits, budget: &Budget) -> Result<Node, YamlError> {
    let mut builder = Builder::new(limits, budget);
    let mut docs = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| scan_error(text, &e))?;
        let pos = pos_from_span(&span);
        match event {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(err(
                        pos,
                        "a second YAML document in the same file",
                        "a configuration file holds one document: remove the extra `---` and what follows",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| (t.handle.clone(), t.suffix.clone()));
                let node = scalar(&text, style, tag, pos)?;
                builder.leaf(node, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => builder.open(Frame::seq(
                pos,
                local_tag(tag.as_deref().map(|t| (&t.handle, &t.suffix)), pos)?,
                anchor,
            ))?,
            Event::MappingStart(anchor, tag) => builder.open(Frame::map(
                pos,
                local_tag(tag.as_deref().map(|t| (&t.handle, &t.suffix)), pos)?,
                anchor,
            ))?,
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Alias(id) => builder.alias(id, pos)?,
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    Ok(builder.root.unwrap_or_else(|| Node::new(Value::Null, Pos { line: 1, col: 1 })))
}

/// Turns the parser's error into ours, with a position a person can act on and a hint.
fn scan_error(text: &str, e: &saphyr_parser::ScanError) -> YamlError {
    // Where the parser gave up; the cause and its position come from the input itself.
    let reported = pos_from_marker(e.marker().line(), e.marker().col());
    let (cause, pos) = super::syntax::locate(text, reported);
    let (message, hint) = cause.explain(e.info());
    err(pos, message, hint)
}

/// Keeps local tags (`!include`) on the node; rejects unknown global ones.
fn local_tag(tag: Option<(&String, &String)>, pos: Pos) -> Result<Option<String>, YamlError> {
    match tag {
        None => Ok(None),
        Some((handle, suffix)) if handle == "!" => Ok(Some(suffix.clone())),
        Some((handle, suffix)) if handle == "tag:yaml.org,2002:" || handle == "!!" => match suffix.as_str() {
            "map" | "seq" | "str" | "int" | "float" | "bool" | "null" => Ok(None),
            other => Err(unknown_tag(&format!("!!{other}"), pos)),
        },
        Some((handle, suffix)) => Err(unknown_tag(&format!("{handle}{suffix}"), pos)),
    }
}

fn unknown_tag(tag: &str, pos: Pos) -> YamlError {
    err(pos, format!("unknown YAML tag `{tag}`"), "the tags understood here are `!include` and `!archive`")
}

/// Resolves a scalar with the YAML 1.2 core schema (quoted scalars are always strings).
fn scalar(text: &str, style: ScalarStyle, tag: Option<(String, String)>, pos: Pos) -> Result<Node, YamlError> {
    let mut local = None;
    let mut force_str = style != ScalarStyle::Plain;
    if let Some((handle, suffix)) = tag {
        if handle == "!" {
            local = Some(suffix);
            force_str = true;
        } else if (handle == "tag:yaml.org,2002:" || handle == "!!") && suffix == "str" {
            force_str = true;
        } else {
            local_tag(Some((&handle, &suffix)), pos)?;
        }
    }
    let value = if force_str { Value::Str(text.to_owned()) } else { resolve_plain(text) };
    Ok(Node { value, pos, tag: local, file: None })
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    if looks_like_float(digits) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_owned())
}

/// `1.5`, `.5`, `1e3`, `1.5E-3`: the core schema's float shape (Rust's parser is laxer).
fn looks_like_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        all_digits(int) && frac.map_or(!int.is_empty(), |f| all_digits(f) && !(int.is_empty() && f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exp_ok && (frac.is_some() || exp.is_some())
}

/// A collection being built.
struct Frame {
    pos: Pos,
    tag: Option<String>,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map { entries: Vec<(Key, Node)>, key: Option<Key>, seen: HashMap<String, Pos>, merges: Vec<Node> },
}

impl Frame {
    fn seq(pos: Pos, tag: Option<String>, anchor: usize) -> Frame {
        Frame { pos, tag, anchor, kind: FrameKind::Seq(Vec::new()) }
    }

    fn map(pos: Pos, tag: Option<String>, anchor: usize) -> Frame {
        Frame {
            pos,
            tag,
            anchor,
            kind: FrameKind::Map { entries: Vec::new(), key: None, seen: HashMap::new(), merges: Vec::new() },
        }
    }
}

/// Anchored nodes, with the cost of one copy of each.
struct Anchor {
    node: Node,
    nodes: usize,
    bytes: usize,
}

struct Builder<'b> {
    limits: Limits,
    budget: &'b Budget,
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Anchor>,
    nodes: usize,
    bytes: usize,
    /// Node and byte counters at the start of each open anchored collection.
    anchor_marks: Vec<(usize, usize)>,
}

impl<'b> Builder<'b> {
    fn new(limits: Limits, budget: &'b Budget) -> Builder<'b> {
        Builder {
            limits,
            budget,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            nodes: 0,
            bytes: 0,
            anchor_marks: Vec::new(),
        }
    }

    fn charge(&mut self, nodes: usize, bytes: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes += nodes;
        self.bytes += bytes;
        if self.nodes > self.limits.max_nodes || self.bytes > self.limits.max_scalar_bytes {
            return Err(err(
                pos,
                format!(
                    "the document expands to more than {} nodes or {} MiB of text (an alias bomb?)",
                    self.limits.max_nodes,
                    self.limits.max_scalar_bytes >> 20
                ),
                "configuration files are small: remove the repeated aliases (`*name`) or the generated content",
            ));
        }
        if !self.budget.charge(nodes, bytes) {
            return Err(err(
                pos,
                self.budget.describe(),
                "configuration files are small: include fewer or smaller files, or remove generated content",
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(err(
                frame.pos,
                format!("nesting too deep: more than {} levels", self.limits.max_depth),
                "configuration files need only a few levels of nesting: flatten this structure",
            ));
        }
        self.charge(1, 0, frame.pos)?;
        if frame.anchor != 0 {
            self.anchor_marks.push((self.nodes - 1, self.bytes));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map { mut entries, seen, merges, .. } => {
                merge_into(&mut entries, &seen, merges);
                Value::Map(entries)
            }
        };
        let node = Node { value, pos: frame.pos, tag: frame.tag, file: None };
        if frame.anchor != 0 {
            let (nodes, bytes) = self.anchor_marks.pop().unwrap_or((self.nodes, self.bytes));
            self.remember(frame.anchor, &node, self.nodes - nodes, self.bytes - bytes);
        }
        self.attach(node)
    }

    fn leaf(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        let bytes = match &node.value {
            Value::Str(s) => s.len(),
            _ => 0,
        };
        self.charge(1, bytes, node.pos)?;
        if anchor != 0 {
            self.remember(anchor, &node, 1, bytes);
        }
        self.attach(node)
    }

    fn remember(&mut self, id: usize, node: &Node, nodes: usize, bytes: usize) {
        self.anchors.insert(id, Anchor { node: node.clone(), nodes, bytes });
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), YamlError> {
        let Some(anchor) = self.anchors.get(&id) else {
            return Err(err(pos, "alias to an unknown anchor", "define the anchor (`&name`) before using `*name`"));
        };
        let (nodes, bytes) = (anchor.nodes, anchor.bytes);
        // Charge before copying: the budget is what stops an alias bomb.
        self.charge(nodes, bytes, pos)?;
        let mut node = self.anchors[&id].node.clone();
        node.pos = pos;
        if self.stack.len() + depth_of(&node) > self.limits.max_depth {
            return Err(err(
                pos,
                format!("nesting too deep: more than {} levels", self.limits.max_depth),
                "configuration files need only a few levels of nesting: flatten this structure",
            ));
        }
        self.attach(node)
    }

    /// Puts a finished node in its parent (or makes it the root).
    fn attach(&mut self, node: Node) -> Result<(), YamlError> {
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key, seen, merges } => match key.take() {
                None => {
                    let name = node.scalar_text().filter(|_| node.tag.is_none()).ok_or_else(|| {
                        err(node.pos, "a mapping key must be a plain scalar", "use a string as the key")
                    })?;
                    if let Some(first) = seen.get(&name) {
                        return Err(err(
                            node.pos,
                            format!("duplicate key `{name}` (first defined at line {})", first.line),
                            "YAML keeps only one of them: remove or merge the duplicate",
                        ));
                    }
                    if name != "<<" {
                        seen.insert(name.clone(), node.pos);
                    }
                    *key = Some(Key { name, pos: node.pos });
                }
                Some(k) if k.name == "<<" => merges.push(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

/// YAML merge keys (`<<: *defaults`): keys written in the mapping win over merged ones.
fn merge_into(entries: &mut Vec<(Key, Node)>, seen: &HashMap<String, Pos>, merges: Vec<Node>) {
    let mut taken: std::collections::HashSet<String> = seen.keys().cloned().collect();
    for merge in merges {
        let sources = match merge.value {
            Value::Seq(items) => items,
            _ => vec![merge],
        };
        for source in sources {
            if let Value::Map(m) = source.value {
                for (k, v) in m {
                    if taken.insert(k.name.clone()) {
                        entries.push((k, v));
                    }
                }
            }
        }
    }
}

/// Depth of a node, iteratively (nodes can be wide; depth is already bounded by the builder).
fn depth_of(node: &Node) -> usize {
    let mut max = 0;
    let mut todo = vec![(node, 0usize)];
    while let Some((n, d)) = todo.pop() {
        let children: Box<dyn Iterator<Item = &Node>> = match &n.value {
            Value::Seq(items) => Box::new(items.iter()),
            Value::Map(entries) => Box::new(entries.iter().map(|(_, v)| v)),
            _ => Box::new(std::iter::empty()),
        };
        let mut has = false;
        for c in children {
            has = true;
            todo.push((c, d + 1));
        }
        if has {
            max = max.max(d + 1);
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_ok(s: &str) -> Node {
        load(s, Limits::default(), &Budget::per_commit()).expect("loads")
    }

    #[test]
    fn positions_are_one_based() {
        let n = load_ok("a: 1\nb:\n  c: \"x\"\n");
        let (k, v) = n.entry("b").unwrap();
        assert_eq!(k.pos, Pos { line: 2, col: 1 });
        let (k, v) = v.entry("c").map(|e| (&e.0, &e.1)).unwrap();
        assert_eq!(k.pos, Pos { line: 3, col: 3 });
        assert_eq!(v.pos, Pos { line: 3, col: 6 });
        assert_eq!(v.as_str(), Some("x"));
        let _ = k;
    }

    #[test]
    fn core_schema_scalars() {
        let n = load_ok("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 1y\ng: -1\nh: 10.6\n");
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert!(n.get("d").unwrap().is_null());
        assert_eq!(n.get("e").unwrap().as_str(), Some("1"));
        assert_eq!(n.get("f").unwrap().as_str(), Some("1y"));
        assert_eq!(n.get("g").unwrap().value, Value::Int(-1));
    }

    #[test]
    fn duplicate_key_is_an_error_at_the_duplicate() {
        let e = load("a: 1\nb: 2\na: 3\n", Limits::default(), &Budget::per_commit()).unwrap_err();
        assert_eq!(e.pos, Pos { line: 3, col: 1 });
        assert!(e.message.contains("duplicate key `a`"), "{e}");
    }

    #[test]
    fn tab_indentation_points_at_the_tab() {
        let e = load("a:\n\tb: 1\n", Limits::default(), &Budget::per_commit()).unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(e.hint.contains("spaces"));
    }

    #[test]
    fn local_tags_are_kept() {
        let n = load_ok("a: !include x.yaml\nb: !include\n  type: string\n  path: y\n");
        assert_eq!(n.get("a").unwrap().tag.as_deref(), Some("include"));
        assert_eq!(n.get("b").unwrap().tag.as_deref(), Some("include"));
        assert!(load("a: !python/object x\n", Limits::default(), &Budget::per_commit()).is_ok_and(|n| n
            .get("a")
            .unwrap()
            .tag
            .is_some()));
        assert!(load("a: !!python/object x\n", Limits::default(), &Budget::per_commit()).is_err());
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = load_ok("d: &d {x: 1, y: 2}\ne:\n  <<: *d\n  y: 3\n");
        let e = n.get("e").unwrap();
        assert_eq!(e.get("x").unwrap().value, Value::Int(1));
        assert_eq!(e.get("y").unwrap().value, Value::Int(3));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
        for i in 1..10u8 {
            let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
            s.push_str(&format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
        }
        let e = load(&s, Limits::default(), &Budget::per_commit()).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
    }

    #[test]
    fn quadratic_alias_bomb_is_refused() {
        let mut s = format!("big: &big \"{}\"\nrefs:\n", "x".repeat(64 * 1024));
        for _ in 0..1000 {
            s.push_str("  - *big\n");
        }
        let e = load(&s, Limits::default(), &Budget::per_commit()).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        for doc in ["[".repeat(20_000), "- ".repeat(20_000) + "x", "{a: ".repeat(20_000)] {
            let e = load(&doc, Limits::default(), &Budget::per_commit()).unwrap_err();
            assert!(e.message.contains("nesting too deep"), "{e}");
        }
    }

    #[test]
    fn second_document_is_refused() {
        assert!(load("a: 1\n---\nb: 2\n", Limits::default(), &Budget::per_commit()).is_err());
    }
}
