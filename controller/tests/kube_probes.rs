//! NetworkProbes in cluster mode: the controller with a Kubernetes source (fed by hand, as
//! its reflectors would) and a tower-test mock API server as its sink, against a REAL
//! OVN_Northbound ovsdb-server.
//!
//! One probe per backend address by server-side apply (owner reference, labels), nothing
//! sent in a steady state, an update when the health check changes, a deletion when the
//! backend goes, a verdict in `.status` (as the node daemon writes it) taking the backend
//! out of the VIP, and no write at all from a replica that is not the leader.
#![cfg(feature = "kube")]

#[path = "support/kube_mock.rs"]
mod kube_mock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use kube::api::DynamicObject;
use kube_mock::MockApi;
use serde_json::Value;
use ycloud_controller::config::Args;
use ycloud_controller::kube::sink::{ApiSink, SinkError};
use ycloud_controller::kube::source::KubeSource;
use ycloud_controller::reconcile::{
    Controller, Metrics, PassReport, Source, StatusSink, WriteGate,
};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: ycloud.io/v1alpha1
kind: Vpc
metadata: {name: tenant-a}
spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [shop], joinCIDR: 100.64.0.0/16}
---
apiVersion: ycloud.io/v1alpha1
kind: Subnet
metadata: {name: a-web}
spec: {vpc: tenant-a, cidrBlocks: [10.0.1.0/24], namespaces: [shop]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
  healthCheck: {type: TCP, intervalMillis: 500, timeoutMillis: 300, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
"#;

const WEB: &str = "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/web";
const PROBES: &str = "/apis/ycloud.io/v1alpha1/namespaces/shop/networkprobes";

struct Harness {
    _nb: OvsdbServer,
    nb_remote: String,
    api: MockApi,
    ctl: Controller,
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

impl Harness {
    async fn start(leader: bool) -> Harness {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("start NB ovsdb-server");
        let api = MockApi::default();
        for (i, mut d) in docs(OBJECTS).into_iter().enumerate() {
            d["metadata"]["uid"] = format!("uid-{i}").into();
            d["metadata"]["generation"] = 1.into();
            api.put(d);
        }
        let nb_remote = nb.unix_remote();
        let opts =
            Args::try_parse_from(["ycloud-controller", "--source", "kube", "--nb", &nb_remote])
                .expect("flags")
                .options()
                .expect("options");
        let flag = Arc::new(AtomicBool::new(leader));
        let gate = WriteGate::new(move || flag.load(Ordering::SeqCst));
        let sink = ApiSink::new(api.client(), Some("test-0".into()), gate.clone());
        let ctl = Controller::connect_with(
            opts,
            Arc::new(Metrics::default()),
            Source::Kube(Box::new(KubeSource::manual())),
            StatusSink::Api(Box::new(sink)),
            gate,
        )
        .await
        .expect("connect");
        let mut h = Harness {
            _nb: nb,
            nb_remote,
            api,
            ctl,
        };
        h.echo();
        h
    }

    fn src(&mut self) -> &mut KubeSource {
        let Source::Kube(src) = self.ctl.source_mut() else {
            panic!("a kube source");
        };
        src
    }

    /// What the watches would deliver: every object as the API server now has it.
    fn echo(&mut self) {
        for v in self.api.objects() {
            if let Ok(obj) = serde_json::from_value::<DynamicObject>(v) {
                self.src().apply(obj);
            }
        }
    }

    /// Deletes an object on the API server (and the watch delivers the deletion).
    fn remove(&mut self, path: &str) {
        let v = self.api.get(path).expect("object");
        self.api.remove(path);
        let obj: DynamicObject = serde_json::from_value(v).expect("object");
        self.src().delete(obj);
    }

    fn edit(&mut self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut v = self.api.get(path).expect("object");
        f(&mut v);
        let generation = v["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        v["metadata"]["generation"] = generation.into();
        self.api.put(v);
        self.echo();
    }

    async fn pass(&mut self) -> PassReport {
        self.ctl.refresh();
        self.ctl.pass().await
    }

    /// The probes the mock API server holds, by name.
    fn probes(&self) -> BTreeMap<String, Value> {
        self.api
            .objects()
            .into_iter()
            .filter(|o| o["kind"] == "NetworkProbe")
            .map(|o| {
                (
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o,
                )
            })
            .collect()
    }

    fn vips(&self) -> String {
        let out = std::process::Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.nb_remote))
            .args([
                "--no-leader-only",
                "--timeout=10",
                "--columns=vips",
                "list",
                "Load_Balancer",
            ])
            .output()
            .expect("run ovn-nbctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The pod's address IPAM gave it (the pass writes it into the pod's annotation).
fn pod_ip(h: &Harness, pod: &str) -> String {
    let p = h
        .api
        .get(&format!("/api/v1/namespaces/shop/pods/{pod}"))
        .expect("pod");
    let net: Value = serde_json::from_str(
        p["metadata"]["annotations"]["ycloud.io/network"]
            .as_str()
            .expect("network annotation"),
    )
    .expect("json");
    net["ips"][0]
        .as_str()
        .and_then(|c| c.split('/').next())
        .unwrap_or_else(|| panic!("no address in {net}"))
        .to_owned()
}

fn probe_name(ip: &str) -> String {
    format!("web-{}-8080", ip.replace('.', "-"))
}

#[tokio::test]
async fn each_backend_gets_one_owned_labelled_probe_by_server_side_apply_and_a_steady_state_sends_nothing()
 {
    let mut h = Harness::start(true).await;
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    let ip1 = pod_ip(&h, "web-1");
    let ip2 = pod_ip(&h, "web-2");
    let probes = h.probes();
    assert_eq!(
        probes.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![probe_name(&ip1), probe_name(&ip2)];
            v.sort();
            v
        },
        "one probe per backend address"
    );
    let seen = h.api.seen();
    let applies: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.starts_with(PROBES))
        .collect();
    assert_eq!(applies.len(), 2, "{applies:?}");
    let a = applies
        .iter()
        .find(|s| s.path == format!("{PROBES}/{}", probe_name(&ip1)))
        .expect("web-1's probe applied");
    assert_eq!(a.content_type, "application/apply-patch+yaml");
    assert!(
        a.query.contains("fieldManager=ycloud-controller") && a.query.contains("force=true"),
        "{}",
        a.query
    );
    let web = h.api.get(WEB).expect("web");
    assert_eq!(
        a.body["metadata"]["ownerReferences"],
        serde_json::json!([{"apiVersion": "ycloud.io/v1alpha1", "kind": "YusurService",
            "name": "web", "uid": web["metadata"]["uid"], "controller": true,
            "blockOwnerDeletion": true}])
    );
    assert_eq!(
        a.body["metadata"]["labels"],
        serde_json::json!({"ycloud.io/service": "web", "ycloud.io/node": "node-1",
            "ycloud.io/managed-by": "ycloud-controller"})
    );
    assert_eq!(a.body["spec"]["backend"]["address"], ip1.as_str());
    assert_eq!(a.body["spec"]["backend"]["node"], "node-1");
    assert_eq!(a.body["spec"]["backend"]["port"], 8080);
    assert_eq!(a.body["spec"]["probe"]["timeoutMillis"], 300);
    assert!(a.body.get("status").is_none(), "the daemon owns the status");

    // The watch brings the probes back: the next pass sends nothing for them.
    h.echo();
    h.api.clear();
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    let to_probes: Vec<_> = h
        .api
        .requests()
        .into_iter()
        .filter(|(_, p, _)| p.contains("networkprobes"))
        .collect();
    assert!(to_probes.is_empty(), "{to_probes:?}");
}

#[tokio::test]
async fn a_changed_health_check_updates_the_probes_and_a_gone_backend_loses_its_probe() {
    let mut h = Harness::start(true).await;
    assert!(!h.pass().await.needs_retry());
    let ip1 = pod_ip(&h, "web-1");
    let ip2 = pod_ip(&h, "web-2");
    h.echo();
    h.api.clear();

    h.edit(WEB, |v| {
        v["spec"]["healthCheck"]["timeoutMillis"] = 400.into()
    });
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    let applied: Vec<_> = h
        .api
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH" && s.path.starts_with(PROBES))
        .collect();
    assert_eq!(applied.len(), 2, "both probes updated: {applied:?}");
    for p in h.probes().values() {
        assert_eq!(p["spec"]["probe"]["timeoutMillis"], 400);
        assert_eq!(
            p["metadata"]["generation"], 2,
            "a new spec, a new generation"
        );
    }

    // web-2 goes: its probe is deleted, web-1's is left alone.
    h.echo();
    h.api.clear();
    h.remove("/api/v1/namespaces/shop/pods/web-2");
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    let to_probes: Vec<(String, String)> = h
        .api
        .requests()
        .into_iter()
        .filter(|(_, p, _)| p.contains("networkprobes"))
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(
        to_probes,
        vec![(
            "DELETE".to_owned(),
            format!("{PROBES}/{}", probe_name(&ip2))
        )]
    );
    assert_eq!(
        h.probes().keys().cloned().collect::<Vec<_>>(),
        vec![probe_name(&ip1)]
    );

    // The health check goes: no probes at all.
    h.echo();
    h.edit(WEB, |v| {
        v["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("healthCheck");
    });
    assert!(!h.pass().await.needs_retry());
    assert!(h.probes().is_empty(), "{:?}", h.probes().keys());
}

#[tokio::test]
async fn an_unhealthy_verdict_in_the_status_takes_the_backend_out_until_the_probe_changes() {
    let mut h = Harness::start(true).await;
    assert!(!h.pass().await.needs_retry());
    let ip2 = pod_ip(&h, "web-2");
    h.echo();
    assert!(h.vips().contains(&format!("{ip2}:8080")), "{}", h.vips());

    // The node daemon's verdict, as its status apply leaves the object.
    let path = format!("{PROBES}/{}", probe_name(&ip2));
    let mut p = h.api.get(&path).expect("probe");
    p["status"] = serde_json::json!({"observedGeneration": 1, "healthy": false,
        "consecutiveFailures": 2, "lastError": "connection refused"});
    h.api.put(p);
    h.echo();
    assert!(!h.pass().await.needs_retry());
    let vips = h.vips();
    assert!(
        !vips.contains(&format!("{ip2}:8080")),
        "web-2 is out: {vips}"
    );
    assert!(vips.contains("10.96.0.100:80"), "{vips}");

    // The check changes (generation 2): the old verdict no longer counts, web-2 is back
    // until its probe's own first verdict.
    h.edit(WEB, |v| {
        v["spec"]["healthCheck"]["timeoutMillis"] = 250.into()
    });
    assert!(!h.pass().await.needs_retry());
    h.echo();
    assert!(!h.pass().await.needs_retry());
    assert_eq!(
        h.api.get(&path).expect("probe")["metadata"]["generation"],
        2
    );
    assert!(h.vips().contains(&format!("{ip2}:8080")), "{}", h.vips());
}

#[tokio::test]
async fn a_replica_that_is_not_the_leader_writes_no_probe() {
    let mut h = Harness::start(false).await;
    assert!(h.pass().await.skipped);
    assert!(h.api.requests().is_empty(), "{:?}", h.api.requests());

    // The sink itself refuses too (leadership lost in the middle of a pass).
    let (mut sink, desired) = {
        let gate = WriteGate::new(|| false);
        let sink = ApiSink::new(h.api.client(), None, gate);
        let check = serde_yaml::from_str("{type: TCP, intervalMillis: 500}").expect("check");
        let p = ycloud_controller::probes::desired_probe(
            "shop",
            "web",
            &check,
            &ycloud_controller::probes::ProbeTarget {
                kind: ycloud_crds::ProbeBackendKind::Pod,
                name: Some("shop/web-1".into()),
                address: "10.0.1.11".parse().expect("ip"),
                node: Some("node-1".into()),
                target_port: 8080,
            },
        );
        (
            sink,
            BTreeMap::from([(ycloud_controller::probes::key_of(&p), p)]),
        )
    };
    let mut src = KubeSource::manual();
    for v in h.api.objects() {
        if let Ok(obj) = serde_json::from_value::<DynamicObject>(v) {
            src.apply(obj);
        }
    }
    src.poll();
    let (sent, errors) = sink.probes(&desired, &src).await;
    assert_eq!(sent, 0);
    assert!(
        matches!(errors.as_slice(), [(_, SinkError::NotLeader { .. })]),
        "{errors:?}"
    );
    assert!(h.api.requests().is_empty(), "{:?}", h.api.requests());
}

/// The status of the one probe of `shop/db` (a backend no node hosts) on the API server.
fn db_probe_status(h: &Harness) -> Option<Value> {
    h.probes()
        .into_iter()
        .find(|(name, _)| name.starts_with("db-"))
        .and_then(|(_, p)| p.get("status").cloned())
        .filter(|s| !s.is_null())
}

/// Passes (as the loop runs them when a verdict arrives) until `done`, for at most 20 s.
async fn pass_until(h: &mut Harness, what: &str, mut done: impl FnMut(&Harness) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done(h) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s; requests {:?}",
            h.api.requests()
        );
        h.pass().await;
        h.echo();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_backend_no_node_hosts_is_probed_by_the_controller_which_writes_the_verdict_to_the_probe_status()
 {
    let mut h = Harness::start(true).await;
    let listener = std::net::TcpListener::bind("127.0.10.1:0").expect("listen on 127.0.10.1");
    let port = listener.local_addr().expect("addr").port();
    for d in kube_mock::local_backend_objects(port) {
        h.api.put(d);
    }
    h.echo();
    assert!(!h.pass().await.needs_retry());
    h.echo();
    let backend = format!("127.0.10.1:{port}");
    assert!(
        h.vips().contains(&backend),
        "{}\n{:?}",
        h.vips(),
        h.api
            .get("/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/db")
            .map(|d| d["status"].clone())
    );

    // The probe object has no node label: no daemon watches it; the controller runs it and
    // applies its verdict to /status with its own field manager.
    let (_, probe) = h
        .probes()
        .into_iter()
        .find(|(n, _)| n.starts_with("db-"))
        .expect("a probe for db's backend");
    let labels = &probe["metadata"]["labels"];
    assert!(labels.get("ycloud.io/node").is_none(), "{labels}");
    pass_until(&mut h, "healthy in the probe's status", |h| {
        db_probe_status(h).is_some_and(|s| s["healthy"] == true)
    })
    .await;
    let patch = h
        .api
        .seen()
        .into_iter()
        .find(|s| {
            s.method == "PATCH"
                && s.path.contains("/networkprobes/db-")
                && s.path.ends_with("/status")
        })
        .expect("a status patch of db's probe");
    assert!(
        patch.query.contains("fieldManager=ycloud-controller"),
        "{}",
        patch.query
    );
    assert_eq!(patch.body["status"]["observedGeneration"], 1);

    // The backend stops: unhealthy after the threshold, out of the VIP; the rest stays.
    drop(listener);
    pass_until(&mut h, "unhealthy in the status and out of the VIP", |h| {
        db_probe_status(h).is_some_and(|s| s["healthy"] == false) && !h.vips().contains(&backend)
    })
    .await;
    assert!(h.vips().contains("10.96.0.100:80"), "{}", h.vips());

    // A steady state writes no more statuses than the scheduler's bound (one per 10 s).
    h.api.clear();
    for _ in 0..10 {
        h.pass().await;
        h.echo();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let writes = h
        .api
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.ends_with("/status"))
        .count();
    assert!(
        writes <= 1,
        "{writes} status writes in 0.5 s of a steady state"
    );
}
