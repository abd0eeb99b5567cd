//! OVN-native health checks end to end (root; a full OVN sandbox): the controller binary
//! in manifest mode programs a service with `healthCheck.native: true`; northd turns the
//! rows into SB `Service_Monitor`s, ovn-controller probes the backends from the subnet's
//! reserved source address; a backend whose server stops goes `offline` and stops getting
//! traffic, and comes back when it starts again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
  healthCheck: {type: TCP, native: true, intervalMillis: 2000, timeoutMillis: 1000, failureThreshold: 2, successThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {containers: [{name: c}]}
";

/// `ip → status` of the SB service monitors.
fn monitors(sb: &Sandbox) -> Vec<(String, String)> {
    let out = sb
        .sbctl(&[
            "--bare",
            "--format=csv",
            "--no-headings",
            "--columns=ip,status",
            "list",
            "Service_Monitor",
        ])
        .unwrap_or_default();
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (ip, st) = l.split_once(',')?;
            Some((
                ip.trim_matches('"').to_owned(),
                st.trim_matches('"').to_owned(),
            ))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_native_checked_backend_whose_server_stops_goes_offline_and_gets_no_traffic_in_a_sandbox() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("00-all.yaml"), MANIFESTS).expect("write");
    let _ctl = Controller::start(dir.path(), sb.nb_unix(), &[]);
    let status = dir.path().join(".status");
    let web1 = plug(&sb, &status, "web-1");
    let web2 = plug(&sb, &status, "web-2");
    let client = plug(&sb, &status, "client");
    let _s1 = web1.http_server("web-1", 8080).expect("server web-1");
    let mut s2 = web2.http_server("web-2", 8080).expect("server web-2");
    sb.wait_hv_sync().expect("hv sync");

    // The rows as northd sees them: a check on the VIP, both backends mapped to their LSPs
    // and the subnet's reserved source, the monitor MAC set.
    wait_for("both backends mapped", Duration::from_secs(30), || {
        let m = sb
            .nbctl(&[
                "--bare",
                "--columns=ip_port_mappings",
                "list",
                "Load_Balancer",
            ])
            .ok()?;
        (m.contains("shop.web-1:10.0.1.254") && m.contains("shop.web-2:10.0.1.254")).then_some(())
    });
    assert!(
        !sb.nbctl(&["get", "NB_Global", ".", "options:svc_monitor_mac"])
            .expect("nbctl")
            .is_empty()
    );
    let (ip1, ip2) = (web1.ip().to_owned(), web2.ip().to_owned());
    let both_online = |m: &[(String, String)]| m.len() == 2 && m.iter().all(|(_, s)| s == "online");
    wait_for("both monitors online", Duration::from_secs(30), || {
        both_online(&monitors(&sb)).then_some(())
    });
    let url = "http://10.96.0.100:80/";
    let seen = wait_for("both backends to answer", Duration::from_secs(30), || {
        bodies(&client, url, 20).ok().filter(|s| s.len() == 2)
    });
    assert_eq!(
        seen,
        BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()])
    );

    // web-2's server stops: OVN marks it offline (interval 2 s x 2 failures) and only
    // web-1 answers.
    s2.stop();
    let stopped = Instant::now();
    wait_for("web-2's monitor offline", Duration::from_secs(30), || {
        monitors(&sb)
            .iter()
            .any(|(ip, st)| *ip == ip2 && st == "offline")
            .then_some(())
    });
    let offline_after = stopped.elapsed();
    sb.wait_hv_sync().expect("hv sync");
    let seen = wait_for("only web-1 answers", Duration::from_secs(15), || {
        bodies(&client, url, 20).ok().filter(|s| s.len() == 1)
    });
    assert_eq!(seen, BTreeSet::from(["web-1".to_owned()]));
    assert!(
        monitors(&sb)
            .iter()
            .any(|(ip, st)| *ip == ip1 && st == "online"),
        "web-1 stays online"
    );
    eprintln!("native check: web-2 offline in SB {offline_after:?} after its server stopped");

    // Back: online again, traffic again.
    let _s2 = web2.http_server("web-2", 8080).expect("server web-2 again");
    wait_for("web-2 back online", Duration::from_secs(30), || {
        both_online(&monitors(&sb)).then_some(())
    });
    wait_for("web-2 answers again", Duration::from_secs(30), || {
        bodies(&client, url, 30).ok().filter(|s| s.len() == 2)
    });
}
