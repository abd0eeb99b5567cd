//! The end-to-end suite (issue 9): the real product — `ycloud-controller` in manifest mode,
//! `ycloud-cnid`, pods made by the `ycloud-cni` plugin — on a real OVN sandbox, and every
//! scenario as assertions on real HTTP requests. The backends answer
//! `"<name> from=<source address they saw>"`, so each request says which backend answered and
//! which path it took (the client itself, the service gateway's SNAT, the VIP for a hairpin).
//!
//! Three sandboxes, one per test function, several scenarios each (a sandbox costs ~2 s, a
//! pod ~0.2 s; the suite's wall time is in docs/demo.md). The harness is `tests/e2e/harness.rs`;
//! the manifests are the demo's (`hack/demo/manifests`) plus what a test writes itself.
//! Needs root; builds the product binaries once per test process (see `harness::bins`).

#[path = "../e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, distribution, series, wait_for, warm};
use ycloud_testsupport::netns::Netns;

const VIP: &str = "http://10.96.0.100/";
const WARM: Duration = Duration::from_secs(30);

/// The demo's manifests without the session-affinity service (added by the test that needs
/// it) and without the pods (each test picks its own).
const BASE: &[&str] = &[
    "00-namespaces.yaml",
    "01-vpcs.yaml",
    "02-subnets.yaml",
    "03-eip-gateway.yaml",
    "04-node.yaml",
];

fn options(extra: &[&'static str]) -> ClusterOptions {
    ClusterOptions {
        demo_manifests: BASE.iter().chain(extra).copied().collect(),
        offload: true,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn names(s: &BTreeSet<&str>) -> BTreeSet<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_access_scenario_answers_real_requests_from_the_right_source() {
    let mut c = Cluster::start(&options(&[
        "10-services.yaml",
        "21-pod-web-1.yaml",
        "22-pod-web-2.yaml",
        "23-pod-web-3.yaml",
        "30-pod-client-a.yaml",
        "31-pod-client-b.yaml",
        "32-pod-client-c.yaml",
    ]));
    for (ns, p) in [
        ("shop", "web-1"),
        ("shop", "web-2"),
        ("shop", "web-3"),
        ("shop", "client-a"),
        ("partner", "client-b"),
        ("other", "client-c"),
    ] {
        c.add_pod(ns, p);
    }
    for p in ["web-1", "web-2", "web-3"] {
        c.serve(p, 8080);
    }
    c.add_outside();
    c.sb.wait_hv_sync().expect("hv sync");
    let all = ["web-1", "web-2", "web-3"];

    // 1. in-VPC client -> ClusterIP: every backend answers, each saw the client's address.
    let client_a = &c.pod("client-a").netns;
    warm(client_a, VIP, WARM).unwrap_or_else(|e| panic!("1. in-VPC: {e}"));
    let s = distribution(client_a, VIP, &all, 15, 60);
    assert!(s.failures.is_empty(), "1. in-VPC: {:?}", s.failures);
    assert_eq!(names(&s.backends()), set(&all), "1. in-VPC backends");
    assert_eq!(
        names(&s.sources()),
        set(&[&c.pod("client-a").ip]),
        "1. in-VPC sources"
    );

    // 3. outside -> EIP through the EIP gateway: the client address is kept.
    let eip = "http://200.0.0.100/";
    warm(c.outside(), eip, WARM).unwrap_or_else(|e| panic!("3. EIP: {e}"));
    let s = distribution(c.outside(), eip, &all, 15, 60);
    assert!(s.failures.is_empty(), "3. EIP: {:?}", s.failures);
    assert_eq!(names(&s.backends()), set(&all), "3. EIP backends");
    assert_eq!(names(&s.sources()), set(&["200.0.0.50"]), "3. EIP sources");

    // 4. an allowed VPC -> the ClusterIP through the service gateway: the backends see one
    // address of the gateway's pool (100.66.0.0/16, its SNAT), never the client's.
    let client_b = &c.pod("client-b").netns;
    warm(client_b, VIP, WARM).unwrap_or_else(|e| panic!("4. cross-VPC: {e}"));
    let s = distribution(client_b, VIP, &all, 15, 60);
    assert!(s.failures.is_empty(), "4. cross-VPC: {:?}", s.failures);
    assert_eq!(names(&s.backends()), set(&all), "4. cross-VPC backends");
    let sources = s.sources();
    assert!(
        sources.len() == 1 && sources.iter().all(|a| a.starts_with("100.66.")),
        "4. cross-VPC: the backends must see the service gateway's address, saw {sources:?}"
    );

    // 4b. a VPC that is not allowed gets no answer, though its own network works.
    let client_c = &c.pod("client-c").netns;
    let ping = harness::repo_root().join("hack/demo/ping.py");
    let ping = ping.to_string_lossy();
    wait_for("client-c's own gateway to answer a ping", WARM, || {
        client_c.exec(&["python3", &ping, "10.2.1.1", "1"]).ok()
    });
    let s = series(client_c, VIP, 2);
    assert_eq!(s.ok(), 0, "4b. not allowed VPC got answers: {:?}", s.seen);

    // The datapath flows of the service path are eligible for tc/flower (offload mode).
    let _ = series(client_a, VIP, 5);
    let rundir =
        c.sb.env()
            .get("OVS_RUNDIR")
            .expect("OVS_RUNDIR")
            .to_string();
    let (code, out, err) = c.ycloudctl(&[
        "offload-check",
        "--ovs-rundir",
        &rundir,
        "--netns",
        c.sb.node_netns(),
    ]);
    assert_eq!(code, 0, "offload-check:\n{out}{err}");
    assert!(out.contains("summary:"), "{out}");

    // 6. session affinity: one client sticks to one backend (row 1: it spreads without).
    c.copy_demo_manifest("11-service-sticky.yaml");
    wait_for("the sticky VIP in NB", WARM, || {
        c.nb_vips().contains("10.96.0.101:80").then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let sticky = "http://10.96.0.101/";
    let client_a = &c.pod("client-a").netns;
    warm(client_a, sticky, WARM).unwrap_or_else(|e| panic!("6. affinity: {e}"));
    let s = series(client_a, sticky, 20);
    assert!(s.failures.is_empty(), "6. affinity: {:?}", s.failures);
    assert_eq!(s.backends().len(), 1, "6. affinity: {:?}", s.seen);

    // 7. hairpin: web-1 reaches its own service, and itself seen from the VIP.
    let web_1 = &c.pod("web-1").netns;
    let s = distribution(web_1, VIP, &["web-1"], 10, 60);
    assert!(s.failures.is_empty(), "7. hairpin: {:?}", s.failures);
    assert_eq!(
        s.seen.get("web-1"),
        Some(&set(&["10.96.0.100"])),
        "7. hairpin: web-1 must see its own request from the VIP: {:?}",
        s.seen
    );

    // 2. the node (root of its netns) -> ClusterIP through its management port.
    let node = c.node();
    wait_for(
        "the management port's route to the service CIDR",
        WARM,
        || {
            node.exec(&["ip", "route", "show", "10.96.0.0/16"])
                .ok()
                .filter(|r| r.contains("via"))
        },
    );
    warm(&node, VIP, WARM).unwrap_or_else(|e| panic!("2. node: {e}"));
    let s = distribution(&node, VIP, &all, 15, 60);
    assert!(s.failures.is_empty(), "2. node: {:?}", s.failures);
    assert_eq!(names(&s.backends()), set(&all), "2. node backends");
    assert!(
        s.sources().iter().all(|a| a.starts_with("100.64.")),
        "2. node: the source must be the management port on the join network: {:?}",
        s.sources()
    );
}

/// Two pods labelled for a selector change, a second service that must never notice.
const LIFECYCLE_PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, track: stable}}
spec: {containers: [{name: server, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, track: canary}}
spec: {containers: [{name: server, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-a, namespace: shop}
spec: {containers: [{name: client}]}
";

fn web_service(port: u16, selector: &str) -> String {
    format!(
        "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {{name: web, namespace: shop}}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{{name: http, port: {port}, targetPort: 8080}}]
  backends: [{{type: Pod, selector: {{matchLabels: {selector}}}}}]
"
    )
}

const API_SERVICE: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: api, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.102]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
";

/// Invalid: the VIP of shop/web (the rest of the spec is fine).
const THIEF_SERVICE: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: thief, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
";

/// Invalid on its own: a VIP outside tenant-a's service CIDR.
const BAD_SERVICE: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: bad, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.99.0.1]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
";

#[test]
fn service_edits_deletes_and_an_invalid_service_show_in_traffic_and_nb_rows() {
    let mut c = Cluster::start(&options(&[]));
    c.write_manifest("20-pods.yaml", LIFECYCLE_PODS);
    c.write_manifest("10-web.yaml", &web_service(80, "{app: web}"));
    c.write_manifest("11-api.yaml", API_SERVICE);
    let w1 = c.add_pod("shop", "web-1");
    let w2 = c.add_pod("shop", "web-2");
    c.add_pod("shop", "client-a");
    c.serve("web-1", 8080);
    c.serve("web-2", 8080);
    c.sb.wait_hv_sync().expect("hv sync");
    let both = ["web-1", "web-2"];
    let api = "http://10.96.0.102/";
    let api_ok = |c: &Cluster, when: &str| {
        let s = distribution(&c.pod("client-a").netns, api, &both, 6, 40);
        assert!(s.failures.is_empty(), "api {when}: {:?}", s.failures);
        assert_eq!(names(&s.backends()), set(&both), "api {when}");
    };
    let client = Netns::existing(c.pod("client-a").netns.name());
    warm(&client, VIP, WARM).unwrap_or_else(|e| panic!("web: {e}"));
    warm(&client, api, WARM).unwrap_or_else(|e| panic!("api: {e}"));
    let s = distribution(&client, VIP, &both, 6, 40);
    assert!(s.failures.is_empty(), "web before edits: {:?}", s.failures);

    // Port change 80 -> 81: the new port answers, the old one is gone from NB.
    c.write_manifest("10-web.yaml", &web_service(81, "{app: web}"));
    wait_for("VIP 10.96.0.100:81 replacing :80 in NB", WARM, || {
        let v = c.nb_vips();
        (v.contains("10.96.0.100:81") && !v.contains("10.96.0.100:80")).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let vip81 = "http://10.96.0.100:81/";
    warm(&client, vip81, WARM).unwrap_or_else(|e| panic!("port change: {e}"));
    let s = distribution(&client, vip81, &both, 6, 40);
    assert!(
        s.failures.is_empty(),
        "after the port change: {:?}",
        s.failures
    );
    // The old port is refused at once (the VPC's service-CIDR reject), not left to hang.
    let old_port = refused(&client, VIP);
    eprintln!("e2e: the old port 80 after the port change refused in {old_port:?}");
    let free = refused(&client, "http://10.96.0.250/");
    eprintln!("e2e: a free service-CIDR address refused in {free:?}");

    // Backend selector change: only the canary is a backend, and only it answers.
    c.write_manifest("10-web.yaml", &web_service(81, "{app: web, track: canary}"));
    let want = set(&[&format!("{w2}:8080")]);
    wait_for("only web-2 behind 10.96.0.100:81", WARM, || {
        (c.nb_backends("10.96.0.100:81")? == want).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let s = series(&client, vip81, 15);
    assert!(
        s.failures.is_empty(),
        "after the selector change: {:?}",
        s.failures
    );
    assert_eq!(
        names(&s.backends()),
        set(&["web-2"]),
        "after the selector change"
    );
    api_ok(&c, "after web's edits");

    // A service claiming web's VIP is refused, owns no row, and web keeps serving.
    c.write_manifest("12-thief.yaml", THIEF_SERVICE);
    let thief_status = c.status_dir().join("YusurService/shop/thief.yaml");
    let status = wait_for("thief's status saying why it is not ready", WARM, || {
        std::fs::read_to_string(&thief_status)
            .ok()
            .filter(|t| t.contains("status: 'False'") && t.contains("10.96.0.100"))
    });
    assert!(status.contains("already used"), "{status}");
    // Only the newcomer loses (crds/src/validate.rs: the holder of the address wins): web
    // stays ready.
    let dir = c.status_dir();
    let (code, out, err) = c.ycloudctl(&["status", "--dir", dir.to_str().unwrap(), "shop/web"]);
    assert_eq!(
        code, 0,
        "web must stay ready beside the VIP thief:\n{out}{err}"
    );
    let (code, out, err) = c.ycloudctl(&["nb-rows", "shop/thief"]);
    assert_eq!(
        code, 1,
        "the refused service must own no NB rows:\n{out}{err}"
    );
    let s = series(&client, vip81, 10);
    assert!(
        s.failures.is_empty(),
        "web beside the VIP thief: {:?}",
        s.failures
    );
    assert_eq!(
        names(&s.backends()),
        set(&["web-2"]),
        "web beside the VIP thief"
    );

    // An invalid service (a VIP outside the VPC's service CIDR) blocks nobody: an edit of
    // web made after it lands.
    c.remove_manifest("12-thief.yaml");
    c.write_manifest("13-bad.yaml", BAD_SERVICE);
    let bad_status = c.status_dir().join("YusurService/shop/bad.yaml");
    wait_for("bad's status saying why it is not ready", WARM, || {
        std::fs::read_to_string(&bad_status)
            .ok()
            .filter(|t| t.contains("status: 'False'") && t.contains("outside the service CIDR"))
    });
    c.write_manifest("10-web.yaml", &web_service(81, "{app: web}"));
    let want = set(&[&format!("{w1}:8080"), &format!("{w2}:8080")]);
    wait_for(
        "web's selector edit to land beside the invalid service",
        WARM,
        || (c.nb_backends("10.96.0.100:81")? == want).then_some(()),
    );
    c.sb.wait_hv_sync().expect("hv sync");
    let s = distribution(&client, vip81, &both, 6, 40);
    assert!(
        s.failures.is_empty(),
        "web beside the invalid service: {:?}",
        s.failures
    );
    assert_eq!(
        names(&s.backends()),
        set(&both),
        "web beside the invalid service"
    );
    let (code, out, err) = c.ycloudctl(&["nb-rows", "shop/bad"]);
    assert_eq!(
        code, 1,
        "the invalid service must own no NB rows:\n{out}{err}"
    );

    // Delete: every NB row of the service goes, and its VIP fails at once rather than hang.
    let (code, out, _) = c.ycloudctl(&["nb-rows", "shop/web"]);
    assert_eq!(code, 0, "web owns rows before the delete:\n{out}");
    c.remove_manifest("10-web.yaml");
    let t0 = Instant::now();
    wait_for("shop/web's NB rows to be gone", WARM, || {
        (c.ycloudctl(&["nb-rows", "shop/web"]).0 == 1).then_some(())
    });
    let gone = t0.elapsed();
    c.sb.wait_hv_sync().expect("hv sync");
    eprintln!("e2e: service deleted -> its rows gone from NB in {gone:?}");
    let took = refused(&client, vip81);
    eprintln!("e2e: a request to the deleted VIP refused in {took:?}");
    api_ok(&c, "after web's delete");
}

/// What "refused at once" means: the VPC's switches reject a packet to a service-CIDR
/// address no load balancer took (docs/compiler.md, "Refusing free service addresses"), and
/// ovn-controller's RST reaches the client in a few ms; 100 ms leaves room for a busy CI
/// machine. A hang would be curl's own timeout (2 s).
const REFUSED_WITHIN: Duration = Duration::from_millis(100);

/// Asserts that a connection to `url` is refused (curl exit 7: RST or ICMP unreachable)
/// within [`REFUSED_WITHIN`] by curl's own clock. Attempts are repeated for a few seconds
/// only because flows land a moment after `--wait=hv`; every attempt is printed on failure.
fn refused(from: &Netns, url: &str) -> Duration {
    let script = format!(
        "curl -s -o /dev/null --noproxy '*' --max-time 2 -w '%{{time_total}}' {url}; echo \" $?\""
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tries = Vec::new();
    loop {
        let out = from
            .exec(&["sh", "-c", &script])
            .unwrap_or_else(|e| panic!("curl {url} from {}: {e}", from.name()));
        let mut it = out.split_whitespace();
        let secs: f64 = it.next().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN);
        let code: i32 = it.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        let took = Duration::from_secs_f64(if secs.is_finite() { secs } else { 0.0 });
        if code == 7 && took < REFUSED_WITHIN {
            return took;
        }
        tries.push(format!("exit {code} after {took:?}"));
        assert!(
            Instant::now() < deadline,
            "{url} from {} is not refused within {REFUSED_WITHIN:?} (curl exit 7 wanted; 0 = answered, 28 = hung): {tries:?}",
            from.name()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every probe the controller wrote (`S/probes/`) has a status saying `healthy: true`.
fn probes_all_healthy(c: &Cluster) -> bool {
    let yaml_files = |dir: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect()
    };
    let wanted = yaml_files(c.status_dir().join("probes")).len();
    let healthy = yaml_files(c.status_dir().join("probe-status"))
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l == "healthy: true"))
        })
        .count();
    wanted > 0 && healthy == wanted
}

#[test]
fn a_controller_killed_and_restarted_during_traffic_fails_no_request() {
    let mut c = Cluster::start(&options(&[
        "10-services.yaml",
        "21-pod-web-1.yaml",
        "22-pod-web-2.yaml",
        "30-pod-client-a.yaml",
    ]));
    let w1 = c.add_pod("shop", "web-1");
    let w2 = c.add_pod("shop", "web-2");
    c.add_pod("shop", "client-a");
    c.serve("web-1", 8080);
    c.serve("web-2", 8080);
    // the state to compare after the restart is the settled one: every probe has said
    // healthy (a probe that ran before its server listened took its backend out for a
    // moment) and both backends are in the VIP
    let both = set(&[&format!("{w1}:8080"), &format!("{w2}:8080")]);
    wait_for(
        "every probe healthy and both backends in the VIP",
        WARM,
        || (probes_all_healthy(&c) && c.nb_backends("10.96.0.100:80")? == both).then_some(()),
    );
    c.sb.wait_hv_sync().expect("hv sync");
    let client_name = c.pod("client-a").netns.name().to_string();
    let client = Netns::existing(&client_name);
    warm(&client, VIP, WARM).unwrap_or_else(|e| panic!("warm: {e}"));
    let lbs_before = c.nb_lbs();

    // A client loop for the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let ns = Netns::existing(&client_name);
            let mut s = harness::Series::default();
            while !stop.load(Ordering::Relaxed) {
                s.record_get(&ns, VIP);
            }
            s
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    c.kill_controller();
    std::fs::remove_file(c.status_dir().join("controller.yaml")).expect("rm controller.yaml");
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    c.restart_controller();
    c.wait_synced();
    eprintln!("e2e: restarted controller synced in {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let s = looper.join().expect("client loop");
    eprintln!(
        "e2e: {} requests during the restart, {} failed",
        s.sent,
        s.failures.len()
    );
    assert!(
        s.sent >= 20,
        "the client loop sent only {} requests",
        s.sent
    );
    assert!(
        s.failures.is_empty(),
        "requests failed during the restart: {:?}",
        s.failures
    );
    assert_eq!(names(&s.backends()), set(&["web-1", "web-2"]));
    // The restarted controller adopted its rows: the same rows, unchanged.
    assert_eq!(
        c.nb_lbs(),
        lbs_before,
        "the restart rewrote load balancer rows"
    );

    // And it is in charge: a backend removed now leaves the VIP.
    c.remove_manifest("22-pod-web-2.yaml");
    wait_for("web-2 to leave the VIP", WARM, || {
        (!c.nb_backends("10.96.0.100:80")?
            .contains(&format!("{w2}:8080")))
        .then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let s = series(&client, VIP, 10);
    assert!(s.failures.is_empty(), "after web-2 left: {:?}", s.failures);
    assert_eq!(names(&s.backends()), set(&["web-1"]));
}

/// `web` with an HTTP health check: one NetworkProbe per backend, run by `ycloud-cnid`.
const PROBED_SERVICE: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{name: http, port: 80, targetPort: 8080}]
  backends: [{type: Pod, selector: {matchLabels: {app: web}}}]
  healthCheck:
    type: HTTP
    port: 8080
    path: /
    intervalMillis: 1000
    timeoutMillis: 500
    failureThreshold: 2
    successThreshold: 1
";

#[test]
fn a_killed_backend_is_taken_out_by_its_network_probe_and_no_request_fails_after_the_window() {
    let mut c = Cluster::start(&options(&[
        "21-pod-web-1.yaml",
        "22-pod-web-2.yaml",
        "30-pod-client-a.yaml",
    ]));
    c.write_manifest("10-web.yaml", PROBED_SERVICE);
    let w1 = c.add_pod("shop", "web-1");
    let w2 = c.add_pod("shop", "web-2");
    c.add_pod("shop", "client-a");
    c.serve("web-1", 8080);
    c.serve("web-2", 8080);
    let both = set(&[&format!("{w1}:8080"), &format!("{w2}:8080")]);
    wait_for("both probed backends in the VIP", WARM, || {
        (c.nb_backends("10.96.0.100:80")? == both).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let client = Netns::existing(c.pod("client-a").netns.name());
    warm(&client, VIP, WARM).unwrap_or_else(|e| panic!("warm: {e}"));
    let s = distribution(&client, VIP, &["web-1", "web-2"], 6, 40);
    assert!(s.failures.is_empty(), "before the kill: {:?}", s.failures);

    // web-2's server dies (its pod stays): the probe fails, the backend leaves the VIP.
    let t0 = Instant::now();
    c.stop_server("web-2", 8080);
    let one = set(&[&format!("{w1}:8080")]);
    wait_for("the probe to take web-2 out of the VIP", WARM, || {
        (c.nb_backends("10.96.0.100:80")? == one).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let window = t0.elapsed();
    eprintln!("e2e: backend killed -> out of the VIP and on the chassis in {window:?}");
    let s = series(&client, VIP, 20);
    assert!(
        s.failures.is_empty(),
        "after the detection window: {:?}",
        s.failures
    );
    assert_eq!(names(&s.backends()), set(&["web-1"]));

    // It comes back when it answers again.
    c.serve("web-2", 8080);
    wait_for("the probe to bring web-2 back", WARM, || {
        (c.nb_backends("10.96.0.100:80")? == both).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    let s = distribution(&client, VIP, &["web-1", "web-2"], 6, 40);
    assert!(
        s.failures.is_empty(),
        "after web-2 came back: {:?}",
        s.failures
    );
}
