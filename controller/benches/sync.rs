//! `hack/bench.sh sync`: cold start of the real `ycloud-controller` binary in manifest mode
//! with N services × 8 backends × 2 ports in one VPC of 20 subnets, from process start until
//! NB holds everything (a client of the bench's own monitors the last service's load
//! balancer, as `ovn-northd` would see it, `LbWatch`: the services' batches go on the wire
//! in key order, after the topology's, and the last service's is in the last one).
//! Baselines in the same run:
//! - the raw floor: every row the controller wrote, dumped and replayed into a fresh NB as
//!   one `transact` request on its socket;
//! - per-service `ovn-nbctl` (`lb-add` × 2 ports + `ls-lb-add`, one run per service, as
//!   kube-ovn did before libovsdb); above 1,000 services a sample of 1,000 is timed and
//!   scaled linearly (a lower bound: each `ovn-nbctl` run reads more as NB grows).
//!
//! Also reports the controller's RSS and CPU once synced and idle (after the passes its own
//! writes trigger; over 65 s, which holds one periodic resync), at each size. Sizes 1,000
//! and 10,000; `--quick`: 200.
//!
//! Two variants of the workload: `allocated` (the controller picks every cluster IP) and
//! `fixed` (every service names its `clusterIPs` in the manifest, which the semantic
//! validator checks against every other claimant: the case that was O(n²)). The `fixed`
//! variant reports the cold start against its own floor and the first pass, not the
//! `ovn-nbctl` baseline or the idle figures (the same as `allocated`).
//!
//! Variant `echo` is `fixed` with `--defer-echo-min=0`: the controller takes the echo of
//! its load balancers during the write, as before session 5 (a same-run before/after).
//!
//! Variant `library` (session 6) times the controller's code in this process with its
//! objects already in memory (read from the same manifests before the clock starts, as a
//! Kubernetes-mode controller's reflectors hold them): connecting to NB plus the first pass
//! until NB holds everything, against the same raw floor. Every variant but `library` also
//! reports the floor in batches (`floor_batched`: the same rows replayed as the controller
//! sends them, 250 services a transaction, pipelined), the server's best time for them.
//!
//! Variant `pods` (session 8) is `library` with pods as the backends: 8 per service,
//! labelled `app: svc-N` and selected by that label, in a subnet bound to the namespace
//! (so the first pass allocates 8 addresses per service and writes a logical switch port
//! for each). Lines `sync.cold_start_library_pods*`.
//!
//! Arguments (after `--`): `--quick`; `--sizes=1000,10000`;
//! `--variants=allocated,fixed,library,pods,echo` (default: all but `echo`);
//! `--idle-secs=N` (0: no idle window); `--runs=N`: runs of the `library` and `pods`
//! variants (default 7 at up to 1,000 services, 3 above and with `--quick`; the median run
//! is reported too).

#[path = "support/controlplane.rs"]
mod controlplane;

use std::time::{Duration, Instant};

use controlplane::*;
use serde_json::json;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

/// `--name=a,b` from the command line.
fn arg_list(name: &str) -> Option<Vec<String>> {
    std::env::args()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
        .map(|v| v.split(',').map(str::to_owned).collect())
}

/// Writes every service's cluster IP into its manifest (`clusterIPs: [10.96.x.y]`, the
/// address the `ovn-nbctl` baseline gives it).
fn fix_cluster_ips(w: &Workload) {
    for f in 0..w.services().div_ceil(PER_FILE) {
        let path = w.path().join(format!("10-svc-{f:04}.yaml"));
        let mut text = std::fs::read_to_string(&path).expect("read services");
        for s in f * PER_FILE..((f + 1) * PER_FILE).min(w.services()) {
            let head =
                format!("name: svc-{s}, namespace: {NS}}}\nspec:\n  scenarios: [ClusterIP]\n");
            let fixed = format!("{head}  clusterIPs: [{}]\n", cluster_ip(s));
            assert!(
                text.contains(&head),
                "service svc-{s} not in {}",
                path.display()
            );
            text = text.replacen(&head, &fixed, 1);
        }
        std::fs::write(&path, text).expect("write services");
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: Vec<usize> = match arg_list("sizes") {
        Some(s) => s
            .iter()
            .map(|n| n.parse().expect("--sizes: numbers"))
            .collect(),
        None if quick => vec![200],
        None => vec![1_000, 10_000],
    };
    let variants = arg_list("variants").unwrap_or_else(|| {
        vec![
            "allocated".into(),
            "fixed".into(),
            "library".into(),
            "pods".into(),
        ]
    });
    let idle_secs = std::env::args()
        .find_map(|a| {
            a.strip_prefix("--idle-secs=")
                .map(|v| v.parse().expect("--idle-secs"))
        })
        .unwrap_or(if quick { 3 } else { 65 });
    let idle = Duration::from_secs(idle_secs);
    let runs: Option<usize> = std::env::args().find_map(|a| {
        a.strip_prefix("--runs=").map(|v| match v.parse() {
            Ok(n) if n >= 1 => n,
            _ => panic!(
                "--runs={v}: the number of library-level runs must be a whole number of at least 1"
            ),
        })
    });
    let sample = 1_000;
    let mut lines = Vec::new();
    for &n in &sizes {
        // Library-level runs: 7 where a floor is tens of ms, 3 above (and in a smoke run).
        let default_runs = if quick || n > 1_000 { 3 } else { 7 };
        for variant in &variants {
            match variant.as_str() {
                "allocated" => allocated(n, idle, sample, &mut lines),
                "fixed" => fixed(n, &[], &mut lines),
                "echo" => fixed(n, &["--defer-echo-min=0"], &mut lines),
                "library" => library(n, runs.unwrap_or(default_runs), false, &mut lines),
                "pods" => library(n, runs.unwrap_or(default_runs), true, &mut lines),
                other => panic!(
                    "--variants: unknown variant {other:?} (allocated, fixed, echo, library, pods)"
                ),
            }
        }
    }
    table(&lines);
}

/// The same allocator as the controller binary: the library-level variant runs the
/// controller's code in this process.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Cold start at library level: the controller's code in this process, its objects
/// already in memory (read from the same manifests before the clock starts, as a
/// Kubernetes-mode controller's reflectors hold them when its first pass begins). Timed:
/// connecting to NB (schema, monitors) plus the first pass until NB holds everything;
/// not: process start and reading the manifests (the binary variants time those).
///
/// `runs` runs, each against a fresh NB and its own floor (the same rows replayed into
/// another fresh NB right after): one line per run, then the median run's figures with every
/// run's ratio. A 1,000-service floor is 30–40 ms, where one slow wake-up moves a single
/// ratio by 0.2.
/// `pods`: the backends are `BACKENDS` pods per service selected by label (variant `pods`,
/// lines `sync.cold_start_library_pods*`), else static addresses (variant `library`).
fn library(n: usize, runs: usize, pods: bool, lines: &mut Vec<Line>) {
    // `RUST_LOG=...`: the controller's logs (its phases at debug level) on stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let first_line = lines.len();
    let w = Workload::write_with(n, pods);
    let (name, level) = if pods {
        (
            "sync.cold_start_library_pods",
            "library (objects in memory), pod backends by label",
        )
    } else {
        ("sync.cold_start_library", "library (objects in memory)")
    };
    let mut all = Vec::new();
    for run in 0..runs {
        let (connect, ours, floor_t) = library_run(&w, n);
        all.push((ours, floor_t));
        lines.push(Line {
            name: name.into(),
            params: json!({"services": n, "backends": BACKENDS, "ports": 2, "subnets": SUBNETS,
                "run": run + 1, "connect_ms": ms(connect),
                "level": level}),
            value: ms(ours),
            unit: "ms",
            baseline_name: "raw floor (one transact of the same rows)",
            baseline: Some(ms(floor_t)),
            goal: "<= 1.5x floor",
        });
    }
    let ratio = |(ours, floor): &(Duration, Duration)| ours.as_secs_f64() / floor.as_secs_f64();
    let mut ratios: Vec<f64> = all.iter().map(ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median = all
        .iter()
        .min_by(|a, b| {
            let m = ratios[ratios.len() / 2];
            (ratio(a) - m).abs().total_cmp(&(ratio(b) - m).abs())
        })
        .copied()
        .expect("at least one run");
    lines.push(Line {
        name: format!("{name}_median"),
        params: json!({"services": n, "runs": runs,
            "ratios": ratios.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
            "level": level}),
        value: ms(median.0),
        unit: "ms",
        baseline_name: "raw floor of the median run",
        baseline: Some(ms(median.1)),
        goal: "<= 1.5x floor",
    });
    for l in &lines[first_line..] {
        l.print();
    }
}

/// One library-level cold start against a fresh NB: (connect, connect + first pass until
/// NB holds everything, the raw floor of the rows it wrote).
fn library_run(w: &Workload, n: usize) -> (Duration, Duration, Duration) {
    use clap::Parser;
    use std::sync::Arc;
    use ycloud_controller::reconcile::{Controller, Metrics};
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
    let args = ycloud_controller::config::Args::parse_from([
        "ycloud-controller".to_owned(),
        format!("--source=dir:{}", w.path().display()),
        format!("--nb={}", nb.unix_remote()),
    ]);
    let opts = args.options().expect("options");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    warm_cpus();
    let (connect, until_nb) = std::thread::scope(|scope| {
        let (start, started) = std::sync::mpsc::channel::<Instant>();
        let nb = &nb;
        // Watching before the clock starts.
        let watch = LbWatch::start(nb, n - 1);
        let waiter = scope.spawn(move || {
            let t = started.recv().expect("start");
            watch.wait();
            t.elapsed()
        });
        let connect = rt.block_on(async {
            let t = Instant::now();
            let mut c = Controller::connect(opts.clone(), Arc::new(Metrics::default()))
                .await
                .expect("connect");
            let connect = t.elapsed();
            // Not timed: the objects into memory.
            assert!(c.refresh(), "the manifests read");
            start.send(Instant::now()).expect("start the clock");
            let report = c.pass().await;
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            connect
        });
        (connect, waiter.join().expect("waiter"))
    });
    drop(rt);
    let (floor_t, _, _) = floor(&nb);
    (connect, connect + until_nb, floor_t)
}

/// Cold start with every cluster IP written in the manifests; with `extra` arguments of
/// the controller (variant `echo`: `--defer-echo-min=0`, the load balancers' echo taken
/// during the write as before session 5, for a same-run comparison).
fn fixed(n: usize, extra: &[&str], lines: &mut Vec<Line>) {
    let first_line = lines.len();
    let w = Workload::write(n);
    fix_cluster_ips(&w);
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
    let watch = LbWatch::start(&nb, n - 1);
    warm_cpus();
    let t = Instant::now();
    let c = ControllerProc::start_with(&w, &nb, 500, extra);
    let suffix = if extra.is_empty() {
        ""
    } else {
        "_echo_in_write"
    };
    watch.wait();
    let ours = t.elapsed();
    let synced = proc_stat(c.pid());
    let steady = c.wait_steady(Duration::from_secs(900));
    let passes = c.passes();
    let phases = c.phases();
    drop(c);
    let (floor_t, _, bytes) = floor(&nb);
    let params = json!({"services": n, "backends": BACKENDS, "ports": 2, "subnets": SUBNETS,
        "cluster_ips": "fixed"});
    lines.push(Line {
        name: format!("sync.cold_start_fixed_ips{suffix}"),
        params: params.clone(),
        value: ms(ours),
        unit: "ms",
        baseline_name: "raw floor (one transact of the same rows)",
        baseline: Some(ms(floor_t)),
        goal: "<= 1.5x floor",
    });
    lines.push(batched_floor_line(
        &nb,
        &format!("sync.cold_start_fixed_ips{suffix}_vs_batched_floor"),
        params,
        ours,
    ));
    if let Some(first) = passes.first() {
        lines.push(Line {
            name: format!("sync.first_pass_fixed_ips{suffix}"),
            params: json!({"services": n, "resolve_ms": first[1], "status_ms": first[2],
                "ops": first[3], "request_bytes": bytes, "steady": steady,
                "rss_at_sync_mib": synced.rss_kib / 1024, "phases_ms": phases}),
            value: first[0] as f64,
            unit: "ms",
            baseline_name: "",
            baseline: None,
            goal: "",
        });
    }
    for l in &lines[first_line..] {
        l.print();
    }
}

/// The cold start against the floor replayed in batches as the controller sends them
/// (`floor_batched`, 250 services a transaction: what NB needs for the same rows when
/// nothing of ours is in the way; no goal, it shows what is left of ours).
fn batched_floor_line(
    nb: &OvsdbServer,
    name: &str,
    mut params: serde_json::Value,
    ours: Duration,
) -> Line {
    let per_txn = 250;
    let (t, txns) = floor_batched(nb, per_txn);
    params["per_transaction"] = json!(per_txn);
    params["transactions"] = json!(txns);
    Line {
        name: name.to_owned(),
        params,
        value: ms(ours),
        unit: "ms",
        baseline_name: "floor in batches (the same rows, 250 services a transaction, pipelined)",
        baseline: Some(ms(t)),
        goal: "",
    }
}

/// Cold start with cluster IPs allocated by the controller, the baselines, and the idle
/// memory and CPU.
fn allocated(n: usize, idle: Duration, sample: usize, lines: &mut Vec<Line>) {
    let first_line = lines.len();
    let w = Workload::write(n);
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB server");
    let watch = LbWatch::start(&nb, n - 1);
    warm_cpus();
    let t = Instant::now();
    // The default poll interval: what users run.
    let c = ControllerProc::start(&w, &nb, 500);
    watch.wait();
    let ours = t.elapsed();
    let params = json!({"services": n, "backends": BACKENDS, "ports": 2, "subnets": SUBNETS});

    // Idle: after the first pass (and the one its own writes trigger) is done. The
    // full run's window covers one periodic resync (every 60 s by default).
    let steady = c.wait_steady(Duration::from_secs(900));
    let a = proc_stat(c.pid());
    std::thread::sleep(idle);
    let b = proc_stat(c.pid());
    let passes = c.passes();
    let phases = c.phases();
    let counters = c.counters();
    drop(c);

    let (floor_t, rows, bytes) = floor(&nb);
    let measured = sample.min(n);
    let nbctl = nbctl_baseline(&w, measured).as_secs_f64() * n as f64 / measured as f64;

    lines.push(Line {
        name: "sync.cold_start".into(),
        params: params.clone(),
        value: ms(ours),
        unit: "ms",
        baseline_name: "raw floor (one transact of the same rows)",
        baseline: Some(ms(floor_t)),
        goal: "<= 1.5x floor",
    });
    lines.push(batched_floor_line(
        &nb,
        "sync.cold_start_vs_batched_floor",
        params.clone(),
        ours,
    ));
    lines.push(Line {
        name: "sync.cold_start_vs_nbctl".into(),
        params: json!({"services": n, "nbctl_timed": measured}),
        value: ms(ours),
        unit: "ms",
        baseline_name: "per-service ovn-nbctl",
        baseline: Some(nbctl * 1000.0),
        goal: "<= 0.05x (20x faster)",
    });
    lines.push(Line {
        name: "sync.nb_rows".into(),
        params: json!({"services": n, "request_bytes": bytes}),
        value: rows as f64,
        unit: "rows",
        baseline_name: "",
        baseline: None,
        goal: "",
    });
    if let Some(first) = passes.first() {
        lines.push(Line {
            name: "sync.first_pass".into(),
            params: json!({"services": n, "resolve_ms": first[1], "status_ms": first[2],
                    "ops": first[3], "phases_ms": phases}),
            value: first[0] as f64,
            unit: "ms",
            baseline_name: "",
            baseline: None,
            goal: "",
        });
    }
    lines.push(Line {
        name: "memory.rss_synced_idle".into(),
        params: json!({"services": n, "backends": n * BACKENDS, "peak_mib": b.hwm_kib / 1024}),
        value: b.rss_kib as f64 / 1024.0,
        unit: "MiB",
        baseline_name: "",
        baseline: None,
        goal: "< 150 MiB",
    });
    lines.push(Line {
            name: "memory.cpu_idle".into(),
            params: json!({"services": n, "poll_ms": 500, "secs": idle.as_secs(), "steady": steady,
                "passes_total": passes.len(),
                "nb_transactions": counters.get("ycloud_nb_transactions_total").copied().unwrap_or(0.0)}),
            value: cpu_share(&a, &b) * 100.0,
            unit: "%cpu",
            baseline_name: "",
            baseline: None,
            goal: "near 0",
        });
    for l in &lines[first_line..] {
        l.print();
    }
}
