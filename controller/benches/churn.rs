//! `hack/bench.sh churn`: the real `ycloud-controller` binary in manifest mode with N
//! services programmed, then C backend changes at 100/s (each replaces one static backend
//! of a service by a fresh address and rewrites that service's file of 100). For each change, the
//! latency from the file write to the NB commit that holds it (seen by a monitor of our
//! own on `Load_Balancer`), the NB transactions, ops and bytes the controller sent
//! (its `/metrics`), and its RSS and CPU under churn. Two sizes, to show whether bytes per
//! change depend on the service count. The controller runs with its default poll (500 ms):
//! an edit is seen through its inotify watch of the directory, not by the poll.
//!
//! Full: 1,000 and 10,000 services, 1,000 changes; `--quick`: 100 and 500 services, 100
//! changes. Arguments (after `--`): `--quick`; `--sizes=1000,10000`; `--changes=N`;
//! `--rate=N` changes per second (default 100; a low rate such as 2 measures one change
//! alone, with nothing queued before it).

#[path = "support/controlplane.rs"]
mod controlplane;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controlplane::*;
use serde_json::json;
use ycloud_ovsdb::cache::{Cache, ChangeKind};
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

/// Change → (service, new address, when written).
type Pending = Arc<Mutex<BTreeMap<usize, Vec<(String, Instant, usize)>>>>;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(n: usize, changes: usize, rate: u64, lines: &mut Vec<Line>) {
    let first_line = lines.len();
    let mut w = Workload::write(n);
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
    let c = ControllerProc::start(&w, &nb, 500);
    tokio::task::block_in_place(|| wait_for_lb(&nb, n - 1));

    // Our own view of NB: the load balancers' names and VIPs.
    let (client, _ev) =
        Client::connect(ClientConfig::new(vec![nb.unix_remote()], "OVN_Northbound"))
            .await
            .expect("connect");
    let schema = Arc::new(client.get_schema("OVN_Northbound").await.expect("schema"));
    let cache = Cache::new(
        schema,
        BTreeMap::from([(
            "Load_Balancer".to_owned(),
            Some(vec!["name".to_owned(), "vips".to_owned()]),
        )]),
    )
    .expect("cache");
    let mut events = cache.subscribe();
    client.monitor_cache(&cache).await.expect("monitor");
    while events.try_recv().is_ok() {}
    // Let the passes that follow the first one (our own writes echoed back) settle.
    let steady = tokio::task::block_in_place(|| c.wait_steady(Duration::from_secs(900)));
    assert!(steady, "the controller never settled after its first pass");
    while events.try_recv().is_ok() {}

    let pending: Pending = Arc::default();
    let before = c.counters();
    let passes_before = c.passes().len();
    let change_passes_before = c.change_passes().len();
    let s0 = proc_stat(c.pid());
    let started = Instant::now();

    // The writer: one change every 10 ms, on its own thread so a busy receiver does not
    // slow the rate down.
    let writer = {
        let pending = pending.clone();
        std::thread::spawn(move || {
            let period = Duration::from_micros(1_000_000 / rate);
            let t0 = Instant::now();
            for i in 0..changes {
                let due = t0 + period * i as u32;
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                // Spread over the services (a prime stride), one backend each time.
                let s = (i * 7_919) % n;
                let mut p = pending.lock().expect("lock");
                let addr = w.change_backend(s, i);
                p.entry(s).or_default().push((addr, Instant::now(), i));
            }
            w
        })
    };

    let mut latencies = Vec::with_capacity(changes);
    // The slowest change and its number (is the tail one stall or spread out?).
    let mut slowest = (0.0f64, 0usize);
    let mut peak_rss = s0.rss_kib;
    let deadline = Instant::now() + Duration::from_secs(60 + changes as u64 / rate * 10);
    while latencies.len() < changes && Instant::now() < deadline {
        let ev = match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(_) => {
                peak_rss = peak_rss.max(proc_stat(c.pid()).rss_kib);
                continue;
            }
        };
        let now = Instant::now();
        if ev.table != "Load_Balancer" || ev.kind == ChangeKind::Delete {
            continue;
        }
        let Some(row) = ev.new.as_ref() else {
            continue;
        };
        let Some(name) = row
            .get("name")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
        else {
            continue;
        };
        let Some(s) = name
            .strip_prefix(&format!("ysvc:{NS}/svc-"))
            .and_then(|r| r.split(':').next())
            .and_then(|x| x.parse::<usize>().ok())
        else {
            continue;
        };
        let vips: String = row
            .get("vips")
            .and_then(|v| v.as_map())
            .map(|m| {
                m.values()
                    .filter_map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mut p = pending.lock().expect("lock");
        if let Some(list) = p.get_mut(&s) {
            list.retain(|(addr, t, i)| {
                let done = vips.contains(&format!("{addr}:"));
                if done {
                    let l = ms(now.duration_since(*t));
                    if l > slowest.0 {
                        slowest = (l, *i);
                    }
                    latencies.push(l);
                }
                !done
            });
        }
        if latencies.len() % 50 == 0 {
            peak_rss = peak_rss.max(proc_stat(c.pid()).rss_kib);
        }
    }
    let s1 = proc_stat(c.pid());
    let wall = started.elapsed();
    let _w = writer.join().expect("writer");
    // The passes after the last change (our writes echoed back) count too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = c.counters();
    let passes: Vec<[u64; 4]> = c.passes().into_iter().skip(passes_before).collect();
    let change_passes: Vec<[u64; 4]> = c
        .change_passes()
        .into_iter()
        .skip(change_passes_before)
        .collect();
    let mut change_us: Vec<f64> = change_passes.iter().map(|p| p[0] as f64).collect();
    change_us.sort_by(|a, b| a.total_cmp(b));
    let delta = |k: &str| after.get(k).unwrap_or(&0.0) - before.get(k).unwrap_or(&0.0);
    let txns = delta("ycloud_nb_transactions_total");
    let ops = delta("ycloud_nb_transaction_ops_total");
    let bytes = delta("ycloud_nb_transaction_bytes_total");
    let lost = changes - latencies.len();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mut pass_ms: Vec<f64> = passes.iter().map(|p| p[0] as f64).collect();
    pass_ms.sort_by(|a, b| a.total_cmp(b));
    client.close();
    drop(c);

    let params = json!({"services": n, "changes": changes, "rate_per_s": rate, "not_seen": lost});
    lines.push(Line {
        name: "churn.latency_p50".into(),
        params: params.clone(),
        value: pct(&latencies, 0.50),
        unit: "ms",
        baseline_name: "",
        baseline: None,
        goal: "",
    });
    lines.push(Line {
        name: "churn.latency_p99".into(),
        params: json!({"services": n, "changes": changes, "rate_per_s": rate,
            "p90_ms": pct(&latencies, 0.90), "max_ms": slowest.0, "slowest_change": slowest.1}),
        value: pct(&latencies, 0.99),
        unit: "ms",
        baseline_name: "",
        baseline: None,
        goal: "< 20 ms",
    });
    lines.push(Line {
        name: "churn.ops_per_change".into(),
        params: json!({"services": n, "changes": changes}),
        value: ops / changes as f64,
        unit: "ops",
        baseline_name: "",
        baseline: None,
        goal: "",
    });
    lines.push(Line {
        name: "churn.bytes_per_change".into(),
        params: json!({"services": n, "changes": changes}),
        value: bytes / changes as f64,
        unit: "B",
        baseline_name: "",
        baseline: None,
        goal: "independent of services",
    });
    lines.push(Line {
        name: "churn.nb_transactions".into(),
        params: json!({"services": n, "changes": changes,
            "full_passes": passes.len(),
            "full_pass_p50_ms": pct(&pass_ms, 0.5), "full_pass_max_ms": pct(&pass_ms, 1.0),
            "change_passes": change_passes.len(),
            "change_pass_p50_us": pct(&change_us, 0.5), "change_pass_p99_us": pct(&change_us, 0.99),
            "change_pass_max_us": pct(&change_us, 1.0)}),
        value: txns,
        unit: "txns",
        baseline_name: "",
        baseline: None,
        goal: "",
    });
    lines.push(Line {
        name: "memory.rss_under_churn".into(),
        params: json!({"services": n, "backends": n * BACKENDS, "peak_mib": s1.hwm_kib / 1024}),
        value: peak_rss.max(s1.rss_kib) as f64 / 1024.0,
        unit: "MiB",
        baseline_name: "",
        baseline: None,
        goal: "< 150 MiB",
    });
    lines.push(Line {
        name: "memory.cpu_under_churn".into(),
        params: json!({"services": n, "rate_per_s": rate, "secs": (wall.as_secs_f64() * 10.0).round() / 10.0}),
        value: cpu_share(&s0, &s1) * 100.0,
        unit: "%cpu",
        baseline_name: "",
        baseline: None,
        goal: "",
    });
    for l in &lines[first_line..] {
        l.print();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let arg = |name: &str| {
        std::env::args().find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
    };
    let sizes: Vec<usize> = match arg("sizes") {
        Some(s) => s
            .split(',')
            .map(|n| n.parse().expect("--sizes: numbers"))
            .collect(),
        None if quick => vec![100, 500],
        None => vec![1_000, 10_000],
    };
    let changes: usize = arg("changes")
        .map(|n| n.parse().expect("--changes: a number"))
        .unwrap_or(if quick { 100 } else { 1_000 });
    let rate: u64 = arg("rate")
        .map(|n| n.parse().expect("--rate: changes per second"))
        .unwrap_or(100);
    assert!(rate > 0, "--rate: at least one change per second");
    let mut lines = Vec::new();
    for &n in &sizes {
        run(n, changes, rate, &mut lines).await;
    }
    table(&lines);
}
