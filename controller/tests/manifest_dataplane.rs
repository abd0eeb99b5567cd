//! The controller binary drives a real OVN sandbox (NB, SB, northd, OVS on the userspace
//! datapath, ovn-controller) from a manifest directory: pods plugged with the addresses
//! the controller decided (its status files, as the CNI reads them) reach a ClusterIP
//! service by real HTTP, and a backend deleted from the manifests stops getting traffic.

use std::time::Duration;

use ycloud_testsupport::sandbox::{Sandbox, SandboxOptions};

#[path = "support/manifest.rs"]
mod manifest;
use manifest::{Controller, bodies, plug, wait_for};

const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: ycloud.io/v1alpha1
kind: Vpc
metadata: {name: demo}
spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [shop]}
---
apiVersion: ycloud.io/v1alpha1
kind: Subnet
metadata: {name: d1}
spec: {vpc: demo, cidrBlocks: [10.0.1.0/24], namespaces: [shop]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
";

const WEB_2: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
";

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {containers: [{name: c}]}
";

#[test]
fn pods_addressed_by_the_controller_reach_a_cluster_ip_and_a_deleted_backend_leaves_it() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("00-network.yaml"), MANIFESTS).expect("write");
    std::fs::write(dir.path().join("10-pods.yaml"), PODS).expect("write");
    std::fs::write(dir.path().join("11-web-2.yaml"), WEB_2).expect("write");
    let _ctl = Controller::start(dir.path(), sb.nb_unix(), &[]);
    let status = dir.path().join(".status");
    let web1 = plug(&sb, &status, "web-1");
    let web2 = plug(&sb, &status, "web-2");
    let client = plug(&sb, &status, "client");
    let _s1 = web1.http_server("web-1", 8080).expect("server web-1");
    let _s2 = web2.http_server("web-2", 8080).expect("server web-2");
    sb.wait_hv_sync().expect("hv sync");

    let url = "http://10.96.0.100:80/";
    let seen = wait_for("the VIP to answer", Duration::from_secs(30), || {
        bodies(&client, url, 20).ok()
    });
    assert!(
        seen.iter().all(|b| b == "web-1" || b == "web-2") && !seen.is_empty(),
        "{seen:?}"
    );

    // web-2 leaves the manifests: its LSP and its backend go; only web-1 answers.
    std::fs::remove_file(dir.path().join("11-web-2.yaml")).expect("rm");
    let seen = wait_for("web-2 to leave the VIP", Duration::from_secs(30), || {
        bodies(&client, url, 20)
            .ok()
            .filter(|s| s.len() == 1 && s.contains("web-1"))
    });
    assert_eq!(seen.len(), 1);
    assert!(
        sb.nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            "name=shop.web-2"
        ])
        .expect("nbctl")
        .is_empty(),
        "web-2's LSP is gone"
    );
}
