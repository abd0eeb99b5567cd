//! Cluster mode's reconcile semantics: the controller with a Kubernetes source (fed by
//! hand, as its reflectors would) and the API server as its status sink (a tower-test mock
//! API), against a REAL OVN_Northbound ovsdb-server.
//!
//! Finalizer before rows, status by server-side apply, nothing sent in a steady state,
//! invalid spec = condition + one event + no retry, a failed API write = retried, delete =
//! rows gone then finalizer removed (also when apply never ran), and a replica that is not
//! the leader writes nothing.
#![cfg(feature = "kube")]

#[path = "support/kube_mock.rs"]
mod kube_mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use kube::api::DynamicObject;
use kube_mock::MockApi;
use serde_json::Value;
use ycloud_controller::config::Args;
use ycloud_controller::kube::sink::ApiSink;
use ycloud_controller::kube::source::KubeSource;
use ycloud_controller::kube_status::FINALIZER;
use ycloud_controller::reconcile::{
    Backoff, Controller, Metrics, PassReport, Source, StatusSink, WriteGate,
};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {tenant: a}}
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
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
"#;

/// A service deleted before the controller ever programmed it.
const GHOST: &str = r#"
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: ghost, namespace: shop, finalizers: [ycloud.io/cleanup], deletionTimestamp: "2026-01-01T00:00:00Z"}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.200]
  ports: [{name: http, protocol: TCP, port: 80}]
"#;

pub struct Harness {
    pub nb: OvsdbServer,
    pub api: MockApi,
    pub ctl: Controller,
    pub leader: Arc<AtomicBool>,
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

impl Harness {
    pub async fn start(objects: &str, leader: bool) -> Harness {
        let nb = OvsdbServer::start(SchemaFile::Nb).expect("start NB ovsdb-server");
        let api = MockApi::default();
        for (i, mut d) in docs(objects).into_iter().enumerate() {
            d["metadata"]["uid"] = format!("uid-{i}").into();
            d["metadata"]["generation"] = 1.into();
            api.put(d);
        }
        let opts = Args::try_parse_from([
            "ycloud-controller",
            "--source",
            "kube",
            "--nb",
            &nb.unix_remote(),
        ])
        .expect("flags")
        .options()
        .expect("options");
        let flag = Arc::new(AtomicBool::new(leader));
        let f = flag.clone();
        let gate = WriteGate::new(move || f.load(Ordering::SeqCst));
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
            nb,
            api,
            ctl,
            leader: flag,
        };
        h.echo();
        h
    }

    /// What the watches would deliver: every object as the API server now has it.
    pub fn echo(&mut self) {
        let Source::Kube(src) = self.ctl.source_mut() else {
            panic!("a kube source");
        };
        for v in self.api.objects() {
            if let Ok(obj) = serde_json::from_value::<DynamicObject>(v) {
                src.apply(obj);
            }
        }
    }

    /// Changes an object on the API server (and the watch delivers it).
    pub fn edit(&mut self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut v = self.api.get(path).expect("object");
        f(&mut v);
        let generation = v["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        v["metadata"]["generation"] = generation.into();
        self.api.put(v);
        self.echo();
    }

    pub async fn pass(&mut self) -> PassReport {
        self.ctl.refresh();
        self.ctl.pass().await
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.nb.unix_remote()))
            .args(["--no-leader-only", "--timeout=10"])
            .args(args)
            .output()
            .expect("run ovn-nbctl");
        assert!(
            out.status.success(),
            "ovn-nbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn lbs(&self) -> String {
        self.nbctl(&["--columns=name,vips", "list", "Load_Balancer"])
    }
}

const WEB: &str = "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/web";
const GHOST_PATH: &str = "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices/ghost";

fn ready(obj: &Value) -> (String, String) {
    let c = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_new_service_gets_the_finalizer_then_its_rows_then_its_status_and_a_steady_state_sends_nothing()
 {
    let mut h = Harness::start(OBJECTS, true).await;
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    assert!(report.ops > 0);
    assert!(h.lbs().contains("10.96.0.100:80"), "{}", h.lbs());

    let seen = h.api.seen();
    let pos = |f: &dyn Fn(&kube_mock::Seen) -> bool| seen.iter().position(f);
    let fin = pos(&|s| s.method == "PATCH" && s.path == WEB).expect("finalizer patch");
    assert_eq!(seen[fin].content_type, "application/json-patch+json");
    assert_eq!(
        seen[fin].body[1],
        serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
    );
    let st = pos(&|s| s.method == "PATCH" && s.path == format!("{WEB}/status")).expect("status");
    assert!(
        fin < st,
        "the finalizer goes on before anything else is written"
    );
    assert_eq!(seen[st].content_type, "application/apply-patch+yaml");
    assert!(
        seen[st].query.contains("fieldManager=ycloud-controller"),
        "{}",
        seen[st].query
    );
    let body = &seen[st].body;
    assert_eq!(body["status"]["observedGeneration"], 1);
    assert_eq!(body["status"]["clusterIPs"][0], "10.96.0.100");
    let web = h.api.get(WEB).expect("web");
    assert_eq!(ready(&web), ("True".into(), "Programmed".into()));
    assert_eq!(web["metadata"]["finalizers"][0], FINALIZER);
    // The VPC owns rows too: it has the finalizer; a Subnet does not (its VPC owns them).
    let vpc = h
        .api
        .get("/apis/ycloud.io/v1alpha1/vpcs/tenant-a")
        .expect("vpc");
    assert_eq!(vpc["metadata"]["finalizers"][0], FINALIZER);
    let subnet = h
        .api
        .get("/apis/ycloud.io/v1alpha1/subnets/a-web")
        .expect("subnet");
    assert!(subnet["metadata"]["finalizers"].is_null());
    assert_eq!(ready(&subnet).0, "True");
    // IPAM's answer for the pod, and the node's management port.
    let pod = h
        .api
        .get("/api/v1/namespaces/shop/pods/web-1")
        .expect("pod");
    let net: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["ycloud.io/network"]
            .as_str()
            .expect("network annotation"),
    )
    .expect("json");
    assert!(net.to_string().contains("10.0.1."), "{net}");
    let node = h.api.get("/api/v1/nodes/node-1").expect("node");
    assert!(
        node["metadata"]["annotations"]["ycloud.io/management-ports"]
            .as_str()
            .is_some_and(|a| a.contains("managementPorts")),
        "{node}"
    );
    // All ready at first sight: no event.
    assert!(!seen.iter().any(|s| s.path.contains("/events")));

    // The watches bring our writes back: the next pass has nothing to send.
    h.echo();
    h.api.clear();
    let report = h.pass().await;
    assert_eq!(report.ops, 0, "{report:?}");
    assert!(!report.needs_retry());
    assert_eq!(h.api.requests(), Vec::<(String, String, String)>::new());
}

#[tokio::test]
async fn an_invalid_spec_is_a_condition_and_one_event_and_waits_for_a_change() {
    let mut h = Harness::start(OBJECTS, true).await;
    assert!(!h.pass().await.needs_retry());
    h.echo();
    h.api.clear();
    h.edit(WEB, |v| {
        v["spec"]["clusterIPs"] = serde_json::json!(["10.99.0.1"])
    });
    let report = h.pass().await;
    assert!(
        !report.needs_retry(),
        "invalid spec is permanent: no retry, {report:?}"
    );
    assert_eq!(report.problems, 1);
    let web = h.api.get(WEB).expect("web");
    assert_eq!(ready(&web), ("False".into(), "InvalidSpec".into()));
    assert_eq!(web["status"]["observedGeneration"], 2);
    // Its rows stay as they were (an invalid object's owner is not planned).
    assert!(h.lbs().contains("10.96.0.100:80"), "{}", h.lbs());
    let events: Vec<_> = h
        .api
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/events"))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(e.body["type"], "Warning");
    assert_eq!(e.body["reason"], "InvalidSpec");
    assert_eq!(e.body["regarding"]["name"], "web");
    assert_eq!(e.body["regarding"]["kind"], "YusurService");
    assert!(
        e.body["note"]
            .as_str()
            .is_some_and(|n| n.contains("10.99.0.1")),
        "the note says what is wrong: {}",
        e.body["note"]
    );
    // Nothing changes: no status, no second event.
    h.echo();
    h.api.clear();
    assert!(!h.pass().await.needs_retry());
    assert_eq!(h.api.requests(), Vec::<(String, String, String)>::new());
    // Fixed: Ready again, with a Normal event.
    h.edit(WEB, |v| {
        v["spec"]["clusterIPs"] = serde_json::json!(["10.96.0.100"])
    });
    assert!(!h.pass().await.needs_retry());
    let web = h.api.get(WEB).expect("web");
    assert_eq!(ready(&web), ("True".into(), "Programmed".into()));
    let normal = h
        .api
        .seen()
        .into_iter()
        .find(|s| s.path.contains("/events"))
        .expect("recovery event");
    assert_eq!(normal.body["type"], "Normal");
}

#[tokio::test]
async fn a_failed_api_write_is_transient_and_retried_until_it_succeeds() {
    let mut h = Harness::start(OBJECTS, true).await;
    h.api.fail("PATCH", "/yusurservices/web/status", 409, 1);
    let report = h.pass().await;
    assert!(report.needs_retry(), "{report:?}");
    assert!(
        report.failed.contains_key("YusurService shop/web"),
        "{report:?}"
    );
    // NB was programmed anyway; only the status is behind.
    assert!(h.lbs().contains("10.96.0.100:80"));
    h.echo();
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    assert_eq!(
        ready(&h.api.get(WEB).expect("web")),
        ("True".into(), "Programmed".into())
    );
    // The loop waits longer after each failure, and starts over after a success.
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 8]);
    b.reset();
    assert_eq!(b.next_delay(), Duration::from_secs(1));
}

#[tokio::test]
async fn a_deleted_service_loses_its_rows_then_its_finalizer_even_if_never_programmed() {
    let mut h = Harness::start(&format!("{OBJECTS}---{GHOST}"), true).await;
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    // The ghost never had rows: its cleanup is a no-op and its finalizer goes.
    assert!(!h.lbs().contains("10.96.0.200"));
    let ghost = h.api.get(GHOST_PATH).expect("ghost");
    assert_eq!(ghost["metadata"]["finalizers"], serde_json::json!([]));
    assert!(
        !h.api
            .seen()
            .iter()
            .any(|s| s.path == format!("{GHOST_PATH}/status")),
        "no status for an object being deleted"
    );
    assert!(h.lbs().contains("10.96.0.100:80"));
    h.echo();
    h.api.clear();

    // `kubectl delete` of web: the API server sets deletionTimestamp and waits for us.
    h.edit(WEB, |v| {
        v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    });
    let report = h.pass().await;
    assert!(!report.needs_retry(), "{report:?}");
    assert!(
        !h.lbs().contains("10.96.0.100"),
        "rows gone from NB: {}",
        h.lbs()
    );
    let seen = h.api.seen();
    let patch = seen
        .iter()
        .find(|s| s.method == "PATCH" && s.path == WEB)
        .expect("finalizer removal");
    assert_eq!(
        patch.body,
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    // Cleanup is idempotent: another pass over the same (still present) object sends
    // nothing new to NB and finds nothing to remove.
    h.echo();
    h.api.clear();
    let report = h.pass().await;
    assert_eq!(report.ops, 0);
    assert!(!report.needs_retry(), "{report:?}");
}

#[tokio::test]
async fn a_replica_that_is_not_the_leader_writes_nothing_and_starts_writing_when_it_leads() {
    let mut h = Harness::start(OBJECTS, false).await;
    let report = h.pass().await;
    assert!(report.skipped);
    assert_eq!(h.api.requests(), Vec::<(String, String, String)>::new());
    assert_eq!(h.lbs(), "", "no NB write");
    assert_eq!(h.nbctl(&["lr-list"]), "");
    h.leader.store(true, Ordering::SeqCst);
    let report = h.pass().await;
    assert!(!report.skipped && !report.needs_retry(), "{report:?}");
    assert!(h.lbs().contains("10.96.0.100:80"));
    // Leadership lost between passes: nothing more is written, even with a change waiting.
    h.echo();
    h.leader.store(false, Ordering::SeqCst);
    h.api.clear();
    h.edit(WEB, |v| {
        v["spec"]["clusterIPs"] = serde_json::json!(["10.96.0.101"])
    });
    h.api.clear();
    assert!(h.pass().await.skipped);
    assert_eq!(h.api.requests(), Vec::<(String, String, String)>::new());
    assert!(h.lbs().contains("10.96.0.100:80") && !h.lbs().contains("10.96.0.101"));
}

/// More kinds, so every listed call is made: an EIP gateway (finalizer, status), a VNicIP
/// (status).
const MORE: &str = r#"
apiVersion: ycloud.io/v1alpha1
kind: EipGateway
metadata: {name: public}
spec:
  externalNetwork: {cidr: 200.0.0.0/24, gateway: 200.0.0.1, address: 200.0.0.2, localnet: physnet1}
  pool: [200.0.0.100..200.0.0.199]
  gatewayChassis: [{name: node-1, priority: 100}]
---
apiVersion: ycloud.io/v1alpha1
kind: VNicIP
metadata: {name: appliance, namespace: shop, labels: {app: legacy}}
spec: {kind: Generic, subnet: a-web}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: virtualmachineinstances.kubevirt.io}
spec:
  group: kubevirt.io
  names: {kind: VirtualMachineInstance, plural: virtualmachineinstances}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true}]
"#;

#[derive(Debug, serde::Deserialize)]
struct FileEntry {
    group: String,
    resources: Vec<String>,
    verbs: Vec<String>,
    scope: Option<String>,
}

/// #10: the code's list of API calls equals the chart's `api-calls.yaml` (controller
/// section), every request the scenarios make is in it, and every entry is made by one.
#[tokio::test]
async fn every_api_call_the_controller_makes_is_listed_for_the_chart_and_every_listed_call_is_made()
{
    use ycloud_controller::kube::api_calls::{CONTROLLER, classify, grants};

    // 1. The table is the file.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ycloud/api-calls.yaml");
    let file: std::collections::BTreeMap<String, Vec<FileEntry>> =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("api-calls.yaml"))
            .expect("api-calls.yaml parses");
    let mut in_file = std::collections::BTreeSet::new();
    for e in &file["controller"] {
        for r in &e.resources {
            for v in &e.verbs {
                let scope = e.scope.clone().unwrap_or_else(|| "cluster".into());
                in_file.insert((scope, e.group.clone(), r.clone(), v.clone()));
            }
        }
    }
    let in_code: std::collections::BTreeSet<_> = grants(CONTROLLER)
        .into_iter()
        .map(|(s, g, r, v)| (s.as_str().to_owned(), g, r, v))
        .collect();
    let missing: Vec<_> = in_code.difference(&in_file).collect();
    let extra: Vec<_> = in_file.difference(&in_code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "api-calls.yaml (controller) and kube::api_calls::CONTROLLER differ:\n  in code, not in the file: {missing:?}\n  in the file, not in code: {extra:?}"
    );

    // 2. Every call of the scenarios: a pass over every kind (finalizers, status,
    // annotations, an object being deleted) ...
    let mut h = Harness::start(&format!("{OBJECTS}---{GHOST}---{MORE}"), true).await;
    let report = h.pass().await;
    assert!(
        report.failed.keys().all(|k| !k.contains("shop/web")),
        "{report:?}"
    );
    h.echo();
    // ... events: a failure (create), a recovery, the same failure again (a patch of the
    // first event's series) ...
    for ip in ["10.99.0.1", "10.96.0.100", "10.99.0.1"] {
        h.edit(WEB, |v| v["spec"]["clusterIPs"] = serde_json::json!([ip]));
        h.pass().await;
        h.echo();
    }
    // ... NetworkProbes: created by apply when the service gets a health check, updated
    // when it changes, deleted when it goes (the service valid again) ...
    for hc in [
        Some(serde_json::json!({"type": "TCP", "intervalMillis": 500, "timeoutMillis": 300})),
        Some(serde_json::json!({"type": "TCP", "intervalMillis": 1000, "timeoutMillis": 300})),
        None,
    ] {
        h.edit(WEB, |v| {
            v["spec"]["clusterIPs"] = serde_json::json!(["10.96.0.100"]);
            match hc {
                Some(hc) => v["spec"]["healthCheck"] = hc,
                None => {
                    v["spec"]
                        .as_object_mut()
                        .expect("spec")
                        .remove("healthCheck");
                }
            }
        });
        h.pass().await;
        h.echo();
    }
    assert!(
        h.api
            .seen()
            .iter()
            .any(|s| s.method == "DELETE" && s.path.contains("/networkprobes/")),
        "the probes were deleted"
    );
    // ... the status of a probe the controller runs itself (a backend no node hosts) ...
    let listener = std::net::TcpListener::bind("127.0.10.1:0").expect("listen on 127.0.10.1");
    for d in kube_mock::local_backend_objects(listener.local_addr().expect("addr").port()) {
        h.api.put(d);
    }
    h.echo();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !h.api.seen().iter().any(|s| {
        s.method == "PATCH" && s.path.contains("/networkprobes/db-") && s.path.ends_with("/status")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller never wrote the status of the probe it runs"
        );
        h.pass().await;
        h.echo();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(listener);
    // ... leader election (create, then get and update) ...
    let lease = ycloud_controller::kube::lease::LeaseConfig {
        namespace: "ycloud".into(),
        name: "ycloud-controller".into(),
        identity: "test-0".into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };
    let mut elector = ycloud_controller::kube::lease::Elector::new(h.api.client(), lease);
    assert!(elector.step().await.expect("create"));
    assert!(elector.step().await.expect("renew"));
    // ... and the reflectors of every kind, KubeVirt's found by its CRD.
    let mut src = KubeSource::start(h.api.client(), Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let vmi_watch = h.api.requests().iter().any(|(m, p, q)| {
            m == "GET" && p.ends_with("/virtualmachineinstances") && q.contains("watch=true")
        });
        if let Some(read) = src.poll()
            && vmi_watch
            && src.is_synced()
        {
            assert!(read.store.services.contains_key("shop/web"));
            assert!(read.store.gateways.contains_key("public"));
            assert!(read.problems.is_empty(), "{:?}", read.problems);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reflectors never synced: {:?}",
            h.api.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(src);

    let table: std::collections::BTreeSet<(String, String, String)> = in_code
        .iter()
        .map(|(_, g, r, v)| (g.clone(), r.clone(), v.clone()))
        .collect();
    let mut observed = std::collections::BTreeSet::new();
    for s in h.api.seen() {
        let call = classify(&s.method, &s.path, &s.query).unwrap_or_else(|| {
            panic!(
                "{} {}?{} is not a resource request",
                s.method, s.path, s.query
            )
        });
        if s.created {
            observed.insert((call.0.clone(), call.1.clone(), "create".to_owned()));
        }
        observed.insert(call);
    }
    let unlisted: Vec<_> = observed.difference(&table).collect();
    let unused: Vec<_> = table.difference(&observed).collect();
    assert!(
        unlisted.is_empty(),
        "the controller made calls api-calls.yaml does not grant: {unlisted:?}"
    );
    assert!(
        unused.is_empty(),
        "api-calls.yaml grants calls no scenario makes (remove them, or add the scenario): {unused:?}"
    );
}
