//! `cargo bench -p ycloud-cni --bench cni` (root): ADD and DEL latency of the real plugin +
//! daemon for 100 pods in veth mode, with and without the `ovn-installed` wait, next to the
//! floor measured in the same run on the same sandbox: a bare netlink veth pair (peer moved
//! into the pod netns) plus one OVS port insert, and their removal, with no plugin, no
//! daemon, no pod configuration.
//!
//! Run by `hack/bench.sh cni [--quick]` (`--quick`: 20 pods). Prints one JSON line per
//! measurement in the hack/bench.sh format (`name`, `params`, `value`, `unit`, `baseline` =
//! the floor's same percentile, `ratio`), then a table. `YCLOUD_BENCH_PODS` overrides the count.

#[path = "../tests/support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{Node, netns_path, network};
use serde_json::json;
use ycloud_cni::error::CniError;
use ycloud_cni::{link, netns, ovs::Ovs};
use ycloud_ovsdb::value::Row;
use ycloud_testsupport::netns::Netns;

struct Series {
    name: &'static str,
    /// Short key for the JSON name, e.g. `add.nowait`.
    key: &'static str,
    /// Key of the floor series this one is compared with.
    floor: Option<&'static str>,
    ms: Vec<f64>,
}

impl Series {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[i.min(v.len() - 1)]
    }
    fn mean(&self) -> f64 {
        self.ms.iter().sum::<f64>() / self.ms.len() as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// ADD then DEL of every pod through the plugin binary, one at a time (as a kubelet does
/// per pod), timing each invocation.
fn plugin_round(node: &Node, pods: &[Netns], tag: &str) -> (Vec<f64>, Vec<f64>) {
    let mut adds = Vec::new();
    for (i, ns) in pods.iter().enumerate() {
        let t = Instant::now();
        node.cni(
            "ADD",
            &format!("{tag}{i}"),
            Some(&netns_path(ns)),
            "eth0",
            Some(("bench", &format!("b{i}"))),
            json!({}),
        )
        .ok();
        adds.push(ms(t.elapsed()));
    }
    let mut dels = Vec::new();
    for (i, ns) in pods.iter().enumerate() {
        let t = Instant::now();
        node.cni(
            "DEL",
            &format!("{tag}{i}"),
            Some(&netns_path(ns)),
            "eth0",
            None,
            json!({}),
        )
        .ok();
        dels.push(ms(t.elapsed()));
    }
    (adds, dels)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = std::env::var("YCLOUD_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20 } else { 100 });
    let mut node = Node::up();
    node.sb.nbctl(&["ls-add", "ls1"]).expect("ls-add");
    let mut pods = Vec::new();
    for i in 0..n {
        let name = format!("b{i}");
        let mac = format!("0a:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
        let ip = format!("10.0.{}.{}", i / 250, 2 + i % 250);
        node.lsp("ls1", &name, &mac, &ip);
        node.annotate(
            "bench",
            &name,
            &network(&name, &mac, &format!("{ip}/16"), "10.0.255.254"),
        );
        pods.push(Netns::create(&format!("ycb{}-{i}", node.sb.id())).expect("pod netns"));
    }
    node.sb.wait_hv_sync().expect("hv sync");

    let series_of = |name, key, floor, ms| Series {
        name,
        key,
        floor,
        ms,
    };
    let mut series = Vec::new();
    node.ovn_installed_timeout_ms = 30_000;
    node.start_daemon();
    let (a, d) = plugin_round(&node, &pods, "w");
    series.push(series_of(
        "add (ovn-installed wait)",
        "add.wait",
        Some("floor.add"),
        a,
    ));
    series.push(series_of(
        "del (after waited add)",
        "del.afterwait",
        Some("floor.del"),
        d,
    ));
    node.kill_daemon();

    node.ovn_installed_timeout_ms = 0;
    node.start_daemon();
    let (a, d) = plugin_round(&node, &pods, "n");
    series.push(series_of(
        "add (no wait)",
        "add.nowait",
        Some("floor.add"),
        a,
    ));
    series.push(series_of(
        "del (after no-wait add)",
        "del.nowait",
        Some("floor.del"),
        d,
    ));
    node.kill_daemon();

    let (a, d) = floor(&node, &pods);
    series.push(series_of(
        "floor add (veth + ovs port)",
        "floor.add",
        None,
        a,
    ));
    series.push(series_of("floor del", "floor.del", None, d));

    for s in &series {
        for (pname, p) in [("p50", 50.0), ("p99", 99.0)] {
            let value = s.pct(p);
            let baseline = s
                .floor
                .and_then(|f| series.iter().find(|b| b.key == f))
                .map(|b| b.pct(p));
            println!(
                "{}",
                json!({
                    "name": format!("cni.{}.{pname}", s.key),
                    "params": {"pods": s.ms.len(), "mode": "veth", "series": s.name},
                    "value": value,
                    "unit": "ms",
                    "baseline": baseline,
                    "ratio": baseline.map(|b| value / b),
                })
            );
        }
    }
    println!(
        "\n{:<30} {:>6} {:>9} {:>9} {:>9} {:>13}",
        "series", "pods", "p50 ms", "p99 ms", "mean ms", "p99 / floor"
    );
    for s in &series {
        let ratio = s
            .floor
            .and_then(|f| series.iter().find(|b| b.key == f))
            .map(|b| format!("{:.2}", s.pct(99.0) / b.pct(99.0)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<30} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>13}",
            s.name,
            s.ms.len(),
            s.pct(50.0),
            s.pct(99.0),
            s.mean(),
            ratio
        );
    }
}

/// The floor: what any veth CNI must do at least, measured with the same libraries.
fn floor(node: &Node, pods: &[Netns]) -> (Vec<f64>, Vec<f64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ovs = rt
        .block_on(Ovs::connect(node.sb.ovs_db_unix(), "br-int"))
        .expect("ovs");
    let node_ns = PathBuf::from("/run/netns").join(node.sb.node_netns());
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    for (i, ns) in pods.iter().enumerate() {
        let (host, peer) = (format!("yf{i}"), format!("yg{i}"));
        let pod = netns_path(ns);
        let t = Instant::now();
        let (h2, p2) = (host.clone(), peer.clone());
        netns::with_netlink_blocking(Some(node_ns.clone()), move |h| async move {
            link::create_veth(&h, &h2, &p2, 1400, &pod)
                .await
                .map(|_| ())
        })
        .expect("floor veth");
        rt.block_on(ovs.add_port(
            &host,
            &BTreeMap::from([("iface-id".to_string(), format!("floor{i}"))]),
            Row::new(),
        ))
        .expect("floor port");
        adds.push(ms(t.elapsed()));
    }
    for i in 0..pods.len() {
        let host = format!("yf{i}");
        let t = Instant::now();
        rt.block_on(ovs.del_port(&host)).expect("floor del port");
        let h2 = host.clone();
        netns::with_netlink_blocking(Some(node_ns.clone()), move |h| async move {
            link::delete_link(&h, &h2).await.map(|_| ())
        })
        .map_err(|e: CniError| e)
        .expect("floor del veth");
        dels.push(ms(t.elapsed()));
    }
    (adds, dels)
}
