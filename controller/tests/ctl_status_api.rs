//! `ycloudctl status` from the Kubernetes API, through the library function the binary
//! calls (`ctl::status_api::read`), against kube-rs's tower-test mock API server (the API
//! server is the one thing these tests cannot run), plus a real client against a loopback
//! port nobody listens on.
#![cfg(feature = "kube")]

#[path = "support/kube_mock.rs"]
mod kube_mock;

use std::fs;
use std::time::Duration;

use kube_mock::MockApi;
use serde_json::{Value, json};
use ycloud_controller::ctl::status::{self, render};
use ycloud_controller::ctl::status_api::{self, Query};

fn service(ns: &str, name: &str, ready: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "ycloud.io/v1alpha1",
        "kind": "YusurService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scenarios": ["ClusterIP", "EIP"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "backends": [{"type": "Pod", "selector": {"matchLabels": {"app": name}}}]
        },
        "status": {
            "vpc": "tenant-a",
            "clusterIPs": ["10.96.0.100"],
            "eip": "200.0.0.100",
            "backends": {"ready": 2, "total": 3},
            "conditions": [{"type": "Ready", "status": ready, "reason": reason,
                            "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "scenarios": [{"scenario": "ClusterIP", "state": "Programmed"},
                          {"scenario": "EIP", "state": "Pending", "message": "no gateway yet"}]
        }
    })
}

fn two_services(api: &MockApi) -> [Value; 2] {
    let web = service("shop", "web", "True", "Programmed", "");
    let bad = service(
        "ops",
        "bad",
        "False",
        "InvalidSpec",
        "spec.clusterIPs[0]: 10.96.0.100 is already used",
    );
    api.put(web.clone());
    api.put(bad.clone());
    [web, bad]
}

const SERVER: &str = "https://api.test:6443/";

#[tokio::test]
async fn the_api_shows_the_same_rows_as_the_status_directory_with_one_list_call() {
    let api = MockApi::default();
    let docs = two_services(&api);
    let r = status_api::read(api.client(), SERVER, &Query::default())
        .await
        .expect("status from the API");
    assert_eq!(r.api_server.as_deref(), Some(SERVER));
    assert_eq!(
        r.services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["ops/bad", "shop/web"]
    );
    let web = &r.services[1];
    assert_eq!(web.vpc.as_deref(), Some("tenant-a"));
    assert_eq!(web.cluster_ips, ["10.96.0.100"]);
    assert_eq!((web.backends_ready, web.backends_total), (2, 3));
    assert_eq!(
        web.scenarios,
        [
            ("ClusterIP".to_owned(), "Programmed".to_owned()),
            ("EIP".to_owned(), "Pending".to_owned())
        ]
    );
    assert!(!r.all_ready(), "ops/bad is not ready");
    let text = render(&r);
    assert!(
        text.starts_with(&format!("API server {SERVER}: 2 service(s)\n")),
        "{text}"
    );
    assert!(text.contains("False (InvalidSpec)"), "{text}");
    assert!(
        text.contains("ops/bad: spec.clusterIPs[0]: 10.96.0.100 is already used"),
        "{text}"
    );

    // The same objects as status files: the same table below the first line.
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("controller.yaml"),
        "synced: true\nobjects: 2\nproblems: 1\n",
    )
    .unwrap();
    for doc in &docs {
        let ns = doc["metadata"]["namespace"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let dir = d.path().join("YusurService").join(ns);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("{name}.yaml")),
            serde_yaml::to_string(doc).unwrap(),
        )
        .unwrap();
    }
    let from_files = render(&status::read(d.path(), None).unwrap());
    let body = |t: &str| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(body(&text), body(&from_files));

    // One call: a list of yusurservices across namespaces, nothing else.
    assert_eq!(
        api.requests()
            .iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect::<Vec<_>>(),
        ["GET /apis/ycloud.io/v1alpha1/yusurservices"]
    );
}

#[tokio::test]
async fn a_namespace_or_one_service_lists_only_that_namespace() {
    let api = MockApi::default();
    two_services(&api);
    let q = Query {
        namespace: Some("shop".into()),
        service: None,
    };
    let r = status_api::read(api.client(), SERVER, &q).await.unwrap();
    assert_eq!(r.services.len(), 1);
    assert!(r.all_ready(), "shop/web is ready");
    let q = Query {
        namespace: None,
        service: Some("ops/bad".into()),
    };
    let r = status_api::read(api.client(), SERVER, &q).await.unwrap();
    assert_eq!(r.services[0].name, "ops/bad");
    let paths: Vec<String> = api.requests().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "/apis/ycloud.io/v1alpha1/namespaces/shop/yusurservices",
            "/apis/ycloud.io/v1alpha1/namespaces/ops/yusurservices"
        ]
    );

    let q = Query {
        namespace: None,
        service: Some("shop/nope".into()),
    };
    let err = status_api::read(api.client(), SERVER, &q)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shop/nope") && err.contains("no YusurService") && err.contains(SERVER),
        "{err}"
    );
    let q = Query {
        namespace: Some("ops".into()),
        service: Some("shop/web".into()),
    };
    let err = status_api::read(api.client(), SERVER, &q)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "service shop/web is not in namespace ops (given with -n)"
    );
}

#[tokio::test]
async fn a_missing_crd_or_a_forbidden_list_says_so() {
    let api = MockApi::default();
    two_services(&api);
    api.fail("GET", "yusurservices", 404, 1);
    let err = status_api::read(api.client(), SERVER, &Query::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not serve yusurservices.ycloud.io")
            && err.contains("CRDs are not installed")
            && err.contains(SERVER),
        "{err}"
    );
    api.fail("GET", "yusurservices", 403, 1);
    let err = status_api::read(api.client(), SERVER, &Query::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forbidden") && err.contains("all namespaces") && err.contains(SERVER),
        "{err}"
    );
}

#[test]
fn an_unreachable_api_server_is_named_and_does_not_hang() {
    // A loopback port that was free a moment ago: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = tempfile::tempdir().unwrap();
    let kubeconfig = d.path().join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
             clusters: [{{name: t, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: t, user: {{token: x}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: t}}}}]\n"
        ),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let err = status_api::read_blocking(
        Some(&kubeconfig),
        None,
        &Query::default(),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let text = err.to_string();
    assert!(
        text.contains("listing yusurservices.ycloud.io in all namespaces")
            && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );

    let missing = d.path().join("nope");
    let err = status_api::read_blocking(
        Some(&missing),
        None,
        &Query::default(),
        Duration::from_secs(5),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("no Kubernetes API configuration: reading kubeconfig")
            && err.contains(&missing.display().to_string()),
        "{err}"
    );
}
