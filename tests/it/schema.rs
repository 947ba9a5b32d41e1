//! Our schemas against the reference validator (`jsonschema`): they must be valid draft-07, and
//! the interpreter the hook uses must agree with `jsonschema` on every document of the corpus and
//! on broken variants of them. This is what keeps the fast path honest.

use pushgate::config::yaml::{Node, Value};
use pushgate::source::DirSource;
use pushgate::validate::schema::{is_valid, Schema};

use crate::support::{copy_dir, corpus_dir, TempDir};

fn reference(schema: Schema) -> jsonschema::Validator {
    jsonschema::draft7::new(schema.json()).expect("the committed schema is valid draft-07")
}

/// Variants of a document that break it in the ways users do: a value of the wrong type, an
/// unknown key, a missing required key, a wrong enum value.
fn mutations(node: &Node) -> Vec<Node> {
    let mut out = Vec::new();
    let Value::Map(entries) = &node.value else { return out };
    for i in 0..entries.len().min(12) {
        let mut wrong_type = node.clone();
        if let Value::Map(e) = &mut wrong_type.value {
            e[i].1.value = match &e[i].1.value {
                Value::Map(_) | Value::Seq(_) => Value::Int(7),
                _ => Value::Seq(vec![]),
            };
        }
        out.push(wrong_type);
        let mut removed = node.clone();
        if let Value::Map(e) = &mut removed.value {
            e.remove(i);
        }
        out.push(removed);
        if let Value::Map(inner) = &entries[i].1.value {
            for j in 0..inner.len().min(6) {
                let mut deeper = node.clone();
                if let Value::Map(e) = &mut deeper.value {
                    if let Value::Map(inner) = &mut e[i].1.value {
                        inner[j].0.name.push_str("_typo");
                    }
                }
                out.push(deeper);
                let mut deeper = node.clone();
                if let Value::Map(e) = &mut deeper.value {
                    if let Value::Map(inner) = &mut e[i].1.value {
                        inner[j].1.value = Value::Str("NOT-VALID".into());
                    }
                }
                out.push(deeper);
            }
        }
    }
    let mut extra = node.clone();
    if let Value::Map(e) = &mut extra.value {
        e.push((
            pushgate::config::yaml::Key { name: "surprise".into(), pos: node.pos },
            Node::new(Value::Int(1), node.pos),
        ));
    }
    out.push(extra);
    out
}

#[test]
fn schemas_agree_with_the_reference_validator() {
    let validators: Vec<(Schema, jsonschema::Validator)> = Schema::ALL.iter().map(|s| (*s, reference(*s))).collect();
    let check =
        |schema: Schema, node: &Node, what: &str, disagreements: &mut Vec<String>, counts: &mut (usize, usize)| {
            let v = &validators.iter().find(|(s, _)| *s == schema).unwrap().1;
            let theirs = v.is_valid(&node.to_json());
            let ours = is_valid(schema, node);
            counts.0 += 1;
            counts.1 += usize::from(!theirs);
            if theirs != ours {
                disagreements.push(format!("{what}: jsonschema says valid={theirs}, pushgate says valid={ours}"));
            }
        };
    let mut disagreements = Vec::new();
    let mut counts = (0usize, 0usize);
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let dir = TempDir::new("schema");
        copy_dir(&entry.path(), dir.path());
        let outcome = pushgate::validate::validate(&DirSource::new(dir.path())).unwrap();
        let set = entry.file_name().to_string_lossy().to_string();
        let mut docs: Vec<(Schema, &Node, String)> = Vec::new();
        for app in &outcome.config.apps {
            docs.push((Schema::App, &app.node, format!("{set} {}{}", app.file, app.path)));
        }
        if let Some(d) = &outcome.config.services {
            docs.push((Schema::Services, &d.root, format!("{set} {}", d.file)));
        }
        if let Some(d) = &outcome.config.routes {
            docs.push((Schema::Routes, &d.root, format!("{set} {}", d.file)));
        }
        for (schema, node, what) in docs {
            check(schema, node, &what, &mut disagreements, &mut counts);
            for (i, m) in mutations(node).iter().enumerate() {
                check(schema, m, &format!("{what} mutation {i}"), &mut disagreements, &mut counts);
            }
        }
    }
    eprintln!("compared {} documents ({} invalid according to jsonschema)", counts.0, counts.1);
    assert!(counts.0 > 5000 && counts.1 > 1000, "too few documents compared: {counts:?}");
    assert!(
        disagreements.is_empty(),
        "{} of {} disagree:\n{}",
        disagreements.len(),
        counts.0,
        disagreements.join("\n")
    );
}
