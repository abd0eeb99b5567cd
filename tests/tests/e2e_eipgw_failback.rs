//! The EIP gateway's failed node returns without taking the gateway back, with real packets
//! (issue 12): the real `ycloud-controller` with `--ovn-sb` demotes the failed chassis by
//! itself, so the node's return costs no request (unless OVN's BFD start-up race makes the
//! returning node claim the port for a moment: detected and reported), and the operator's
//! failback annotation moves the gateway back on purpose. Three nodes: the EIP gateway `public` on nodes 1 (priority 20)
//! and 2 (10), 100 ms x 3 BFD; the backends web-2 and web-3 on nodes 2 and 3; the outside
//! host sends a request to the EIP every 10 ms. Figures: `FIGURE eipgw-failback:` lines.
//! Needs root; builds the product binaries once per test process (see `harness::bins`).

#[path = "../e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{
    Cluster, ClusterOptions, Layout, failed_tries, outage_after, probe_args, unix_now, wait_for,
    warm,
};

const EIP: &str = "http://200.0.0.100/";
const WARM: Duration = Duration::from_secs(30);
/// `sbwatch::SETTLE`: how long a holder must hold before the controller demotes.
const SETTLE: Duration = Duration::from_secs(3);
/// A try's timeout while an outage is measured: short, for a fine-grained figure.
const FAST: f64 = 0.2;
/// A try's timeout where nothing may fail: below Linux's 1 s initial SYN retransmission
/// timeout, so a lost SYN or SYN-ACK still fails the try, while a datapath that two sandboxes
/// on 2 cores stall for a few hundred milliseconds only makes it slow.
const PATIENT: f64 = 0.9;

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

/// Probes outside → EIP for `secs` (each try given `timeout` s), does `event` after 2 s;
/// the probe's output and the event's time.
fn around(c: &Cluster, secs: f64, timeout: f64, event: impl FnOnce()) -> (String, f64) {
    std::thread::scope(|s| {
        let probe = s.spawn(|| {
            let args = probe_args("200.0.0.100", 80, secs, 0.01, timeout);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.outside()
                .exec_timeout(&args, Duration::from_secs_f64(secs + 30.0))
        });
        std::thread::sleep(Duration::from_secs(2));
        let at = unix_now();
        event();
        (probe.join().unwrap().expect("probe"), at)
    })
}

#[test]
fn the_controller_demotes_the_failed_gateway_node_so_its_return_does_not_take_the_gateway_back() {
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
    let (text, at) = around(&c, 6.0, FAST, || {
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
    let o = outage_after(&text, at);
    let (failed, outage, runs, probes) = (o.failed, o.secs, o.runs, o.probes);
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
    let log1 = c.sb.node_log(1, "ovn-controller");
    let seen = std::fs::metadata(&log1).map_or(0, |m| m.len() as usize);
    let (text, at) = around(&c, 8.0, PATIENT, || {
        c.sb.node_start(1).expect("node-start 1");
    });
    let back = outage_after(&text, at);
    // OVN's own race (ha_chassis_group_is_active): a starting chassis whose BFD session to
    // another chassis (node 3, a backend's node) is up before the one to the holder counts
    // the holder as dead, and claims the port for a moment, whatever its priority.
    let claims: Vec<String> = std::fs::read_to_string(&log1)
        .unwrap_or_default()
        .get(seen..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("lport cr-yc-eipgw-public-ext") && !l.contains("Releasing"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "FIGURE eipgw-failback: demoted node 1 back: {} of {} requests failed ({} failure \
         run(s), outage {:.2} s); {} took over 0.2 s, the slowest {:.3} s; node 1 claimed \
         the port {} time(s) on its way back",
        back.failed,
        back.probes,
        back.runs,
        back.secs,
        back.slow,
        back.slowest,
        claims.len()
    );
    let crashed_return = repair_crashes(&c, "return");
    // A standby datapath that died meanwhile (OVS 3.1.0's userspace conntrack assertion)
    // moves the gateway for its own reasons (and may get its node demoted in turn): then
    // only the end state after the operator's failback is checked.
    if crashed_failover.is_empty() && crashed_return.is_empty() {
        assert_eq!(active(&c), n2, "the demoted node took the gateway back");
        assert_eq!(demoted(&c), n1, "the demotion did not hold");
        if claims.is_empty() {
            assert_eq!(
                back.failed,
                0,
                "the demoted node's return cost requests, and it never claimed the port:\n{}\n{}",
                failed_tries(&text, at),
                c.diagnostics()
            );
        } else {
            // The race above: node 2 takes the port back as soon as node 1's session to it
            // is up; what it cost is the figure above, and it must be over within the probe.
            eprintln!(
                "FIGURE eipgw-failback: OVN's BFD start-up race on node 1:\n  {}",
                claims.join("\n  ")
            );
            assert!(
                back.secs.is_finite(),
                "after node 1's claim the EIP did not come back for good:\n{}\n{}",
                failed_tries(&text, at),
                c.diagnostics()
            );
        }
    }

    // Later, on purpose: the operator's failback (a new annotation value).
    c.sb.wait_hv_sync().expect("hv sync");
    let (text, at) = around(&c, 6.0, FAST, || {
        c.write_manifest("03-eip-gateway.yaml", &gateway_manifest("1"));
    });
    let o = outage_after(&text, at);
    let (failed, outage, runs, probes) = (o.failed, o.secs, o.runs, o.probes);
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
