//! `ycloudctl trace` and `ycloudctl status` (the binary) against a live sandbox: real NB, SB
//! and `ovn-northd`, the controller in manifest mode on the demo's manifests. For every
//! access scenario `ovn-trace` follows a client SYN to the VIP, and the report must name the
//! load balancer that DNATs it to a backend — with the SNAT to the service gateway's
//! address for the cross-VPC path, the VIP for a hairpin, and no path for a VPC that is not
//! allowed (issue 5's ovn-trace tests, through the operator's tool).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ycloud_testsupport::sandbox::{Sandbox, SandboxOptions};

/// The controller as a child process, killed and reaped on drop.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ycloudctl(sb: &Sandbox, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ycloudctl"))
        .args(args)
        .env("OVN_NB_DB", sb.nb_unix())
        .env("OVN_SB_DB", sb.sb_unix())
        .output()
        .expect("run ycloudctl")
}

/// `ycloudctl trace --json FROM TO [extra]`: (exit code, report).
fn trace(sb: &Sandbox, from: &str, to: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["trace", "--json", from, to];
    args.extend_from_slice(extra);
    let out = ycloudctl(sb, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "trace {from} {to}: not JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn pod_ip(status: &Path, ns: &str, name: &str) -> String {
    let file = status.join(format!("pods/{ns}/{name}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("pod annotation"))
        .expect("pod annotation JSON");
    v["ips"][0]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("pod address")
        .to_string()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The common checks of a path: one load balancer of `service` with `role` DNATs to one of
/// `backends`; returns the report's `source_seen`.
fn assert_path(
    what: &str,
    (code, r): &(i32, Value),
    role: &str,
    service: &str,
    backends: &BTreeSet<String>,
) -> String {
    let text = serde_json::to_string_pretty(r).unwrap_or_default();
    assert_eq!(*code, 0, "{what}: no path:\n{text}");
    let lbs = r["load_balancers"].as_array().expect("load_balancers");
    assert_eq!(lbs.len(), 1, "{what}: {text}");
    assert_eq!(lbs[0]["role"], role, "{what}: {text}");
    assert_eq!(lbs[0]["service"], service, "{what}: {text}");
    let backend = r["delivered"]["backend"].as_str().unwrap_or_default();
    assert!(
        backends.contains(backend),
        "{what}: delivered to {backend}, not a backend: {text}"
    );
    assert_eq!(
        r["dnat"].as_str().unwrap_or_default(),
        format!("{} -> {backend}", r["to"].as_str().unwrap_or_default()),
        "{what}: {text}"
    );
    r["source_seen"].as_str().unwrap_or_default().to_string()
}

#[test]
fn on_a_sandbox_ycloudctl_trace_explains_every_scenario_and_status_lists_the_services() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let dir = tempfile::tempdir().expect("tmp");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/demo/manifests");
    for f in std::fs::read_dir(&demo).expect("demo manifests").flatten() {
        let text = std::fs::read_to_string(f.path()).expect("manifest");
        std::fs::write(
            dir.path().join(f.file_name()),
            text.replace("@CHASSIS@", sb.chassis()),
        )
        .expect("write manifest");
    }
    let _ctl = Controller(
        Command::new(env!("CARGO_BIN_EXE_ycloud-controller"))
            .arg(format!("--source=dir:{}", dir.path().display()))
            .arg(format!("--nb={}", sb.nb_unix()))
            .arg(format!("--svcgw-chassis={}:100", sb.chassis()))
            .arg("--offload")
            .arg("--poll-ms=100")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ycloud-controller"),
    );
    let status = dir.path().join(".status");
    wait_for(
        "the controller's first sync",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(status.join("controller.yaml"))
                .ok()
                .filter(|t| t.contains("synced: true"))
        },
    );
    // northd has turned the rows into logical flows
    sb.nbctl(&["--wait=sb", "sync"]).expect("wait for northd");

    let web: BTreeSet<String> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|p| format!("{}:8080", pod_ip(&status, "shop", p)))
        .collect();
    let client_a = pod_ip(&status, "shop", "client-a");

    // in-VPC: the VPC's own load balancer, no NAT of the source
    let r = trace(&sb, "shop/client-a", "10.96.0.100:80", &[]);
    let seen = assert_path("in-VPC", &r, "tcp:cluster", "shop/web", &web);
    assert_eq!(seen, client_a, "in-VPC: the backend sees the client");
    assert_eq!(r.1["snat"], serde_json::json!([]), "in-VPC: no SNAT");

    // node -> ClusterIP: from the management port's address
    let node: Value = serde_json::from_str(
        &std::fs::read_to_string(status.join(format!("nodes/{}.json", sb.chassis())))
            .expect("node file"),
    )
    .expect("node JSON");
    let mgmt = node["managementPorts"][0]["ips"][0]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("management port address")
        .to_string();
    let r = trace(&sb, &mgmt, "10.96.0.100:80", &[]);
    let seen = assert_path("node", &r, "tcp:cluster", "shop/web", &web);
    assert_eq!(seen, mgmt);

    // outside -> EIP: the EIP load balancer; the client address is kept
    let r = trace(&sb, "outside:200.0.0.50", "200.0.0.100:80", &[]);
    let seen = assert_path("EIP", &r, "tcp:eip", "shop/web", &web);
    assert_eq!(seen, "200.0.0.50");

    // an allowed VPC: the service gateway's load balancer, SNAT to the gateway's address
    let r = trace(&sb, "partner/client-b", "10.96.0.100:80", &[]);
    let seen = assert_path("cross-VPC", &r, "tcp:svcgw", "shop/web", &web);
    assert!(
        seen.starts_with("100.66."),
        "cross-VPC: SNAT to {seen}: {}",
        r.1
    );
    let lrp_networks = sb
        .nbctl(&[
            "--bare",
            "--columns=networks",
            "list",
            "Logical_Router_Port",
        ])
        .expect("LRPs");
    assert!(
        lrp_networks
            .split_whitespace()
            .any(|n| n.split('/').next() == Some(seen.as_str())),
        "cross-VPC: {seen} is not an address of a router port (the gateway's system IP)"
    );
    assert_eq!(r.1["load_balancers"][0]["force_snat"], true);

    // a VPC that is not allowed: no path, and why
    let (code, r) = trace(&sb, "other/client-c", "10.96.0.100:80", &[]);
    assert_eq!(code, 1, "not allowed: {r}");
    assert!(r["delivered"].is_null(), "{r}");
    let why = r["no_path"].as_str().unwrap_or_default();
    assert!(
        why.contains("no route to 10.96.0.100"),
        "not allowed: {why}"
    );

    // hairpin: web-1 to its own service, pinned to itself: SNAT to the VIP
    let w1 = pod_ip(&status, "shop", "web-1");
    let pin = format!("{w1}:8080");
    let r = trace(&sb, "shop/web-1", "10.96.0.100:80", &["--backend", &pin]);
    let seen = assert_path("hairpin", &r, "tcp:cluster", "shop/web", &web);
    assert_eq!(seen, "10.96.0.100", "hairpin: {}", r.1);
    assert_eq!(r.1["delivered"]["pod"], "shop/web-1");

    // session affinity: the sticky service's load balancer
    let r = trace(&sb, "shop/client-a", "10.96.0.101:80", &[]);
    assert_path("affinity", &r, "tcp:cluster", "shop/sticky", &web);

    // the words, for people
    let out = ycloudctl(&sb, &["trace", "partner/client-b", "10.96.0.100:80"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lb     ysvc:shop/web:tcp:svcgw (service shop/web, role tcp:svcgw)")
            && text.contains("SNAT   source -> 100.66.")
            && text.contains("result delivered to port shop.web-"),
        "{text}"
    );

    // clear errors: an unknown pod, an unreachable NB, a bad VIP
    let out = ycloudctl(&sb, &["trace", "shop/nope", "10.96.0.100:80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pod shop/nope"), "{err}");
    let out = ycloudctl(
        &sb,
        &[
            "trace",
            "--nb",
            "unix:/nonexistent/nb.sock",
            "--timeout",
            "2",
            "shop/client-a",
            "10.96.0.100:80",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/nb.sock"), "{err}");
    let out = ycloudctl(&sb, &["trace", "shop/client-a", "10.96.0.100"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected VIP:PORT"), "{err}");

    // status: the two services, their addresses and backends
    let dir_s = dir.path().to_string_lossy();
    let out = ycloudctl(&sb, &["status", "--dir", &dir_s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("controller: synced"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("shop/web ")
            && l.contains("10.96.0.100")
            && l.contains("200.0.0.100")
            && l.contains("3/3")
            && l.contains("True")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("shop/sticky ")),
        "{text}"
    );
    let out = ycloudctl(&sb, &["status", "--dir", &dir_s, "shop/nope"]);
    assert_eq!(out.status.code(), Some(2));
}
