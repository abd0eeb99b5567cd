//! Host access to ClusterIPs through the node's management port: a process in the node's
//! netns reaches an OVN load balancer VIP, and the daemon puts the port and its route back
//! when someone deletes them. Real sandbox, real OVS/OVN, root.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::Node;
use serde_json::json;
use ycloud_cni::mgmt::mgmt_ifname;
use ycloud_testsupport::netns::Netns;
use ycloud_testsupport::sandbox::PodSpec;

fn nb(node: &Node, args: &[&str]) {
    node.sb
        .nbctl(args)
        .unwrap_or_else(|e| panic!("ovn-nbctl {args:?}: {e}"));
}

/// Router r1 between the join switch (100.64.0.0/24) and ls1 (10.0.0.0/24); LB 10.96.0.10:80
/// → 10.0.0.12:8080 on the join switch, which is where the node's traffic enters OVN.
fn topology(node: &Node) {
    nb(node, &["lr-add", "r1"]);
    for (ls, lrp, mac, cidr) in [
        ("join", "r1-join", "00:00:00:00:64:01", "100.64.0.1/24"),
        ("ls1", "r1-ls1", "00:00:00:00:00:01", "10.0.0.1/24"),
    ] {
        let lsp = format!("{ls}-r1");
        let opt = format!("router-port={lrp}");
        nb(node, &["lrp-add", "r1", lrp, mac, cidr]);
        nb(
            node,
            &[
                "ls-add",
                ls,
                "--",
                "lsp-add",
                ls,
                &lsp,
                "--",
                "lsp-set-type",
                &lsp,
                "router",
                "--",
                "lsp-set-addresses",
                &lsp,
                "router",
                "--",
                "lsp-set-options",
                &lsp,
                &opt,
            ],
        );
    }
    node.lsp("join", "mgmt-node1", "0a:00:00:00:64:02", "100.64.0.2");
    nb(
        node,
        &["lb-add", "lb1", "10.96.0.10:80", "10.0.0.12:8080", "tcp"],
    );
    nb(node, &["ls-lb-add", "join", "lb1"]);
    nb(node, &["ls-lb-add", "ls1", "lb1"]);
}

fn node_file(node: &Node) {
    let dir = node.status_dir().join("nodes");
    std::fs::create_dir_all(&dir).expect("nodes dir");
    let body = json!({"managementPorts": [{
        "vpc": "v1", "logicalSwitchPort": "mgmt-node1", "mac": "0a:00:00:00:64:02",
        "ips": ["100.64.0.2/24"], "gateways": ["100.64.0.1"], "serviceCidrs": ["10.96.0.0/16"], "mtu": 1400
    }]});
    std::fs::write(
        dir.join(format!("{}.json", node.sb.chassis())),
        body.to_string(),
    )
    .expect("node file");
}

fn wait_for(what: &str, node: &Node, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_node_reaches_a_cluster_ip_through_its_management_port_and_the_daemon_repairs_port_and_route()
{
    let mut node = Node::up();
    node.mgmt_interval_ms = 200;
    topology(&node);
    let _p2 = node
        .sb
        .add_pod(&PodSpec {
            name: "p2",
            switch: "ls1",
            mac: "0a:00:00:00:00:0c",
            address: "10.0.0.12/24",
            gateway: "10.0.0.1",
            mtu: None,
        })
        .expect("pod p2");
    let _srv = _p2.http_server("p2", 8080).expect("http server");
    node_file(&node);
    node.start_daemon();

    let port = mgmt_ifname("v1");
    let host = Netns::existing(node.sb.node_netns());
    let installed = |node: &Node| {
        node.sb
            .vsctl(&["get", "Interface", &port, "external_ids:ovn-installed"])
            .is_ok_and(|v| v.contains("true"))
    };
    wait_for("the management port to be ovn-installed", &node, || {
        installed(&node)
    });
    node.sb.wait_hv_sync().expect("hv sync");
    let route = host
        .exec(&["ip", "route", "show", "10.96.0.0/16"])
        .expect("route");
    assert!(
        route.contains(&format!("via 100.64.0.1 dev {port}")),
        "{route}"
    );
    let body = host
        .http_get("http://10.96.0.10/", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("node → VIP: {e}\n{}", node.daemon_log()));
    assert_eq!(body.trim(), "p2 from=100.64.0.2");

    // Someone deletes the route and then the whole port: both come back.
    host.exec(&["ip", "route", "del", "10.96.0.0/16"])
        .expect("route del");
    wait_for("the route to come back", &node, || {
        host.exec(&["ip", "route", "show", "10.96.0.0/16"])
            .is_ok_and(|r| r.contains("via 100.64.0.1"))
    });
    node.sb
        .vsctl(&["del-port", "br-int", &port])
        .expect("del-port");
    wait_for("the port to come back", &node, || installed(&node));
    wait_for("the route to come back with the port", &node, || {
        host.exec(&["ip", "route", "show", "10.96.0.0/16"])
            .is_ok_and(|r| r.contains("via 100.64.0.1"))
    });
    node.sb.wait_hv_sync().expect("hv sync");
    let body = host
        .http_get("http://10.96.0.10/", Duration::from_secs(5))
        .expect("node → VIP after the repair");
    assert_eq!(body.trim(), "p2 from=100.64.0.2");

    // The VPC loses node access: the port goes.
    std::fs::write(
        node.status_dir()
            .join("nodes")
            .join(format!("{}.json", node.sb.chassis())),
        "{}",
    )
    .expect("node file");
    wait_for("the port to be removed", &node, || {
        !node
            .sb
            .vsctl(&["list-ports", "br-int"])
            .unwrap_or_default()
            .contains(&port)
    });
}
