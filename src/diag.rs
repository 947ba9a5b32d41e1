//! Diagnostics: one finding in a user's configuration, pointing at `file:line:col`.
//!
//! Every stage (syntax, schema, cross-file rules) reports into a [`Diagnostics`] list; the
//! report module decides how the pusher sees them.

use crate::core::Pos;

/// Every finding's stable code, shown in brackets after its message (`[mount-path]`): what a
/// tool or a person can match on, whatever the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    Archive,
    Binary,
    CronSpec,
    DeprecatedVersion,
    DiskOnMemoryService,
    DiskTooSmall,
    DuplicateName,
    Encoding,
    EndOfLife,
    Enum,
    Include,
    IncludeEscape,
    IncludeMissing,
    Length,
    Minimum,
    MissingKey,
    MountPath,
    MountService,
    MountSource,
    Name,
    NoApp,
    NoDisk,
    NoVersion,
    NoWeb,
    NotADir,
    NotAFile,
    NotChecked,
    PhpExtension,
    PipelineConfig,
    PipelineSecrets,
    PrereleaseVersion,
    RelationshipFormat,
    RetiredVersion,
    RouteId,
    RoutePrimary,
    RouteRedirect,
    RouteUpstream,
    RouteUpstreamPhp,
    RouteUrl,
    Schema,
    TooLarge,
    Type,
    UnknownEndpoint,
    UnknownImage,
    UnknownKey,
    UnknownService,
    UnknownTag,
    UnknownVersion,
    UnusedService,
    WebExpires,
    WebLocation,
    WebPassthru,
    WebRoot,
    WrongKind,
    YamlSyntax,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Archive => "archive",
            Code::Binary => "binary",
            Code::CronSpec => "cron-spec",
            Code::DeprecatedVersion => "deprecated-version",
            Code::DiskOnMemoryService => "disk-on-memory-service",
            Code::DiskTooSmall => "disk-too-small",
            Code::DuplicateName => "duplicate-name",
            Code::Encoding => "encoding",
            Code::EndOfLife => "end-of-life",
            Code::Enum => "enum",
            Code::Include => "include",
            Code::IncludeEscape => "include-escape",
            Code::IncludeMissing => "include-missing",
            Code::Length => "length",
            Code::Minimum => "minimum",
            Code::MissingKey => "missing-key",
            Code::MountPath => "mount-path",
            Code::MountService => "mount-service",
            Code::MountSource => "mount-source",
            Code::Name => "name",
            Code::NoApp => "no-app",
            Code::NoDisk => "no-disk",
            Code::NoVersion => "no-version",
            Code::NoWeb => "no-web",
            Code::NotADir => "not-a-dir",
            Code::NotAFile => "not-a-file",
            Code::NotChecked => "not-checked",
            Code::PhpExtension => "php-extension",
            Code::PipelineConfig => "pipeline-config",
            Code::PipelineSecrets => "pipeline-secrets",
            Code::PrereleaseVersion => "prerelease-version",
            Code::RelationshipFormat => "relationship-format",
            Code::RetiredVersion => "retired-version",
            Code::RouteId => "route-id",
            Code::RoutePrimary => "route-primary",
            Code::RouteRedirect => "route-redirect",
            Code::RouteUpstream => "route-upstream",
            Code::RouteUpstreamPhp => "route-upstream-php",
            Code::RouteUrl => "route-url",
            Code::Schema => "schema",
            Code::TooLarge => "too-large",
            Code::Type => "type",
            Code::UnknownEndpoint => "unknown-endpoint",
            Code::UnknownImage => "unknown-image",
            Code::UnknownKey => "unknown-key",
            Code::UnknownService => "unknown-service",
            Code::UnknownTag => "unknown-tag",
            Code::UnknownVersion => "unknown-version",
            Code::UnusedService => "unused-service",
            Code::WebExpires => "web-expires",
            Code::WebLocation => "web-location",
            Code::WebPassthru => "web-passthru",
            Code::WebRoot => "web-root",
            Code::WrongKind => "wrong-kind",
            Code::YamlSyntax => "yaml-syntax",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A short stable identifier of the rule (`unknown-image`, `yaml-syntax`, ...).
    pub code: Code,
    /// Repository-relative path of the file.
    pub file: String,
    pub pos: Pos,
    /// Dotted configuration path of the offending node (`services.mysql.type`); may be empty.
    pub path: String,
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Where a finding points: the file, the position and the dotted config path.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub file: String,
    pub pos: Pos,
    pub path: String,
}

impl Location {
    pub fn new(file: &str, pos: Pos, path: impl Into<String>) -> Location {
        Location { file: file.to_owned(), pos, path: path.into() }
    }
}

/// The findings of one validation run.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(
        &mut self,
        severity: Severity,
        code: Code,
        at: Location,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            code,
            file: at.file,
            pos: at.pos,
            path: at.path,
            message: message.into(),
            hint: hint.into(),
        });
    }

    pub fn error(&mut self, code: Code, at: Location, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Error, code, at, message, hint);
    }

    pub fn warn(&mut self, code: Code, at: Location, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Warning, code, at, message, hint);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Orders findings by file and position, errors first on the same spot, without duplicates.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (&a.file, a.pos.line, a.pos.col, a.severity, a.code)
                .cmp(&(&b.file, b.pos.line, b.pos.col, b.severity, b.code))
        });
        self.items.dedup();
    }
}

/// Appends an already dotted sub-path (`runtime.extensions[2]`) to a config path.
pub fn concat(parent: &str, sub: &str) -> String {
    match (parent.is_empty(), sub.is_empty()) {
        (true, _) => sub.to_owned(),
        (false, true) => parent.to_owned(),
        (false, false) => format!("{parent}.{sub}"),
    }
}

/// Joins a dotted config path; keys with dots or spaces are quoted (`routes."http://{default}/"`).
pub fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain { key.to_owned() } else { format!("\"{key}\"") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A list of pushed names for a hint, bounded whatever was pushed: at most five, each cut at
/// 64 characters (`a, b, c, d, e and 12 more`). A hint repeated for every finding must not
/// grow with the size of the configuration.
pub fn few<T>(items: impl ExactSizeIterator<Item = T>, show: impl Fn(T) -> String) -> String {
    let total = items.len();
    let shown: Vec<String> = items
        .take(5)
        .map(|i| {
            let text = show(i);
            match text.char_indices().nth(64) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        })
        .collect();
    match total.saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
