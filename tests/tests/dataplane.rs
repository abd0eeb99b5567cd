//! Real packets through a real OVN sandbox: pods in network namespaces, TCP between them
//! through OVS (userspace datapath) directly and through an OVN load balancer VIP, several
//! sandboxes side by side, a clean `down`, and a 3-member RAFT NB.
//!
//! Each test brings up its own sandbox (`hack/ovn-sandbox.sh` in a temp dir, chassis in its
//! own netns), so they run in parallel under cargo-nextest. They need root.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use ycloud_testsupport::fixtures::{pod, router_with_two_switches};
use ycloud_testsupport::sandbox::{OutsideSpec, Pod, PodSpec, Sandbox, SandboxOptions};

const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// What a failed data-plane assertion prints: the logical path of a SYN from `client` to
/// `dst:port` (ovn-trace), the datapath flows and the NB/SB state.
fn diagnostics(sb: &Sandbox, client: &Pod, gw_mac: &str, dst: &str, port: u16) -> String {
    let flow = format!(
        "inport == \"{}\" && eth.src == {} && eth.dst == {gw_mac} && ip4.src == {} && \
         ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.src == 33333 && tcp.dst == {port} && \
         tcp.flags == 2",
        client.name(),
        client.mac(),
        client.ip()
    );
    let show = |r: Result<String, _>| r.unwrap_or_else(|e| format!("(failed: {e})"));
    format!(
        "=== ovn-trace --ct=new {flow}\n{}\n=== dpctl/dump-flows\n{}\n=== ovn-nbctl show\n{}\n\
         === ovn-sbctl show\n{}\n=== logs\n{}",
        show(sb.trace(&["--ct=new", "b", &flow])),
        show(sb.appctl("ovs-vswitchd", &["dpctl/dump-flows"])),
        show(sb.nbctl(&["show"])),
        show(sb.sbctl(&["show"])),
        sb.log_tails(10),
    )
}

/// `n` GETs of `url` from `client`: the bodies seen (with counts) and the failures.
fn get_many(client: &Pod, url: &str, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut seen = BTreeMap::new();
    let mut failures = Vec::new();
    for i in 0..n {
        match client.http_get(url, HTTP_TIMEOUT) {
            Ok(body) => *seen.entry(body.trim().to_string()).or_insert(0) += 1,
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
    }
    (seen, failures)
}

#[test]
fn pods_reach_each_other_over_tcp_directly_and_through_a_load_balancer_vip() {
    let t0 = Instant::now();
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let t_up = t0.elapsed();
    router_with_two_switches(&sb);
    let backend1 = pod(
        &sb,
        "backend1",
        "a",
        "0a:00:00:00:01:0b",
        "10.0.1.11/24",
        "10.0.1.1",
    );
    let backend2 = pod(
        &sb,
        "backend2",
        "a",
        "0a:00:00:00:01:0c",
        "10.0.1.12/24",
        "10.0.1.1",
    );
    let client = pod(
        &sb,
        "client",
        "b",
        "0a:00:00:00:02:0a",
        "10.0.2.10/24",
        "10.0.2.1",
    );
    sb.wait_hv_sync().expect("ovn-nbctl --wait=hv sync");
    for p in [&backend1, &backend2, &client] {
        let up = sb
            .sbctl(&[
                "--bare",
                "--columns=up",
                "find",
                "Port_Binding",
                &format!("logical_port={}", p.name()),
            ])
            .expect("port binding");
        assert_eq!(up.trim(), "true", "port {} is not up in SB", p.name());
    }
    let _http1 = backend1
        .http_server("backend1", 8080)
        .expect("http server in backend1");
    let _http2 = backend2
        .http_server("backend2", 8080)
        .expect("http server in backend2");
    let _echo = backend2
        .tcp_echo_server(9000)
        .expect("echo server in backend2");

    // direct, across the router: the server sees the client's own address
    for _ in 0..3 {
        let body = client
            .http_get("http://10.0.1.11:8080/", HTTP_TIMEOUT)
            .unwrap_or_else(|e| {
                panic!(
                    "client -> backend1:8080: {e}\n{}",
                    diagnostics(&sb, &client, "00:00:00:00:02:01", "10.0.1.11", 8080)
                )
            });
        assert_eq!(body, "backend1 from=10.0.2.10\n");
    }
    // same switch, raw TCP both ways
    let echoed = backend1
        .tcp_send("10.0.1.12", 9000, "hello through br-int", HTTP_TIMEOUT)
        .expect("backend1 -> backend2:9000 echo");
    assert_eq!(echoed, "hello through br-int");

    // through an OVN load balancer attached to both switches
    sb.nbctl(&[
        "lb-add",
        "web",
        "10.96.0.100:80",
        "10.0.1.11:8080,10.0.1.12:8080",
        "tcp",
    ])
    .expect("lb-add");
    sb.nbctl(&["ls-lb-add", "a", "web", "--", "ls-lb-add", "b", "web"])
        .expect("ls-lb-add");
    sb.wait_hv_sync().expect("sync after the LB");
    const N: usize = 30;
    let t_lb = Instant::now();
    let (seen, failures) = get_many(&client, "http://10.96.0.100/", N);
    let lb_time = t_lb.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {N} requests to the VIP failed: {failures:#?}\n{}",
        failures.len(),
        diagnostics(&sb, &client, "00:00:00:00:02:01", "10.96.0.100", 80)
    );
    let expected: Vec<&str> = vec!["backend1 from=10.0.2.10", "backend2 from=10.0.2.10"];
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "both backends must answer, each seeing the client's address: {seen:?}\n{}",
        diagnostics(&sb, &client, "00:00:00:00:02:01", "10.96.0.100", 80)
    );
    eprintln!(
        "timing: sandbox up {:.2}s, {N} requests through the VIP {:.2}s ({seen:?}), test body {:.2}s",
        t_up.as_secs_f64(),
        lb_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn two_sandboxes_with_the_same_addresses_run_side_by_side_without_colliding() {
    // brought up concurrently, as parallel tests do
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Sandbox::up(SandboxOptions::default()));
        let b = s.spawn(|| Sandbox::up(SandboxOptions::default()));
        (
            a.join().unwrap().expect("sandbox A"),
            b.join().unwrap().expect("sandbox B"),
        )
    });
    assert_ne!(a.node_netns(), b.node_netns());
    assert_ne!(a.nb_tcp(), b.nb_tcp());
    assert_ne!(a.chassis(), b.chassis());
    let mut keep = Vec::new();
    for (label, sb) in [("A", &a), ("B", &b)] {
        // identical topology and addresses in both: only separate datapaths make this work
        sb.nbctl(&["ls-add", "ls"]).expect("ls-add");
        let server = pod(
            sb,
            "server",
            "ls",
            "0a:00:00:00:00:0b",
            "10.0.0.11/24",
            "10.0.0.1",
        );
        let client = pod(
            sb,
            "client",
            "ls",
            "0a:00:00:00:00:0c",
            "10.0.0.12/24",
            "10.0.0.1",
        );
        sb.wait_hv_sync().expect("sync");
        let http = server
            .http_server(&format!("server-{label}"), 8080)
            .expect("server");
        keep.push((server, client, http));
    }
    for ((label, sb), (_, client, _)) in [("A", &a), ("B", &b)].into_iter().zip(&keep) {
        for _ in 0..5 {
            let body = client
                .http_get("http://10.0.0.11:8080/", HTTP_TIMEOUT)
                .unwrap_or_else(|e| panic!("sandbox {label}: {e}\n{}", sb.log_tails(10)));
            assert_eq!(
                body,
                format!("server-{label} from=10.0.0.12\n"),
                "sandbox {label}"
            );
        }
        assert!(
            sb.status().expect("status").contains("registered in SB"),
            "sandbox {label} lost its chassis"
        );
    }
}

/// True while `pid` runs (a zombie waiting for init to reap it does not count).
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn netns_names() -> Vec<String> {
    fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn down_leaves_no_process_netns_or_veth_behind() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    sb.nbctl(&["ls-add", "ls"]).expect("ls-add");
    let p1 = pod(
        &sb,
        "p1",
        "ls",
        "0a:00:00:00:00:0b",
        "10.0.0.11/24",
        "10.0.0.1",
    );
    let p2 = pod(
        &sb,
        "p2",
        "ls",
        "0a:00:00:00:00:0c",
        "10.0.0.12/24",
        "10.0.0.1",
    );
    let pids = sb.recorded_pids();
    assert_eq!(
        pids.len(),
        6,
        "NB, SB, northd, ovsdb-server, ovs-vswitchd, ovn-controller: {pids:?}"
    );
    assert!(
        pids.iter().all(|p| running(*p)),
        "all recorded daemons run: {pids:?}"
    );
    let prefix = sb.node_netns().to_string();
    let ours = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n == &prefix || n.starts_with(&format!("{prefix}-")))
            .collect()
    };
    let before = ours(netns_names());
    assert_eq!(before.len(), 3, "node + 2 pods: {before:?}");
    let veths = sb
        .tool(&[
            "ip",
            "netns",
            "exec",
            sb.node_netns(),
            "ip",
            "-o",
            "link",
            "show",
            "type",
            "veth",
        ])
        .expect("veths in the node netns");
    assert!(
        veths.contains("p-p1@") && veths.contains("p-p2@"),
        "{veths}"
    );
    let dir = sb.dir().to_path_buf();

    let t0 = Instant::now();
    let out = sb.down().expect("down");
    eprintln!("timing: down {:.2}s\n{out}", t0.elapsed().as_secs_f64());
    // the pods' guards run pod-del after down: nothing left to do, no error
    drop((p1, p2));

    let alive: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
    assert!(
        alive.is_empty(),
        "daemons still running after down: {alive:?}"
    );
    let left = ours(netns_names());
    assert!(left.is_empty(), "netns left after down: {left:?}");
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let root_links = String::from_utf8_lossy(&root_links.stdout);
    assert!(
        !root_links.contains("p-p1") && !root_links.contains("p-p2"),
        "pod veths in the root netns: {root_links}"
    );
    assert!(
        !Path::new(&dir).exists(),
        "sandbox dir {} still exists",
        dir.display()
    );
}

#[test]
fn a_pod_on_a_missing_switch_fails_with_a_clear_error_and_leaves_nothing() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    let err = sb
        .add_pod(&PodSpec {
            name: "lost",
            switch: "no-such-switch",
            mac: "0a:00:00:00:00:0b",
            address: "10.0.0.11/24",
            gateway: "10.0.0.1",
            mtu: None,
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("creating LSP lost on switch no-such-switch"),
        "{err}"
    );
    let lost = format!("{}-lost", sb.node_netns());
    assert!(!netns_names().contains(&lost), "netns {lost} left behind");
    let bad_mac = sb
        .add_pod(&PodSpec {
            name: "badmac",
            switch: "ls",
            mac: "0a:00:00:00:0b",
            address: "10.0.0.11/24",
            gateway: "10.0.0.1",
            mtu: None,
        })
        .unwrap_err()
        .to_string();
    assert!(
        bad_mac.contains("MAC '0a:00:00:00:0b' is not xx:xx:xx:xx:xx:xx"),
        "{bad_mac}"
    );
}

/// Lines of `cluster/status` after `Servers:`, one per member.
fn cluster_servers(status: &str) -> usize {
    status
        .lines()
        .skip_while(|l| !l.starts_with("Servers:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .count()
}

#[test]
fn a_clustered_nb_has_three_members_and_a_leader_and_serves_writes_and_reads_over_tcp() {
    let sb = Sandbox::up(SandboxOptions {
        clustered: Some(3),
        ..Default::default()
    })
    .expect("clustered sandbox up");
    assert_eq!(sb.nb_tcp_members().len(), 3, "{}", sb.nb_tcp());
    assert_eq!(sb.nb_unix_members().len(), 3, "{}", sb.nb_unix());

    let mut leaders = 0;
    for ctl in sb.nb_ctl_members() {
        let st = sb
            .appctl(ctl, &["cluster/status", "OVN_Northbound"])
            .expect("cluster/status");
        assert_eq!(cluster_servers(&st), 3, "{ctl}: {st}");
        assert!(st.contains("Status: cluster member"), "{ctl}: {st}");
        leaders += usize::from(st.contains("Role: leader"));
    }
    assert_eq!(leaders, 1, "exactly one leader");

    // a write through the list of TCP remotes (ovn-nbctl finds the leader) ...
    let all = format!("--db={}", sb.nb_tcp());
    sb.tool(&["ovn-nbctl", "--timeout=30", &all, "ls-add", "replicated"])
        .expect("write through the tcp remotes");
    // ... is read back from every member on its own (followers included)
    for member in sb.nb_tcp_members() {
        let db = format!("--db={member}");
        let list = sb
            .tool(&[
                "ovn-nbctl",
                "--timeout=30",
                "--no-leader-only",
                &db,
                "ls-list",
            ])
            .unwrap_or_else(|e| panic!("read from {member}: {e}"));
        assert!(list.contains("(replicated)"), "{member}: {list}");
    }
    // northd follows the cluster: the switch reaches SB and the chassis catches up
    sb.wait_hv_sync().expect("sync through the clustered NB");
    let dps = sb
        .sbctl(&[
            "--bare",
            "--columns=external_ids",
            "list",
            "Datapath_Binding",
        ])
        .expect("SB datapaths");
    assert!(dps.contains("name=replicated"), "{dps}");
}

#[test]
fn a_test_that_panics_still_tears_its_sandbox_down() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
        sb.nbctl(&["ls-add", "ls"]).expect("ls-add");
        let p = pod(
            &sb,
            "p",
            "ls",
            "0a:00:00:00:00:0b",
            "10.0.0.11/24",
            "10.0.0.1",
        );
        *seen.lock().unwrap() = Some((
            sb.recorded_pids(),
            sb.node_netns().to_string(),
            p.name().to_string(),
        ));
        panic!("deliberate panic with a live sandbox and pod");
    });
    assert!(result.is_err());
    let (pids, node_ns, _) = seen.into_inner().unwrap().expect("the sandbox came up");
    assert_eq!(pids.len(), 6, "{pids:?}");
    let alive: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
    assert!(
        alive.is_empty(),
        "daemons still running after the panic: {alive:?}"
    );
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&node_ns))
        .collect();
    assert!(left.is_empty(), "netns left after the panic: {left:?}");
}

#[test]
fn two_namespaces_joined_by_a_veth_talk_tcp_and_vanish_when_dropped() {
    use ycloud_testsupport::netns::{Netns, VethSpec};
    // names are global: make them unique to this test process
    let tag = format!("{:x}", std::process::id());
    let (a_name, b_name) = (format!("yct-{tag}-a"), format!("yct-{tag}-b"));
    {
        let a = Netns::create(&a_name).expect("netns a");
        let b = Netns::create_with_veth(
            &b_name,
            &VethSpec {
                ifname: "eth0".into(),
                peer_name: "eth0".into(),
                peer_netns: Some(a.name().into()),
                mac: Some("0a:00:00:00:00:02".into()),
                address: Some("192.0.2.2/24".into()),
                gateway: None,
                mtu: Some(1400),
            },
        )
        .expect("netns b with a veth into a");
        a.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"])
            .expect("address in a");
        let offload = b.exec(&["ethtool", "-k", "eth0"]).expect("ethtool -k");
        assert!(offload.contains("tx-checksumming: off"), "{offload}");
        let link = b.exec(&["ip", "-o", "link", "show", "eth0"]).expect("link");
        assert!(
            link.contains("mtu 1400") && link.contains("0a:00:00:00:00:02"),
            "{link}"
        );
        let _echo = a.tcp_echo_server(7000).expect("echo server in a");
        let got = b
            .tcp_send("192.0.2.1", 7000, "ping over veth", HTTP_TIMEOUT)
            .expect("tcp from b to a");
        assert_eq!(got, "ping over veth");
        let _http = b.http_server("b", 8081).expect("http server in b");
        let body = a
            .http_get("http://192.0.2.2:8081/", HTTP_TIMEOUT)
            .expect("http from a to b");
        assert_eq!(body, "b from=192.0.2.1\n");
        let refused = a
            .http_get("http://192.0.2.2:9/", HTTP_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("curl"), "{refused}");
    }
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with("yct-"))
        .filter(|n| n.contains(&tag))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Removes a directory the script made (`up` without `--dir`) when the test ends, also on panic.
struct RemoveDir(Option<std::path::PathBuf>);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

#[test]
fn an_up_that_fails_half_way_stops_what_it_started_and_leaves_no_netns() {
    use ycloud_testsupport::netns::run_with_env;
    use ycloud_testsupport::sandbox::{SandboxError, sandbox_script};
    let script = sandbox_script();
    for (point, daemons) in [("central", 3), ("node", 6)] {
        // no --dir: the script makes its own temp dir and names it ("sandbox <id> in <dir>")
        let argv = [script.to_str().unwrap(), "up"];
        let err = run_with_env(
            &argv,
            &[("YCLOUD_SANDBOX_FAIL_AFTER", point)],
            Duration::from_secs(120),
        )
        .expect_err("up with an injected failure must fail");
        let SandboxError::Failed { stdout, stderr, .. } = err else {
            panic!("{point}: unexpected error {err}");
        };
        let mut words = stdout
            .split_whitespace()
            .skip_while(|w| *w != "sandbox")
            .skip(1);
        let id = words.next().expect("up names its sandbox id").to_string();
        let dir = std::path::PathBuf::from(words.nth(1).expect("up names its dir"));
        let _cleanup = RemoveDir(Some(dir.clone()));
        assert!(
            stderr.contains(&format!("injected failure after {point}")),
            "{point}: {stderr}"
        );
        let stopped: Vec<u32> = stderr
            .lines()
            .filter(|l| l.starts_with("stopped "))
            .filter_map(|l| l.rsplit_once("pid=")?.1.parse().ok())
            .collect();
        assert_eq!(
            stopped.len(),
            daemons,
            "{point}: daemons stopped by the automatic down: {stderr}"
        );
        let alive: Vec<u32> = stopped.iter().copied().filter(|p| running(*p)).collect();
        assert!(alive.is_empty(), "{point}: still running: {alive:?}");
        let left: Vec<String> = netns_names()
            .into_iter()
            .filter(|n| n.contains(&id))
            .collect();
        assert!(left.is_empty(), "{point}: netns left: {left:?}");
        assert!(
            dir.join("log").is_dir(),
            "{point}: the logs are kept for post-mortems"
        );
        for runtime in ["state", "central", "node"] {
            assert!(
                !dir.join(runtime).exists(),
                "{point}: {runtime}/ left in {}",
                dir.display()
            );
        }
    }
}

#[test]
fn a_pod_on_a_localnet_switch_reaches_an_outside_host_on_br_ex() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    // the external network: a switch whose localnet port maps to br-ex (ovn-bridge-mappings)
    sb.nbctl(&[
        "ls-add",
        "ext",
        "--",
        "lsp-add",
        "ext",
        "ext-ln",
        "--",
        "lsp-set-type",
        "ext-ln",
        "localnet",
        "--",
        "lsp-set-addresses",
        "ext-ln",
        "unknown",
        "--",
        "lsp-set-options",
        "ext-ln",
        "network_name=external",
    ])
    .expect("localnet switch");
    let p = pod(
        &sb,
        "p1",
        "ext",
        "0a:00:00:00:00:0b",
        "172.16.0.11/24",
        "172.16.0.1",
    );
    let outside = sb
        .add_outside(&OutsideSpec {
            name: "outside",
            mac: "0a:00:00:00:00:32",
            address: "172.16.0.50/24",
            gateway: None,
            mtu: None,
        })
        .expect("outside host");
    sb.wait_hv_sync().expect("sync");
    let on_br_ex = sb.vsctl(&["list-ports", "br-ex"]).expect("br-ex ports");
    assert!(on_br_ex.lines().any(|l| l == "x-outside"), "{on_br_ex}");
    let _web = outside
        .http_server("outside", 8080)
        .expect("server outside");
    let _web_pod = p.http_server("p1", 8080).expect("server in the pod");
    for _ in 0..3 {
        let body = p
            .http_get("http://172.16.0.50:8080/", HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("pod -> outside: {e}\n{}", sb.log_tails(10)));
        assert_eq!(body, "outside from=172.16.0.11\n");
        let back = outside
            .http_get("http://172.16.0.11:8080/", HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("outside -> pod: {e}\n{}", sb.log_tails(10)));
        assert_eq!(back, "p1 from=172.16.0.50\n");
    }
}

/// What OVS 3.1.0 logs when its userspace conntrack assertion aborts `ovs-vswitchd`
/// (docs/performance.md), appended to the log by the test below before it kills the daemon.
const CONNTRACK_EMER: &str = "2026-11-22T20:00:00.000Z|00042|util(pmd-c00/id:7)|EMER|lib/conntrack.c:1063: assertion conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()";

#[test]
fn a_vswitchd_that_died_is_started_again_with_its_emer_line_and_the_vip_answers_again() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    router_with_two_switches(&sb);
    let client = pod(
        &sb,
        "client",
        "a",
        "0a:00:00:00:01:0a",
        "10.0.1.10/24",
        "10.0.1.1",
    );
    let backend = pod(
        &sb,
        "backend",
        "b",
        "0a:00:00:00:02:0b",
        "10.0.2.11/24",
        "10.0.2.1",
    );
    let _http = backend
        .http_server("backend", 8080)
        .expect("http server in backend");
    sb.nbctl(&["lb-add", "web", "10.96.0.100:80", "10.0.2.11:8080", "tcp"])
        .expect("lb-add");
    sb.nbctl(&["ls-lb-add", "a", "web", "--", "ls-lb-add", "b", "web"])
        .expect("ls-lb-add");
    sb.wait_hv_sync().expect("hv sync");
    let vip = "http://10.96.0.100/";
    client
        .http_get(vip, HTTP_TIMEOUT)
        .expect("the VIP answers before the crash");

    let before = sb
        .node_daemon_pid(1, "ovs-vswitchd")
        .expect("ovs-vswitchd runs");
    assert_eq!(
        sb.restart_crashed_vswitchd(1)
            .expect("check a running vswitchd"),
        None,
        "a running vswitchd is left alone"
    );
    assert_eq!(sb.node_daemon_pid(1, "ovs-vswitchd"), Some(before));

    // the daemon "aborts": its log gets the assertion, then it is gone without a goodbye
    let log = sb.node_log(1, "ovs-vswitchd");
    let mut text = fs::read_to_string(&log).expect("vswitchd log");
    assert!(
        text.contains("opened log file"),
        "a vswitchd log starts with its 'opened log file' line: {}",
        log.display()
    );
    text.push_str(CONNTRACK_EMER);
    text.push('\n');
    fs::write(&log, text).expect("append to the vswitchd log");
    sb.kill_node_daemon(1, "ovs-vswitchd")
        .expect("kill ovs-vswitchd");
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(before) {
        assert!(
            Instant::now() < deadline,
            "vswitchd {before} outlived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let crash = sb
        .restart_crashed_vswitchd(1)
        .expect("restart the dead vswitchd")
        .expect("the dead vswitchd is found");
    assert_eq!(crash.node, 1);
    assert_eq!(crash.emer.as_deref(), Some(CONNTRACK_EMER));
    let after = sb
        .node_daemon_pid(1, "ovs-vswitchd")
        .expect("ovs-vswitchd runs again");
    assert_ne!(after, before, "a new vswitchd process");
    // the new run's part of the log has no EMER line: the old crash is not reported again
    assert_eq!(sb.vswitchd_emer_line(1), None);
    assert_eq!(
        sb.restart_crashed_vswitchd(1).expect("check again"),
        None,
        "the restarted vswitchd runs"
    );
    let body = client.http_get(vip, HTTP_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the VIP does not answer after the restart: {e}\n{}",
            diagnostics(&sb, &client, "00:00:00:00:01:01", "10.96.0.100", 80)
        )
    });
    assert_eq!(body, "backend from=10.0.1.10\n");
}
