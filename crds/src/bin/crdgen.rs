//! Writes the generated files of the ycloud API: one CRD per file into a directory (default
//! `charts/ycloud/crds/`) and the API reference (default `docs/api.md`).
//!
//! `cargo run -p ycloud-crds --features crdgen --bin crdgen [CRD_DIR [API_DOC]]`
//!
//! The `crdgen` feature picks the Kubernetes version k8s-openapi builds for; the library
//! itself leaves that to the binaries that use it.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let crd_dir = args
        .next()
        .unwrap_or_else(|| root.join("charts/ycloud/crds"));
    let api_doc = args.next().unwrap_or_else(|| root.join("docs/api.md"));
    let result = ycloud_crds::write_crds(&crd_dir).and_then(|mut paths| {
        ycloud_crds::write_api_docs(&api_doc)?;
        paths.push(api_doc);
        Ok(paths)
    });
    match result {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}
