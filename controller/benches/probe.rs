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
//!
//! For ycloud the time is split at the daemon's verdict (when it wrote the probe's status
//! file): `verdict` (probing: interval × failures) and `verdict_to_nb` (the
//! controller's 100 ms status poll, its pass and the NB commit). Every wait is bounded: a
//! backend that does not go out in time is recorded as a timeout (with the monitors, checks
//! and load balancer printed to stderr), never a panic, and the run goes on.
//! Needs root.

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, get, warm};
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

/// What one trial measured, in seconds from the kill; `None`: not seen within the bound.
#[derive(Debug, Clone, Copy, Default)]
struct Trial {
    /// Out of the NB VIP (ycloud) / SB `Service_Monitor` offline (native).
    out: Option<f64>,
    /// ycloud: the daemon's verdict (its status file written).
    detect: Option<f64>,
    /// The last request routed to the dead backend.
    last: f64,
}

/// How long a trial waits for the backend to go out before it is recorded as timed out:
/// several times the longest detection each variant should need.
fn bound(v: Variant) -> Duration {
    match v {
        Variant::Ycloud => Duration::from_secs(10),
        Variant::Native(Some(_)) => Duration::from_secs(30),
        Variant::Native(None) => Duration::from_secs(60),
    }
}

/// Polls `f` every 20 ms (the harness' `wait_for` polls every 100 ms and panics, which
/// would both blur and end the measurement) until it holds or `timeout` passes.
fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When the daemon wrote its "web-2 is down" verdict: the modification time of the probe's
/// status file, as seconds after `killed` (wall clock: the daemon is another process). The
/// transition is written at once and the next periodic write is 10 s later, so read soon
/// after the NB change this is the transition's write. (`lastTransitionTime` would say
/// the same to the second only: Kubernetes times have no fraction.)
fn detected_at(c: &Cluster, w2: &str, killed: std::time::SystemTime) -> Option<f64> {
    let path = c
        .status_dir()
        .join("probe-status/shop")
        .join(format!("web-{}-8080.yaml", w2.replace('.', "-")));
    let text = std::fs::read_to_string(&path).ok()?;
    let st: ycloud_crds::NetworkProbeStatus = serde_yaml::from_str(&text).ok()?;
    if st.healthy != Some(false) {
        return None;
    }
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    Some(match written.duration_since(killed) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

/// What a timed-out trial prints: the monitors, the checks, the native load balancer.
fn diagnose(c: &Cluster) -> String {
    let sb = c.sb.sbctl(&["list", "Service_Monitor"]).unwrap_or_default();
    let hc =
        c.sb.nbctl(&["list", "Load_Balancer_Health_Check"])
            .unwrap_or_default();
    let lb =
        c.sb.nbctl(&["list", "Load_Balancer", "bench-native"])
            .unwrap_or_default();
    format!("Service_Monitor:\n{sb}\nLoad_Balancer_Health_Check:\n{hc}\nbench-native:\n{lb}")
}

/// Whether node 1's `ovs-vswitchd` died (OVS 3.1.0's userspace conntrack assertion,
/// docs/performance.md); if so it is started again (the sandbox's own restart), and the trial
/// it hit is not counted.
fn datapath_crashed(c: &Cluster) -> bool {
    match c.sb.restart_crashed_vswitchd(1) {
        Ok(None) => false,
        Ok(Some(crash)) => {
            eprintln!("probe bench: {crash}; started again; this trial is not counted");
            true
        }
        Err(e) => {
            eprintln!(
                "probe bench: ovs-vswitchd died and did not come back cleanly: {e}; this trial is not counted"
            );
            true
        }
    }
}

/// One trial: kill web-2's server, measure; then bring it back. `None`: the backends were
/// not both in (or the client could not reach the VIP) before the trial, or the datapath
/// crashed during it: not counted.
fn trial(c: &mut Cluster, client: &Netns, v: Variant, w1: &str, w2: &str) -> Option<Trial> {
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
    datapath_crashed(c);
    if poll_until(WARM, || back(c)).is_none() {
        eprintln!(
            "probe bench: {}: both backends not in within {WARM:?}; trial skipped\n{}",
            v.name(),
            diagnose(c)
        );
        return None;
    }
    if c.sb.wait_hv_sync().is_err() {
        datapath_crashed(c);
        return None;
    }
    if let Err(e) = warm(client, &url, WARM) {
        eprintln!(
            "probe bench: {}: {url} not answering: {e}; trial skipped",
            v.name()
        );
        return None;
    }

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
    let killed_wall = std::time::SystemTime::now();
    c.stop_server("web-2", 8080);
    let out = poll_until(bound(v), || gone(c)).map(|_| killed.elapsed().as_secs_f64());
    if out.is_none() {
        eprintln!(
            "probe bench: {}: web-2 not out within {:?} of the kill: recorded as a timeout\n{}",
            v.name(),
            bound(v),
            diagnose(c)
        );
    }
    let detect = match v {
        Variant::Ycloud => detected_at(c, w2, killed_wall),
        Variant::Native(_) => None,
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let samples = loop_.join().expect("client loop");
    let last = samples
        .iter()
        .filter(|(t, ok)| !ok && *t >= killed)
        .map(|(t, _)| t.duration_since(killed).as_secs_f64())
        .fold(0.0, f64::max);
    let crashed = datapath_crashed(c);
    c.serve("web-2", 8080);
    (!crashed).then_some(Trial { out, detect, last })
}

/// A variant's figures: (metric, values of the completed trials), timeouts, skipped.
type VariantResult = (Variant, Vec<(&'static str, Vec<f64>)>, usize, usize);

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
    // Per variant: (metric, values) and how many trials timed out or were skipped.
    let mut results: Vec<VariantResult> = Vec::new();
    for v in variants {
        if let Variant::Native(opts) = v {
            let _ = c.sb.nbctl(&["--if-exists", "lb-del", "bench-native"]);
            native_lb(&c, &[w1.clone(), w2.clone()], opts);
        }
        let (mut outs, mut lasts, mut detects, mut ctls) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut timeouts, mut skipped) = (0, 0);
        for i in 0..trials {
            let Some(t) = trial(&mut c, &client, v, &w1, &w2) else {
                skipped += 1;
                continue;
            };
            let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3} s"));
            eprintln!(
                "probe bench: {} trial {i}: out {}, verdict {}, last routed {:.3} s",
                v.name(),
                f(t.out),
                f(t.detect),
                t.last
            );
            match t.out {
                Some(out) => {
                    outs.push(out);
                    lasts.push(t.last);
                    if let Some(d) = t.detect {
                        detects.push(d);
                        ctls.push(out - d);
                    }
                }
                None => timeouts += 1,
            }
        }
        let mut metrics = vec![("out", outs), ("last_routed", lasts)];
        if matches!(v, Variant::Ycloud) {
            metrics.push(("verdict", detects));
            metrics.push(("verdict_to_nb", ctls));
        }
        results.push((v, metrics, timeouts, skipped));
    }
    let _ = c.sb.nbctl(&["--if-exists", "lb-del", "bench-native"]);

    // Baseline: OVN native at the closest interval it allows.
    let stat = |vals: &[f64], p: f64| -> Option<f64> {
        let mut v = vals.to_vec();
        (!v.is_empty()).then(|| percentile(&mut v, p))
    };
    let baseline = |metric: &str, p: f64| -> Option<f64> {
        let r = results
            .iter()
            .find(|r| matches!(r.0, Variant::Native(Some(_))))?;
        let vals = &r.1.iter().find(|(m, _)| *m == metric)?.1;
        stat(vals, p)
    };
    let round = |x: Option<f64>| x.map(|x| (x * 1000.0).round() / 1000.0);
    let mut table = Vec::new();
    for (v, metrics, timeouts, skipped) in &results {
        for (metric, vals) in metrics {
            for (suffix, p) in [("p50", 0.5), ("max", 1.0)] {
                let value = stat(vals, p);
                let b = baseline(metric, p);
                let ratio = match (value, b) {
                    (Some(x), Some(b)) if b > 0.0 => Some(x / b),
                    _ => None,
                };
                let mut params = v.params();
                params["variant"] = v.name().into();
                params["metric"] = format!("{metric}_{suffix}").into();
                params["trials"] = trials.into();
                params["completed"] = vals.len().into();
                params["timeouts"] = (*timeouts).into();
                params["skipped"] = (*skipped).into();
                println!(
                    "{}",
                    serde_json::json!({
                        "name": "probe",
                        "params": params,
                        "value": round(value),
                        "unit": "s",
                        "baseline": round(b),
                        "ratio": round(ratio),
                    })
                );
                table.push((
                    v.name(),
                    format!("{metric}_{suffix}"),
                    value,
                    b,
                    ratio,
                    format!("{}/{trials}", vals.len()),
                ));
            }
        }
    }
    println!();
    println!(
        "{:<22} {:<18} {:>9} {:>12} {:>7} {:>9}",
        "variant", "metric", "value s", "baseline s", "ratio", "trials"
    );
    let f = |x: Option<f64>, w: usize, d: usize| {
        x.map_or(format!("{:>w$}", "-"), |x| format!("{x:>w$.d$}"))
    };
    for (v, m, value, b, r, n) in table {
        println!(
            "{v:<22} {m:<18} {} {} {} {n:>9}",
            f(value, 9, 3),
            f(b, 12, 3),
            f(r, 7, 2)
        );
    }
    println!(
        "(out = NB VIP without the backend for ycloud, SB Service_Monitor offline for OVN; \
         last routed = the last request sent to the dead backend; verdict = the daemon's \
         unhealthy verdict (its status file written); verdict_to_nb = verdict to the \
         NB VIP change: the controller's share; trials = completed / run, the rest timed out \
         or were skipped (not ready, or a datapath crash); baseline = OVN native, 1 s x 2)"
    );
}
