//! `hack/bench.sh ovsdb`: the OVSDB client against a real NB ovsdb-server, with baselines
//! measured in the same run:
//! - the raw floor: the identical `transact` request written to the server's socket and
//!   its reply read back, with nothing else in the way;
//! - the peer: the official Python IDL (`ovs` from Debian's python3-openvswitch, which has
//!   the C JSON parser: 2–4x faster than PyPI's) doing the same writes and monitor.
//!
//! Cases: N `Load_Balancer` rows (8 backends each) in one transaction; N one-row
//! transactions (sequential and pipelined); an initial monitor of M rows (time and the
//! monitoring process's peak RSS, each side in a process of its own).
//! Prints JSON lines (`ratio` = value / baseline) and a table. `--quick`: small sizes.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use ycloud_ovsdb::cache::Cache;
use ycloud_ovsdb::ops::{self, Operation, transact_params};
use ycloud_ovsdb::value::{Row, Value};
use ycloud_ovsdb::{Client, ClientConfig};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

const PY: &str = "/usr/bin/python3";
const NB: &str = "OVN_Northbound";

fn lb_row(i: usize, tag: &str) -> Row {
    let (a, b) = (i / 250 % 250, i % 250);
    let backends: Vec<String> = (0..8).map(|k| format!("10.{a}.{b}.{k}:8080")).collect();
    Row::from([
        ("name".to_owned(), Value::from(format!("{tag}-{i}"))),
        ("protocol".to_owned(), Value::set(["tcp"])),
        (
            "vips".to_owned(),
            Value::map([(format!("172.30.{a}.{b}:80"), backends.join(","))]),
        ),
        (
            "external_ids".to_owned(),
            Value::map([("owner".to_owned(), format!("ns/svc-{i}"))]),
        ),
    ])
}

fn inserts(n: usize, tag: &str) -> Vec<Operation> {
    (0..n)
        .map(|i| ops::insert("Load_Balancer", lb_row(i, tag), format!("r{i}")))
        .collect()
}

fn sock(server: &OvsdbServer) -> String {
    server
        .unix_remote()
        .strip_prefix("unix:")
        .expect("unix remote")
        .to_owned()
}

/// The raw floor: one request on the socket, the reply parsed, nothing else.
fn raw_transact(path: &str, ops: &[Operation]) -> Duration {
    let req = json!({"method": "transact", "params": transact_params(NB, ops), "id": 1});
    let bytes = serde_json::to_vec(&req).expect("encode");
    let mut s = UnixStream::connect(path).expect("connect raw");
    let t = Instant::now();
    s.write_all(&bytes).expect("write");
    // Buffered, as any real client reads: byte-sized reads would slow the floor down.
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, &mut s))
            .into_iter::<Json>();
    loop {
        let msg = de.next().expect("reply").expect("json");
        if msg.get("id") == Some(&json!(1)) {
            assert!(
                msg["error"].is_null() && !msg["result"].to_string().contains("\"error\""),
                "raw transact failed: {}",
                msg.to_string().chars().take(300).collect::<String>()
            );
            break;
        }
    }
    t.elapsed()
}

/// The raw floor of an initial monitor: `monitor_cond` of every `Load_Balancer` row on the
/// socket and the whole reply received and framed (not parsed): what the server alone takes.
fn raw_monitor(path: &str) -> Duration {
    use std::io::Read;
    use tokio_util::codec::Decoder;
    let req = json!({"method": "monitor_cond",
                     "params": [NB, "raw", {"Load_Balancer": [{}]}], "id": 1});
    let mut s = UnixStream::connect(path).expect("connect raw");
    let t = Instant::now();
    s.write_all(&serde_json::to_vec(&req).expect("encode"))
        .expect("write");
    let mut codec = ycloud_ovsdb::codec::FrameCodec::default();
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        while let Some(frame) = codec.decode(&mut buf).expect("frame") {
            let members = ycloud_ovsdb::codec::object_members(frame.as_str()).expect("object");
            if members
                .iter()
                .any(|(k, r)| k == "id" && &frame.as_str()[r.clone()] == "1")
            {
                return t.elapsed();
            }
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the raw monitor");
        buf.extend_from_slice(&chunk[..n]);
    }
}

const PY_IDL: &str = r#"
import sys, time, resource, json
import ovs.db.idl, ovs.poller, ovs.json
remote, schema_path, mode, n, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
helper = ovs.db.idl.SchemaHelper(schema_path)
helper.register_table("Load_Balancer")
idl = ovs.db.idl.Idl(remote, helper)
def run_until(cond):
    while not cond():
        idl.run()
        if cond(): break
        p = ovs.poller.Poller(); idl.wait(p); p.block()
t0 = time.monotonic()
seq = idl.change_seqno
run_until(lambda: idl.has_ever_connected() and idl.change_seqno != seq)
synced = time.monotonic() - t0
def row(txn, i):
    a, b = i // 250 % 250, i % 250
    r = txn.insert(idl.tables["Load_Balancer"])
    r.name = "%s-%d" % (tag, i)
    r.protocol = ["tcp"]
    r.vips = {"172.30.%d.%d:80" % (a, b): ",".join("10.%d.%d.%d:8080" % (a, b, k) for k in range(8))}
    r.external_ids = {"owner": "ns/svc-%d" % i}
def commit(txn):
    st = txn.commit_block()
    assert st == ovs.db.idl.Transaction.SUCCESS, txn.get_error()
out = {}
if mode == "bulk":
    t = time.monotonic(); txn = ovs.db.idl.Transaction(idl)
    for i in range(n): row(txn, i)
    commit(txn); out["secs"] = time.monotonic() - t
elif mode == "single":
    t = time.monotonic()
    for i in range(n):
        txn = ovs.db.idl.Transaction(idl); row(txn, i); commit(txn)
    out["secs"] = time.monotonic() - t
elif mode == "monitor":
    out["secs"] = synced
    out["rows"] = len(idl.tables["Load_Balancer"].rows)
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"#;

fn python(server: &OvsdbServer, mode: &str, n: usize, tag: &str) -> Json {
    let out = Command::new(PY)
        .args([
            "-c",
            PY_IDL,
            &server.unix_remote(),
            "/usr/share/ovn/ovn-nb.ovsschema",
        ])
        .args([mode, &n.to_string(), tag])
        .output()
        .expect("run the Python IDL (python3-openvswitch)");
    assert!(
        out.status.success(),
        "python IDL {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python output")
}

async fn connect(server: &OvsdbServer) -> Client {
    let mut cfg = ClientConfig::new(vec![server.unix_remote()], NB);
    cfg.request_timeout = Duration::from_secs(300);
    Client::connect(cfg).await.expect("connect").0
}

/// Child mode: monitor every Load_Balancer row into a cache, print time and peak RSS.
async fn child_monitor(remote: String) {
    let t = Instant::now();
    let mut cfg = ClientConfig::new(vec![remote], NB);
    cfg.request_timeout = Duration::from_secs(300);
    let (client, _ev) = Client::connect(cfg).await.expect("connect");
    let schema = Arc::new(client.get_schema(NB).await.expect("schema"));
    let cache = Cache::new(schema, [("Load_Balancer".to_owned(), None)].into()).expect("cache");
    client.monitor_cache(&cache).await.expect("monitor");
    let secs = t.elapsed().as_secs_f64();
    let rows = cache.snapshot().len("Load_Balancer");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    println!("{}", json!({"secs": secs, "rows": rows, "maxrss_kib": hwm}));
}

fn ours_monitor(server: &OvsdbServer) -> Json {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--child-monitor", &server.unix_remote()])
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("child output")
}

struct Line {
    name: String,
    params: Json,
    value: f64,
    unit: &'static str,
    baseline_name: &'static str,
    baseline: f64,
}

impl Line {
    fn print(&self) {
        println!(
            "{}",
            json!({"name": self.name, "params": self.params, "value": round(self.value),
                   "unit": self.unit, "baseline_name": self.baseline_name,
                   "baseline": round(self.baseline), "ratio": round(self.value / self.baseline)})
        );
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-monitor") {
        return child_monitor(args[i + 1].clone()).await;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (bulk_n, single_n, monitor_n) = if quick {
        (2_000, 500, 20_000)
    } else {
        (10_000, 10_000, 100_000)
    };
    let mut lines = Vec::new();

    // 1. N rows in one transaction.
    {
        let floor_srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let floor = raw_transact(&sock(&floor_srv), &inserts(bulk_n, "raw"));
        let ours_srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let client = connect(&ours_srv).await;
        let ops = inserts(bulk_n, "ours");
        let t = Instant::now();
        client.transact(&ops).await.expect("bulk transact");
        let ours = t.elapsed();
        let py_srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let py = python(&py_srv, "bulk", bulk_n, "py")["secs"]
            .as_f64()
            .unwrap()
            * 1000.0;
        let params = json!({"rows": bulk_n, "backends_per_row": 8});
        lines.push(Line {
            name: "ovsdb.bulk_insert".into(),
            params: params.clone(),
            value: ms(ours),
            unit: "ms",
            baseline_name: "raw ovsdb-server transact (floor)",
            baseline: ms(floor),
        });
        lines.push(Line {
            name: "ovsdb.bulk_insert.vs_python_idl".into(),
            params,
            value: ms(ours),
            unit: "ms",
            baseline_name: "python IDL",
            baseline: py,
        });
        client.close();
    }
    // 2. N one-row transactions: sequential and pipelined.
    {
        let srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let client = connect(&srv).await;
        let t = Instant::now();
        for i in 0..single_n {
            client
                .transact(&[ops::insert("Load_Balancer", lb_row(i, "seq"), "r")])
                .await
                .expect("transact");
        }
        let seq = t.elapsed();
        let t = Instant::now();
        let futs = (0..single_n).map(|i| {
            let client = client.clone();
            async move {
                client
                    .transact(&[ops::insert("Load_Balancer", lb_row(i, "pipe"), "r")])
                    .await
                    .expect("transact")
            }
        });
        futures::future::join_all(futs).await;
        let pipe = t.elapsed();
        client.close();
        let py_srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let py = python(&py_srv, "single", single_n, "py")["secs"]
            .as_f64()
            .unwrap()
            * 1000.0;
        let params = json!({"transactions": single_n});
        lines.push(Line {
            name: "ovsdb.single_row_txns.sequential".into(),
            params: params.clone(),
            value: ms(seq),
            unit: "ms",
            baseline_name: "python IDL (sequential)",
            baseline: py,
        });
        lines.push(Line {
            name: "ovsdb.single_row_txns.pipelined".into(),
            params,
            value: ms(pipe),
            unit: "ms",
            baseline_name: "python IDL (sequential)",
            baseline: py,
        });
    }
    // 3. Initial monitor of M rows.
    {
        let srv = OvsdbServer::start(SchemaFile::Nb).expect("server");
        let client = connect(&srv).await;
        for chunk in (0..monitor_n).collect::<Vec<_>>().chunks(10_000) {
            let ops: Vec<Operation> = chunk
                .iter()
                .map(|&i| ops::insert("Load_Balancer", lb_row(i, "m"), format!("r{i}")))
                .collect();
            client.transact(&ops).await.expect("fill");
        }
        client.close();
        let floor = raw_monitor(&sock(&srv));
        let ours = ours_monitor(&srv);
        let py = python(&srv, "monitor", 0, "m");
        assert_eq!(ours["rows"].as_u64(), Some(monitor_n as u64), "{ours}");
        let params = json!({"rows": monitor_n});
        lines.push(Line {
            name: "ovsdb.monitor.time".into(),
            params: params.clone(),
            value: ours["secs"].as_f64().unwrap() * 1000.0,
            unit: "ms",
            baseline_name: "python IDL",
            baseline: py["secs"].as_f64().unwrap() * 1000.0,
        });
        lines.push(Line {
            name: "ovsdb.monitor.time.vs_floor".into(),
            params: params.clone(),
            value: ours["secs"].as_f64().unwrap() * 1000.0,
            unit: "ms",
            baseline_name: "raw monitor_cond reply received (floor)",
            baseline: ms(floor),
        });
        lines.push(Line {
            name: "ovsdb.monitor.peak_rss".into(),
            params,
            value: ours["maxrss_kib"].as_f64().unwrap() / 1024.0,
            unit: "MiB",
            baseline_name: "python IDL",
            baseline: py["maxrss_kib"].as_f64().unwrap() / 1024.0,
        });
    }

    for l in &lines {
        l.print();
    }
    println!();
    println!(
        "{:<36} {:>26} {:>13} {:>9}  baseline",
        "case", "params", "ycloud", "ratio"
    );
    for l in &lines {
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
        println!(
            "{:<36} {:>26} {:>9.1} {:<3} {:>8.3}x  {} = {:.1} {}",
            l.name,
            p,
            l.value,
            l.unit,
            l.value / l.baseline,
            l.baseline_name,
            l.baseline,
            l.unit
        );
    }
}
