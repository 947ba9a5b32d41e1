//! The real corpus (`../shared/corpus/real`): every set not marked invalid is accepted, and each
//! set marked invalid is refused for the reason its index notes.
//!
//! The corpus holds only the YAML configuration of each source repository; the scripts, VCL and
//! directories that its `!include` and `!archive` tags name were not copied (SOURCES.md). The
//! test restores those targets as placeholders, from the targets the validator itself reports,
//! and only where the set does not have them.

use pushgate::source::DirSource;
use pushgate::validate::{validate, Outcome};
use serde_json::Value;

use crate::support::{copy_dir, corpus_dir, TempDir};

/// Our rule code for each reason the corpus index gives for refusing a set.
fn expected_code(analysis_error: &str) -> &'static str {
    if analysis_error.contains("no-version") {
        "no-version"
    } else if analysis_error.contains("unknown-image") {
        "unknown-image"
    } else if analysis_error.contains("extension") && analysis_error.contains("json") {
        "php-extension"
    } else if analysis_error.contains("upstream") && analysis_error.contains("target unknown") {
        "route-upstream"
    } else {
        panic!("no rule code known for the corpus reason {analysis_error:?}")
    }
}

fn validate_set(set: &str) -> Outcome {
    let dir = TempDir::new("corpus");
    copy_dir(&corpus_dir().join(set), dir.path());
    let first = validate(&DirSource::new(dir.path())).expect("validation runs");
    let missing: Vec<_> = first.config.includes.iter().filter(|t| !t.found).cloned().collect();
    if missing.is_empty() {
        return first;
    }
    for target in missing {
        let path = dir.join(&target.path);
        if target.directory {
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("placeholder.txt"), "not copied into the corpus\n").unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "# not copied into the corpus\n").unwrap();
        }
    }
    validate(&DirSource::new(dir.path())).expect("validation runs")
}

#[test]
fn every_real_set_gets_its_expected_verdict() {
    let index: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("index.json")).expect("corpus index")).unwrap();
    assert_eq!(index.len(), 148, "the corpus has 148 sets");
    let mut failures = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for entry in &index {
        let set = entry["set"].as_str().unwrap();
        let outcome = validate_set(set);
        let codes: std::collections::BTreeSet<&str> = outcome.diags.errors().map(|d| d.code.as_str()).collect();
        match entry["expect"].as_str().unwrap() {
            "accept" => {
                accepted += 1;
                if !codes.is_empty() {
                    let errors: Vec<String> = outcome
                        .diags
                        .errors()
                        .map(|d| format!("{}:{}:{} {}", d.file, d.pos.line, d.pos.col, d.message))
                        .collect();
                    failures.push(format!("{set}: falsely refused:\n  {}", errors.join("\n  ")));
                }
                if outcome.config.apps.is_empty() {
                    failures.push(format!("{set}: no app found"));
                }
            }
            "refuse" => {
                refused += 1;
                let expected: std::collections::BTreeSet<&str> = entry["analysis"]["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| expected_code(e.as_str().unwrap()))
                    .collect();
                if codes != expected {
                    failures.push(format!("{set}: refused for {codes:?}, the index says {expected:?}"));
                }
            }
            other => panic!("unknown expectation {other}"),
        }
    }
    assert_eq!((accepted, refused), (138, 10));
    assert!(failures.is_empty(), "{} of 148 sets wrong:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_apps_match_the_index() {
    // The apps and their types we find are those the index lists (for sets with named apps).
    let index: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("index.json")).unwrap()).unwrap();
    for entry in &index {
        let apps = entry["apps"].as_object().unwrap();
        if apps.keys().any(|k| k == "null") {
            continue;
        }
        let outcome = validate_set(entry["set"].as_str().unwrap());
        let mut found: Vec<(String, String)> = outcome
            .config
            .apps
            .iter()
            .map(|a| {
                (
                    a.name.clone().unwrap_or_default(),
                    a.node.get("type").and_then(|t| t.scalar_text()).unwrap_or_default(),
                )
            })
            .collect();
        let mut listed: Vec<(String, String)> =
            apps.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
        found.sort();
        listed.sort();
        assert_eq!(found, listed, "{}", entry["set"]);
    }
}
