//! `cargo bench -p ycloud-controller --bench parse`: what reading the sync bench's
//! manifests costs, split by step, on one thread (the controller's `read_source` phase
//! is this parse on up to 4 threads plus reading the files). The same N services (100 a
//! file, 8 backends, 2 ports) as `sync`, the documents parsed one by one as a cold start
//! does (`Store::load_yaml` per document). Baseline of every line: the YAML scan alone
//! (each document deserialized into `IgnoredAny`, libyaml's parse with nothing built),
//! the floor of any YAML → object path.
//!
//! Lines: `load_yaml` (YAML → `serde_json::Value` → the typed object: what we do);
//! `yaml_to_json_value` (the first step alone); `typed_direct` (YAML straight into
//! `YusurService`: a candidate, NOT equivalent — serde_yaml then reads any plain scalar
//! as a string, so `name: 123` loads where we report "no metadata.name").
//!
//! Arguments (after `--`): `--quick` (1,000 services; default 10,000); `--rounds=N` (5;
//! the median is reported).

#[path = "support/controlplane.rs"]
mod controlplane;

use std::path::Path;
use std::time::{Duration, Instant};

use controlplane::*;
use serde_json::json;
use ycloud_controller::store::Store;
use ycloud_crds::YusurService;

/// The median of `rounds` timings of `f`.
fn median(rounds: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    t[t.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = std::env::args()
        .find_map(|a| {
            a.strip_prefix("--rounds=")
                .map(|v| v.parse().expect("--rounds"))
        })
        .unwrap_or(5)
        .max(1);
    let n = if quick { 1_000 } else { 10_000 };
    let w = Workload::write(n);
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(w.path()).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("10-svc-"))
        {
            texts.push(std::fs::read_to_string(&path).expect("read"));
        }
    }
    // Every file is `---`-separated service documents (see `Workload::service_yaml`).
    let docs: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split("---\n").filter(|d| !d.trim().is_empty()))
        .collect();
    assert_eq!(docs.len(), n, "one document per service");
    let path = Path::new("bench.yaml");

    let floor = median(rounds, || {
        for d in &docs {
            let _: serde::de::IgnoredAny = serde_yaml::from_str(d).expect("YAML");
        }
    });
    let load = median(rounds, || {
        let mut store = Store::default();
        for d in &docs {
            assert!(store.load_yaml(path, d).is_empty());
        }
        assert_eq!(store.services.len(), n);
    });
    let value = median(rounds, || {
        for d in &docs {
            let _: serde_json::Value = serde_yaml::from_str(d).expect("YAML");
        }
    });
    let direct = median(rounds, || {
        for d in &docs {
            let _: YusurService = serde_yaml::from_str(d).expect("YAML");
        }
    });
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let params = json!({"services": n, "documents": docs.len(), "bytes": bytes, "rounds": rounds});
    let line = |name: &str, d: Duration, goal: &'static str| Line {
        name: format!("parse.{name}"),
        params: params.clone(),
        value: ms(d),
        unit: "ms",
        baseline_name: "YAML scan alone (IgnoredAny)",
        baseline: Some(ms(floor)),
        goal,
    };
    let lines = vec![
        line("load_yaml", load, ""),
        line("yaml_to_json_value", value, ""),
        line("typed_direct", direct, "(not equivalent: coerces scalars)"),
    ];
    for l in &lines {
        l.print();
    }
    table(&lines);
}
