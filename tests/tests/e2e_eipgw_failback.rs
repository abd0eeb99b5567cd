//! The EIP gateway's failed node returns without an outage, with real packets (issue 12):
//! the real `ycloud-controller` with `--ovn-sb` demotes the failed chassis by itself, so
//! the node's return takes nothing back, and the operator's failback annotation moves the
//! gateway back on purpose. Three nodes: the EIP gateway `public` on nodes 1 (priority 20)
//! and 2 (10), 100 ms x 3 BFD; the backends web-2 and web-3 on nodes 2 and 3; the outside
//! host sends a request to the EIP every 10 ms. Figures: `FIGURE eipgw-failback:` lines.
//! Needs root; builds the product binaries once per test process (see `harness::bins`).

#[path = "../e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Layout, wait_for, warm};

const EIP: &str = "http://200.0.0.100/";
const WARM: Duration = Duration::from_secs(30);
/// `sbwatch::SETTLE`: how long a holder must hold before the controller demotes.
const SETTLE: Duration = Duration::from_secs(3);

/// One short request per `interval` for `secs` seconds; prints `<unix time> <0|1>` per try.
const PROBE_PY: &str = r#"
import socket, sys, time
host, port, dur, iv = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
end = time.time() + dur
while time.time() < end:
    t0 = time.time(); ok = 0
    try:
        s = socket.create_connection((host, port), timeout=0.2)
        s.settimeout(0.2); s.sendall(b"GET / HTTP/1.0\r\n\r\n"); ok = 1 if s.recv(100) else 0; s.close()
    except Exception:
        pass
    print("%.3f %d" % (t0, ok), flush=True)
    d = iv - (time.time() - t0)
    if d > 0:
        time.sleep(d)
"#;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Probes from `at` on: (failed, outage, failure runs, probes). The outage: from `at` to
/// the first success after the first failure (0 if none failed, infinite if none succeeded
/// after it).
fn first_outage(text: &str, at: f64) -> (usize, f64, usize, usize) {
    let rows: Vec<(f64, bool)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()? == "1"))
        })
        .filter(|(t, _)| *t >= at)
        .collect();
    let failed = rows.iter().filter(|(_, ok)| !ok).count();
    let outage = match rows.iter().position(|(_, ok)| !ok) {
        None => 0.0,
        Some(i) => rows[i..]
            .iter()
            .find(|(_, ok)| *ok)
            .map(|(t, _)| t - at)
            .unwrap_or(f64::INFINITY),
    };
    let runs = rows.windows(2).filter(|w| w[0].1 && !w[1].1).count()
        + usize::from(rows.first().is_some_and(|(_, ok)| !ok));
    (failed, outage, runs, rows.len())
}

/// The EIP gateway on nodes 1 (20) and 2 (10); `failback`: its `ycloud.io/failback`.
fn gateway_manifest(failback: &str) -> String {
    format!(
        "apiVersion: ycloud.io/v1alpha1\nkind: EipGateway\nmetadata:\n  name: public\n  \
         annotations: {{ycloud.io/failback: \"{failback}\"}}\nspec:\n  externalNetwork:\n    \
         cidr: 200.0.0.0/24\n    gateway: 200.0.0.1\n    address: 200.0.0.2\n    \
         localnet: external\n  pool: [200.0.0.100..200.0.0.199]\n  gatewayChassis:\n  \
         - {{name: \"@CHASSIS1@\", priority: 20}}\n  - {{name: \"@CHASSIS2@\", priority: 10}}\n"
    )
}

/// The chassis holding the gateway's external port in SB (`none` when unclaimed).
fn active(c: &Cluster) -> String {
    let uuid =
        c.sb.sbctl(&[
            "--bare",
            "--columns=chassis",
            "find",
            "Port_Binding",
            "logical_port=cr-yc-eipgw-public-ext",
        ])
        .unwrap_or_default();
    if uuid.trim().is_empty() {
        return "none".into();
    }
    c.sb.sbctl(&["--bare", "--columns=name", "list", "Chassis", uuid.trim()])
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The router's demotion record in NB (`ycloud.io/demoted`), empty without one.
fn demoted(c: &Cluster) -> String {
    c.sb.nbctl(&[
        "--if-exists",
        "get",
        "Logical_Router",
        "yc-eipgw-public",
        "external_ids:\"ycloud.io/demoted\"",
    ])
    .unwrap_or_default()
    .trim()
    .trim_matches('"')
    .to_owned()
}

/// The `Gateway_Chassis` priorities of `chassis` on the gateway's ports (external port
/// and VPC uplink).
fn priorities_of(c: &Cluster, chassis: &str) -> BTreeSet<String> {
    c.sb.nbctl(&[
        "--bare",
        "--columns=priority",
        "find",
        "Gateway_Chassis",
        &format!("chassis_name={chassis}"),
    ])
    .unwrap_or_default()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The vswitchd of nodes 2 and 3 that died (OVS 3.1.0's userspace conntrack assertion in
/// NATed churn, docs/performance.md), each started again as a rebooted node; their numbers.
fn repair_crashes(c: &Cluster, phase: &str) -> Vec<u8> {
    let crashes =
        c.sb.repair_crashed_vswitchds(2..=3)
            .expect("restart a crashed vswitchd");
    for crash in &crashes {
        eprintln!("FIGURE eipgw-failback: CRASHED during the {phase}: {crash}");
    }
    crashes.iter().map(|crash| crash.node).collect()
}

/// Probes outside → EIP for `secs`, does `event` after 2 s; the probe's output and the
/// event's time.
fn around(c: &Cluster, secs: f64, event: impl FnOnce()) -> (String, f64) {
    std::thread::scope(|s| {
        let probe = s.spawn(|| {
            c.outside().exec_timeout(
                &[
                    "python3",
                    "-c",
                    PROBE_PY,
                    "200.0.0.100",
                    "80",
                    &format!("{secs}"),
                    "0.01",
                ],
                Duration::from_secs_f64(secs + 30.0),
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let at = now();
        event();
        (probe.join().unwrap().expect("probe"), at)
    })
}

#[test]
fn the_controller_demotes_the_failed_gateway_node_so_its_return_costs_no_request() {
    harness::bins();
    let mut c = Cluster::start_with_args(
        &ClusterOptions {
            demo_manifests: vec![
                "00-namespaces.yaml",
                "01-vpcs.yaml",
                "02-subnets.yaml",
                "10-services.yaml",
            ],
            offload: true,
        },
        &Layout {
            nodes: 3,
            svcgw: vec![(3, 100)],
        },
        &[
            "--ovn-sb=@SB@",
            "--bfd-min-rx-ms=100",
            "--bfd-min-tx-ms=100",
            "--bfd-mult=3",
        ],
    );
    c.write_manifest("03-eip-gateway.yaml", &gateway_manifest("0"));
    let placement = [
        ("shop", "web-2", "22-pod-web-2.yaml", 2),
        ("shop", "web-3", "23-pod-web-3.yaml", 3),
    ];
    for (_, _, file, node) in placement {
        c.copy_demo_pod_on(file, node);
    }
    for (ns, pod, _, node) in placement {
        c.add_pod_on(node, ns, pod);
    }
    for p in ["web-2", "web-3"] {
        c.serve(p, 8080);
    }
    c.add_outside();
    let (n1, n2) = (c.chassis(1), c.chassis(2));
    wait_for("the EIP gateway on node 1", WARM, || {
        (active(&c) == n1).then_some(())
    });
    c.sb.wait_hv_sync().expect("hv sync");
    warm(c.outside(), EIP, WARM)
        .unwrap_or_else(|e| panic!("outside -> EIP before: {e}\n{}", c.diagnostics()));
    // The controller counts a holder only once it has held the port for SETTLE: the first
    // election is over by now, and node 1 is not demoted for it.
    std::thread::sleep(SETTLE + Duration::from_millis(500));
    assert_eq!(demoted(&c), "", "node 1 demoted at start");

    // Failover: node 1's datapath dies. While the probe runs: when OVN moved the port to
    // node 2, and when the controller demoted node 1 (once node 2 has held it for SETTLE).
    let (mut moved_s, mut demoted_s) = (None, None);
    let (text, at) = around(&c, 6.0, || {
        let kill = Instant::now();
        c.sb.kill_node_daemon(1, "ovs-vswitchd")
            .expect("kill node 1's ovs-vswitchd");
        while kill.elapsed() < WARM && demoted_s.is_none() {
            if moved_s.is_none() && active(&c) == n2 {
                moved_s = Some(kill.elapsed().as_secs_f64());
            }
            if demoted(&c) == n1 {
                demoted_s = Some(kill.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (failed, outage, runs, probes) = first_outage(&text, at);
    eprintln!(
        "FIGURE eipgw-failback: failover outside->EIP {outage:.2} s ({failed} of {probes} \
         requests failed, {runs} failure run(s)); SB moved the port to node 2 after \
         {moved_s:.2?} s, the controller demoted node 1 after {demoted_s:.2?} s"
    );
    let crashed_failover = repair_crashes(&c, "failover");
    wait_for("the EIP gateway on node 2", WARM, || {
        repair_crashes(&c, "wait for node 2");
        (active(&c) == n2).then_some(())
    });
    wait_for("node 1 demoted by the controller", WARM, || {
        (demoted(&c) == n1).then_some(())
    });
    let lower = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        let max = |s: &BTreeSet<String>| s.iter().filter_map(|p| p.parse::<u32>().ok()).max();
        let min = |s: &BTreeSet<String>| s.iter().filter_map(|p| p.parse::<u32>().ok()).min();
        max(a).zip(min(b)).is_some_and(|(a, b)| a < b)
    };
    wait_for("node 1's priorities below node 2's", WARM, || {
        lower(&priorities_of(&c, &n1), &priorities_of(&c, &n2)).then_some(())
    });
    c.sb.nbctl(&["--wait=sb", "sync"]).expect("sync");

    // Node 1 returns as a rebooted node does (vswitchd and a fresh ovn-controller).
    if c.sb.node_daemon_pid(1, "ovn-controller").is_some() {
        c.sb.kill_node_daemon(1, "ovn-controller")
            .expect("kill ovn-controller");
    }
    let (text, at) = around(&c, 8.0, || {
        c.sb.node_start(1).expect("node-start 1");
    });
    let (failed, outage, runs, probes) = first_outage(&text, at);
    eprintln!(
        "FIGURE eipgw-failback: demoted node 1 back: {failed} of {probes} requests failed \
         ({runs} failure run(s), outage {outage:.2} s)"
    );
    let crashed_return = repair_crashes(&c, "return");
    // A standby datapath that died meanwhile (OVS 3.1.0's userspace conntrack assertion)
    // moves the gateway for its own reasons (and may get its node demoted in turn): then
    // only the end state after the operator's failback is checked.
    if crashed_failover.is_empty() && crashed_return.is_empty() {
        assert_eq!(active(&c), n2, "the demoted node took the gateway back");
        assert_eq!(
            failed,
            0,
            "the demoted node's return cost requests:\n{}",
            c.diagnostics()
        );
        assert_eq!(demoted(&c), n1, "the demotion did not hold");
    }

    // Later, on purpose: the operator's failback (a new annotation value).
    c.sb.wait_hv_sync().expect("hv sync");
    let (text, at) = around(&c, 6.0, || {
        c.write_manifest("03-eip-gateway.yaml", &gateway_manifest("1"));
    });
    let (failed, outage, runs, probes) = first_outage(&text, at);
    eprintln!(
        "FIGURE eipgw-failback: planned failback outside->EIP {outage:.2} s ({failed} of \
         {probes} requests failed, {runs} failure run(s))"
    );
    repair_crashes(&c, "planned failback");
    wait_for("the EIP gateway back on node 1", WARM, || {
        repair_crashes(&c, "wait for node 1");
        (active(&c) == n1).then_some(())
    });
    assert_eq!(demoted(&c), "", "the failback left a demotion");
    // Not demoted again: OVN moved the port within the settle time.
    std::thread::sleep(SETTLE + Duration::from_secs(1));
    assert_eq!(demoted(&c), "", "node 1 demoted again after the failback");
    warm(c.outside(), EIP, WARM).unwrap_or_else(|e| {
        panic!(
            "outside -> EIP after the failback: {e}\n{}",
            c.diagnostics()
        )
    });
}
