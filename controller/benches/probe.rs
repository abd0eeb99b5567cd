//! `hack/bench.sh probe [--quick]`: how long a killed backend keeps getting traffic.
//!
//! The whole product on one OVN sandbox (the e2e harness: controller in manifest mode,
//! `ycloud-cnid` running the probes inside the pods' namespaces, pods made by the CNI
//! plugin): two backends, a client sending a request every ~30 ms. A trial kills one
//! backend's HTTP server and measures, from the kill:
//! - `nb`: until the backend is gone from the NB VIP (ycloud), or until its SB
//!   `Service_Monitor` is `offline` (OVN native);
//! - `last`: until the last request that was routed to it (the last failed request: a dead
//!   backend refuses).
//!
//! Variants, in the same run: ycloud NetworkProbes (TCP, interval 500 ms, failure
//! threshold 2); OVN native checks on a second load balancer with the same backends, with the
//! closest interval OVN allows (1 s, failure_count 2) and with OVN's defaults (5 s, 3).
//! 20 trials per variant (5 with `--quick`); p50 and max. JSON lines and a table.
//! Needs root.

#[allow(dead_code)]
#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, get, wait_for, warm};
use ycloud_testsupport::netns::Netns;

const WARM: Duration = Duration::from_secs(60);
const YC_VIP: &str = "10.96.0.100:80";
const NATIVE_VIP: &str = "10.96.0.200:80";

const SERVICE: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
  healthCheck: {type: TCP, intervalMillis: 500, timeoutMillis: 300, failureThreshold: 2, successThreshold: 1}
";

#[derive(Clone, Copy)]
enum Variant {
    Ycloud,
    /// OVN's own check; `None`: OVN's default options.
    Native(Option<(u32, u32)>),
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Ycloud => "ycloud-networkprobe",
            Variant::Native(Some(_)) => "ovn-native-1s",
            Variant::Native(None) => "ovn-native-defaults",
        }
    }
    fn params(self) -> serde_json::Value {
        match self {
            Variant::Ycloud => serde_json::json!({"interval_ms": 500, "failure_threshold": 2}),
            Variant::Native(Some((i, f))) => {
                serde_json::json!({"interval_ms": i * 1000, "failure_threshold": f})
            }
            Variant::Native(None) => {
                serde_json::json!({"interval_ms": 5000, "failure_threshold": 3, "ovn_defaults": true})
            }
        }
    }
    fn url(self) -> String {
        let vip = match self {
            Variant::Ycloud => YC_VIP,
            Variant::Native(_) => NATIVE_VIP,
        };
        format!("http://{vip}/")
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The SB monitor status of `ip` (`online`/`offline`), if there is one.
fn monitor(c: &Cluster, ip: &str) -> Option<String> {
    let out =
        c.sb.sbctl(&[
            "--bare",
            "--columns=status",
            "find",
            "Service_Monitor",
            &format!("ip=\"{ip}\""),
        ])
        .ok()?;
    let s = out.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The OVN-native baseline: a load balancer of our own (not the controller's) on the
/// pods' switch, with a health check as in the lab recipe.
fn native_lb(c: &Cluster, ips: &[String], opts: Option<(u32, u32)>) -> String {
    let sw =
        c.sb.nbctl(&["lsp-get-ls", "shop.web-1"])
            .expect("lsp-get-ls");
    let sw = sw
        .split(['(', ')'])
        .nth(1)
        .expect("switch name in lsp-get-ls")
        .to_owned();
    let backends: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    c.sb.nbctl(&[
        "lb-add",
        "bench-native",
        NATIVE_VIP,
        &backends.join(","),
        "tcp",
    ])
    .expect("lb-add");
    c.sb.nbctl(&["ls-lb-add", &sw, "bench-native"])
        .expect("ls-lb-add");
    for (i, ip) in ips.iter().enumerate() {
        let src = ycloud_controller::compiler::topology::monitor_source(
            format!("{ip}/24").parse().expect("cidr"),
        )
        .expect("monitor source");
        c.sb.nbctl(&[
            "set",
            "Load_Balancer",
            "bench-native",
            &format!("ip_port_mappings:\"{ip}\"=\"shop.web-{}:{src}\"", i + 1),
        ])
        .expect("ip_port_mappings");
    }
    let mut args = vec![
        "--".to_owned(),
        "--id=@hc".to_owned(),
        "create".to_owned(),
        "Load_Balancer_Health_Check".to_owned(),
        format!("vip=\"{NATIVE_VIP}\""),
    ];
    if let Some((interval, failures)) = opts {
        args.extend([
            format!("options:interval={interval}"),
            "options:timeout=1".to_owned(),
            "options:success_count=1".to_owned(),
            format!("options:failure_count={failures}"),
        ]);
    }
    args.extend([
        "--".into(),
        "add".into(),
        "Load_Balancer".into(),
        "bench-native".into(),
        "health_check".into(),
        "@hc".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.sb.nbctl(&args).expect("health check");
    sw
}

/// One trial: kill web-2's server, measure; then bring it back.
fn trial(c: &mut Cluster, client: &Netns, v: Variant, w1: &str, w2: &str) -> (f64, f64) {
    let url = v.url();
    let gone = |c: &Cluster| match v {
        Variant::Ycloud => c
            .nb_backends(YC_VIP)
            .is_some_and(|b| b.len() == 1 && b.contains(&format!("{w1}:8080"))),
        Variant::Native(_) => monitor(c, w2).as_deref() == Some("offline"),
    };
    let back = |c: &Cluster| match v {
        Variant::Ycloud => c.nb_backends(YC_VIP).is_some_and(|b| b.len() == 2),
        Variant::Native(_) => {
            monitor(c, w1).as_deref() == Some("online")
                && monitor(c, w2).as_deref() == Some("online")
        }
    };
    wait_for("both backends in before the trial", WARM, || {
        back(c).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    warm(client, &url, WARM).expect("warm");

    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, client2, url2) = (stop.clone(), Netns::existing(client.name()), url.clone());
    let loop_ = std::thread::spawn(move || {
        let mut out: Vec<(Instant, bool)> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let sent = Instant::now();
            out.push((sent, get(&client2, &url2, Duration::from_secs(1)).is_ok()));
            std::thread::sleep(Duration::from_millis(10));
        }
        out
    });
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    c.stop_server("web-2", 8080);
    wait_for("the backend out", Duration::from_secs(120), || {
        gone(c).then_some(())
    });
    let nb = killed.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let samples = loop_.join().expect("client loop");
    let last = samples
        .iter()
        .filter(|(t, ok)| !ok && *t >= killed)
        .map(|(t, _)| t.duration_since(killed).as_secs_f64())
        .fold(0.0, f64::max);
    c.serve("web-2", 8080);
    (nb, last)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let trials = if quick { 5 } else { 20 };
    let mut c = Cluster::start(&ClusterOptions {
        demo_manifests: vec![
            "00-namespaces.yaml",
            "01-vpcs.yaml",
            "02-subnets.yaml",
            "03-eip-gateway.yaml",
            "04-node.yaml",
            "21-pod-web-1.yaml",
            "22-pod-web-2.yaml",
            "30-pod-client-a.yaml",
        ],
        offload: false,
    });
    c.write_manifest("10-web.yaml", SERVICE);
    let w1 = c.add_pod("shop", "web-1");
    let w2 = c.add_pod("shop", "web-2");
    c.add_pod("shop", "client-a");
    c.serve("web-1", 8080);
    c.serve("web-2", 8080);
    let client = Netns::existing(c.pod("client-a").netns.name());

    let variants = [
        Variant::Ycloud,
        Variant::Native(Some((1, 2))),
        Variant::Native(None),
    ];
    let mut results: Vec<(Variant, f64, f64, f64, f64)> = Vec::new();
    for v in variants {
        if let Variant::Native(opts) = v {
            let _ = c.sb.nbctl(&["--if-exists", "lb-del", "bench-native"]);
            native_lb(&c, &[w1.clone(), w2.clone()], opts);
        }
        let (mut nbs, mut lasts) = (Vec::new(), Vec::new());
        for i in 0..trials {
            let (nb, last) = trial(&mut c, &client, v, &w1, &w2);
            eprintln!(
                "probe bench: {} trial {i}: out {nb:.3} s, last routed {last:.3} s",
                v.name()
            );
            nbs.push(nb);
            lasts.push(last);
        }
        let nb50 = percentile(&mut nbs, 0.5);
        let nbmax = percentile(&mut nbs, 1.0);
        let l50 = percentile(&mut lasts, 0.5);
        let lmax = percentile(&mut lasts, 1.0);
        results.push((v, nb50, nbmax, l50, lmax));
    }
    let _ = c.sb.nbctl(&["--if-exists", "lb-del", "bench-native"]);

    // Baseline: OVN native at the closest interval it allows.
    let base = results
        .iter()
        .find(|r| matches!(r.0, Variant::Native(Some(_))))
        .map(|r| (r.1, r.2, r.3, r.4))
        .expect("baseline");
    let mut table = Vec::new();
    for (v, nb50, nbmax, l50, lmax) in &results {
        for (metric, value, b) in [
            ("out_p50", *nb50, base.0),
            ("out_max", *nbmax, base.1),
            ("last_routed_p50", *l50, base.2),
            ("last_routed_max", *lmax, base.3),
        ] {
            let mut params = v.params();
            params["variant"] = v.name().into();
            params["metric"] = metric.into();
            params["trials"] = trials.into();
            let ratio = if b > 0.0 { value / b } else { 0.0 };
            println!(
                "{}",
                serde_json::json!({
                    "name": "probe",
                    "params": params,
                    "value": (value * 1000.0).round() / 1000.0,
                    "unit": "s",
                    "baseline": (b * 1000.0).round() / 1000.0,
                    "ratio": (ratio * 1000.0).round() / 1000.0,
                })
            );
            table.push((v.name(), metric, value, b, ratio));
        }
    }
    println!();
    println!(
        "{:<22} {:<16} {:>9} {:>12} {:>7}",
        "variant", "metric", "value s", "baseline s", "ratio"
    );
    for (v, m, value, b, r) in table {
        println!("{v:<22} {m:<16} {value:>9.3} {b:>12.3} {r:>7.2}");
    }
    println!(
        "(out = NB VIP without the backend for ycloud, SB Service_Monitor offline for OVN; \
         last routed = the last request sent to the dead backend; baseline = OVN native, 1 s x 2)"
    );
}
