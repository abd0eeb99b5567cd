//! Cluster mode against kube's tower-test mock API server (the one thing that cannot run
//! here): the daemon's pod and node watches, an ADD that waits for the annotation arriving
//! on the watch (with real OVS/OVN and real namespaces: the ADD plumbs), the timeout and
//! malformed-annotation errors, the dpu exchange's merge patches, and the proof that every
//! request the daemon makes is in its API-call table, which equals the chart's list.

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Node, netns_path, pod_netns};
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value as Json, json};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tower_test::mock;
use ycloud_cni::daemon::{Daemon, DaemonConfig, Mode, Sources, host_ifname};
use ycloud_cni::dpu::{Exchange, VfRequest, VfStatus};
use ycloud_cni::kube::api_calls::{API_CALLS, allows, classify};
use ycloud_cni::kube::{
    self as k, KubeExchange, MGMT_ANNOTATION, NETWORK_ANNOTATION, NodeAnnotationSource, PodSource,
    VF_ANNOTATION, VF_STATUS_ANNOTATION,
};
use ycloud_cni::mgmt::NodeSource;
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

type Reply = mock::SendResponse<Response<Body>>;

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Json,
}

impl Seen {
    fn rbac(&self) -> (String, String, String) {
        classify(&self.method, &self.path, &self.query)
            .unwrap_or_else(|| panic!("not a resource request: {self:?}"))
    }
    fn query_has(&self, kv: &str) -> bool {
        self.query.split('&').any(|q| q == kv)
    }
}

/// The mock API server: lists answered from `lists`, pod merge patches applied to `pods`
/// (404 for a pod it does not hold), watches handed to the test to answer when it wants.
struct MockApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    watches: mpsc::UnboundedReceiver<(Seen, Reply)>,
    /// Watch requests not asked for yet, held open.
    pending: Vec<(Seen, Reply)>,
}

fn json_response(status: StatusCode, body: &Json) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn meta(ns: Option<&str>, name: &str, rv: u64, annotations: &BTreeMap<String, String>) -> Json {
    let mut m =
        json!({"name": name, "resourceVersion": rv.to_string(), "annotations": annotations});
    if let Some(ns) = ns {
        m["namespace"] = ns.into();
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m})
}

fn list(items: Vec<Json>) -> Json {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {"resourceVersion": "1"}, "items": items})
}

/// `(namespace, name) -> annotations` of the pods the mock server holds.
type PodStore = Arc<Mutex<BTreeMap<(String, String), BTreeMap<String, String>>>>;

/// Starts the mock API server on `rt`; returns the client for the daemon and the test's side.
fn mock_api(
    rt: &Runtime,
    lists: BTreeMap<String, Json>,
    pods: PodStore,
) -> (kube::Client, MockApi) {
    let _in = rt.enter();
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (tx, rx) = mpsc::unbounded_channel();
    let seen2 = seen.clone();
    rt.spawn(async move {
        let mut rv = 100u64;
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: urlencoding_decode(parts.uri.query().unwrap_or_default()),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Json::Null),
            };
            seen2.lock().expect("seen").push(s.clone());
            match s.method.as_str() {
                "GET" if s.query_has("watch=true") => {
                    let _ = tx.send((s, send));
                }
                "GET" => {
                    let body = lists.get(&s.path).cloned().unwrap_or_else(|| list(vec![]));
                    send.send_response(json_response(StatusCode::OK, &body));
                }
                "PATCH" if s.path.ends_with("/status") && s.path.contains("/networkprobes/") => {
                    // A probe's status apply (probes::cluster): echo the applied object.
                    send.send_response(json_response(StatusCode::OK, &s.body));
                }
                "PATCH" => {
                    let parts: Vec<&str> = s.path.trim_matches('/').split('/').collect();
                    let key = match parts.as_slice() {
                        ["api", "v1", "namespaces", ns, "pods", name] => {
                            (ns.to_string(), name.to_string())
                        }
                        _ => panic!("unexpected patch {s:?}"),
                    };
                    let mut store = pods.lock().expect("pods");
                    match store.get_mut(&key) {
                        None => send.send_response(json_response(
                            StatusCode::NOT_FOUND,
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404,
                                    "message": format!("pods \"{}\" not found", key.1)}),
                        )),
                        Some(ann) => {
                            let patch = s.body["metadata"]["annotations"]
                                .as_object()
                                .cloned()
                                .unwrap_or_default();
                            for (k, v) in patch {
                                match v.as_str() {
                                    Some(v) => ann.insert(k, v.to_string()),
                                    None => ann.remove(&k),
                                };
                            }
                            rv += 1;
                            send.send_response(json_response(
                                StatusCode::OK,
                                &meta(Some(&key.0), &key.1, rv, ann),
                            ));
                        }
                    }
                }
                _ => send.send_response(json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}))),
            }
        }
    });
    (
        client,
        MockApi {
            seen,
            watches: rx,
            pending: Vec::new(),
        },
    )
}

/// Enough percent-decoding for selectors (`%3D` `=`, `%2C` `,`).
fn urlencoding_decode(q: &str) -> String {
    q.replace("%3D", "=")
        .replace("%3d", "=")
        .replace("%2C", ",")
        .replace("%2F", "/")
}

impl MockApi {
    /// The next watch request on `path`; watches of other paths (e.g. the node's) are kept
    /// open for a later call.
    fn next_watch(&mut self, rt: &Runtime, path: &str) -> (Seen, Reply) {
        if let Some(i) = self.pending.iter().position(|(s, _)| s.path == path) {
            return self.pending.remove(i);
        }
        rt.block_on(async {
            loop {
                let (s, r) = tokio::time::timeout(Duration::from_secs(20), self.watches.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no watch request on {path} within 20 s"))
                    .expect("mock server running");
                if s.path == path {
                    return (s, r);
                }
                self.pending.push((s, r));
            }
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Every request so far is granted by the daemon's API-call table.
    fn assert_all_allowed(&self) {
        for s in self.seen() {
            let (g, r, v) = s.rbac();
            assert!(
                allows(&g, &r, &v),
                "the daemon made {v} {g}/{r} ({} {}?{}), which is not in cni/src/kube/api_calls.rs",
                s.method,
                s.path,
                s.query
            );
        }
    }
}

/// A watch answer: the events, one JSON object a line, then the end of the stream.
fn watch_events(reply: Reply, events: &[(&str, Json)]) {
    let mut body = Vec::new();
    for (t, o) in events {
        body.extend(serde_json::to_vec(&json!({"type": t, "object": o})).expect("json"));
        body.push(b'\n');
    }
    reply.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("response"),
    );
}

/// A multi-thread runtime whose worker threads live in network namespace `netns` (threads
/// inherit the namespace of the thread that creates them), so the daemon's netns threads,
/// spawned from its tasks, start in the node's namespace like in the DaemonSet pod.
fn runtime_in(netns: Option<&str>) -> Runtime {
    let path = netns.map(|n| PathBuf::from("/run/netns").join(n));
    std::thread::spawn(move || {
        if let Some(p) = path {
            let f = File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
    .join()
    .expect("runtime thread")
}

fn config(socket: &Path, ovs_db: &str, node: &str) -> DaemonConfig {
    DaemonConfig {
        socket: socket.to_path_buf(),
        ovs_db: ovs_db.to_string(),
        bridge: "br-int".into(),
        node_name: node.into(),
        node_status_dir: None,
        mgmt_interval: Duration::ZERO,
        annotation_timeout: Duration::from_secs(10),
        ovn_installed_timeout: Duration::from_secs(20),
        port_check_interval: Duration::ZERO,
        mode: Mode::Veth,
        tx_checksum_off: true,
        sysfs_root: "/sys".into(),
        pf: None,
        tc_policy: None,
    }
}

/// Starts the daemon (cluster-mode pod source on `client`) on `rt` and waits for its socket.
fn start_daemon(rt: &Runtime, cfg: DaemonConfig, client: kube::Client) {
    let socket = cfg.socket.clone();
    let node = cfg.node_name.clone();
    rt.block_on(async move {
        // The watch task and the daemon's tasks must run on the workers (in the node netns),
        // not on this thread: everything is spawned.
        tokio::spawn(async move {
            let pods = k::watch_pods(client, &node);
            let daemon = Daemon::new(
                cfg,
                Sources {
                    pods: Arc::new(PodSource { pods }),
                    node: None,
                    exchange: None,
                },
            )
            .await
            .expect("daemon");
            daemon.serve().await.expect("serve");
        });
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not bind {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn annotation_of(lsp: &str, mac: &str, ip: &str) -> String {
    harness::network(lsp, mac, ip, "10.0.0.1").to_string()
}

fn pod_object(ns: &str, name: &str, rv: u64, ann: &[(&str, String)]) -> Json {
    let a: BTreeMap<String, String> = ann
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta(Some(ns), name, rv, &a)
}

#[test]
fn a_cluster_mode_add_waits_for_the_annotation_on_the_pod_watch_then_plumbs_a_pod_that_talks() {
    let node = Node::up();
    node.sb.nbctl(&["ls-add", "ls1"]).expect("ls-add");
    node.lsp("ls1", "p1", "0a:00:00:00:00:0b", "10.0.0.11");
    node.lsp("ls1", "p2", "0a:00:00:00:00:0c", "10.0.0.12");
    let ns1 = pod_netns(&node.sb, "p1");
    let ns2 = pod_netns(&node.sb, "p2");
    let chassis = node.sb.chassis().to_string();

    let rt = runtime_in(Some(node.sb.node_netns()));
    // p2 is annotated already (in the first list); p1 gets its annotation later.
    let lists = BTreeMap::from([(
        "/api/v1/pods".to_string(),
        list(vec![pod_object(
            "default",
            "p2",
            5,
            &[(
                NETWORK_ANNOTATION,
                annotation_of("p2", "0a:00:00:00:00:0c", "10.0.0.12/24"),
            )],
        )]),
    )]);
    let (client, mut api) = mock_api(&rt, lists, PodStore::default());
    start_daemon(
        &rt,
        config(&node.socket, node.sb.ovs_db_unix(), &chassis),
        client,
    );

    let (watch, reply) = api.next_watch(&rt, "/api/v1/pods");
    assert!(
        watch.query_has(&format!("fieldSelector=spec.nodeName={chassis}")),
        "the watch is of this node's pods only: {watch:?}"
    );
    let first_list = &api.seen()[0];
    assert_eq!(first_list.method, "GET");
    assert!(
        first_list.query_has(&format!("fieldSelector=spec.nodeName={chassis}")),
        "{first_list:?}"
    );

    node.cni(
        "ADD",
        "c2",
        Some(&netns_path(&ns2)),
        "eth0",
        Some(("default", "p2")),
        json!({}),
    )
    .ok();

    let (r1, answered_at) = std::thread::scope(|s| {
        let add = s.spawn(|| {
            let r = node.cni(
                "ADD",
                "c1",
                Some(&netns_path(&ns1)),
                "eth0",
                Some(("default", "p1")),
                json!({}),
            );
            (r, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            !add.is_finished(),
            "ADD answered before p1 had an annotation"
        );
        let sent = Instant::now();
        watch_events(
            reply,
            &[(
                "MODIFIED",
                pod_object(
                    "default",
                    "p1",
                    7,
                    &[(
                        NETWORK_ANNOTATION,
                        annotation_of("p1", "0a:00:00:00:00:0b", "10.0.0.11/24"),
                    )],
                ),
            )],
        );
        let (r, done) = add.join().expect("ADD thread");
        (r, done.duration_since(sent))
    });
    r1.ok();
    eprintln!(
        "ADD answered {answered_at:?} after the watch event (incl. plumbing and ovn-installed)"
    );
    let result = r1.json();
    assert_eq!(result["ips"][0]["address"], "10.0.0.11/24");
    let ids = node
        .sb
        .vsctl(&[
            "get",
            "Interface",
            &host_ifname("c1", "eth0"),
            "external_ids",
        ])
        .expect("interface");
    assert!(
        ids.contains("iface-id=p1") && ids.contains("ovn-installed=\"true\""),
        "{ids}"
    );
    harness::ping(&ns1, "10.0.0.12").expect("p1 pings p2 through OVN");
    node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({"prevResult": result}),
    )
    .ok();
    for (c, ns) in [("c1", &ns1), ("c2", &ns2)] {
        node.cni("DEL", c, Some(&netns_path(ns)), "eth0", None, json!({}))
            .ok();
    }
    api.assert_all_allowed();
    rt.shutdown_background();
}

/// A daemon with a bare Open_vSwitch database: for the errors that come before plumbing.
struct Bare {
    _ovsdb: OvsdbServer,
    dir: tempfile::TempDir,
    rt: Runtime,
    api: MockApi,
    /// The answer to the first pod watch, held open.
    watch: Option<Reply>,
}

impl Bare {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("cni.sock")
    }

    fn add(&self, container: &str, pod: &str) -> harness::Run {
        let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
        let conf = json!({"cniVersion": "1.1.0", "name": "ycloud", "type": "ycloud-cni",
                          "daemonSocket": self.socket()});
        // A netns path that does not exist: these ADDs must fail before they touch one.
        let netns = self.dir.path().join("no-such-netns");
        harness::plugin(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", &netns.display().to_string()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_ARGS", &args),
            ],
            conf.to_string().as_bytes(),
        )
    }
}

fn bare(annotation_timeout: Duration, lists: BTreeMap<String, Json>) -> Bare {
    let ovsdb = OvsdbServer::start(SchemaFile::Vswitch).expect("ovsdb-server");
    let dir = tempfile::tempdir().expect("tmp");
    let rt = runtime_in(None);
    let (client, mut api) = mock_api(&rt, lists, PodStore::default());
    let mut cfg = config(&dir.path().join("cni.sock"), &ovsdb.unix_remote(), "n1");
    cfg.annotation_timeout = annotation_timeout;
    start_daemon(&rt, cfg, client);
    let (_, reply) = api.next_watch(&rt, "/api/v1/pods");
    Bare {
        _ovsdb: ovsdb,
        dir,
        rt,
        api,
        watch: Some(reply),
    }
}

#[test]
fn an_add_whose_annotation_never_arrives_times_out_with_a_clear_cni_error() {
    let b = bare(Duration::from_millis(400), BTreeMap::new());
    let started = Instant::now();
    let r = b.add("c1", "never");
    let took = started.elapsed();
    assert_eq!(r.error_code(), 100, "{r:?}");
    let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("default/never")
            && msg.contains("ycloud.io/network")
            && msg.contains("400 ms"),
        "{msg}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "gave up early: {took:?}"
    );
    b.api.assert_all_allowed();
    drop(b.watch);
    b.rt.shutdown_background();
}

#[test]
fn a_malformed_annotation_on_the_watch_is_a_clear_cni_error_at_once_and_never_a_panic() {
    let mut b = bare(Duration::from_secs(10), BTreeMap::new());
    let reply = b.watch.take().expect("watch");
    let rt = &b.rt;
    let (r, took) = std::thread::scope(|s| {
        let add = s.spawn(|| {
            let t = Instant::now();
            let r = b.add("c1", "bad");
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        watch_events(
            reply,
            &[(
                "ADDED",
                pod_object(
                    "default",
                    "bad",
                    8,
                    &[(NETWORK_ANNOTATION, "{\"vpc\": 1".into())],
                ),
            )],
        );
        add.join().expect("ADD thread")
    });
    assert_eq!(r.error_code(), 100, "{r:?}");
    let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("pod default/bad annotation ycloud.io/network")
            && msg.contains("not a ycloud.io/network object"),
        "{msg}"
    );
    assert!(
        took < Duration::from_secs(5),
        "it waited for the timeout: {took:?}"
    );
    // An annotation that parses but is invalid (a bad MAC) names the field.
    let (_, reply) = b.api.next_watch(rt, "/api/v1/pods");
    let bad_mac = annotation_of("p", "zz:00:00:00:00:01", "10.0.0.5/24");
    watch_events(
        reply,
        &[(
            "ADDED",
            pod_object("default", "badmac", 9, &[(NETWORK_ANNOTATION, bad_mac)]),
        )],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = b.add("c2", "badmac");
        let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
        if msg.contains("mac") || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(r.error_code(), 100, "{r:?}");
    assert!(
        r.stdout.contains("pod default/badmac") && r.stdout.contains("zz:00"),
        "{r:?}"
    );
    b.api.assert_all_allowed();
    b.rt.shutdown_background();
}

#[test]
fn the_dpu_exchange_writes_and_withdraws_exactly_its_annotation_key_by_merge_patch() {
    let rt = runtime_in(None);
    let store = PodStore::default();
    store.lock().expect("store").insert(
        ("shop".into(), "web".into()),
        BTreeMap::from([(NETWORK_ANNOTATION.to_string(), "{}".to_string())]),
    );
    let (client, mut api) = mock_api(&rt, BTreeMap::new(), store.clone());
    let ex = rt.block_on(async {
        let c = client.clone();
        let pods = tokio::spawn(async move { k::watch_pods(c, "n1") })
            .await
            .expect("spawn");
        Exchange::Kube(KubeExchange { client, pods })
    });
    let (_, parked) = api.next_watch(&rt, "/api/v1/pods");
    let before = api.seen().len();

    let req = VfRequest {
        pf_id: 0,
        vf_id: 3,
        sandbox_id: "5f0c8a2e6c1d".into(),
    };
    rt.block_on(ex.put_request("shop", "web", &req))
        .expect("put request");
    // Seen at once (write-through), before any watch event: a second ADD must not pick VF 3.
    assert_eq!(
        ex.requests().expect("requests"),
        vec![("shop".into(), "web".into(), req.clone())]
    );
    let status = VfStatus {
        representor: Some("pf0vf3".into()),
        ready: true,
        reason: None,
        sandbox_id: req.sandbox_id.clone(),
        vf_id: 3,
    };
    rt.block_on(ex.put_status("shop", "web", &status))
        .expect("put status");
    assert_eq!(
        ex.status("shop", "web").expect("status"),
        Some(status.clone())
    );
    rt.block_on(ex.remove_request("shop", "web"))
        .expect("remove");
    rt.block_on(ex.remove_status("shop", "web"))
        .expect("remove status");
    // A pod that is gone: withdrawing is done; claiming is an error naming it.
    rt.block_on(ex.remove_request("shop", "gone"))
        .expect("remove from a deleted pod");
    let e = rt
        .block_on(ex.put_request("shop", "gone", &req))
        .expect_err("no such pod");
    assert!(
        e.msg.contains("shop/gone") && e.msg.contains(VF_ANNOTATION),
        "{e}"
    );

    let patches: Vec<Seen> = api.seen()[before..].to_vec();
    let want_bodies = [
        json!({"metadata": {"annotations": {VF_ANNOTATION: serde_json::to_string(&req).expect("json")}}}),
        json!({"metadata": {"annotations": {VF_STATUS_ANNOTATION: serde_json::to_string(&status).expect("json")}}}),
        json!({"metadata": {"annotations": {VF_ANNOTATION: null}}}),
        json!({"metadata": {"annotations": {VF_STATUS_ANNOTATION: null}}}),
        json!({"metadata": {"annotations": {VF_ANNOTATION: null}}}),
        json!({"metadata": {"annotations": {VF_ANNOTATION: serde_json::to_string(&req).expect("json")}}}),
    ];
    assert_eq!(patches.len(), want_bodies.len(), "{patches:#?}");
    for (p, want) in patches.iter().zip(&want_bodies) {
        assert_eq!(p.method, "PATCH");
        assert!(p.path.starts_with("/api/v1/namespaces/shop/pods/"), "{p:?}");
        assert_eq!(p.content_type, "application/merge-patch+json", "{p:?}");
        assert!(p.query_has("fieldManager=ycloud-cnid"), "{p:?}");
        assert_eq!(&p.body, want);
    }
    // The controller's annotation was never touched.
    let held = store.lock().expect("store")[&("shop".to_string(), "web".to_string())].clone();
    assert_eq!(
        held,
        BTreeMap::from([(NETWORK_ANNOTATION.to_string(), "{}".to_string())])
    );
    api.assert_all_allowed();
    drop(parked);
    rt.shutdown_background();
}

#[test]
fn management_ports_come_from_the_node_annotation_on_a_watch_of_this_node_only() {
    let rt = runtime_in(None);
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/annotations/node-management-ports.json"),
    )
    .expect("fixture");
    let (client, mut api) = mock_api(&rt, BTreeMap::new(), PodStore::default());
    let src = rt.block_on(async {
        let c = client.clone();
        let cache = tokio::spawn(async move { k::watch_node(c, "n1") })
            .await
            .expect("spawn");
        NodeAnnotationSource {
            node: "n1".into(),
            cache,
        }
    });
    let (watch, reply) = api.next_watch(&rt, "/api/v1/nodes");
    assert!(
        watch.query_has("fieldSelector=metadata.name=n1"),
        "{watch:?}"
    );
    assert!(
        api.seen()[0].query_has("fieldSelector=metadata.name=n1"),
        "{:?}",
        api.seen()
    );
    assert_eq!(
        src.node_network().expect("synced"),
        Some(Default::default())
    );
    let mut changes = src.changes().expect("a change signal");
    changes.mark_unchanged();
    let node = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "n1", "resourceVersion": "9", "annotations": {MGMT_ANNOTATION: doc}}});
    watch_events(reply, &[("MODIFIED", node)]);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("the annotation's event wakes the management-port loop")
            .expect("open");
    });
    let n = src.node_network().expect("parses").expect("known");
    assert_eq!(n.management_ports.len(), 1);
    assert_eq!(
        n.management_ports[0].service_cidrs[0].to_string(),
        "10.96.0.0/16"
    );
    api.assert_all_allowed();
    rt.shutdown_background();
}

/// The `cni:` section of charts/ycloud/api-calls.yaml as `(group, resource, verb)` triples.
fn chart_cni_calls() -> std::collections::BTreeSet<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ycloud/api-calls.yaml");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("api-calls.yaml"))
            .expect("yaml");
    let mut out = std::collections::BTreeSet::new();
    for rule in doc["cni"].as_sequence().expect("a cni: list") {
        assert!(
            rule.get("scope")
                .is_none_or(|s| s.as_str() == Some("cluster")),
            "the daemon's grants are cluster-wide: {rule:?}"
        );
        let group = rule["group"].as_str().expect("group");
        for r in rule["resources"].as_sequence().expect("resources") {
            for v in rule["verbs"].as_sequence().expect("verbs") {
                out.insert((
                    group.to_string(),
                    r.as_str().expect("resource").to_string(),
                    v.as_str().expect("verb").to_string(),
                ));
            }
        }
    }
    out
}

fn table_calls() -> std::collections::BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .flat_map(|c| {
            c.resources.iter().flat_map(move |r| {
                c.verbs
                    .iter()
                    .map(move |v| (c.group.to_string(), r.to_string(), v.to_string()))
            })
        })
        .collect()
}

#[test]
fn the_api_call_table_equals_the_cni_section_of_the_chart_list() {
    assert_eq!(
        table_calls(),
        chart_cni_calls(),
        "cni/src/kube/api_calls.rs and the cni: section of charts/ycloud/api-calls.yaml differ"
    );
}

#[test]
fn every_call_in_the_table_is_one_the_daemon_makes_and_it_makes_no_other() {
    // Pod watch, Node watch and the dpu patches, as the daemon runs them.
    let rt = runtime_in(None);
    let store = PodStore::default();
    store
        .lock()
        .expect("store")
        .insert(("ns".into(), "web".into()), BTreeMap::new());
    let (client, mut api) = mock_api(&rt, BTreeMap::new(), store);
    let client_for_probes = client.clone();
    let ex = rt.block_on(async {
        let c = client.clone();
        let (pods, _node) =
            tokio::spawn(async move { (k::watch_pods(c.clone(), "n1"), k::watch_node(c, "n1")) })
                .await
                .expect("spawn");
        Exchange::Kube(KubeExchange { client, pods })
    });
    let (_, w1) = api.next_watch(&rt, "/api/v1/pods");
    let (_, w2) = api.next_watch(&rt, "/api/v1/nodes");
    let req = VfRequest {
        pf_id: 0,
        vf_id: 1,
        sandbox_id: "s".into(),
    };
    rt.block_on(ex.put_request("ns", "web", &req))
        .expect("patch");
    // The probe runner: its watch of this node's NetworkProbes, and a status apply.
    let probe_client = client_for_probes.clone();
    let runner = rt.spawn(async move {
        ycloud_cni::probes::cluster::ClusterRunner::new(
            ycloud_cni::probes::cluster::ClusterConfig::new("n1".into(), 4),
            probe_client,
            Arc::new(ycloud_cni::probes::PodNetnsStore::in_memory()),
        )
        .run()
        .await
    });
    let (_, w3) = api.next_watch(&rt, "/apis/ycloud.io/v1alpha1/networkprobes");
    let st = ycloud_crds::NetworkProbeStatus {
        healthy: Some(true),
        ..Default::default()
    };
    rt.block_on(ycloud_cni::probes::cluster::apply_status(
        &client_for_probes,
        "ns",
        "web-10-0-0-11-80",
        &st,
    ))
    .expect("status apply");
    runner.abort();
    api.assert_all_allowed();
    let observed: std::collections::BTreeSet<_> = api.seen().iter().map(Seen::rbac).collect();
    assert_eq!(
        observed,
        table_calls(),
        "the table grants a call the daemon never makes (or misses one)"
    );
    drop((w1, w2, w3));
    rt.shutdown_background();
}
