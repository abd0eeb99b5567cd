//! The offload checker against a live datapath: a real OVN sandbox (NB, SB, northd, OVS on
//! the userspace datapath, ovn-controller), an OVN load balancer with two backends behind a
//! router, real HTTP requests through the VIP, then the checker — the library and the real
//! `ycloudctl` binary — reading the node's `dpctl/dump-flows -m` and OpenFlow groups.
//!
//! Default mode (`selection_method=dp_hash`) must be reported NOT offloadable with the
//! `hash`/`dp_hash` flows named (so the checker can fail); with `selection_fields` (what
//! ycloud's offload mode programs) every flow of new and established service connections
//! must be eligible.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ycloud_controller::offload::path::Role;
use ycloud_controller::offload::{OvsCtl, Report, Scope, check};
use ycloud_testsupport::sandbox::{Pod, PodSpec, Sandbox, SandboxOptions};

const VIP: &str = "http://10.96.0.100/";
const HTTP: Duration = Duration::from_secs(3);

fn pod(sb: &Sandbox, name: &str, mac: &str, addr: &str) -> Pod {
    sb.add_pod(&PodSpec {
        name,
        switch: "ls1",
        mac,
        address: addr,
        gateway: "10.0.0.1",
        mtu: None,
    })
    .unwrap_or_else(|e| panic!("pod {name}: {e}"))
}

/// `n` GETs through the VIP (retried as a whole until flows are in place, bounded): the
/// backends that answered.
fn requests(client: &Pod, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    'again: loop {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            match client.http_get(VIP, HTTP) {
                Ok(body) => {
                    seen.insert(body.split_whitespace().next().unwrap_or("").to_owned());
                }
                Err(e) if Instant::now() > deadline => panic!("GET {VIP}: {e}"),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(300));
                    continue 'again;
                }
            }
        }
        return seen;
    }
}

fn ovs(sb: &Sandbox) -> OvsCtl {
    OvsCtl {
        rundir: Some(PathBuf::from(
            sb.env().get("OVS_RUNDIR").expect("OVS_RUNDIR"),
        )),
        vswitchd_ctl: None,
        bridge: "br-int".into(),
        netns: Some(sb.node_netns().to_owned()),
        timeout: Duration::from_secs(10),
    }
}

fn ycloudctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ycloudctl"))
        .args(args)
        .output()
        .expect("run ycloudctl")
}

/// Runs the real binary against the sandbox: exit code and the JSON report.
fn ycloudctl_json(sb: &Sandbox) -> (Option<i32>, serde_json::Value) {
    let rundir = sb.env().get("OVS_RUNDIR").unwrap().to_owned();
    let out = ycloudctl(&[
        "offload-check",
        "--ovs-rundir",
        &rundir,
        "--netns",
        sb.node_netns(),
        "--bridge",
        "br-int",
        "--json",
    ]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ycloudctl JSON: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

/// Whether the flow's `ct_state` match requires +est (`0x2a/0x3f` or `+est`).
fn matches_established(matches: &str) -> bool {
    let Some(start) = matches.find("ct_state(") else {
        return false;
    };
    let inner = &matches[start + 9..];
    let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
    if inner.contains("+est") {
        return true;
    }
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0);
    match inner.split_once('/') {
        Some((v, m)) => parse(v) & parse(m) & 0x02 != 0,
        None => parse(inner) & 0x02 != 0,
    }
}

fn judged_not_eligible_rules(r: &Report) -> BTreeSet<&str> {
    r.flows
        .iter()
        .filter(|f| f.judged && !f.eligible)
        .flat_map(|f| f.reasons.iter().map(|x| x.rule))
        .collect()
}

#[test]
fn the_checker_fails_dp_hash_load_balancing_and_passes_selection_fields_on_a_live_datapath() {
    let sb = Sandbox::up(SandboxOptions::default()).expect("sandbox up");
    // One switch with the LB, a router so the client's packets to the VIP have a next hop.
    sb.nbctl(&["ls-add", "ls1"]).unwrap();
    sb.nbctl(&[
        "lr-add",
        "lr1",
        "--",
        "lrp-add",
        "lr1",
        "lr1-ls1",
        "00:00:00:00:ff:01",
        "10.0.0.1/24",
        "--",
        "lsp-add",
        "ls1",
        "ls1-lr1",
        "--",
        "lsp-set-type",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-addresses",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-options",
        "ls1-lr1",
        "router-port=lr1-ls1",
    ])
    .unwrap();
    sb.nbctl(&[
        "lb-add",
        "lb1",
        "10.96.0.100:80",
        "10.0.0.11:8080,10.0.0.12:8080",
        "tcp",
        "--",
        "ls-lb-add",
        "ls1",
        "lb1",
    ])
    .unwrap();
    let web1 = pod(&sb, "web-1", "0a:00:00:00:00:0b", "10.0.0.11/24");
    let web2 = pod(&sb, "web-2", "0a:00:00:00:00:0c", "10.0.0.12/24");
    let client = pod(&sb, "client", "0a:00:00:00:00:0d", "10.0.0.13/24");
    let servers = [
        web1.http_server("web-1", 8080).expect("server web-1"),
        web2.http_server("web-2", 8080).expect("server web-2"),
    ];
    sb.wait_hv_sync().unwrap();

    // ---- default mode: OVN's select group uses dp_hash
    sb.appctl("ovs-vswitchd", &["dpctl/del-flows"]).unwrap();
    let seen = requests(&client, 12);
    assert_eq!(seen, BTreeSet::from(["web-1".into(), "web-2".into()]));
    let report = check(&ovs(&sb), Scope::ServicePath).expect("check default mode");
    let table = report.render(true);
    assert!(!report.summary.ok, "default mode passed:\n{table}");
    assert_eq!(
        judged_not_eligible_rules(&report),
        BTreeSet::from(["action-hash", "match-dp-hash"]),
        "{table}"
    );
    assert!(
        report
            .flows
            .iter()
            .filter(|f| f.judged && !f.eligible)
            .all(|f| matches!(f.role, Some(Role::Select | Role::Bucket))),
        "{table}"
    );
    assert_eq!(report.groups.len(), 1, "{table}");
    assert!(report.groups[0].forces_dp_hash, "{table}");
    let (code, json) = ycloudctl_json(&sb);
    assert_eq!(code, Some(1), "{json:#}");
    assert_eq!(json["summary"]["ok"], false);

    // ---- offload mode: selection_fields → selection_method=hash,fields(…)
    sb.nbctl(&[
        "set",
        "Load_Balancer",
        "lb1",
        "selection_fields=ip_src,ip_dst,tp_src,tp_dst",
    ])
    .unwrap();
    sb.wait_hv_sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb
        .ofctl(&["dump-groups", "br-int"])
        .unwrap()
        .contains("selection_method=hash")
    {
        assert!(
            Instant::now() < deadline,
            "the group never switched to hash"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sb.appctl("ovs-vswitchd", &["dpctl/del-flows"]).unwrap();
    let seen = requests(&client, 16);
    assert_eq!(seen, BTreeSet::from(["web-1".into(), "web-2".into()]));
    let report = check(&ovs(&sb), Scope::ServicePath).expect("check offload mode");
    let table = report.render(true);
    assert!(report.summary.ok, "offload mode failed:\n{table}");
    assert!(report.summary.judged > 0, "{table}");
    assert_eq!(report.summary.judged_not_eligible, 0, "{table}");
    let judged = || report.flows.iter().filter(|f| f.judged);
    // new connections: the DNAT to each backend; established: replies and +est flows
    let dnat_to: BTreeSet<&str> = judged()
        .filter(|f| f.role == Some(Role::Dnat))
        .flat_map(|f| {
            ["10.0.0.11:8080", "10.0.0.12:8080"]
                .into_iter()
                .filter(|b| f.actions.contains(*b))
        })
        .collect();
    assert_eq!(dnat_to.len(), 2, "{table}");
    assert!(judged().any(|f| f.role == Some(Role::Reply)), "{table}");
    assert!(judged().any(|f| matches_established(&f.matches)), "{table}");
    assert!(!judged().any(|f| f.actions.contains("hash(")), "{table}");
    let (code, json) = ycloudctl_json(&sb);
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["summary"]["ok"], true);
    assert_eq!(json["summary"]["judged_not_eligible"], 0);
    // the same through the vswitchd unixctl socket alone, from the root namespace (a unix
    // socket is a file: it works across namespaces)
    let rundir = PathBuf::from(sb.env().get("OVS_RUNDIR").unwrap());
    let pid = std::fs::read_to_string(rundir.join("ovs-vswitchd.pid")).unwrap();
    let ctl = rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
    let out = Command::new(env!("CARGO_BIN_EXE_ycloudctl"))
        .args(["offload-check", "--vswitchd-ctl", ctl.to_str().unwrap()])
        .env_remove("OVS_RUNDIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("selection_method=hash,fields("), "{stdout}");

    drop(servers);
    drop(client);
    drop(web2);
    drop(web1);
    sb.down().expect("sandbox down");
}

#[test]
fn ycloudctl_reads_saved_dumps_and_exits_1_on_dp_hash_and_0_with_selection_fields() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/offload");
    let run = |flows: &str, groups: &str| {
        ycloudctl(&[
            "offload-check",
            "--flows-file",
            dir.join(flows).to_str().unwrap(),
            "--groups-file",
            dir.join(groups).to_str().unwrap(),
        ])
    };
    let out = run("default-dpflows.txt", "default-groups.txt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOT ELIGIBLE"), "{stdout}");
    assert!(stdout.contains("action-hash: hash(l4(0))"), "{stdout}");
    assert!(stdout.contains("selection_method=dp_hash"), "{stdout}");
    assert!(stdout.trim_end().ends_with("NOT OFFLOADABLE"), "{stdout}");

    let out = run("selfields-dpflows.txt", "selfields-groups.txt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.trim_end().ends_with("-> OK"), "{stdout}");
}

#[test]
fn ycloudctl_exits_2_with_a_clear_message_when_ovs_is_not_reachable() {
    let empty = tempfile::tempdir().unwrap();
    let out = ycloudctl(&[
        "offload-check",
        "--ovs-rundir",
        empty.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ovs-appctl"), "{stderr}");
    assert!(stderr.contains("is ovs-vswitchd running"), "{stderr}");
    assert!(
        stderr.contains(&empty.path().display().to_string()),
        "{stderr}"
    );

    let out = ycloudctl(&[
        "offload-check",
        "--flows-file",
        "/nonexistent/h7",
        "--groups-file",
        "/nonexistent/h7g",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reading /nonexistent/h7"), "{stderr}");
}
