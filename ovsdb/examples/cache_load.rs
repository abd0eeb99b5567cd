//! Measures how long the cache takes to load an initial monitor reply of N `Load_Balancer`
//! rows (8 backends each) and the process's peak RSS: `cargo run --release -p ycloud-ovsdb
//! --example cache_load -- 100000 [value|owned|str]`. Prints one JSON line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value as Json, json};

use ycloud_ovsdb::cache::{Cache, ClientIndex, UpdateKind};
use ycloud_ovsdb::schema::DatabaseSchema;

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("row count"))
        .unwrap_or(100_000);
    let mode = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "value".to_string());
    let schema = Arc::new(
        DatabaseSchema::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/ovn-nb.ovsschema"
        ))
        .expect("schema"),
    );
    let rss_start = status_kib("VmRSS:");
    // Built as text directly: a serde_json map of this size would dominate the peak RSS.
    let mut text = String::from("{\"Load_Balancer\":{");
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        let (a, b) = (i / 250 % 250, i % 250);
        let backends: Vec<String> = (0..8).map(|k| format!("10.{a}.{b}.{k}:8080")).collect();
        let u = uuid::Uuid::from_u128(i as u128 + 1);
        text.push_str(&format!(
            "\"{u}\":{{\"initial\":{{\"name\":\"lb-{i}\",\"protocol\":\"tcp\",\
             \"vips\":[\"map\",[[\"172.30.{a}.{b}:80\",\"{}\"]]],\
             \"external_ids\":[\"map\",[[\"owner\",\"ns/svc-{i}\"]]]}}}}",
            backends.join(",")
        ));
    }
    text.push_str("}}");
    let json_bytes = text.len();
    let rss_before = peak_rss_kib();
    let cache = Cache::new(
        schema,
        BTreeMap::from([("Load_Balancer".to_string(), None)]),
    )
    .expect("cache");
    cache
        .add_index("Load_Balancer", ClientIndex::external_id("owner"))
        .expect("index");
    // `value`: the text is parsed into a serde_json::Value first (what a client that hands
    // the cache `&Value` does); `owned`: the same Value handed over by value; `str`: the
    // cache parses the text itself.
    let t0 = Instant::now();
    let (parse_ms, apply_ms) = match mode.as_str() {
        "value" => {
            let parsed: Json = serde_json::from_str(&text).expect("parse");
            let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
            let t1 = Instant::now();
            cache.apply(UpdateKind::Update3, &parsed).expect("apply");
            (parse_ms, t1.elapsed().as_secs_f64() * 1e3)
        }
        "owned" => {
            let parsed: Json = serde_json::from_str(&text).expect("parse");
            let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
            let t1 = Instant::now();
            cache
                .apply_owned(UpdateKind::Update3, parsed)
                .expect("apply");
            (parse_ms, t1.elapsed().as_secs_f64() * 1e3)
        }
        "str" => {
            cache.apply_str(UpdateKind::Update3, &text).expect("apply");
            (0.0, t0.elapsed().as_secs_f64() * 1e3)
        }
        other => panic!("mode is value, owned or str, not {other}"),
    };
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(text);
    let t2 = Instant::now();
    let snap = cache.snapshot();
    let snap_us = t2.elapsed().as_secs_f64() * 1e6;
    assert_eq!(snap.len("Load_Balancer"), n);
    assert_eq!(
        snap.find_by_external_id("Load_Balancer", "owner", "ns/svc-7")
            .len(),
        1
    );
    println!(
        "{}",
        json!({"mode": mode, "rows": n, "json_bytes": json_bytes, "parse_ms": parse_ms,
               "apply_ms": apply_ms, "total_ms": total_ms, "snapshot_us": snap_us,
               "rss_mib_after": status_kib("VmRSS:") / 1024,
               // What the loaded cache costs per row (the text is freed by now).
               "rss_bytes_per_row": (status_kib("VmRSS:").saturating_sub(rss_start) * 1024) / n as u64,
               "peak_rss_mib_before": rss_before / 1024, "peak_rss_mib": peak_rss_kib() / 1024})
    );
}
