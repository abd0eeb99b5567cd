//! The node's probe runner end to end, without OVN: NetworkProbe files in a temporary
//! status directory, real HTTP servers in real network namespaces standing for pods, and the
//! status files the runner writes. Needs root (namespaces).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ycloud_cni::probes::{PodNetns, PodNetnsStore, Runner, RunnerConfig};
use ycloud_crds::NetworkProbeStatus;
use ycloud_probe::files;
use ycloud_testsupport::netns::Netns;

const NODE: &str = "n1";

fn pod_netns(tag: &str, address: &str) -> Netns {
    let ns = Netns::create(&format!("ypr{}{tag}", std::process::id())).unwrap();
    ns.exec(&["ip", "addr", "add", &format!("{address}/32"), "dev", "lo"])
        .unwrap();
    ns
}

fn record(store: &PodNetnsStore, pod: &str, ns: &Netns) {
    let (namespace, name) = pod.split_once('/').unwrap();
    store
        .record(PodNetns {
            namespace: namespace.into(),
            name: name.into(),
            container_id: format!("c-{name}"),
            netns: PathBuf::from("/run/netns").join(ns.name()),
            recorded_at_ms: 1,
        })
        .unwrap();
}

/// Writes `S/probes/<ns>/<name>.yaml` as the controller does.
fn write_probe(s: &Path, ns: &str, name: &str, generation: i64, spec: serde_json::Value) {
    let doc = serde_json::json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": ns, "generation": generation,
                     "labels": {"ycloud.io/service": "web"}},
        "spec": spec,
    });
    let yaml = serde_yaml::to_string(&doc).unwrap();
    files::write_atomic(&files::probe_path(s, ns, name), yaml.as_bytes()).unwrap();
}

fn http_spec(pod: &str, address: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "service": "web",
        "backend": {"kind": "Pod", "name": pod, "address": address, "node": node, "port": 8080},
        "probe": {"type": "HTTP", "path": "/healthz", "intervalMillis": 200, "timeoutMillis": 300,
                  "failureThreshold": 2, "successThreshold": 1},
    })
}

fn status(s: &Path, name: &str) -> Option<NetworkProbeStatus> {
    files::read_status(s, "shop", name).unwrap()
}

/// Polls (every 10 ms) until `f` holds, at most `limit`; returns how long it took.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_probes_its_pods_in_their_namespaces_and_writes_statuses() {
    let s_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = s_dir.path().to_path_buf();
    let store = Arc::new(PodNetnsStore::open(state.path()).unwrap());
    // Two "pods" with the same address in two namespaces (overlapping VPCs): only a's
    // serves HTTP.
    let a = pod_netns("a", "10.88.0.10");
    let b = pod_netns("b", "10.88.0.10");
    let mut server = a.http_server("a", 8080).unwrap();
    record(&store, "shop/a", &a);
    record(&store, "shop/b", &b);

    write_probe(
        &s,
        "shop",
        "web-a",
        1,
        http_spec("shop/a", "10.88.0.10", NODE),
    );
    write_probe(
        &s,
        "shop",
        "web-b",
        1,
        http_spec("shop/b", "10.88.0.10", NODE),
    );
    // Another node's probe: not run here, its status not touched.
    write_probe(
        &s,
        "shop",
        "web-other",
        1,
        http_spec("shop/x", "10.88.0.11", "n2"),
    );
    // A pod this daemon never saw an ADD for.
    write_probe(
        &s,
        "shop",
        "web-unknown",
        1,
        http_spec("shop/ghost", "10.88.0.12", NODE),
    );
    // A spec that cannot run (TCP without a port) and a file that is not a probe.
    write_probe(
        &s,
        "shop",
        "web-bad",
        4,
        serde_json::json!({
        "service": "web", "backend": {"kind": "Pod", "name": "shop/a", "address": "10.88.0.10", "node": NODE},
        "probe": {"type": "TCP"}}),
    );
    files::write_atomic(&files::probe_path(&s, "shop", "junk"), b"{not: [yaml").unwrap();
    // A status whose probe is gone (left by an earlier run).
    files::write_status(&s, "shop", "gone", &NetworkProbeStatus::default()).unwrap();

    let mut cfg = RunnerConfig::new(s.clone(), NODE.into(), 64);
    cfg.rescan = Duration::from_millis(100);
    cfg.scheduler.status_interval = Duration::from_secs(2);
    let (mut runner, reports) = Runner::new(cfg, store.clone());
    let first = runner.rescan();
    assert_eq!(
        (
            first.running,
            first.invalid,
            first.unreadable,
            first.statuses_removed
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(
        runner.running(),
        ["shop/web-a", "shop/web-b", "shop/web-unknown"]
    );
    let task = tokio::spawn(runner.run(reports));

    until(Duration::from_secs(3), "web-a healthy", || {
        status(&s, "web-a").is_some_and(|st| st.healthy == Some(true))
    })
    .await;
    until(Duration::from_secs(3), "web-b unhealthy", || {
        status(&s, "web-b").is_some_and(|st| st.healthy == Some(false))
    })
    .await;
    let unknown = {
        until(Duration::from_secs(3), "web-unknown unhealthy", || {
            status(&s, "web-unknown").is_some_and(|st| st.healthy == Some(false))
        })
        .await;
        status(&s, "web-unknown").unwrap()
    };
    assert!(
        unknown
            .last_error
            .unwrap()
            .contains("no network namespace known for shop/ghost")
    );
    let bad = status(&s, "web-bad").unwrap();
    assert_eq!((bad.healthy, bad.observed_generation), (None, Some(4)));
    assert_eq!(bad.conditions[0].reason, "InvalidSpec");
    assert!(
        bad.conditions[0].message.contains("needs a port"),
        "{:?}",
        bad.conditions
    );
    assert!(status(&s, "web-other").is_none());
    assert!(status(&s, "gone").is_none());

    // Bounded rate: over 5 s (25 probes at 200 ms) the healthy probe's file is rewritten
    // at most 3 times (status interval 2 s; the first periodic write is spread over 2-4 s
    // after the first one), though every probe ran.
    let a_status = files::status_path(&s, "shop", "web-a");
    let mut writes = 0;
    let mut last = std::fs::read_to_string(&a_status).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = std::fs::read_to_string(&a_status).unwrap();
        if now != last {
            writes += 1;
            last = now;
        }
    }
    let st = status(&s, "web-a").unwrap();
    assert!((1..=3).contains(&writes), "{writes} writes in 5 s");
    assert!(st.consecutive_successes >= 10, "{st:?}");
    assert_eq!(st.observed_generation, Some(1));
    assert!(st.latency_millis.is_some() && st.last_error.is_none());

    // The backend dies: the status says so at once after 2 failures (not 10 s later).
    server.stop();
    let down = until(Duration::from_secs(3), "web-a unhealthy", || {
        status(&s, "web-a").is_some_and(|st| st.healthy == Some(false))
    })
    .await;
    assert!(
        down < Duration::from_millis(1200),
        "detected after {down:?}"
    );
    let st = status(&s, "web-a").unwrap();
    assert_eq!(st.consecutive_failures, 2);
    assert!(st.last_error.unwrap().contains("refused"));

    // It comes back: healthy again after one success.
    let _server = a.http_server("a", 8080).unwrap();
    until(Duration::from_secs(3), "web-a healthy again", || {
        status(&s, "web-a").is_some_and(|st| st.healthy == Some(true))
    })
    .await;

    // A new generation of the spec shows up in observedGeneration at once.
    write_probe(
        &s,
        "shop",
        "web-a",
        2,
        http_spec("shop/a", "10.88.0.10", NODE),
    );
    until(Duration::from_secs(3), "generation 2", || {
        status(&s, "web-a")
            .is_some_and(|st| st.observed_generation == Some(2) && st.healthy == Some(true))
    })
    .await;

    // The probe is deleted: its status goes too.
    std::fs::remove_file(files::probe_path(&s, "shop", "web-a")).unwrap();
    until(Duration::from_secs(3), "web-a status removed", || {
        status(&s, "web-a").is_none()
    })
    .await;
    task.abort();
}

#[test]
fn the_pod_netns_index_survives_a_restart_and_forgets_what_del_removed() {
    let state = tempfile::tempdir().unwrap();
    let a = Netns::create(&format!("yps{}a", std::process::id())).unwrap();
    {
        let store = PodNetnsStore::open(state.path()).unwrap();
        record(&store, "shop/a", &a);
        store
            .record(PodNetns {
                namespace: "shop".into(),
                name: "gone".into(),
                container_id: "c-gone".into(),
                netns: PathBuf::from("/run/netns/does-not-exist-anymore"),
                recorded_at_ms: 1,
            })
            .unwrap();
        record(&store, "shop/b", &a);
        assert!(store.forget("c-b").unwrap());
    }
    // A new daemon: a's namespace is still known; the gone one is dropped; b was deleted.
    let store = PodNetnsStore::open(state.path()).unwrap();
    assert_eq!(
        store.lookup("shop", "a"),
        Some(PathBuf::from("/run/netns").join(a.name()))
    );
    assert_eq!(store.lookup("shop", "gone"), None);
    assert_eq!(store.lookup("shop", "b"), None);
    assert_eq!(store.len(), 1);
    // A newer sandbox of the same pod wins.
    store
        .record(PodNetns {
            namespace: "shop".into(),
            name: "a".into(),
            container_id: "c-a2".into(),
            netns: PathBuf::from("/run/netns/newer"),
            recorded_at_ms: 2,
        })
        .unwrap();
    assert_eq!(
        store.lookup("shop", "a"),
        Some(PathBuf::from("/run/netns/newer"))
    );
}
