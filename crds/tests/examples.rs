//! Every example is accepted by all three validation layers; every invalid example is
//! rejected by the layer its header names, with the message its header gives, and passes the
//! layers before it (so each rule is proven to be the one that catches it).

#[path = "support/harness.rs"]
mod harness;

use harness::{World, cel_errors, load_docs, repo_root, schema_errors, yaml_files};

#[test]
fn every_example_passes_schema_cel_and_semantic_validation() {
    let world = World::examples();
    let mut failures = vec![];
    let mut checked = 0;
    for file in yaml_files(&repo_root().join("examples")) {
        for doc in load_docs(&file) {
            if doc["kind"] == "Namespace" {
                continue;
            }
            checked += 1;
            let name = format!(
                "{} {} {}",
                file.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
            let errors: Vec<String> = schema_errors(&doc)
                .into_iter()
                .chain(cel_errors(&doc, None))
                .chain(world.semantic_errors(&doc))
                .collect();
            if !errors.is_empty() {
                failures.push(format!("{name}:\n  {}", errors.join("\n  ")));
            }
        }
    }
    assert!(checked >= 15, "only {checked} example objects found");
    assert!(
        failures.is_empty(),
        "examples rejected:\n{}",
        failures.join("\n")
    );
}

#[derive(Debug, PartialEq)]
enum Layer {
    Schema,
    Cel,
    CelUpdate,
    Semantic,
}

fn header(path: &std::path::Path) -> (Layer, String) {
    let text = std::fs::read_to_string(path).expect("read");
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
            .unwrap_or_else(|| panic!("{} has no `# {key}:` header line", path.display()))
            .to_owned()
    };
    let layer = match field("layer").as_str() {
        "schema" => Layer::Schema,
        "cel" => Layer::Cel,
        "cel-update" => Layer::CelUpdate,
        "semantic" => Layer::Semantic,
        other => panic!("{}: unknown layer {other:?}", path.display()),
    };
    (layer, field("expect"))
}

#[test]
fn every_invalid_example_is_rejected_by_its_layer_with_the_expected_message() {
    let world = World::examples();
    let files = yaml_files(&repo_root().join("examples/invalid"));
    assert!(files.len() >= 20, "only {} invalid examples", files.len());
    let mut failures = vec![];
    for file in &files {
        let (layer, expect) = header(file);
        let docs = load_docs(file);
        let (old, doc) = match (&layer, docs.as_slice()) {
            (Layer::CelUpdate, [old, new]) => (Some(old), new),
            (Layer::CelUpdate, _) => panic!(
                "{}: cel-update needs two documents, old then new",
                file.display()
            ),
            (_, [doc]) => (None, doc),
            _ => panic!("{}: expected exactly one document", file.display()),
        };
        let schema = schema_errors(doc);
        let cel = if layer == Layer::Schema {
            vec![]
        } else {
            cel_errors(doc, old)
        };
        let got = match layer {
            Layer::Schema => schema.clone(),
            Layer::Cel | Layer::CelUpdate => cel.clone(),
            Layer::Semantic => world.semantic_errors(doc),
        };
        let mut earlier = vec![];
        if layer != Layer::Schema {
            earlier.extend(schema.iter().map(|e| format!("schema: {e}")));
        }
        if layer == Layer::Semantic {
            earlier.extend(cel.iter().map(|e| format!("cel: {e}")));
        }
        if !earlier.is_empty() {
            failures.push(format!(
                "{}: rejected before its layer:\n  {}",
                file.display(),
                earlier.join("\n  ")
            ));
        } else if !got.contains(&expect) {
            failures.push(format!(
                "{}: expected {expect:?}, got:\n  {}",
                file.display(),
                if got.is_empty() {
                    "nothing (accepted)".to_owned()
                } else {
                    got.join("\n  ")
                }
            ));
        }
        if layer == Layer::CelUpdate {
            let fresh = cel_errors(doc, None);
            if !fresh.is_empty() {
                failures.push(format!(
                    "{}: the new object alone is rejected too: {fresh:?}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid examples failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Every schema path of a node (`spec.ports[].name`), not descending into maps.
fn schema_paths(
    node: &serde_json::Value,
    path: &str,
    out: &mut std::collections::BTreeSet<String>,
) {
    if !path.is_empty() {
        out.insert(path.to_owned());
    }
    for (k, v) in node
        .get("properties")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
    {
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        schema_paths(v, &child, out);
    }
    if let Some(items) = node.get("items") {
        schema_paths(items, &format!("{path}[]"), out);
    }
}

/// Every path present in a document, in the same notation.
fn doc_paths(doc: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    if !path.is_empty() {
        out.insert(path.to_owned());
    }
    match doc {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                doc_paths(v, &child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                doc_paths(v, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_of_every_kind_is_shown_by_some_example() {
    let mut shown: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in yaml_files(&repo_root().join("examples")) {
        for doc in load_docs(&file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            doc_paths(&doc, "", shown.entry(kind).or_default());
        }
    }
    let mut missing = vec![];
    for (kind, schema) in harness::schemas_by_kind() {
        let mut paths = Default::default();
        schema_paths(&schema, "", &mut paths);
        let have = shown.get(&kind).cloned().unwrap_or_default();
        missing.extend(paths.difference(&have).map(|p| format!("{kind} {p}")));
    }
    assert!(
        missing.is_empty(),
        "fields no example shows (docs/api.md promises one):\n{}",
        missing.join("\n")
    );
}
