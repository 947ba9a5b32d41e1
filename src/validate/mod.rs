//! Validation of one configuration set: syntax (while loading), schema, then cross-file rules.
//!
//! Each rule lives in its own file under `rules/`, with a doc comment saying why it exists.
//! Rules read the positioned YAML tree directly, so every finding points at `file:line:col`;
//! they tolerate values of the wrong shape (the schema stage has reported those already).

pub mod rules;
pub mod schema;

use crate::config::{self, ConfigSet};
use crate::diag::Diagnostics;
use crate::source::{Source, SourceError};
use schema::Schema;

/// The result of validating one configuration set.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: ConfigSet,
    pub diags: Diagnostics,
}

/// Loads and validates the configuration set of `source`.
pub fn validate(source: &dyn Source) -> Result<Outcome, SourceError> {
    let mut diags = Diagnostics::default();
    let config = config::load(source, &mut diags)?;
    check_schemas(&config, &mut diags);
    rules::run_all(&config, &mut diags);
    diags.sort();
    Ok(Outcome { config, diags })
}

fn check_schemas(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        schema::check(Schema::App, &app.node, &app.file, &app.path, diags);
    }
    if let Some(doc) = &config.services {
        schema::check(Schema::Services, &doc.root, &doc.file, "", diags);
    }
    if let Some(doc) = &config.routes {
        schema::check(Schema::Routes, &doc.root, &doc.file, "", diags);
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
/// A name the word contains (`opensearchsearch` → `opensearch`) also counts.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| !c.is_empty()).collect();
    let near = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    near.or_else(|| candidates.iter().filter(|c| c.len() >= 4 && word.contains(**c)).max_by_key(|c| c.len()).copied())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(row[j + 1]) };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_typos_only() {
        assert_eq!(super::closest("mysqll", ["mysql", "redis"]), Some("mysql"));
        assert_eq!(super::closest("opensearchsearch", ["opensearch", "solr"]), Some("opensearch"));
        assert_eq!(super::closest("zzz", ["opensearch", "solr"]), None);
        assert_eq!(super::closest("relationship", ["relationships", "mounts"]), Some("relationships"));
    }
}
