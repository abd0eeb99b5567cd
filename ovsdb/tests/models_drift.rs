//! The committed typed models (src/models/*.rs) must be exactly what the generator writes
//! from the vendored schemas: regenerate into a temp dir with the real binary and compare.

use std::path::Path;
use std::process::Command;

const MODELS: &[(&str, &str)] = &[
    ("ovn-nb.ovsschema", "nb.rs"),
    ("ovn-sb.ovsschema", "sb.rs"),
    ("vswitch.ovsschema", "vswitch.rs"),
];

#[test]
fn models_match_the_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let mut stale = Vec::new();
    for (schema, module) in MODELS {
        let out = tmp.path().join(module);
        let status = Command::new(env!("CARGO_BIN_EXE_ovsdb-modelgen"))
            .arg(root.join("schemas").join(schema))
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "ovsdb-modelgen failed on {schema}");
        let fresh = std::fs::read_to_string(&out).unwrap();
        let committed =
            std::fs::read_to_string(root.join("src/models").join(module)).unwrap_or_default();
        if fresh != committed {
            stale.push(format!(
                "ovsdb/src/models/{module} is out of date; run:\n  cargo run -p ycloud-ovsdb --bin ovsdb-modelgen -- ovsdb/schemas/{schema} ovsdb/src/models/{module}"
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn the_generator_fails_clearly_on_a_bad_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("bad.ovsschema");
    std::fs::write(&schema, r#"{"name": "D", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": "float"}}}}}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovsdb-modelgen"))
        .arg(&schema)
        .arg(tmp.path().join("out.rs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ovsdb-modelgen: invalid schema at tables.T.columns.c.type: unknown atomic type \"float\"\n"
    );
    assert!(!tmp.path().join("out.rs").exists());
}
