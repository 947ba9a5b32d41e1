//! Validation of one configuration set: syntax (while loading), schema, then cross-file rules.
//!
//! Each rule lives in its own file under `rules/`, with a doc comment saying why it exists.
//! Rules read the positioned YAML tree directly, so every finding points at `file:line:col`;
//! they tolerate values of the wrong shape (the schema stage has reported those already).

pub mod rules;
pub mod schema;

use crate::config::yaml::{Budget, Cost};
use crate::config::{self, ConfigSet};
use crate::diag::Diagnostics;
use crate::source::{Source, SourceError};
use schema::Schema;

/// The result of validating one configuration set.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: ConfigSet,
    pub diags: Diagnostics,
    /// What loading it cost (nodes, text), for budgets across many commits.
    pub cost: Cost,
}

/// Whether this server can give a service of a type (`mysql:10.11`), where a hook on a
/// server with backends said so: hints to upgrade then name only what it can give.
static OFFERED: std::sync::OnceLock<Offered> = std::sync::OnceLock::new();
type Offered = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Tells the rules which service types this server can give (once per process: the hook's).
pub fn set_offered(offered: impl Fn(&str) -> bool + Send + Sync + 'static) {
    let _ = OFFERED.set(Box::new(offered));
}

/// Whether a service of `service_type` can be given here (anything, where no one said).
pub(crate) fn offered(service_type: &str) -> bool {
    OFFERED.get().is_none_or(|offered| offered(service_type))
}

/// Loads and validates the configuration set of `source`, within one commit's budget
/// ([`Budget::per_commit`]) for all its files and includes.
pub fn validate(source: &dyn Source) -> Result<Outcome, SourceError> {
    let mut diags = Diagnostics::default();
    let budget = Budget::per_commit();
    let config = config::load(source, &budget, &mut diags)?;
    check_schemas(&config, &mut diags);
    rules::run_all(&config, &mut diags);
    rules::run_on_tree(source, &config, &mut diags)?;
    diags.sort();
    Ok(Outcome { config, diags, cost: budget.used() })
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

/// Words and names longer than this get no suggestion: a typo of a real name is short, and
/// comparing is quadratic in the lengths (a pushed 1 MB name against 900 long ones must not
/// keep the hook busy).
const MAX_SUGGESTED_LEN: usize = 64;

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
/// A name the word contains (`opensearchsearch` → `opensearch`) also counts. The work is
/// bounded whatever the input: at most [`MAX_SUGGESTED_LEN`] characters on either side, and
/// candidates whose lengths alone put them out of reach are not compared.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > 4 * MAX_SUGGESTED_LEN {
        return None;
    }
    let length = word.chars().count();
    if length > MAX_SUGGESTED_LEN {
        return None;
    }
    let limit = (length / 3).max(1);
    let candidates: Vec<&str> =
        candidates.into_iter().filter(|c| !c.is_empty() && c.len() <= 4 * MAX_SUGGESTED_LEN).collect();
    let near = candidates
        .iter()
        .filter(|c| c.chars().count().abs_diff(length) <= limit)
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

    #[test]
    fn long_words_get_no_suggestion_and_cost_nothing() {
        let long = "x".repeat(100_000);
        let names: Vec<String> = (0..900).map(|i| format!("{i}{}", "y".repeat(1000))).collect();
        assert_eq!(super::closest(&long, names.iter().map(String::as_str)), None);
        assert_eq!(super::closest("mysql", names.iter().map(String::as_str).chain(["mysqll"])), Some("mysqll"));
    }
}
