//! Platform.sh's custom tags, resolved from the pushed tree.
//!
//! - `!include path` or `!include {type: yaml|string|binary, path: ...}` splices another file of
//!   the same commit into the document: YAML is parsed and validated as part of the document
//!   (its nodes keep their own file name, so errors point into the included file), `string`
//!   becomes the file's text and `binary` its content.
//! - `!archive "dir"` names a directory of the commit (Solr configuration, for example).
//!
//! Paths are relative to the directory of the including file (a leading `/` means the
//! repository root) and may never leave the repository. Nothing is run and no path outside the
//! commit is touched.

use std::sync::Arc;

use crate::config::yaml::{Budget, Node, Value};
use crate::diag::{join, Code, Diagnostics, Location};
use crate::source::{Entry, Source, SourceError};

/// Includes may nest, but not without end.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Total included files per document.
const MAX_INCLUDES: usize = 64;

/// Resolves every tag under `root`, in place. Problems become diagnostics; a tag that cannot be
/// resolved is replaced by null so that later stages do not report it twice.
pub fn resolve(
    source: &dyn Source,
    file: &str,
    root: &mut Node,
    targets: &mut Vec<Target>,
    budget: &Budget,
    diags: &mut Diagnostics,
) -> Result<(), SourceError> {
    let mut state = State { count: 0, targets, budget };
    resolve_in(source, file, root, "", 0, &mut state, diags)
}

/// A file or directory that a tag refers to, as resolved from the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    /// `!archive` names a directory; `!include` a file.
    pub directory: bool,
    /// Whether the commit has it.
    pub found: bool,
}

struct State<'t> {
    count: usize,
    targets: &'t mut Vec<Target>,
    /// Shared by every file of the commit: includes cannot multiply what one file may cost.
    budget: &'t Budget,
}

fn resolve_in(
    source: &dyn Source,
    file: &str,
    root: &mut Node,
    root_path: &str,
    depth: usize,
    state: &mut State<'_>,
    diags: &mut Diagnostics,
) -> Result<(), SourceError> {
    // Iterative walk: the tree's depth is bounded by the loader, its width is not.
    let mut todo: Vec<(&mut Node, String)> = vec![(root, root_path.to_owned())];
    while let Some((node, path)) = todo.pop() {
        if let Some(tag) = node.tag.take() {
            let at = Location::new(node.file_or(file), node.pos, path.clone());
            let including_file = at.file.clone();
            let replacement = match tag.as_str() {
                "include" => include(source, &including_file, node, &at, depth, state, diags)?,
                "archive" => archive(source, &including_file, node, &at, state, diags)?,
                other => {
                    diags.error(
                        Code::UnknownTag,
                        at,
                        format!("unknown tag `!{other}`"),
                        "the tags understood here are `!include` and `!archive`",
                    );
                    None
                }
            };
            *node = replacement.unwrap_or_else(|| Node::new(Value::Null, node.pos));
            continue;
        }
        match &mut node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    todo.push((item, format!("{path}[{i}]")));
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    let p = join(&path, &k.name);
                    todo.push((v, p));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What an `!include` asks for.
enum Kind {
    Yaml,
    Text,
    Binary,
}

fn include(
    source: &dyn Source,
    including_file: &str,
    node: &Node,
    at: &Location,
    depth: usize,
    state: &mut State<'_>,
    diags: &mut Diagnostics,
) -> Result<Option<Node>, SourceError> {
    let Some((kind, target, target_pos)) = include_form(node, at, diags) else { return Ok(None) };
    let target_at = Location { pos: target_pos, ..at.clone() };
    let Some(resolved) = resolve_path(including_file, &target) else {
        diags.error(
            Code::IncludeEscape,
            target_at,
            format!("`!include {target}` points outside the repository"),
            "include only files of this repository, with a path relative to the including file",
        );
        return Ok(None);
    };
    state.count += 1;
    if depth >= MAX_INCLUDE_DEPTH || state.count > MAX_INCLUDES {
        diags.error(
            Code::Include,
            target_at,
            format!("too many or too deeply nested includes (at most {MAX_INCLUDES}, {MAX_INCLUDE_DEPTH} deep)"),
            "check for an include cycle",
        );
        return Ok(None);
    }
    if state.budget.exhausted() {
        return Ok(None); // reported where it ran out; not read
    }
    let Some(bytes) = read_target(source, &resolved, &target_at, state, diags)? else { return Ok(None) };
    // Every include is charged, YAML (in `parse`) or not: the text kept, the bytes read.
    if !matches!(kind, Kind::Yaml) && !state.budget.charge(1, bytes.len()) {
        if state.budget.first_report() {
            diags.error(
                Code::Include,
                target_at,
                state.budget.describe(),
                "include fewer or smaller files: configuration files are small",
            );
        }
        return Ok(None);
    }
    match kind {
        Kind::Binary => Ok(Some(Node::new(Value::Str(format!("<{} bytes of {resolved}>", bytes.len())), node.pos))),
        Kind::Text => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(Node::new(Value::Str(text), node.pos))),
            Err(_) => {
                diags.error(
                    Code::Include,
                    target_at,
                    format!("included file `{resolved}` is not UTF-8 text"),
                    "use `type: binary` for binary files",
                );
                Ok(None)
            }
        },
        Kind::Yaml => {
            let Some(mut included) = super::parse(&resolved, &bytes, state.budget, diags) else {
                return Ok(None);
            };
            let file: Arc<str> = Arc::from(resolved.as_str());
            included.set_file(&file);
            resolve_in(source, &resolved, &mut included, &at.path, depth + 1, state, diags)?;
            included.pos = node.pos;
            included.file = node.file.clone();
            Ok(Some(included))
        }
    }
}

/// What an `!include` asks for: its kind, its path and where the path is written. None (with
/// the error reported) when its form is wrong.
fn include_form(node: &Node, at: &Location, diags: &mut Diagnostics) -> Option<(Kind, String, crate::core::Pos)> {
    let hint_form = "write `!include path/to/file.yaml` or `!include {type: string, path: script.sh}`";
    let form = match &node.value {
        Value::Str(p) => (Kind::Yaml, p.clone(), node.pos),
        Value::Map(_) => {
            let kind = match node.get("type").and_then(Node::as_str).unwrap_or("yaml") {
                "yaml" => Kind::Yaml,
                "string" => Kind::Text,
                "binary" => Kind::Binary,
                other => {
                    diags.error(
                        Code::Include,
                        at.clone(),
                        format!("`!include` type `{other}` is not one of yaml, string, binary"),
                        hint_form,
                    );
                    return None;
                }
            };
            let Some(p) = node.get("path").and_then(Node::as_str) else {
                diags.error(Code::Include, at.clone(), "`!include` without a `path`", hint_form);
                return None;
            };
            (kind, p.to_owned(), node.get("path").map_or(node.pos, |n| n.pos))
        }
        _ => {
            diags.error(Code::Include, at.clone(), "`!include` needs a path or a mapping", hint_form);
            return None;
        }
    };
    Some(form)
}

/// The bytes of an included file, recorded as a target of the commit. None (with the error
/// reported) when it is missing, too large or not a file.
fn read_target(
    source: &dyn Source,
    resolved: &str,
    target_at: &Location,
    state: &mut State<'_>,
    diags: &mut Diagnostics,
) -> Result<Option<Vec<u8>>, SourceError> {
    let entry = source.entry(resolved)?;
    state.targets.push(Target { path: resolved.to_owned(), directory: false, found: entry != Entry::Missing });
    let bytes = match entry {
        Entry::File(bytes) => bytes,
        Entry::TooLarge(size) => {
            diags.error(
                Code::Include,
                target_at.clone(),
                format!(
                    "included file `{resolved}` is {size} bytes, over the {} byte limit",
                    crate::source::MAX_FILE_BYTES
                ),
                "include a smaller file",
            );
            return Ok(None);
        }
        Entry::Missing => {
            diags.error(
                Code::IncludeMissing,
                target_at.clone(),
                format!("included file `{resolved}` does not exist in this commit"),
                "commit the file, or fix the path (it is relative to the including file's directory)",
            );
            return Ok(None);
        }
        other => {
            diags.error(
                Code::Include,
                target_at.clone(),
                format!("included path `{resolved}` is {}, not a file", other.describe()),
                "include a regular file committed in this repository",
            );
            return Ok(None);
        }
    };
    Ok(Some(bytes))
}

fn archive(
    source: &dyn Source,
    including_file: &str,
    node: &Node,
    at: &Location,
    state: &mut State<'_>,
    diags: &mut Diagnostics,
) -> Result<Option<Node>, SourceError> {
    let Some(target) = node.as_str() else {
        diags.error(Code::Archive, at.clone(), "`!archive` needs a directory path", "write `!archive \"solr-config\"`");
        return Ok(None);
    };
    let Some(resolved) = resolve_path(including_file, target) else {
        diags.error(
            Code::IncludeEscape,
            at.clone(),
            format!("`!archive {target}` points outside the repository"),
            "name a directory of this repository, relative to the including file",
        );
        return Ok(None);
    };
    let entry = source.entry(&resolved)?;
    state.targets.push(Target { path: resolved.clone(), directory: true, found: entry != Entry::Missing });
    match entry {
        Entry::Dir => Ok(Some(Node::new(Value::Str(resolved), node.pos))),
        other => {
            diags.error(
                Code::IncludeMissing,
                at.clone(),
                format!("`!archive` directory `{resolved}` is {} in this commit", other.describe()),
                "commit the directory, or fix the path (it is relative to the including file's directory)",
            );
            Ok(None)
        }
    }
}

/// Joins `target` to the directory of `including_file` and normalises it; None if the result
/// leaves the repository.
pub fn resolve_path(including_file: &str, target: &str) -> Option<String> {
    let base = match target.strip_prefix('/') {
        Some(_) => "",
        None => including_file.rsplit_once('/').map_or("", |(dir, _)| dir),
    };
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() || parts.iter().any(|p| p.contains('\0')) {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::resolve_path;

    #[test]
    fn paths_resolve_relative_to_the_including_file() {
        assert_eq!(resolve_path(".platform/applications.yaml", "pip.app.yaml").unwrap(), ".platform/pip.app.yaml");
        assert_eq!(resolve_path("api/.platform.app.yaml", "scripts/d.sh").unwrap(), "api/scripts/d.sh");
        assert_eq!(resolve_path(".platform.app.yaml", "build.sh").unwrap(), "build.sh");
        assert_eq!(resolve_path(".platform/services.yaml", "../x/y").unwrap(), "x/y");
        assert_eq!(resolve_path("a/b.yaml", "/c.yaml").unwrap(), "c.yaml");
        assert!(resolve_path(".platform/services.yaml", "../../etc/passwd").is_none());
        assert!(resolve_path("b.yaml", "..").is_none());
    }
}
