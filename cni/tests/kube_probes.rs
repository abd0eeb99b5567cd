//! The node's probe runner in cluster mode against kube's tower-test mock API server (the
//! one thing that cannot run here) and a real TCP backend: the watch asks for this node's
//! probes only, statuses go to `/status` by server-side apply as `ycloud-cnid`, a verdict
//! change is written at once, and a steady state is written no more often than the bound.
#![cfg(feature = "kube")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value as Json, json};
use tower_test::mock;
use ycloud_cni::probes::PodNetnsStore;
use ycloud_cni::probes::cluster::{ClusterConfig, ClusterRunner};
use ycloud_probe::SchedulerConfig;

/// One request as the API server saw it, and when.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Json,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn json_response(status: StatusCode, body: &Json) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// Enough percent-decoding for selectors.
fn decode(q: &str) -> String {
    q.replace("%3D", "=")
        .replace("%3d", "=")
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%2C", ",")
}

/// A mock API server that lists `probes`, holds watches open, and answers status applies
/// with the probe (its status replaced). Returns the client and the request log.
fn mock_api(probes: Vec<Json>) -> (kube::Client, Log) {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let s = Seen {
                at: Instant::now(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: decode(parts.uri.query().unwrap_or_default()),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes)
                    .or_else(|_| serde_yaml::from_slice(&bytes))
                    .unwrap_or(Json::Null),
            };
            log2.lock().expect("log").push(s.clone());
            match s.method.as_str() {
                "GET" if s.query.split('&').any(|q| q == "watch=true") => held.push(send),
                "GET" => send.send_response(json_response(
                    StatusCode::OK,
                    &json!({"apiVersion": "ycloud.io/v1alpha1", "kind": "NetworkProbeList",
                        "metadata": {"resourceVersion": "10"}, "items": probes}),
                )),
                "PATCH" => {
                    let name = s.path.rsplit('/').nth(1).unwrap_or_default();
                    match probes.iter().find(|p| p["metadata"]["name"] == name) {
                        Some(p) => {
                            let mut p = p.clone();
                            p["status"] = s.body["status"].clone();
                            send.send_response(json_response(StatusCode::OK, &p));
                        }
                        None => send.send_response(json_response(
                            StatusCode::NOT_FOUND,
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"}),
                        )),
                    }
                }
                _ => send.send_response(json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}))),
            }
        }
    });
    (kube::Client::new(svc, "default"), log)
}

fn probe(name: &str, node: &str, port: u16) -> Json {
    json!({
        "apiVersion": "ycloud.io/v1alpha1", "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": "shop", "generation": 1, "resourceVersion": "5",
            "labels": {"ycloud.io/node": node, "ycloud.io/service": "web",
                "ycloud.io/managed-by": "ycloud-controller"}},
        "spec": {"service": "web",
            "backend": {"kind": "BM", "name": "shop/appliance", "address": "127.0.0.1",
                "node": node, "port": port},
            "probe": {"type": "TCP", "intervalMillis": 100, "timeoutMillis": 200,
                "failureThreshold": 2, "successThreshold": 1}},
    })
}

fn status_patches(log: &Log) -> Vec<Seen> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|s| s.method == "PATCH")
        .cloned()
        .collect()
}

/// Waits for a status patch of `name` with `healthy == want` sent after `since`.
async fn wait_verdict(log: &Log, name: &str, want: bool, since: Instant, within: Duration) -> Seen {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = status_patches(log).into_iter().find(|s| {
            s.at >= since
                && s.path.ends_with(&format!("/{name}/status"))
                && s.body["status"]["healthy"] == want
        }) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no status patch of {name} with healthy={want} within {within:?}: {:?}",
            status_patches(log)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_watches_its_nodes_probes_and_applies_transitions_at_once_and_the_rest_at_a_bounded_rate()
 {
    // A real backend: accepts and drops connections until it is stopped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    // n2's probe would only come from a server ignoring the selector: the runner skips it.
    let (client, log) = mock_api(vec![probe("p1", "n1", port), probe("p2", "n2", port)]);
    let status_interval = Duration::from_secs(1);
    let cfg = ClusterConfig {
        node_name: "n1".into(),
        resync: Duration::from_millis(100),
        scheduler: SchedulerConfig {
            max_concurrency: 16,
            status_interval,
            channel_capacity: 64,
        },
    };
    let runner = ClusterRunner::new(cfg, client, Arc::new(PodNetnsStore::in_memory()));
    let task = tokio::spawn(runner.run());

    // Healthy: the first verdict, applied to /status as ycloud-cnid.
    let started = Instant::now();
    let first = wait_verdict(&log, "p1", true, started, Duration::from_secs(5)).await;
    assert_eq!(
        first.path,
        "/apis/ycloud.io/v1alpha1/namespaces/shop/networkprobes/p1/status"
    );
    assert_eq!(first.content_type, "application/apply-patch+yaml");
    assert!(
        first.query.contains("fieldManager=ycloud-cnid") && first.query.contains("force=true"),
        "{}",
        first.query
    );
    assert_eq!(
        first.body["metadata"],
        json!({"name": "p1", "namespace": "shop"})
    );
    assert_eq!(first.body["status"]["observedGeneration"], 1);
    assert_eq!(first.body["status"]["consecutiveFailures"], 0);
    assert!(
        first.body.get("spec").is_none(),
        "the controller owns the spec"
    );
    // The list and the watch asked for this node's probes only.
    let gets: Vec<Seen> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|s| s.method == "GET")
        .cloned()
        .collect();
    assert!(!gets.is_empty());
    for g in &gets {
        assert_eq!(g.path, "/apis/ycloud.io/v1alpha1/networkprobes");
        assert!(
            g.query
                .split('&')
                .any(|q| q == "labelSelector=ycloud.io/node=n1"),
            "{}",
            g.query
        );
    }

    // Steady state: a probe every 100 ms, at most one status per second.
    let before = status_patches(&log).len();
    let window = Duration::from_millis(3500);
    tokio::time::sleep(window).await;
    let steady = status_patches(&log).len() - before;
    assert!(
        (1..=4).contains(&steady),
        "{steady} status writes in {window:?} of 100 ms probes with a {status_interval:?} bound"
    );

    // The backend stops: unhealthy after 2 failures, applied at once (not at the next
    // periodic write).
    server.abort();
    let _ = server.await;
    let killed = Instant::now();
    let down = wait_verdict(&log, "p1", false, killed, Duration::from_secs(3)).await;
    let took = down.at.duration_since(killed);
    assert!(
        took < Duration::from_millis(900),
        "the transition took {took:?} (2 × 100 ms probes)"
    );
    assert_eq!(down.body["status"]["consecutiveFailures"], 2);
    assert!(down.body["status"]["lastError"].is_string());

    // Nothing was ever written for the other node's probe.
    assert!(
        status_patches(&log)
            .iter()
            .all(|s| !s.path.contains("/p2/")),
        "{:?}",
        status_patches(&log)
    );
    task.abort();
}
