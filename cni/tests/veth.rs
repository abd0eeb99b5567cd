//! veth mode end to end: the real plugin binary, the real daemon in the sandbox node's
//! netns, real OVS (userspace datapath) and OVN, pods in real network namespaces. Each test
//! has its own sandbox so they run in parallel. They need root.

#[path = "support/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Node, netns_path, network, pod_netns};
use serde_json::json;
use ycloud_cni::daemon::host_ifname;

const TIMEOUT: Duration = Duration::from_secs(5);

fn switch(node: &Node) {
    node.sb.nbctl(&["ls-add", "ls1"]).expect("ls-add");
}

/// LSP + annotation for pod `name` with address 10.0.0.`n`/24.
fn prepare_pod(node: &Node, name: &str, n: u8) -> (String, String) {
    let mac = format!("0a:00:00:00:00:{n:02x}");
    let ip = format!("10.0.0.{n}");
    node.lsp("ls1", name, &mac, &ip);
    node.annotate(
        "default",
        name,
        &network(name, &mac, &format!("{ip}/24"), "10.0.0.1"),
    );
    (mac, ip)
}

fn ports(node: &Node) -> Vec<String> {
    node.sb
        .vsctl(&["list-ports", "br-int"])
        .expect("list-ports")
        .lines()
        .map(str::to_string)
        .collect()
}

fn iface_external_ids(node: &Node, iface: &str) -> String {
    node.sb
        .vsctl(&["get", "Interface", iface, "external_ids"])
        .unwrap_or_else(|e| panic!("interface {iface}: {e}\n{}", node.daemon_log()))
}

#[test]
fn two_pods_added_by_the_plugin_ping_and_talk_tcp_through_ovn_then_check_and_del_round_trip() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    let (mac1, ip1) = prepare_pod(&node, "p1", 11);
    let (_mac2, ip2) = prepare_pod(&node, "p2", 12);
    let ns1 = pod_netns(&node.sb, "p1");
    let ns2 = pod_netns(&node.sb, "p2");

    let add1 = node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    add1.ok();
    let result = add1.json();
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["ips"][0]["address"], format!("{ip1}/24"));
    assert_eq!(result["ips"][0]["gateway"], "10.0.0.1");
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["mac"], mac1);
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        netns_path(&ns1).display().to_string()
    );
    assert_eq!(result["interfaces"][0]["name"], host_ifname("c1", "eth0"));
    node.cni(
        "ADD",
        "c2",
        Some(&netns_path(&ns2)),
        "eth0",
        Some(("default", "p2")),
        json!({}),
    )
    .ok();

    // The answer came after ovn-installed: the flows are in, the first packet goes through.
    let ids = iface_external_ids(&node, &host_ifname("c1", "eth0"));
    for want in [
        "iface-id=p1",
        "ovn-installed=\"true\"",
        "\"ycloud.io/pod-name\"=p1",
        "\"ycloud.io/pod-namespace\"=default",
    ] {
        assert!(ids.contains(want), "{want} missing from {ids}");
    }
    assert!(ids.contains(&format!("attached-mac=\"{mac1}\"")), "{ids}");
    let link = ns1
        .exec(&["ip", "-o", "link", "show", "eth0"])
        .expect("eth0 in pod");
    assert!(link.contains("mtu 1400") && link.contains(&mac1), "{link}");
    let route = ns1
        .exec(&["ip", "route", "show", "default"])
        .expect("route");
    assert!(route.contains("via 10.0.0.1 dev eth0"), "{route}");
    let offload = ns1.exec(&["ethtool", "-k", "eth0"]).expect("ethtool -k");
    assert!(offload.contains("tx-checksumming: off"), "{offload}");
    let host_offload = node
        .sb
        .tool(&[
            "ip",
            "netns",
            "exec",
            node.sb.node_netns(),
            "ethtool",
            "-k",
            &host_ifname("c1", "eth0"),
        ])
        .expect("ethtool -k host end");
    assert!(
        host_offload.contains("tx-checksumming: off"),
        "{host_offload}"
    );

    harness::ping_once(&ns1, &ip2).expect("p1 pings p2 on the first try");
    let _echo = ns2.tcp_echo_server(7777).expect("echo server");
    let back = ns1
        .tcp_send(&ip2, 7777, "hello-through-ovn", TIMEOUT)
        .expect("tcp");
    assert!(back.contains("hello-through-ovn"), "echo answered {back:?}");

    // CHECK with the ADD's result as prevResult.
    node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({"prevResult": result}),
    )
    .ok();
    // Someone removes the pod's route: CHECK notices.
    ns1.exec(&["ip", "route", "del", "default"])
        .expect("route del");
    let r = node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({"prevResult": result}),
    );
    assert_eq!(r.error_code(), 104, "{r:?}");
    assert!(
        r.json()["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("route"),
        "{r:?}"
    );

    for (c, ns) in [("c1", &ns1), ("c2", &ns2)] {
        node.cni(
            "DEL",
            c,
            Some(&netns_path(ns)),
            "eth0",
            Some(("default", "x")),
            json!({}),
        )
        .ok();
        assert!(
            ns.exec(&["ip", "link", "show", "eth0"]).is_err(),
            "eth0 survived DEL in {}",
            ns.name()
        );
    }
    assert!(
        ports(&node).is_empty(),
        "ports left on br-int: {:?}",
        ports(&node)
    );
    let r = node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    assert_eq!(r.error_code(), 104);
}

#[test]
fn add_twice_del_twice_del_without_add_and_del_after_the_netns_is_gone_all_succeed() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    let (_, ip1) = prepare_pod(&node, "p1", 11);
    let (_, ip2) = prepare_pod(&node, "p2", 12);
    let ns1 = pod_netns(&node.sb, "p1");
    let ns2 = pod_netns(&node.sb, "p2");
    let add = |c: &str, ns: &ycloud_testsupport::netns::Netns, pod: &str| {
        node.cni(
            "ADD",
            c,
            Some(&netns_path(ns)),
            "eth0",
            Some(("default", pod)),
            json!({}),
        )
    };

    add("c1", &ns1, "p1").ok();
    add("c1", &ns1, "p1").ok();
    add("c2", &ns2, "p2").ok();
    assert_eq!(
        ports(&node).len(),
        2,
        "ADD twice made a second port: {:?}",
        ports(&node)
    );
    harness::ping(&ns1, &ip2).expect("ping after ADD twice");

    let del = |c: &str, netns: Option<&Path>| {
        node.cni("DEL", c, netns, "eth0", Some(("default", "p")), json!({}))
    };
    del("c1", Some(&netns_path(&ns1))).ok();
    del("c1", Some(&netns_path(&ns1))).ok();
    del("never-added", Some(&netns_path(&ns1))).ok();
    del("never-added", None).ok();

    // The runtime deleted the netns first (the pod's veth end went with it).
    let path2 = netns_path(&ns2);
    drop(ns2);
    assert!(!path2.exists());
    del("c2", Some(&path2)).ok();
    assert!(ports(&node).is_empty(), "ports left: {:?}", ports(&node));
    let links = node
        .sb
        .tool(&[
            "ip",
            "netns",
            "exec",
            node.sb.node_netns(),
            "ip",
            "-o",
            "link",
        ])
        .expect("node links");
    for c in ["c1", "c2"] {
        assert!(
            !links.contains(&host_ifname(c, "eth0")),
            "host veth of {c} left: {links}"
        );
    }
    let _ = ip1;
}

#[test]
fn twenty_concurrent_adds_then_twenty_concurrent_dels_leave_twenty_working_pods_then_nothing() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    let n = 20u8;
    let mut nss = Vec::new();
    for i in 0..n {
        let name = format!("q{i}");
        prepare_pod(&node, &name, 20 + i);
        nss.push(pod_netns(&node.sb, &name));
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let node = &node;
                s.spawn(move || {
                    node.cni(
                        "ADD",
                        &format!("cq{i}"),
                        Some(&netns_path(ns)),
                        "eth0",
                        Some(("default", &format!("q{i}"))),
                        json!({}),
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").ok();
        }
    });
    eprintln!(
        "20 concurrent ADDs (with ovn-installed wait) took {:?}",
        started.elapsed()
    );
    assert_eq!(ports(&node).len(), 20);
    for i in 0..n {
        let ids = iface_external_ids(&node, &host_ifname(&format!("cq{i}"), "eth0"));
        assert!(ids.contains("ovn-installed=\"true\""), "q{i}: {ids}");
    }
    // First and last pod talk.
    harness::ping(&nss[0], &format!("10.0.0.{}", 20 + n - 1)).expect("ping");

    std::thread::scope(|s| {
        let handles: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let node = &node;
                s.spawn(move || {
                    node.cni(
                        "DEL",
                        &format!("cq{i}"),
                        Some(&netns_path(ns)),
                        "eth0",
                        None,
                        json!({}),
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").ok();
        }
    });
    assert!(ports(&node).is_empty(), "ports left: {:?}", ports(&node));
    for ns in &nss {
        assert!(ns.exec(&["ip", "link", "show", "eth0"]).is_err());
    }
}

#[test]
fn a_daemon_killed_mid_add_leaves_nothing_a_retried_add_cannot_finish() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    let (_, ip2) = prepare_pod(&node, "p2", 12);
    let ns2 = pod_netns(&node.sb, "p2");
    node.cni(
        "ADD",
        "c2",
        Some(&netns_path(&ns2)),
        "eth0",
        Some(("default", "p2")),
        json!({}),
    )
    .ok();

    // p1's annotation exists but its LSP does not yet: the daemon plumbs everything and then
    // waits for ovn-installed, which cannot come. Kill it right there.
    let mac1 = "0a:00:00:00:00:0b";
    node.annotate(
        "default",
        "p1",
        &network("p1", mac1, "10.0.0.11/24", "10.0.0.1"),
    );
    let ns1 = pod_netns(&node.sb, "p1");
    let host1 = host_ifname("c1", "eth0");
    let r = std::thread::scope(|s| {
        let node_ref = &node;
        let ns1_ref = &ns1;
        let add = s.spawn(move || {
            node_ref.cni(
                "ADD",
                "c1",
                Some(&netns_path(ns1_ref)),
                "eth0",
                Some(("default", "p1")),
                json!({}),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ports(node_ref).contains(&host1) {
            assert!(Instant::now() < deadline, "the port never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = node_ref.daemon.as_ref().expect("daemon").pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill daemon");
        add.join().expect("thread")
    });
    assert_eq!(
        r.error_code(),
        11,
        "the plugin must report a retriable error: {r:?}"
    );
    node.kill_daemon();

    node.start_daemon();
    node.lsp("ls1", "p1", mac1, "10.0.0.11");
    node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
    assert_eq!(ports(&node).iter().filter(|p| **p == host1).count(), 1);
    harness::ping(&ns1, &ip2).expect("ping after the retried ADD");
    node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
}

#[test]
fn a_missing_annotation_or_lsp_is_a_clear_timeout_error_and_a_daemon_that_is_down_is_reported() {
    let mut node = Node::up();
    node.annotation_timeout_ms = 300;
    node.ovn_installed_timeout_ms = 500;
    node.start_daemon();
    switch(&node);
    let ns = pod_netns(&node.sb, "p1");

    let r = node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    assert_eq!(r.error_code(), 100, "{r:?}");
    assert!(r.stdout.contains("default/p1"), "{r:?}");

    node.annotate(
        "default",
        "p1",
        &network("p1", "0a:00:00:00:00:0b", "10.0.0.11/24", "10.0.0.1"),
    );
    let r = node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    assert_eq!(r.error_code(), 103, "{r:?}");
    assert!(r.stdout.contains("ovn-installed"), "{r:?}");

    let r = node.cni("ADD", "c1", Some(&netns_path(&ns)), "eth0", None, json!({}));
    assert_eq!(r.error_code(), 4, "no K8S_POD_NAME: {r:?}");

    let r = node.cni(
        "ADD",
        "c1",
        Some(Path::new("/run/netns/does-not-exist-h5")),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    assert_eq!(r.error_code(), 106, "{r:?}");

    let mode = std::fs::metadata(&node.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "the socket must be root-only");

    node.cni("DEL", "c1", Some(&netns_path(&ns)), "eth0", None, json!({}))
        .ok();
    node.kill_daemon();
    let r = node.cni("STATUS", "", None, "", None, json!({}));
    assert_eq!(r.error_code(), 50, "{r:?}");
    let r = node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    );
    assert_eq!(r.error_code(), 11, "{r:?}");
    assert!(r.stdout.contains("ycloud-cnid"), "{r:?}");
}

#[test]
fn gc_removes_the_ports_and_veths_of_attachments_not_in_the_valid_list_and_nothing_else() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    prepare_pod(&node, "p1", 11);
    prepare_pod(&node, "p2", 12);
    let ns1 = pod_netns(&node.sb, "p1");
    let ns2 = pod_netns(&node.sb, "p2");
    node.cni(
        "ADD",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
    node.cni(
        "ADD",
        "c2",
        Some(&netns_path(&ns2)),
        "eth0",
        Some(("default", "p2")),
        json!({}),
    )
    .ok();
    // A port somebody else owns: GC must leave it alone.
    node.sb
        .vsctl(&[
            "add-port",
            "br-int",
            "foreign0",
            "--",
            "set",
            "Interface",
            "foreign0",
            "type=internal",
        ])
        .expect("foreign port");

    node.cni(
        "GC",
        "",
        None,
        "",
        None,
        json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
    )
    .ok();
    let p = ports(&node);
    assert!(p.contains(&host_ifname("c1", "eth0")), "{p:?}");
    assert!(!p.contains(&host_ifname("c2", "eth0")), "{p:?}");
    assert!(p.contains(&"foreign0".to_string()), "{p:?}");
    assert!(
        ns2.exec(&["ip", "link", "show", "eth0"]).is_err(),
        "p2's veth survived GC"
    );
    assert!(ns1.exec(&["ip", "link", "show", "eth0"]).is_ok());
}

#[test]
fn a_dual_stack_pod_from_the_shared_annotation_fixture_gets_both_families_and_checks_clean() {
    let mut node = Node::up();
    node.start_daemon();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/annotations/pod-network.json");
    let net: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).expect("fixture")).expect("json");
    node.sb.nbctl(&["ls-add", "yc-subnet-a1"]).expect("ls-add");
    node.sb
        .nbctl(&[
            "lsp-add",
            "yc-subnet-a1",
            "shop.web-1",
            "--",
            "lsp-set-addresses",
            "shop.web-1",
            "0a:00:00:00:01:0b 10.0.1.11 fd00:a1::b",
        ])
        .expect("lsp");
    node.annotate("shop", "web-1", &net);
    let ns = pod_netns(&node.sb, "web-1");
    // The support crate turns IPv6 off in new namespaces; this pod wants it.
    ns.exec(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
    ])
    .expect("ipv6 on");

    let r = node.cni(
        "ADD",
        "web1",
        Some(&netns_path(&ns)),
        "eth0",
        Some(("shop", "web-1")),
        json!({}),
    );
    let result = r.ok().json();
    assert_eq!(
        result["ips"],
        json!([
            {"address": "10.0.1.11/24", "gateway": "10.0.1.1", "interface": 1},
            {"address": "fd00:a1::b/64", "gateway": "fd00:a1::1", "interface": 1}
        ])
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.0.1.1"}, {"dst": "::/0", "gw": "fd00:a1::1"}])
    );
    let v6 = ns
        .exec(&["ip", "-6", "addr", "show", "dev", "eth0"])
        .expect("v6 addr");
    // Usable at once: no duplicate address detection holding it "tentative".
    let line = v6
        .lines()
        .find(|l| l.contains("fd00:a1::b/64"))
        .unwrap_or_else(|| panic!("{v6}"));
    assert!(!line.contains("tentative"), "{v6}");
    let r6 = ns
        .exec(&["ip", "-6", "route", "show", "default"])
        .expect("v6 route");
    assert!(r6.contains("via fd00:a1::1 dev eth0"), "{r6}");
    assert!(
        ns.exec(&["ip", "-o", "link", "show", "eth0"])
            .expect("link")
            .contains("mtu 1442")
    );
    node.cni(
        "CHECK",
        "web1",
        Some(&netns_path(&ns)),
        "eth0",
        Some(("shop", "web-1")),
        json!({"prevResult": result}),
    )
    .ok();
    node.cni(
        "DEL",
        "web1",
        Some(&netns_path(&ns)),
        "eth0",
        None,
        json!({}),
    )
    .ok();
    assert!(ports(&node).is_empty());
}

/// A TCP echo server on `[::]:port` in `ns` (the support crate's binds IPv4 only); waits
/// until it listens.
fn tcp6_echo_server(
    ns: &ycloud_testsupport::netns::Netns,
    port: u16,
) -> ycloud_testsupport::netns::Background {
    const PY: &str = r#"
import socket, socketserver, sys
class S(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
class H(socketserver.BaseRequestHandler):
    def handle(s):
        while True:
            d = s.request.recv(65536)
            if not d:
                return
            s.request.sendall(d)
S(("::", int(sys.argv[1])), H).serve_forever()
"#;
    let server = ns
        .spawn(
            "TCP6 echo server",
            &["python3", "-c", PY, &port.to_string()],
        )
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(15);
    let filter = format!("sport = :{port}");
    while !ns
        .exec(&["ss", "-6Hltn", &filter])
        .is_ok_and(|o| !o.trim().is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the IPv6 echo server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn two_dual_stack_pods_talk_tcp_over_ipv6_through_ovn() {
    let mut node = Node::up();
    node.start_daemon();
    switch(&node);
    let mut nss = Vec::new();
    for (pod, n) in [("p1", 11u8), ("p2", 12u8)] {
        let mac = format!("0a:00:00:00:00:{n:02x}");
        node.lsp("ls1", pod, &mac, &format!("10.0.0.{n} fd00:10::{n}"));
        node.annotate(
            "default",
            pod,
            &json!({
                "vpc": "v1", "subnet": "s1", "logicalSwitch": "ls1", "logicalSwitchPort": pod,
                "mac": mac, "ips": [format!("10.0.0.{n}/24"), format!("fd00:10::{n}/64")],
                "gateways": ["10.0.0.1", "fd00:10::1"], "routes": [], "mtu": 1400
            }),
        );
        let ns = pod_netns(&node.sb, pod);
        // The support crate turns IPv6 off in new namespaces; these pods want it.
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
        ])
        .expect("ipv6 on");
        node.cni(
            "ADD",
            &format!("c{n}"),
            Some(&netns_path(&ns)),
            "eth0",
            Some(("default", pod)),
            json!({}),
        )
        .ok();
        nss.push(ns);
    }
    let _echo = tcp6_echo_server(&nss[1], 7777);
    // IPv6 over OVN: neighbour discovery answered by the logical switch, the pods' ports'
    // IPv6 port security, the userspace datapath with TX checksums done in software.
    let back = nss[0]
        .tcp_send("fd00:10::12", 7777, "hello-over-ipv6", TIMEOUT)
        .unwrap_or_else(|e| panic!("TCP over IPv6: {e}\n{}", node.daemon_log()));
    assert!(back.contains("hello-over-ipv6"), "echo answered {back:?}");
    // A bigger transfer (many segments, both directions): checksums and MTU hold.
    let big = "x".repeat(100_000);
    let back = nss[0]
        .tcp_send("fd00:10::12", 7777, &big, TIMEOUT)
        .expect("100 kB over IPv6");
    assert_eq!(back.len(), big.len());
    for (c, ns) in [("c11", &nss[0]), ("c12", &nss[1])] {
        node.cni("DEL", c, Some(&netns_path(ns)), "eth0", None, json!({}))
            .ok();
    }
}

/// p1 → p2 over TCP, retried for a while (flows come back a moment after the port).
fn talks(node: &Node, from: &ycloud_testsupport::netns::Netns, ip: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match from.tcp_send(ip, 7777, what, Duration::from_secs(2)) {
            Ok(b) if b.contains(what) => return,
            r => assert!(
                Instant::now() < deadline,
                "TCP to {ip} {what}: {r:?}\n{}",
                node.daemon_log()
            ),
        }
    }
}

fn wait_until(what: &str, node: &Node, mut f: impl FnMut() -> bool) {
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
fn a_pods_deleted_ovs_port_or_host_veth_is_put_back_and_traffic_flows_again() {
    let mut node = Node::up();
    node.extra_args = vec!["--port-check-interval-ms=200".into()];
    node.start_daemon();
    switch(&node);
    prepare_pod(&node, "p1", 11);
    let (_, ip2) = prepare_pod(&node, "p2", 12);
    let ns1 = pod_netns(&node.sb, "p1");
    let ns2 = pod_netns(&node.sb, "p2");
    for (c, ns, pod) in [("c1", &ns1, "p1"), ("c2", &ns2, "p2")] {
        node.cni(
            "ADD",
            c,
            Some(&netns_path(ns)),
            "eth0",
            Some(("default", pod)),
            json!({}),
        )
        .ok();
    }
    let _echo = ns2.tcp_echo_server(7777).expect("echo server");
    let host1 = host_ifname("c1", "eth0");
    let bound = |node: &Node| {
        node.sb
            .vsctl(&["get", "Interface", &host1, "external_ids"])
            .is_ok_and(|ids| ids.contains("iface-id=p1") && ids.contains("ovn-installed=\"true\""))
    };
    talks(&node, &ns1, &ip2, "before");

    // Someone deletes the pod's OVS port.
    node.sb
        .vsctl(&["del-port", "br-int", &host1])
        .expect("del-port");
    wait_until("the port to come back", &node, || bound(&node));
    talks(&node, &ns1, &ip2, "after-port-deleted");

    // Someone deletes the host veth: the pod's eth0 goes with it; both come back configured.
    node.sb
        .tool(&[
            "ip",
            "netns",
            "exec",
            node.sb.node_netns(),
            "ip",
            "link",
            "del",
            &host1,
        ])
        .expect("ip link del");
    wait_until("the pod's eth0 to come back", &node, || {
        ns1.exec(&["ip", "-o", "addr", "show", "dev", "eth0"])
            .is_ok_and(|o| o.contains("10.0.0.11/24"))
    });
    wait_until("the new veth's port to be installed", &node, || {
        bound(&node)
    });
    harness::ping(&ns1, &ip2).expect("ping after the veth came back");
    talks(&node, &ns1, &ip2, "after-veth-deleted");
    node.cni(
        "CHECK",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();
    assert!(
        node.daemon_log().contains("pod port put back"),
        "{}",
        node.daemon_log()
    );

    // A restarted daemon knows the pods from their ports' external_ids and keeps them too.
    node.kill_daemon();
    node.start_daemon();
    node.sb
        .vsctl(&["del-port", "br-int", &host1])
        .expect("del-port");
    wait_until("the port to come back after a restart", &node, || {
        bound(&node)
    });
    talks(&node, &ns1, &ip2, "after-restart");

    // After DEL nothing is put back.
    node.cni(
        "DEL",
        "c1",
        Some(&netns_path(&ns1)),
        "eth0",
        None,
        json!({}),
    )
    .ok();
    std::thread::sleep(Duration::from_millis(800));
    assert!(!ports(&node).contains(&host1), "{:?}", ports(&node));
}
