//! `ovsdb-modelgen SCHEMA.ovsschema OUT.rs`: writes the typed models for one OVSDB schema.
//!
//! The schema is expected under `ovsdb/schemas/` and the output under `ovsdb/src/models/`:
//! the generated module embeds the schema with `include_str!("../../schemas/<file name>")`.
//! The logic is `ycloud_ovsdb::model::codegen`; this is only the command line.

use std::path::Path;
use std::process::ExitCode;

use ycloud_ovsdb::model::codegen;
use ycloud_ovsdb::schema::DatabaseSchema;

fn run(schema_path: &Path, out: &Path) -> Result<(), String> {
    let db = DatabaseSchema::from_file(schema_path).map_err(|e| error_chain(&e))?;
    let file_name = schema_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no file name", schema_path.display()))?;
    let module_file = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no file name", out.display()))?;
    let code = codegen::generate(&db, file_name, module_file).map_err(|e| error_chain(&e))?;
    std::fs::write(out, code).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [schema, out] = args.as_slice() else {
        eprintln!("usage: ovsdb-modelgen SCHEMA.ovsschema OUT.rs");
        return ExitCode::from(2);
    };
    match run(Path::new(schema), Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovsdb-modelgen: {e}");
            ExitCode::FAILURE
        }
    }
}
