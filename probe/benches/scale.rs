//! Scale: 2,000 probes on one node at a 1 s interval for ~30 s, against real listeners in a
//! network namespace (a separate python process, so its CPU is not ours), through the whole
//! node-side path: probe files rescanned every 500 ms, the scheduler, sockets opened inside
//! the namespace by the netns thread, statuses written to files at the bounded rate.
//! Prints JSON lines (one every 5 s, then a summary) with this process' CPU and RSS.
//!
//!   cargo bench -p ycloud-probe --bench scale [-- --quick] (root; YCLOUD_BENCH_PROBES,
//!   YCLOUD_BENCH_SECS override the size)

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ycloud_crds::{NetworkProbe, NetworkProbeSpec};
use ycloud_probe::files::{self, ProbeDir};
use ycloud_probe::{Job, Namespace, Scheduler, SchedulerConfig};
use ycloud_testsupport::netns::Netns;

/// Listening ports in the namespace: half answer HTTP, half only accept (TCP probes).
const PORTS: u16 = 100;
const BASE_PORT: u16 = 20000;

const SERVER_PY: &str = r#"
import asyncio, sys
base, n = int(sys.argv[1]), int(sys.argv[2])
async def tcp(r, w):
    w.close()
async def http(r, w):
    try:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    servers = []
    for i in range(n):
        h = http if i % 2 else tcp
        servers.append(await asyncio.start_server(h, "127.0.0.1", base + i, backlog=1024))
    await asyncio.gather(*(s.serve_forever() for s in servers))
asyncio.run(main())
"#;

/// (user+system CPU seconds, RSS KiB) of this process.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// Probes run so far: every probe of the bench succeeds, so its run of successes counts them.
fn probes_run_total(sched: &Scheduler) -> u64 {
    sched
        .keys()
        .map(|k| u64::from(sched.health(k).map_or(0, |h| h.consecutive_successes)))
        .sum()
}

fn write_probes(s: &Path, n: usize) {
    for i in 0..n {
        let port = BASE_PORT + (i as u16 % PORTS);
        let kind = if port % 2 == 1 { "HTTP" } else { "TCP" };
        let doc = serde_json::json!({
            "apiVersion": "ycloud.io/v1alpha1", "kind": "NetworkProbe",
            "metadata": {"name": format!("p{i}"), "namespace": "bench", "generation": 1},
            "spec": {"service": "svc", "backend": {"kind": "Pod", "name": "bench/pod",
                     "address": "127.0.0.1", "node": "n1", "port": port},
                     "probe": {"type": kind, "intervalMillis": 1000, "timeoutMillis": 1000,
                               "failureThreshold": 2, "successThreshold": 1}},
        });
        let yaml = serde_yaml::to_string(&doc).unwrap();
        files::write_atomic(
            &files::probe_path(s, "bench", &format!("p{i}")),
            yaml.as_bytes(),
        )
        .unwrap();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("YCLOUD_BENCH_PROBES", if quick { 500 } else { 2000 }) as usize;
    let secs = env("YCLOUD_BENCH_SECS", if quick { 10 } else { 30 });

    let ns = Netns::create(&format!("ypb{}", std::process::id())).expect("root: a namespace");
    let (base, ports) = (BASE_PORT.to_string(), PORTS.to_string());
    let _server = ns
        .spawn(
            "probe targets",
            &["python3", "-c", SERVER_PY, &base, &ports],
        )
        .unwrap();
    let last_port = format!("sport = :{}", BASE_PORT + PORTS - 1);
    for _ in 0..200 {
        if !ns
            .exec(&["ss", "-Hltn", &last_port])
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The kernel's accept queues and ephemeral ports are sized for this.
    let _ = ns.exec(&["sysctl", "-qw", "net.core.somaxconn=4096"]);
    let netns = Namespace::Path(PathBuf::from("/run/netns").join(ns.name()));

    let s = tempfile::tempdir().unwrap();
    write_probes(s.path(), n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut sched, mut reports) = Scheduler::new(SchedulerConfig::default());
        let mut dir = ProbeDir::new();
        let rescan = |dir: &mut ProbeDir, sched: &mut Scheduler| {
            let scan = dir.scan(s.path());
            assert!(scan.errors.is_empty(), "{:?}", scan.errors);
            let mut keep = HashSet::new();
            for f in &scan.probes {
                let p: &NetworkProbe = &f.probe;
                let spec: &NetworkProbeSpec = &p.spec;
                let key = format!("{}/{}", f.namespace, f.name);
                let job = Job::from_spec(&key, spec, netns.clone(), p.metadata.generation).unwrap();
                sched.upsert(&key, job);
                keep.insert(key);
            }
            sched.retain(|k| keep.contains(k));
        };
        let (cpu0, _) = usage();
        let t0 = Instant::now();
        rescan(&mut dir, &mut sched);
        let setup_cpu = usage().0 - cpu0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (mut writes, mut failures, mut transitions_down) = (0u64, 0u64, 0u64);
        let mut last_print = Instant::now();
        let mut window = (usage().0, Instant::now());
        let mut rss_max = 0u64;
        // The first interval is the ramp-up (random phases): steady-state figures start after it.
        let mut steady: Option<(f64, Instant, u64)> = None;
        let end = t0 + Duration::from_secs(secs);
        while Instant::now() < end {
            tokio::select! {
                _ = tick.tick() => rescan(&mut dir, &mut sched),
                Some(r) = reports.recv() => {
                    if !r.outcome.success { failures += 1; }
                    if r.status.healthy == Some(false) { transitions_down += 1; }
                    let (ns_, name) = r.key.split_once('/').unwrap();
                    files::write_status(s.path(), ns_, name, &r.status).unwrap();
                    writes += 1;
                }
            }
            if steady.is_none() && t0.elapsed() >= Duration::from_secs(2) {
                steady = Some((usage().0, Instant::now(), writes));
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                let (cpu, rss) = usage();
                rss_max = rss_max.max(rss);
                let pct = 100.0 * (cpu - window.0) / window.1.elapsed().as_secs_f64();
                println!(
                    "{}",
                    serde_json::json!({"name": "probe-scale", "t_s": t0.elapsed().as_secs(),
                        "probes": n, "cpu_pct": (pct * 10.0).round() / 10.0, "rss_kib": rss,
                        "status_writes": writes, "failed_reports": failures})
                );
                window = (cpu, Instant::now());
                last_print = Instant::now();
            }
        }
        let (cpu, rss) = usage();
        rss_max = rss_max.max(rss);
        let (c0, at, w0) = steady.expect("ran at least 2 s");
        let wall = at.elapsed().as_secs_f64();
        let probes_run = probes_run_total(&sched);
        // The common format of hack/bench.sh (no baseline: nothing else probes from pods).
        let params = serde_json::json!({"probes": n, "interval_ms": 1000, "seconds": secs});
        let wall_all = t0.elapsed().as_secs_f64();
        for (name, value, unit) in [
            ("probe-scale/cpu", (cpu - c0) / wall * 100.0, "% of one core"),
            ("probe-scale/rss", rss_max as f64 / 1024.0, "MiB"),
            ("probe-scale/rate", probes_run_total(&sched) as f64 / wall_all, "probes/s"),
        ] {
            println!(
                "{}",
                serde_json::json!({"name": name, "params": params, "value": (value * 10.0).round() / 10.0,
                    "unit": unit, "baseline": null, "ratio": null})
            );
        }
        let unhealthy = sched
            .keys()
            .filter(|k| sched.health(k).is_some_and(|h| h.healthy != Some(true)))
            .count();
        println!(
            "{}",
            serde_json::json!({"name": "probe-scale-summary", "probes": n, "interval_ms": 1000,
                "seconds": secs, "cpu_pct_steady": ((cpu - c0) / wall * 1000.0).round() / 10.0,
                "cpu_ms_per_probe": ((cpu - c0) * 1000.0 / (probes_run as f64 * wall / t0.elapsed().as_secs_f64())).max(0.0),
                "setup_cpu_ms": (setup_cpu * 1000.0).round(),
                "rss_max_kib": rss_max, "probes_run": probes_run,
                "probes_per_s": (probes_run as f64 / t0.elapsed().as_secs_f64()).round(),
                "status_writes_per_s": (((writes - w0) as f64) / wall * 10.0).round() / 10.0,
                "failed_reports": failures, "unhealthy_reports": transitions_down,
                "unhealthy_at_end": unhealthy})
        );
    });
}
