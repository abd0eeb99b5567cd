//! NetworkProbes end to end (root; the e2e harness: a real OVN sandbox, `ycloud-controller`
//! in manifest mode, `ycloud-cnid` running the probes inside the pods' namespaces, pods made
//! by the real CNI plugin). What the e2e suite's probe test does not cover:
//! - a client loop across a backend failure, errors counted per 100 ms window: none after
//!   the detection window (the NB removal plus a small margin for the chassis);
//! - a slow backend (answers after the probe's timeout) counts as a failure;
//! - every backend down: the VIP rejects at once (the client fails fast, it does not hang)
//!   and the service's `BackendsHealthy` condition says why.

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, get, wait_for, warm};
use ycloud_testsupport::netns::Netns;

const VIP: &str = "http://10.96.0.100/";
const WARM: Duration = Duration::from_secs(30);

/// `web`, probed over HTTP every 500 ms, out after 2 failures, back after 1 success.
const PROBED: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
  healthCheck: {type: HTTP, path: /, intervalMillis: 500, timeoutMillis: 300, failureThreshold: 2, successThreshold: 1}
";

/// An HTTP server on :8080 that answers after 1 s: alive, but slower than the probe's
/// 300 ms timeout.
const SLOW_SERVER: &str = r#"
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(1.0)
        b = b"slow\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// One request's result: when it was sent (since the start of the loop) and whether it
/// succeeded.
type Sample = (Duration, bool);

/// Requests from `client` to the VIP in a loop until `stop`, each bounded by 1 s.
fn client_loop(client: Netns, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let sent = t0.elapsed();
            let ok = get(&client, VIP, Duration::from_secs(1)).is_ok();
            out.push((sent, ok));
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    })
}

#[test]
fn probes_take_out_failed_and_slow_backends_no_request_fails_after_the_window_and_all_down_rejects_in_a_sandbox()
 {
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
    c.write_manifest("10-web.yaml", PROBED);
    let w1 = c.add_pod("shop", "web-1");
    let w2 = c.add_pod("shop", "web-2");
    c.add_pod("shop", "client-a");
    c.serve("web-1", 8080);
    c.serve("web-2", 8080);
    let both = set(&[format!("{w1}:8080"), format!("{w2}:8080")]);
    let one = set(&[format!("{w1}:8080")]);
    wait_for("both probed backends in the VIP", WARM, || {
        (c.nb_backends("10.96.0.100:80")? == both).then_some(())
    });
    // The probes exist as files for the daemon, with the node and the contract's names.
    let probe = c.status_dir().join(format!(
        "probes/shop/web-{}-8080.yaml",
        w2.replace('.', "-")
    ));
    let text = std::fs::read_to_string(&probe).expect("web-2's probe file");
    assert!(text.contains(c.sb.chassis()), "node of the probe: {text}");
    c.sb.wait_hv_sync().expect("hv sync");
    let client = Netns::existing(c.pod("client-a").netns.name());
    warm(&client, VIP, WARM).unwrap_or_else(|e| panic!("warm: {e}"));

    // 1. A client loop across web-2's failure.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let looping = client_loop(Netns::existing(client.name()), stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let killed = started.elapsed();
    c.stop_server("web-2", 8080);
    wait_for("the probe to take web-2 out of the VIP", WARM, || {
        (c.nb_backends("10.96.0.100:80")? == one).then_some(())
    });
    let out_of_nb = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let samples = looping.join().expect("client loop");
    // Errors per 100 ms window, from the kill on.
    let window = |t: Duration| (t.saturating_sub(killed)).as_millis() / 100;
    let mut errors: std::collections::BTreeMap<u128, usize> = Default::default();
    for (t, ok) in &samples {
        if !ok && *t >= killed {
            *errors.entry(window(*t)).or_default() += 1;
        }
    }
    // The chassis needs a moment after NB: the margin is 500 ms.
    let detection = window(out_of_nb) + 5;
    let late: Vec<_> = errors.iter().filter(|(w, _)| **w > detection).collect();
    let after = samples
        .iter()
        .filter(|(t, _)| window(*t) > detection)
        .count();
    eprintln!(
        "probe e2e: killed at {killed:?}, out of NB {:?} later; {} requests, errors per 100 ms window {errors:?}; {after} requests after the window",
        out_of_nb - killed,
        samples.len()
    );
    assert!(after >= 20, "the loop went on after the window: {after}");
    assert!(
        late.is_empty(),
        "errors after the detection window: {late:?}"
    );

    // 2. A slow server on web-2: it answers, after the probe's timeout: it stays out.
    let slow = c
        .pod("web-2")
        .netns
        .spawn("slow HTTP server", &["python3", "-c", SLOW_SERVER])
        .expect("slow server");
    let verdict = c.status_dir().join(format!(
        "probe-status/shop/web-{}-8080.yaml",
        w2.replace('.', "-")
    ));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.nb_backends("10.96.0.100:80"),
        Some(one.clone()),
        "a slow backend stays out (a fast one would be back after one 500 ms probe)"
    );
    let st: ycloud_crds::NetworkProbeStatus =
        serde_yaml::from_str(&std::fs::read_to_string(&verdict).expect("verdict")).expect("yaml");
    assert_eq!(st.healthy, Some(false), "{st:?}");
    drop(slow);

    // 3. Every backend down: the VIP rejects at once and the condition says so.
    c.stop_server("web-1", 8080);
    wait_for("the VIP with no backend", WARM, || {
        c.nb_backends("10.96.0.100:80")?
            .iter()
            .all(|b| b.is_empty())
            .then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let t = Instant::now();
    let r = get(&client, VIP, Duration::from_secs(5));
    let took = t.elapsed();
    assert!(r.is_err(), "no backend, no answer: {r:?}");
    assert!(
        took < Duration::from_secs(2),
        "rejected at once, not a hang until the client's timeout: {took:?} ({r:?})"
    );
    let svc = c.status_dir().join("YusurService/shop/web.yaml");
    wait_for("the service's condition", WARM, || {
        let doc = ycloud_controller::status::read(&svc)?;
        let (status, reason, message) =
            ycloud_controller::status::condition_in(&doc, "BackendsHealthy")?;
        (format!("{status:?}") == "False"
            && reason == ycloud_controller::status::ALL_BACKENDS_UNHEALTHY
            && message.contains("reject"))
        .then_some(())
    });
}
