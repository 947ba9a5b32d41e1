//! The configuration set of one commit: which files there are, read and parsed.
//!
//! Magento Cloud names (`.magento.app.yaml`, `.magento/routes.yaml`, `.magento/services.yaml`)
//! and Platform.sh names (`.platform.app.yaml`, `.platform/…`) are the same format. Apps live
//! in the root app file, in one app file per first-level directory (`api/.platform.app.yaml`),
//! or in `applications.yaml`. Discovery looks only at those paths: one listing of the root tree
//! and two lookups per root directory, never a walk of the repository.

pub mod include;
pub mod node;
pub mod syntax;
pub mod yaml;

use crate::config::yaml::{Budget, Limits, Node, Pos, Value};
use crate::diag::{Code, Diagnostics, Location};
use crate::source::{Entry, Source, SourceError, MAX_FILE_BYTES};

/// Which set of file names the repository uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Magento,
    Platform,
}

impl Format {
    pub fn app_file(self) -> &'static str {
        match self {
            Format::Magento => ".magento.app.yaml",
            Format::Platform => ".platform.app.yaml",
        }
    }

    pub fn dir(self) -> &'static str {
        match self {
            Format::Magento => ".magento",
            Format::Platform => ".platform",
        }
    }

    pub fn routes_file(self) -> String {
        format!("{}/routes.yaml", self.dir())
    }

    pub fn services_file(self) -> String {
        format!("{}/services.yaml", self.dir())
    }

    pub fn applications_file(self) -> String {
        format!("{}/applications.yaml", self.dir())
    }
}

/// One parsed file.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub root: Node,
}

/// One application, wherever it was declared.
#[derive(Debug, Clone)]
pub struct App {
    /// The name from the `name` key, or the key in a map-shaped `applications.yaml`.
    pub name: Option<String>,
    /// Where the name stands (the `name` value or the map key), or the app's mapping.
    pub name_pos: Pos,
    pub file: String,
    pub node: Node,
    /// Dotted config path of the app's mapping in its file (empty for a single-app file).
    pub path: String,
    /// The app's directory, relative to the repository root (empty for the root).
    pub dir: String,
}

impl App {
    pub fn loc(&self, node: &Node, path: &str) -> Location {
        Location::new(node.file_or(&self.file), node.pos, crate::diag::concat(&self.path, path))
    }
}

/// Everything one commit declares.
#[derive(Debug, Clone)]
pub struct ConfigSet {
    pub format: Format,
    pub apps: Vec<App>,
    /// Files that declared apps (for the schema check of their own shape).
    pub app_files: Vec<String>,
    pub routes: Option<Document>,
    pub services: Option<Document>,
    /// Every file and directory named by `!include` and `!archive`.
    pub includes: Vec<include::Target>,
    /// Configuration files that exist but could not be read or parsed (already reported).
    pub unreadable: Vec<String>,
}

/// Parses one file's bytes, charging them and what they expand to to `budget`. Syntax
/// problems become diagnostics; None means unusable.
pub fn parse(file: &str, bytes: &[u8], budget: &Budget, diags: &mut Diagnostics) -> Option<Node> {
    let at = |pos| Location::new(file, pos, "");
    if !budget.charge(0, bytes.len()) {
        if budget.first_report() {
            diags.error(
                Code::TooLarge,
                at(Pos { line: 1, col: 1 }),
                budget.describe(),
                "configuration files are small: include fewer or smaller files, or remove generated content",
            );
        }
        return None;
    }
    if let Some(i) = bytes.iter().position(|&b| b == 0) {
        diags.error(
            Code::Binary,
            at(pos_of_byte(bytes, i)),
            "binary content (a NUL byte), not YAML text",
            "commit the YAML text of this file; check that it was not replaced by a binary or a compressed file",
        );
        return None;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            diags.error(
                Code::Encoding,
                at(pos_of_byte(bytes, e.valid_up_to())),
                "the file is not valid UTF-8",
                "save the file as UTF-8 (it may be Latin-1 or UTF-16)",
            );
            return None;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match yaml::load(text, Limits::default(), budget) {
        Ok(node) => Some(node),
        // The commit's budget ran out here, and an earlier document reported it already.
        Err(_) if budget.exhausted() && !budget.first_report() => None,
        Err(e) => {
            diags.error(Code::YamlSyntax, at(e.pos), e.message, e.hint);
            None
        }
    }
}

/// 1-based line and column of byte `index` (columns count characters of the valid prefix).
fn pos_of_byte(bytes: &[u8], index: usize) -> Pos {
    let before = &bytes[..index];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    Pos { line: line as u32, col: col as u32 }
}

/// What reading one configuration file gave.
enum Loaded {
    Absent,
    /// Present, but not usable (wrong kind of entry, too large, not YAML); already reported.
    Unusable,
    Document(Document),
}

/// Reads, parses and resolves the includes of one configuration file.
fn read_document(
    source: &dyn Source,
    file: &str,
    includes: &mut Vec<include::Target>,
    budget: &Budget,
    diags: &mut Diagnostics,
) -> Result<Loaded, SourceError> {
    let top = Location::new(file, Pos { line: 1, col: 1 }, "");
    if budget.exhausted() {
        // Reported where it ran out; reading more would cost what the budget is there to stop.
        let present = source.node(file)? != crate::paths::Node::Missing;
        return Ok(if present { Loaded::Unusable } else { Loaded::Absent });
    }
    let bytes = match source.entry(file)? {
        Entry::Missing => return Ok(Loaded::Absent),
        Entry::File(bytes) => bytes,
        Entry::TooLarge(size) => {
            diags.error(
                Code::TooLarge,
                top,
                format!("the file is {size} bytes; configuration files may be at most {MAX_FILE_BYTES} bytes"),
                "configuration files are small: check that generated or binary content was not committed here",
            );
            return Ok(Loaded::Unusable);
        }
        other => {
            diags.error(
                Code::NotAFile,
                top,
                format!("`{file}` is {}, not a file", other.describe()),
                "commit the configuration as a regular file in this repository (not a link, directory or submodule)",
            );
            return Ok(Loaded::Unusable);
        }
    };
    let Some(mut root) = parse(file, &bytes, budget, diags) else {
        return Ok(Loaded::Unusable);
    };
    include::resolve(source, file, &mut root, includes, budget, diags)?;
    Ok(Loaded::Document(Document { file: file.to_owned(), root }))
}

/// Finds and reads the configuration set of `source`, within `budget` for all its files.
pub fn load(source: &dyn Source, budget: &Budget, diags: &mut Diagnostics) -> Result<ConfigSet, SourceError> {
    let dirs = source.root_dirs()?;
    let magento = app_file_candidates(source, Format::Magento, &dirs)?;
    let platform = app_file_candidates(source, Format::Platform, &dirs)?;
    let uses_magento = !magento.is_empty() || dirs.iter().any(|d| d == Format::Magento.dir());
    let (format, candidates) = if uses_magento || platform.is_empty() && !dirs.iter().any(|d| d == ".platform") {
        (Format::Magento, magento)
    } else {
        (Format::Platform, platform)
    };

    let mut set = ConfigSet {
        format,
        apps: Vec::new(),
        app_files: Vec::new(),
        routes: None,
        services: None,
        includes: Vec::new(),
        unreadable: Vec::new(),
    };
    for file in candidates {
        let Loaded::Document(doc) = read_document(source, &file, &mut set.includes, budget, diags)? else {
            // Present (a candidate) but unusable: already reported.
            set.unreadable.push(file.clone());
            set.app_files.push(file);
            continue;
        };
        if file.ends_with("applications.yaml") {
            collect_applications(&doc, &mut set.apps);
        } else {
            let dir = file.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_owned());
            set.apps.push(single_app(&doc, dir));
        }
        set.app_files.push(file);
    }
    if set.app_files.is_empty() {
        diags.error(
            Code::NoApp,
            // Not a place in a file: the file is not there.
            Location::new("", Pos { line: 0, col: 0 }, ""),
            format!("no application configuration: `{}` is missing", format.app_file()),
            format!(
                "commit `{}` at the repository root (or one per app directory, or `{}`)",
                format.app_file(),
                format.applications_file()
            ),
        );
    }
    // `.magento` must be a directory of the commit. A link or a submodule there would be
    // followed by `check` on a checkout and read as "no routes, no services" by a push.
    let dir_entry = source.entry(format.dir())?;
    if !matches!(dir_entry, Entry::Missing | Entry::Dir) {
        diags.error(
            Code::NotADir,
            Location::new(format.dir(), Pos { line: 1, col: 1 }, ""),
            format!("`{}` is {}, not a directory", format.dir(), dir_entry.describe()),
            format!(
                "commit `{}` as a directory of this repository holding routes.yaml and services.yaml",
                format.dir()
            ),
        );
        set.unreadable.extend([format.routes_file(), format.services_file()]);
        return Ok(set);
    }
    for (file, slot) in [(format.routes_file(), &mut set.routes), (format.services_file(), &mut set.services)] {
        match read_document(source, &file, &mut set.includes, budget, diags)? {
            Loaded::Absent => {}
            Loaded::Unusable => set.unreadable.push(file),
            Loaded::Document(doc) => *slot = Some(doc),
        }
    }
    Ok(set)
}

/// Paths of app files that exist: the root one, `applications.yaml`, one per root directory.
fn app_file_candidates(source: &dyn Source, format: Format, dirs: &[String]) -> Result<Vec<String>, SourceError> {
    let mut found = Vec::new();
    let mut consider = |path: String| -> Result<(), SourceError> {
        // Whether something stands there, without reading it (it is read once, as a document).
        if source.node(&path)? != crate::paths::Node::Missing {
            found.push(path);
        }
        Ok(())
    };
    consider(format.app_file().to_owned())?;
    consider(format.applications_file())?;
    for dir in dirs {
        if dir != format.dir() && !dir.starts_with(".git") {
            consider(format!("{dir}/{}", format.app_file()))?;
        }
    }
    Ok(found)
}

fn single_app(doc: &Document, dir: String) -> App {
    let name_node = doc.root.get("name");
    App {
        name: name_node.and_then(Node::as_str).map(str::to_owned),
        name_pos: name_node.map_or(doc.root.pos, |n| n.pos),
        file: doc.file.clone(),
        node: doc.root.clone(),
        path: String::new(),
        dir,
    }
}

/// `applications.yaml` is a list of app mappings (each with `name`) or a map of name to app.
fn collect_applications(doc: &Document, apps: &mut Vec<App>) {
    let dir_of = |node: &Node| {
        node.get("source")
            .and_then(|s| s.get("root"))
            .and_then(Node::as_str)
            .map(|r| r.trim_matches('/').to_owned())
            .unwrap_or_default()
    };
    match &doc.root.value {
        Value::Seq(items) => {
            for (i, node) in items.iter().enumerate() {
                let name_node = node.get("name");
                apps.push(App {
                    name: name_node.and_then(Node::as_str).map(str::to_owned),
                    name_pos: name_node.map_or(node.pos, |n| n.pos),
                    file: doc.file.clone(),
                    node: node.clone(),
                    path: format!("[{i}]"),
                    dir: dir_of(node),
                });
            }
        }
        Value::Map(entries) => {
            for (key, node) in entries {
                apps.push(App {
                    name: Some(key.name.clone()),
                    name_pos: key.pos,
                    file: doc.file.clone(),
                    node: node.clone(),
                    path: crate::diag::join("", &key.name),
                    dir: dir_of(node),
                });
            }
        }
        _ => {}
    }
}
