//! The daemon's probe runner with real CNI: a pod added by the real plugin through the real
//! daemon (sandbox OVS/OVN) is probed inside its namespace; the daemon restarted with the
//! same `--state-dir` goes on probing it without a new ADD; DEL stops that. Needs root.

#[path = "support/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Node, netns_path, network, pod_netns};
use serde_json::json;
use ycloud_crds::NetworkProbeStatus;
use ycloud_probe::files;

fn status(s: &Path) -> Option<NetworkProbeStatus> {
    files::read_status(s, "default", "web-p1").unwrap()
}

fn wait(node: &Node, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 10 s\n{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pod_added_through_cni_is_probed_in_its_netns_across_a_daemon_restart_until_del() {
    let mut node = Node::up();
    let state = node.dir.path().join("state");
    node.extra_args = vec!["--state-dir".into(), state.display().to_string()];
    node.sb.nbctl(&["ls-add", "ls1"]).expect("ls-add");
    let (mac, ip) = ("0a:00:00:00:00:0b", "10.0.0.11");
    node.lsp("ls1", "p1", mac, ip);
    node.annotate(
        "default",
        "p1",
        &network("p1", mac, "10.0.0.11/24", "10.0.0.1"),
    );
    node.start_daemon();
    let ns1 = pod_netns(&node.sb, "p1");
    node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
    assert!(
        state.join("pod-netns/c1.json").exists(),
        "ADD recorded the pod's netns"
    );
    let mut server = ns1.http_server("p1", 8080).expect("HTTP server in the pod");

    let s = node.status_dir();
    let doc = json!({
        "apiVersion": "ycloud.io/v1alpha1", "kind": "NetworkProbe",
        "metadata": {"name": "web-p1", "namespace": "default", "generation": 1},
        "spec": {"service": "web",
                 "backend": {"kind": "Pod", "name": "default/p1", "address": ip,
                             "node": node.sb.chassis(), "port": 8080},
                 "probe": {"type": "HTTP", "intervalMillis": 200, "timeoutMillis": 300,
                           "failureThreshold": 2, "successThreshold": 1}},
    });
    files::write_atomic(
        &files::probe_path(&s, "default", "web-p1"),
        serde_yaml::to_string(&doc).unwrap().as_bytes(),
    )
    .unwrap();
    wait(&node, "healthy", || {
        status(&s).is_some_and(|st| st.healthy == Some(true))
    });

    // A restarted daemon (no new ADD) still knows where p1 lives: the server stops, the
    // probe sees it.
    node.kill_daemon();
    node.start_daemon();
    server.stop();
    wait(&node, "unhealthy after the restart", || {
        status(&s).is_some_and(|st| st.healthy == Some(false))
    });
    assert!(status(&s).unwrap().last_error.unwrap().contains("refused"));

    // DEL: the pod is forgotten; its probe (if the controller has not deleted it yet)
    // says why it cannot run.
    node.cni(
        "DEL",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
    assert!(
        !state.join("pod-netns/c1.json").exists(),
        "DEL forgot the pod's netns"
    );
    wait(&node, "no netns after DEL", || {
        status(&s)
            .and_then(|st| st.last_error)
            .is_some_and(|e| e.contains("no network namespace known for default/p1"))
    });
}
