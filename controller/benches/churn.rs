//! `hack/bench.sh churn`: the real `ycloud-controller` binary in manifest mode with N
//! services programmed, then C backend changes at 100/s (each replaces one static backend
//! of a service by a fresh address and rewrites that service's file of 100). For each change, the
//! latency from the rename that makes it (its return: the writer's clock after the call or
//! our own inotify watch's wake-up, whichever comes first) to the NB commit that holds it
//! (seen by a monitor of our own on `Load_Balancer`), the NB transactions, ops and bytes the controller sent
//! (its `/metrics`), and its RSS and CPU under churn. Two sizes, to show whether bytes per
//! change depend on the service count. The controller runs with its default poll (500 ms):
//! an edit is seen through its inotify watch of the directory, not by the poll.
//!
//! Full: 1,000 and 10,000 services, 1,000 changes; `--quick`: 100 and 500 services, 100
//! changes. Arguments (after `--`): `--quick`; `--sizes=1000,10000`; `--changes=N`;
//! `--rate=N` changes per second (default 100; a low rate such as 2 measures one change
//! alone, with nothing queued before it); `--timeline=K` prints the controller's log lines
//! around the K slowest changes (stderr); `--idle-secs=N` then measures RSS and CPU over N
//! idle seconds (65 holds one periodic resync).

#[path = "support/controlplane.rs"]
mod controlplane;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use controlplane::*;
use serde_json::json;
use ycloud_ovsdb::cache::{Cache, Change, ChangeKind};
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

/// One change as the writer made it: the service, its new backend address, when the
/// rename that made it started and returned (monotonic, and the wall clock for the
/// controller's log), and its number.
struct Written {
    service: usize,
    addr: String,
    rename_start: Instant,
    at: Instant,
    wall: SystemTime,
    index: usize,
}

/// One update of a service's load balancer as our monitor received it.
struct Seen {
    at: Instant,
    vips: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A service's load balancer row as our monitor saw it: the service's number and its VIPs'
/// backends, joined.
fn lb_update(ev: &Change) -> Option<(usize, String)> {
    if ev.table != "Load_Balancer" || ev.kind == ChangeKind::Delete {
        return None;
    }
    let row = ev.new.as_ref()?;
    let name = row.get("name")?.as_atom()?.as_str()?;
    let s = name
        .strip_prefix(&format!("ysvc:{NS}/svc-"))?
        .split(':')
        .next()?
        .parse::<usize>()
        .ok()?;
    let vips = row
        .get("vips")
        .and_then(|v| v.as_map())
        .map(|m| {
            m.values()
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Some((s, vips))
}

/// Our own inotify watch of the manifest directory, on its own thread: when each
/// `10-svc-NNNN.yaml` was renamed into place, by file number.
struct RenameWatch {
    seen: Arc<std::sync::Mutex<HashMap<usize, Vec<Instant>>>>,
    thread: std::thread::JoinHandle<()>,
}

fn watch_renames(dir: &std::path::Path) -> RenameWatch {
    let mut inotify = inotify::Inotify::init().expect("inotify");
    inotify
        .watches()
        .add(dir, inotify::WatchMask::MOVED_TO)
        .expect("watch the manifest directory");
    let seen: Arc<std::sync::Mutex<HashMap<usize, Vec<Instant>>>> = Arc::default();
    let thread = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok(events) = inotify.read_events_blocking(&mut buf) else {
                    return;
                };
                let now = Instant::now();
                for e in events {
                    // The directory is gone (the run is over): the watch went with it.
                    if e.mask.contains(inotify::EventMask::IGNORED) {
                        return;
                    }
                    let file = e
                        .name
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix("10-svc-"))
                        .and_then(|n| n.strip_suffix(".yaml"))
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(f) = file {
                        seen.lock().expect("lock").entry(f).or_default().push(now);
                    }
                }
            }
        })
    };
    RenameWatch { seen, thread }
}

impl RenameWatch {
    /// What was seen so far; the thread ends when the directory is removed.
    fn finish(self) -> HashMap<usize, Vec<Instant>> {
        drop(self.thread);
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// Changes whose rename our watch did not see (its queue overflowed?): their time is the
/// writer's clock alone.
fn renamed_missing(renamed: &HashMap<usize, Vec<Instant>>, done: &[(f64, Written)]) -> usize {
    done.iter()
        .filter(|(_, w)| {
            renamed
                .get(&(w.service / PER_FILE))
                .is_none_or(|ts| !ts.iter().any(|t| *t >= w.rename_start))
        })
        .count()
}

/// Seconds since midnight UTC.
fn day_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86_400.0)
}

/// `--timeline=K`: for the K slowest changes, the controller's own log lines from 20 ms
/// before the change to its commit seen, in ms from the change (stderr): where the time
/// went (the wake-up, the pass, the transaction, or nothing logged at all).
fn print_timeline(c: &ControllerProc, done: &[(f64, Written)], k: usize) {
    let log = c.log_lines();
    for (lat, w) in done.iter().rev().take(k) {
        let t0 = day_seconds(w.wall);
        eprintln!(
            "change {} at {t0:.3} s of the day UTC (svc-{}): {lat:.1} ms from the rename to the \
             commit seen; rename {:.1} ms",
            w.index,
            w.service,
            ms(w.at.duration_since(w.rename_start))
        );
        for (t, line) in &log {
            let off = (t - t0) * 1000.0;
            if (-20.0..=lat + 5.0).contains(&off) {
                eprintln!("  {off:+8.1} ms  {line}");
            }
        }
    }
}

/// What one run does besides the churn itself.
#[derive(Clone, Copy)]
struct Extras {
    /// `--timeline=K`: print the controller's log around the K slowest changes.
    timeline: usize,
    /// `--idle-secs=N`: RSS and CPU over N idle seconds after the churn.
    idle: Duration,
}

async fn run(n: usize, changes: usize, rate: u64, extras: &Extras, lines: &mut Vec<Line>) {
    let Extras { timeline, idle } = *extras;
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

    let before = c.counters();
    let passes_before = c.passes().len();
    let change_passes_before = c.change_passes().len();
    let s0 = proc_stat(c.pid());
    let started = Instant::now();

    // The writer: one change every 1/rate s, on its own thread so a busy receiver does not
    // slow the rate down. It hands each change over on a channel, never under a lock the
    // receiver waits for: session 4's bench wrote the file while holding the lock the
    // receiver took for every commit it saw, so one write held up by the disk (100–300 ms
    // under the other helpers' builds) made every commit seen meanwhile look that late.
    let renamed = watch_renames(w.path());
    let (tx, mut written_rx) = tokio::sync::mpsc::unbounded_channel::<Written>();
    let writer = std::thread::spawn(move || {
        let period = Duration::from_micros(1_000_000 / rate);
        let t0 = Instant::now();
        for index in 0..changes {
            let due = t0 + period * index as u32;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            // Spread over the services (a prime stride), one backend each time.
            let service = (index * 7_919) % n;
            let (addr, rename_start) = w.change_backend(service, index);
            let at = Instant::now();
            let wall = SystemTime::now();
            let change = Written {
                service,
                addr,
                rename_start,
                at,
                wall,
                index,
            };
            if tx.send(change).is_err() {
                break;
            }
        }
        w
    });

    // Every update of a service's load balancer since the start, and the changes whose
    // commit is not seen yet, by service: a commit can come before the writer's message
    // about it.
    let mut seen: HashMap<usize, Vec<Seen>> = HashMap::new();
    let mut pending: HashMap<usize, Vec<Written>> = HashMap::new();
    // Each change with when its commit was seen.
    let mut done: Vec<(Instant, Written)> = Vec::with_capacity(changes);
    let mut writer_open = true;
    let mut peak_rss = s0.rss_kib;
    let mut rss_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60 + changes as u64 / rate * 10);
    while done.len() < changes && Instant::now() < deadline {
        let service = tokio::select! {
            biased;
            ev = events.recv() => {
                let now = Instant::now();
                let Some(ev) = ev else { break };
                match lb_update(&ev) {
                    Some((s, vips)) => {
                        seen.entry(s).or_default().push(Seen { at: now, vips });
                        Some(s)
                    }
                    None => None,
                }
            }
            w = written_rx.recv(), if writer_open => match w {
                Some(w) => {
                    let s = w.service;
                    pending.entry(s).or_default().push(w);
                    Some(s)
                }
                None => {
                    writer_open = false;
                    None
                }
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => None,
        };
        if let Some(s) = service
            && let Some(list) = pending.get_mut(&s)
        {
            let updates = seen.get(&s).map(Vec::as_slice).unwrap_or_default();
            let mut i = 0;
            while i < list.len() {
                let needle = format!("{}:", list[i].addr);
                match updates.iter().find(|u| u.vips.contains(&needle)) {
                    Some(u) => {
                        let w = list.swap_remove(i);
                        done.push((u.at, w));
                    }
                    None => i += 1,
                }
            }
        }
        if rss_at.elapsed() >= Duration::from_millis(100) {
            peak_rss = peak_rss.max(proc_stat(c.pid()).rss_kib);
            rss_at = Instant::now();
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
    let lost = changes - done.len();
    // When each change was made: its rename's return, as the writer's clock after the
    // call or our watcher's wake-up, whichever came first. The writer's clock alone
    // came late for 50-70 % of the changes at 10,000 services: the rename wakes the
    // controller, which often takes the writer's core before the writer reads its clock,
    // and the commit was then "seen before it was made".
    let renamed = renamed.finish();
    let mut early = 0usize;
    let mut done: Vec<(f64, Written)> = done
        .into_iter()
        .map(|(seen, w)| {
            let file = w.service / PER_FILE;
            let watched = renamed
                .get(&file)
                .and_then(|ts| ts.iter().find(|t| **t >= w.rename_start))
                .copied();
            let made = watched.map_or(w.at, |t| t.min(w.at));
            early += usize::from(seen < made);
            (ms(seen.saturating_duration_since(made)), w)
        })
        .collect();
    done.sort_by(|a, b| a.0.total_cmp(&b.0));
    let latencies: Vec<f64> = done.iter().map(|(l, _)| *l).collect();
    // The slowest change and its number (is the tail one stall or spread out?), and the
    // longest rename (a change exists only once its rename returns: not counted).
    let slowest = done.last().map_or((0.0, 0), |(l, w)| (*l, w.index));
    let rename_max = done
        .iter()
        .map(|(_, w)| ms(w.at.duration_since(w.rename_start)))
        .fold(0.0, f64::max);
    if timeline > 0 {
        print_timeline(&c, &done, timeline);
    }
    let mut pass_ms: Vec<f64> = passes.iter().map(|p| p[0] as f64).collect();
    pass_ms.sort_by(|a, b| a.total_cmp(b));
    // `--idle-secs=N`: then idle (the periodic resync every 60 s included when N > 60):
    // RSS at the end and CPU over the window.
    let mut idle_window = None;
    if idle > Duration::ZERO {
        let a = proc_stat(c.pid());
        tokio::time::sleep(idle).await;
        idle_window = Some((a, proc_stat(c.pid())));
    }
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
            "p90_ms": pct(&latencies, 0.90), "max_ms": slowest.0, "slowest_change": slowest.1,
            "rename_max_ms": rename_max, "seen_before_made": early,
            "watcher_missed": renamed_missing(&renamed, &done)}),
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
        params: json!({"services": n, "backends": n * BACKENDS, "peak_mib": s1.hwm_kib / 1024,
            "at_start_mib": s0.rss_kib / 1024, "at_end_mib": s1.rss_kib / 1024}),
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
    if let Some((a, b)) = idle_window {
        lines.push(Line {
            name: "memory.rss_idle_after_churn".into(),
            params: json!({"services": n, "backends": n * BACKENDS, "secs": idle.as_secs()}),
            value: b.rss_kib as f64 / 1024.0,
            unit: "MiB",
            baseline_name: "",
            baseline: None,
            goal: "< 150 MiB",
        });
        lines.push(Line {
            name: "memory.cpu_idle_after_churn".into(),
            params: json!({"services": n, "poll_ms": 500, "secs": idle.as_secs()}),
            value: cpu_share(&a, &b) * 100.0,
            unit: "%cpu",
            baseline_name: "",
            baseline: None,
            goal: "near zero",
        });
    }
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
    let timeline: usize = arg("timeline")
        .map(|n| n.parse().expect("--timeline: a number of changes"))
        .unwrap_or(0);
    let idle = Duration::from_secs(
        arg("idle-secs")
            .map(|n| n.parse().expect("--idle-secs: seconds"))
            .unwrap_or(0),
    );
    let extras = Extras { timeline, idle };
    let mut lines = Vec::new();
    for &n in &sizes {
        run(n, changes, rate, &extras, &mut lines).await;
    }
    table(&lines);
}
