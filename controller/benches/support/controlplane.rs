//! What the control-plane benchmarks (`sync`, `churn`) share: the workload written as
//! manifests, the real `ycloud-controller` binary in manifest mode as a child process, the
//! NB server, the raw floor, the per-service `ovn-nbctl` baseline, `/proc` readings and the
//! JSON-line output.
//!
//! The workload is one VPC of 20 subnets and N ClusterIP services, each with 2 TCP ports
//! and 8 static backends spread over the subnets (static backends: the service rows are
//! what is measured, with no pod ports in NB, so the baselines write the same rows).
//! Cluster IPs are allocated by the controller (as Kubernetes users get them); the
//! `ovn-nbctl` baseline uses addresses of the same range. Services go 100 to a file: a change rewrites one file of 100 services, as an operator
//! editing manifests would, and the directory poll reads every file anyway.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

pub const SUBNETS: usize = 20;
pub const BACKENDS: usize = 8;
pub const PER_FILE: usize = 100;
pub const NS: &str = "bench";

/// The address of backend `slot` (0.., unique): spread over the 20 subnets
/// 10.16.0.0/16 … 10.35.0.0/16.
pub fn backend_ip(slot: usize) -> String {
    let subnet = slot % SUBNETS;
    let host = slot / SUBNETS + 2;
    format!("10.{}.{}.{}", 16 + subnet, host / 250, host % 250 + 2)
}

/// The VIP the `ovn-nbctl` baseline gives service `s` (the controller allocates its own
/// from the same /16).
pub fn cluster_ip(s: usize) -> String {
    format!("10.96.{}.{}", s / 250, s % 250 + 1)
}

pub fn lb_name(s: usize) -> String {
    format!("ysvc:{NS}/svc-{s}:tcp:cluster")
}

/// The services' backends (slot numbers), kept to rewrite a file after a change.
pub struct Workload {
    pub dir: tempfile::TempDir,
    pub backends: Vec<Vec<usize>>,
    /// Next unused backend slot (changes take fresh addresses).
    pub next_slot: usize,
    /// The backends are pods selected by label (`app: svc-N`), not static addresses.
    pub pods: bool,
}

impl Workload {
    /// `n` services with static backends.
    pub fn write(n: usize) -> Workload {
        Self::write_with(n, false)
    }

    /// `n` services; `pods`: their backends are `BACKENDS` pods each, selected by label
    /// (`app: svc-N`), in a subnet of 10.64.0.0/12 bound to the namespace (the other 19
    /// subnets as with static backends).
    pub fn write_with(n: usize, pods: bool) -> Workload {
        let dir = tempfile::Builder::new()
            .prefix("ycloud-bench-")
            .tempdir()
            .expect("temp dir");
        let mut topo = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n\
             apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {{name: {NS}}}\n\
             spec: {{serviceCIDRs: [10.96.0.0/16], namespaces: [{NS}]}}\n"
        );
        if pods {
            topo.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: Subnet\nmetadata: {{name: pods}}\n\
                 spec: {{vpc: {NS}, cidrBlocks: [10.64.0.0/12], namespaces: [{NS}]}}\n"
            ));
        }
        for i in 0..SUBNETS - usize::from(pods) {
            topo.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: Subnet\nmetadata: {{name: s{i}}}\n\
                 spec: {{vpc: {NS}, cidrBlocks: [10.{}.0.0/16]}}\n",
                16 + i
            ));
        }
        std::fs::write(dir.path().join("00-topology.yaml"), topo).expect("write topology");
        let backends: Vec<Vec<usize>> = (0..n)
            .map(|s| (0..BACKENDS).map(|b| s * BACKENDS + b).collect())
            .collect();
        let w = Workload {
            dir,
            backends,
            next_slot: n * BACKENDS,
            pods,
        };
        for f in 0..n.div_ceil(PER_FILE) {
            w.write_file(f);
            if pods {
                w.write_pods(f);
            }
        }
        w
    }

    /// The pods of file `f`'s services (`BACKENDS` each, labelled `app: svc-N`).
    fn write_pods(&self, f: usize) {
        let mut text = String::new();
        let end = ((f + 1) * PER_FILE).min(self.services());
        for s in f * PER_FILE..end {
            for b in 0..BACKENDS {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: svc-{s}-{b}, namespace: {NS}, \
                     labels: {{app: svc-{s}}}}}\nspec: {{containers: [{{name: c}}]}}\n"
                ));
            }
        }
        std::fs::write(self.path().join(format!("05-pods-{f:04}.yaml")), text).expect("write pods");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn services(&self) -> usize {
        self.backends.len()
    }

    fn service_yaml(&self, s: usize, out: &mut String) {
        out.push_str(&format!(
            "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\n\
             metadata: {{name: svc-{s}, namespace: {NS}}}\nspec:\n  scenarios: [ClusterIP]\n  \
             ports:\n  \
             - {{name: http, protocol: TCP, port: 80, targetPort: 8080}}\n  \
             - {{name: https, protocol: TCP, port: 443, targetPort: 8443}}\n"
        ));
        if self.pods {
            out.push_str(&format!(
                "  backends: [{{type: Pod, selector: {{matchLabels: {{app: svc-{s}}}}}}}]\n"
            ));
            return;
        }
        out.push_str("  staticBackends:\n");
        for &b in &self.backends[s] {
            out.push_str(&format!("  - {{address: {}}}\n", backend_ip(b)));
        }
    }

    /// Writes file `f` whole and renames it into place, so the controller never reads a
    /// half-written file. Returns when the rename started (the change exists from its
    /// return on; writing the temp file before it is not part of the change's latency).
    fn write_file(&self, f: usize) -> Instant {
        let mut text = String::new();
        let end = ((f + 1) * PER_FILE).min(self.services());
        for s in f * PER_FILE..end {
            self.service_yaml(s, &mut text);
        }
        let tmp = self.path().join(format!(".svc-{f:04}.tmp"));
        std::fs::write(&tmp, text).expect("write services");
        let rename_start = Instant::now();
        std::fs::rename(&tmp, self.path().join(format!("10-svc-{f:04}.yaml"))).expect("rename");
        rename_start
    }

    /// Replaces one backend of service `s` with a fresh address; returns that address and
    /// when the rename of its file started.
    pub fn change_backend(&mut self, s: usize, which: usize) -> (String, Instant) {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.backends[s][which % BACKENDS] = slot;
        let rename_start = self.write_file(s / PER_FILE);
        (backend_ip(slot), rename_start)
    }
}

/// `ycloud-controller` in manifest mode as our child; SIGKILLed and reaped on drop.
pub struct ControllerProc {
    pub child: Child,
    pub metrics: String,
    pub log: PathBuf,
    /// Copies the controller's stderr (a pipe) into `log`; ends when the child does.
    log_copier: Option<std::thread::JoinHandle<()>>,
}

impl ControllerProc {
    pub fn start(w: &Workload, nb: &OvsdbServer, poll_ms: u64) -> ControllerProc {
        Self::start_with(w, nb, poll_ms, &[])
    }

    /// [`ControllerProc::start`] with more command-line arguments.
    pub fn start_with(
        w: &Workload,
        nb: &OvsdbServer,
        poll_ms: u64,
        extra: &[&str],
    ) -> ControllerProc {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let metrics = format!("127.0.0.1:{port}");
        let log = w.path().join(".controller.log");
        // `YCLOUD_BENCH_CONTROLLER`: another build of the controller (a before → after
        // comparison in the same run, with the same bench).
        let bin = std::env::var_os("YCLOUD_BENCH_CONTROLLER").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_ycloud-controller")),
            PathBuf::from,
        );
        let direct = std::env::var_os("YCLOUD_BENCH_LOG_DIRECT").is_some_and(|v| v == "1");
        let mut child = Command::new(bin)
            .arg(format!("--source=dir:{}", w.path().display()))
            .arg(format!("--nb={}", nb.unix_remote()))
            .arg(format!("--poll-ms={poll_ms}"))
            .arg(format!("--metrics-addr={metrics}"))
            .arg("--log-format=json")
            .args(extra)
            // The passes driven by one change log at debug level (one line each), and so do
            // the first pass's phases (reading the source, each transaction's validation,
            // encoding and reply).
            .env(
                "RUST_LOG",
                "info,ycloud_controller::reconcile=debug,ycloud_ovsdb::client=debug,\
                 ycloud_ovsdb::rpc=debug",
            )
            .stdout(Stdio::null())
            // A pipe, as a container runtime or journald gives it, not a file on the
            // benchmark's disk: a write(2) to a file can wait 100 ms and more for the
            // kernel's dirty-page writeback when the disk is busy, and the controller logs
            // from its reconcile loop. Our thread takes that wait instead.
            // (`YCLOUD_BENCH_LOG_DIRECT=1`: the file itself, as before, for a comparison.)
            .stderr(if direct {
                Stdio::from(std::fs::File::create(&log).expect("log file"))
            } else {
                Stdio::piped()
            })
            .spawn()
            .expect("spawn ycloud-controller");
        let log_copier = child.stderr.take().map(|mut from| {
            let mut to = std::fs::File::create(&log).expect("log file");
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
            })
        });
        ControllerProc {
            child,
            metrics,
            log,
            log_copier,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a pass wrote nothing (the echo of its own writes has been seen and
    /// nothing is left to do), up to `limit`; returns whether it came.
    pub fn wait_steady(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let p = self.passes();
            if p.len() >= 2 && p.last().is_some_and(|l| l[3] == 0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The controller's counters (`/metrics`), by name.
    pub fn counters(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let Ok(mut s) = TcpStream::connect(&self.metrics) else {
            return out;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(v) = v.trim().parse::<f64>()
            {
                out.insert(k.to_owned(), v);
            }
        }
        out
    }

    /// The controller's own log lines of its reconcile passes: (elapsed_ms, resolve_ms,
    /// status_ms, ops) of each.
    pub fn passes(&self) -> Vec<[u64; 4]> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|j| j["fields"]["message"] == "reconciled")
            .map(|j| {
                let f = |k: &str| j["fields"][k].as_u64().unwrap_or(0);
                [f("elapsed_ms"), f("resolve_ms"), f("status_ms"), f("ops")]
            })
            .collect()
    }

    /// The first pass's phases from the controller's own log, in ms: connecting (schema
    /// and cache load), reading the source, resolve, topology (plan and transaction),
    /// planning the services, their transaction (of which: validation, encoding, and
    /// the server until its reply), status. Phases not logged are left out.
    pub fn phases(&self) -> Json {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<Json> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .collect();
        let first = |msg: &str| lines.iter().find(|j| j["fields"]["message"] == msg);
        let mut out = serde_json::Map::new();
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.insert(k.to_owned(), json!((v * 10.0).round() / 10.0));
            }
        };
        let ms = |j: Option<&Json>, k: &str| j.and_then(|j| j["fields"][k].as_f64());
        put(
            "connect",
            ms(
                first("connected to NB, schema read, cache loaded"),
                "elapsed_ms",
            ),
        );
        put("read_source", ms(first("read the source"), "elapsed_ms"));
        // The deferred echo of the cold start's load balancers (after NB holds them).
        put(
            "echo_taken_after",
            ms(first("load balancers' echo taken"), "elapsed_ms"),
        );
        let pass = first("reconciled");
        for k in ["resolve", "topology", "plan", "services", "status"] {
            put(k, ms(pass, &format!("{k}_ms")));
        }
        // The first pass's services transactions (since session 6 several, each sent while
        // the next batch is planned): the transactions before the first `reconciled` line
        // but the first one (the topology's).
        let at = |j: Option<&Json>| {
            j.and_then(|j| j["timestamp"].as_str())
                .and_then(seconds_of_day)
        };
        let end = lines
            .iter()
            .position(|j| j["fields"]["message"] == "reconciled")
            .unwrap_or(lines.len());
        let of = |msg: &str| -> Vec<&Json> {
            lines[..end]
                .iter()
                .filter(|j| j["fields"]["message"] == msg)
                .skip(1)
                .collect()
        };
        let (replies, requests) = (of("transact replied"), of("request encoded"));
        let sum = |js: &[&Json], k: &str| {
            js.iter()
                .filter_map(|j| j["fields"][k].as_f64())
                .sum::<f64>()
        };
        if !requests.is_empty() {
            put("services_transactions", Some(requests.len() as f64));
            put(
                "services_validate",
                Some(sum(&replies, "validate_us") / 1000.0),
            );
            put(
                "services_encode",
                Some(sum(&requests, "encode_us") / 1000.0),
            );
            put("services_request_mb", Some(sum(&requests, "bytes") / 1e6));
        }
        // From the first services request on the socket to the last reply: the server's
        // share, overlapped with our planning of the later batches.
        if let (Some(a), Some(b)) = (at(requests.first().copied()), at(replies.last().copied())) {
            put("services_transact", Some((b - a) * 1000.0));
        }
        // Ours: from the controller's first log line to the first and to the last services
        // request encoded and queued.
        if let (Some(a), Some(b)) = (at(lines.first()), at(requests.first().copied())) {
            put("until_first_services_sent", Some((b - a) * 1000.0));
        }
        if let (Some(a), Some(b)) = (at(lines.first()), at(requests.last().copied())) {
            put("until_services_sent", Some((b - a) * 1000.0));
        }
        Json::Object(out)
    }

    /// Every line of the controller's log: its time (seconds since midnight UTC) and its
    /// message with the other fields, compact.
    pub fn log_lines(&self) -> Vec<(f64, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter_map(|j| {
                let t = j["timestamp"].as_str().and_then(seconds_of_day)?;
                let mut fields = j["fields"].as_object()?.clone();
                let msg = fields.remove("message")?;
                let msg = msg.as_str().unwrap_or_default().to_owned();
                Some((t, format!("{msg} {}", Json::Object(fields))))
            })
            .collect()
    }

    /// The controller's own log lines of its passes driven by a change: (elapsed µs,
    /// services re-resolved, services verified after an NB change, ops) of each.
    pub fn change_passes(&self) -> Vec<[u64; 4]> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|j| j["fields"]["message"] == "reconciled changes")
            .map(|j| {
                let f = |k: &str| j["fields"][k].as_u64().unwrap_or(0);
                [f("elapsed_us"), f("services"), f("verified"), f("ops")]
            })
            .collect()
    }
}

/// Seconds since midnight of an RFC 3339 timestamp (`2026-11-22T15:28:05.123456Z`).
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe's end of file: the copier is done.
        if let Some(t) = self.log_copier.take() {
            let _ = t.join();
        }
        // `YCLOUD_BENCH_KEEP_LOGS=DIR`: the log outlives the run's temp dir (a look at
        // every pass's timing after the run).
        if let Some(dir) = std::env::var_os("YCLOUD_BENCH_KEEP_LOGS") {
            let to = Path::new(&dir).join(format!("controller-{}.log", self.child.id()));
            if let Err(e) = std::fs::copy(&self.log, &to) {
                eprintln!("keeping the controller's log as {}: {e}", to.display());
            }
        }
    }
}

/// Resident and peak resident memory (KiB) and CPU time (user + system) of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu: Duration,
    pub at: Instant,
}

pub fn proc_stat(pid: u32) -> ProcStat {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 14th and 15th fields, i.e. the 12th and 13th after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // The kernel's USER_HZ is 100 on every Linux we run on.
    ProcStat {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu: Duration::from_millis(ticks * 10),
        at: Instant::now(),
    }
}

/// CPU share (1.0 = one core) between two readings.
pub fn cpu_share(a: &ProcStat, b: &ProcStat) -> f64 {
    (b.cpu.as_secs_f64() - a.cpu.as_secs_f64()) / (b.at - a.at).as_secs_f64().max(1e-9)
}

fn sock(nb: &OvsdbServer) -> String {
    nb.unix_remote()
        .strip_prefix("unix:")
        .expect("unix remote")
        .to_owned()
}

/// A fresh connection to the server's unix socket. A server just started may log its TCP
/// port before its unix socket listens (the floor's fresh server was refused now and then),
/// so refusals are retried for 5 s.
fn connect(nb: &OvsdbServer) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(sock(nb)) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("connect to {}: {e}", sock(nb)),
        }
    }
}

/// One JSON-RPC request on a fresh connection to the server's socket; the reply's result.
pub fn raw_request(nb: &OvsdbServer, method: &str, params: Json) -> (Json, Duration) {
    let req = json!({"method": method, "params": params, "id": 1});
    let bytes = serde_json::to_vec(&req).expect("encode");
    let mut s = connect(nb);
    let t = Instant::now();
    s.write_all(&bytes).expect("write");
    // Buffered, as any real client reads.
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, &mut s))
            .into_iter::<Json>();
    loop {
        let msg = de.next().expect("reply").expect("json");
        if msg.get("id") == Some(&json!(1)) {
            let result = msg["result"].clone();
            assert!(
                msg["error"].is_null() && !result.to_string().contains("\"error\""),
                "{method} failed: {}",
                msg.to_string().chars().take(300).collect::<String>()
            );
            return (result, t.elapsed());
        }
    }
}

/// Every core busy for 300 ms, right before a timed cold start or floor: each then starts
/// from the same warm machine. A core that was idle runs the next tens of milliseconds
/// slower on this VM: a library-level cold start of 1,000 services right after an idle
/// moment took 66–79 ms, and 50–56 ms after this spin (4 runs each, in one process,
/// session 7), while the floor it was compared with always ran right after busy work.
/// `YCLOUD_BENCH_WARM_MS=N`: N ms instead (0: no warm-up, as before session 7).
pub fn warm_cpus() {
    let ms = std::env::var("YCLOUD_BENCH_WARM_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    if ms == 0 {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(ms) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            });
        }
    });
}

/// Blocks until the load balancer of service `s` exists (see [`LbWatch`]).
pub fn wait_for_lb(nb: &OvsdbServer, s: usize) {
    LbWatch::start(nb, s).wait();
}

/// A client of its own that watches NB for the load balancer of one service, as
/// `ovn-northd` watches NB: a `monitor_cond` on that row, set up before the clock starts,
/// whose update the server sends in the pass that commits the row.
///
/// Sessions 1–8 asked the server with an OVSDB `wait` instead. ovsdb-server held that
/// answer behind the controller's next request, which comes right after its last
/// transaction's reply: the widened monitor of the rows it wrote (`take_echo`), whose
/// update of 8,000 ports took the server ~110 ms (session 9, 1,000 services × 8 pods:
/// the `wait` came back 110–120 ms after the controller had the last reply; with that
/// request held back 300 ms, 2 ms after). That is the server's work for us after NB holds
/// everything, not time until it does.
pub struct LbWatch {
    /// `None`: the row was there when the watch started.
    conn: Option<(UnixStream, JsonStream)>,
}

type JsonStream = serde_json::StreamDeserializer<
    'static,
    serde_json::de::IoRead<std::io::BufReader<UnixStream>>,
    Json,
>;

impl LbWatch {
    /// Connects and registers the monitor; returns once the server has answered it.
    pub fn start(nb: &OvsdbServer, s: usize) -> LbWatch {
        let mut out = connect(nb);
        let req = json!({"method": "monitor_cond", "id": 1, "params": ["OVN_Northbound", null,
            {"Load_Balancer": [{"columns": ["name"], "where": [["name", "==", lb_name(s)]]}]}]});
        out.write_all(req.to_string().as_bytes())
            .expect("monitor request");
        let input = out.try_clone().expect("clone the watch's socket");
        let mut conn = (
            out,
            serde_json::Deserializer::from_reader(std::io::BufReader::new(input)).into_iter(),
        );
        let reply = next_message(&mut conn, |m| m.get("id") == Some(&json!(1)));
        assert!(reply["error"].is_null(), "monitor_cond failed: {reply}");
        // The reply holds the row if an earlier write made it.
        let there = reply["result"]["Load_Balancer"]
            .as_object()
            .is_some_and(|rows| !rows.is_empty());
        LbWatch {
            conn: (!there).then_some(conn),
        }
    }

    /// Blocks until the server sends the row's insert.
    pub fn wait(self) {
        if let Some(mut conn) = self.conn {
            next_message(&mut conn, |m| {
                m["method"] == "update2"
                    && m["params"][1]["Load_Balancer"]
                        .as_object()
                        .is_some_and(|rows| rows.values().any(|r| r.get("insert").is_some()))
            });
        }
    }
}

/// The next message on `conn` that `want` accepts; answers the server's `echo`
/// (inactivity probe) meanwhile.
fn next_message(conn: &mut (UnixStream, JsonStream), want: impl Fn(&Json) -> bool) -> Json {
    loop {
        let m = conn.1.next().expect("NB closed the watch").expect("json");
        if m["method"] == "echo" {
            let reply = json!({"id": m["id"], "result": m["params"], "error": null});
            conn.0
                .write_all(reply.to_string().as_bytes())
                .expect("echo reply");
            continue;
        }
        if want(&m) {
            return m;
        }
    }
}

/// The named UUID a replay gives the row `u` of a dump.
fn named_ref(u: &str) -> String {
    format!("r{}", u.replace('-', "_"))
}

/// References in `v` to rows of the dump (`uuids`) as a replay writes them: by the real
/// UUID an earlier transaction gave the row (`real`), else by its named UUID.
fn rename_refs(v: &mut Json, uuids: &BTreeSet<String>, real: &BTreeMap<String, String>) {
    match v {
        Json::Array(a) => {
            if a.len() == 2
                && a[0] == "uuid"
                && let Some(u) = a[1].as_str()
                && uuids.contains(u)
            {
                *v = match real.get(u) {
                    Some(r) => json!(["uuid", r]),
                    None => json!(["named-uuid", named_ref(u)]),
                };
                return;
            }
            for x in a {
                rename_refs(x, uuids, real);
            }
        }
        Json::Object(o) => {
            for x in o.values_mut() {
                rename_refs(x, uuids, real);
            }
        }
        _ => {}
    }
}

/// The raw floor: every row now in `from` inserted into a fresh NB in one `transact`
/// request written to its socket (UUID references become named UUIDs). Returns the time
/// and the request's size.
pub fn floor(from: &OvsdbServer) -> (Duration, usize, usize) {
    let dump = from.dump_json();
    let mut uuids = BTreeSet::new();
    for rows in dump.as_object().expect("tables").values() {
        for u in rows.as_object().expect("rows").keys() {
            uuids.insert(u.clone());
        }
    }
    let mut params = vec![json!("OVN_Northbound")];
    let mut rows = 0;
    for (table, trows) in dump.as_object().expect("tables") {
        for (u, row) in trows.as_object().expect("rows") {
            let mut row = row.clone();
            rename_refs(&mut row, &uuids, &BTreeMap::new());
            params.push(json!({"op": "insert", "table": table, "row": row,
                "uuid-name": named_ref(u)}));
            rows += 1;
        }
    }
    let params = Json::Array(params);
    let size = params.to_string().len();
    let fresh = OvsdbServer::start(SchemaFile::Nb).expect("floor server");
    warm_cpus();
    let (_, t) = raw_request(&fresh, "transact", params);
    (t, rows, size)
}

/// The floor in batches: the rows of `from` replayed into a fresh NB as the controller
/// writes them, but with nothing of ours on the way: one transaction of every row that is
/// not a load balancer (references to load balancers left out), then the load balancers,
/// `per_txn` a transaction, each with the `mutate`s that add its references back, all sent
/// at once (a writer thread) while the replies are read. Returns the time from the first
/// request to the last reply, and the number of transactions.
pub fn floor_batched(from: &OvsdbServer, per_txn: usize) -> (Duration, usize) {
    let dump = from.dump_json();
    let tables = dump.as_object().expect("tables");
    let lbs: BTreeSet<String> = tables
        .get("Load_Balancer")
        .and_then(Json::as_object)
        .map(|rows| rows.keys().cloned().collect())
        .unwrap_or_default();
    let uuids: BTreeSet<String> = tables
        .values()
        .flat_map(|rows| rows.as_object().expect("rows").keys().cloned())
        .collect();
    let is_lb = |v: &Json| {
        v.as_array().is_some_and(|a| {
            a.len() == 2 && a[0] == "uuid" && a[1].as_str().is_some_and(|u| lbs.contains(u))
        })
    };
    // The first transaction: every other row, its load-balancer references taken out
    // and kept (row, column, load balancer) for the batches.
    let mut first = vec![json!("OVN_Northbound")];
    let mut order = Vec::new();
    let mut back: Vec<(String, String, String, String)> = Vec::new();
    for (table, rows) in tables.iter().filter(|(t, _)| *t != "Load_Balancer") {
        for (u, row) in rows.as_object().expect("rows") {
            let mut row = row.clone();
            for (col, v) in row.as_object_mut().expect("row") {
                if let Some([tag, Json::Array(items)]) = v.as_array().map(Vec::as_slice)
                    && tag == "set"
                {
                    let (out, keep): (Vec<Json>, Vec<Json>) =
                        items.iter().cloned().partition(is_lb);
                    for lb in out {
                        back.push((
                            table.clone(),
                            u.clone(),
                            col.clone(),
                            lb[1].as_str().unwrap().to_owned(),
                        ));
                    }
                    *v = json!(["set", keep]);
                } else if is_lb(v) {
                    back.push((
                        table.clone(),
                        u.clone(),
                        col.clone(),
                        v[1].as_str().unwrap().to_owned(),
                    ));
                    *v = json!(["set", []]);
                }
            }
            rename_refs(&mut row, &uuids, &BTreeMap::new());
            first.push(
                json!({"op": "insert", "table": table, "row": row, "uuid-name": named_ref(u)}),
            );
            order.push(u.clone());
        }
    }
    let fresh = OvsdbServer::start(SchemaFile::Nb).expect("batched floor server");
    warm_cpus();
    let (result, first_t) = raw_request(&fresh, "transact", Json::Array(first));
    let real: BTreeMap<String, String> = order
        .iter()
        .zip(result.as_array().expect("results"))
        .map(|(u, r)| (u.clone(), r["uuid"][1].as_str().expect("uuid").to_owned()))
        .collect();
    // The batches of load balancers, each adding its references back.
    let lb_rows: Vec<(&String, &Json)> = tables
        .get("Load_Balancer")
        .and_then(Json::as_object)
        .map(|rows| rows.iter().collect())
        .unwrap_or_default();
    let mut requests = Vec::new();
    for (i, chunk) in lb_rows.chunks(per_txn.max(1)).enumerate() {
        let mut ops = vec![json!("OVN_Northbound")];
        let here: BTreeSet<&str> = chunk.iter().map(|(u, _)| u.as_str()).collect();
        for (u, row) in chunk {
            let mut row = (*row).clone();
            rename_refs(&mut row, &uuids, &real);
            ops.push(json!({"op": "insert", "table": "Load_Balancer", "row": row, "uuid-name": named_ref(u)}));
        }
        let mut adds: BTreeMap<(&str, &str, &str), Vec<Json>> = BTreeMap::new();
        for (table, row, col, lb) in back.iter().filter(|b| here.contains(b.3.as_str())) {
            adds.entry((table, row, col))
                .or_default()
                .push(json!(["named-uuid", named_ref(lb)]));
        }
        for ((table, row, col), items) in adds {
            ops.push(json!({"op": "mutate", "table": table,
                "where": [["_uuid", "==", ["uuid", real[row]]]],
                "mutations": [[col, "insert", ["set", items]]]}));
        }
        let id = i + 2;
        requests.push(
            serde_json::to_vec(&json!({"method": "transact", "params": ops, "id": id}))
                .expect("encode"),
        );
    }
    let n = requests.len();
    let s = UnixStream::connect(sock(&fresh)).expect("connect the batched floor");
    let mut writer = s.try_clone().expect("clone");
    let t = Instant::now();
    let sender = std::thread::spawn(move || {
        for r in requests {
            writer.write_all(&r).expect("write");
        }
    });
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, &s))
            .into_iter::<Json>();
    let mut replies = 0;
    while replies < n {
        let msg = de.next().expect("reply").expect("json");
        if msg.get("id").is_some_and(|id| id.is_u64()) {
            assert!(
                msg["error"].is_null() && !msg["result"].to_string().contains("\"error\""),
                "a batch failed: {}",
                msg.to_string().chars().take(300).collect::<String>()
            );
            replies += 1;
        }
    }
    let batches_t = t.elapsed();
    sender.join().expect("writer");
    (first_t + batches_t, n + 1)
}

/// The per-service `ovn-nbctl` way (kube-ovn before libovsdb): per service one
/// `ovn-nbctl` run that adds the load balancer with its two VIPs and attaches it to a
/// switch, into a fresh NB. Runs `sample` services; returns the time for them.
pub fn nbctl_baseline(w: &Workload, sample: usize) -> Duration {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("nbctl server");
    let db = format!("--db={}", nb.unix_remote());
    let run = |args: &[String]| {
        let out = Command::new("ovn-nbctl")
            .arg(&db)
            .args(args)
            .output()
            .expect("run ovn-nbctl");
        assert!(
            out.status.success(),
            "ovn-nbctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["ls-add".into(), "bench-s0".into()]);
    let t = Instant::now();
    for s in 0..sample.min(w.services()) {
        let name = format!("svc-{s}");
        let vip = cluster_ip(s);
        let be = |port: u16| {
            w.backends[s]
                .iter()
                .map(|b| format!("{}:{port}", backend_ip(*b)))
                .collect::<Vec<_>>()
                .join(",")
        };
        run(&[
            "lb-add".into(),
            name.clone(),
            format!("{vip}:80"),
            be(8080),
            "tcp".into(),
            "--".into(),
            "lb-add".into(),
            name.clone(),
            format!("{vip}:443"),
            be(8443),
            "tcp".into(),
            "--".into(),
            "ls-lb-add".into(),
            "bench-s0".into(),
            name,
        ]);
    }
    t.elapsed()
}

/// One measurement as a JSON line.
pub struct Line {
    pub name: String,
    pub params: Json,
    pub value: f64,
    pub unit: &'static str,
    pub baseline_name: &'static str,
    pub baseline: Option<f64>,
    pub goal: &'static str,
}

impl Line {
    pub fn print(&self) {
        let mut j = json!({"name": self.name, "params": self.params,
            "value": round(self.value), "unit": self.unit});
        if let Some(b) = self.baseline {
            j["baseline"] = json!(round(b));
            j["baseline_name"] = json!(self.baseline_name);
            j["ratio"] = json!(round(self.value / b.max(1e-9)));
        }
        if !self.goal.is_empty() {
            j["goal"] = json!(self.goal);
        }
        println!("{j}");
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn table(lines: &[Line]) {
    println!();
    println!(
        "{:<30} {:>24} {:>12} {:<5} {:>9}  baseline / goal",
        "case", "params", "value", "unit", "ratio"
    );
    for l in lines {
        let p = l
            .params
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let (ratio, base) = match l.baseline {
            Some(b) => (
                format!("{:.3}x", l.value / b.max(1e-9)),
                format!("{} = {b:.1} {}", l.baseline_name, l.unit),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "{:<30} {:>24} {:>12.1} {:<5} {:>9}  {base} {}",
            l.name, p, l.value, l.unit, ratio, l.goal
        );
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
