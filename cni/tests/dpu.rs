//! dpu-host and dpu modes in one sandbox: two daemons in the node netns, one as the host
//! (moves the VF into the pod, writes `ycloud.io/vf`), one as the DPU (plugs the VF's
//! representor with the pod's iface-id, answers `ycloud.io/vf-status`). Veth pairs stand
//! in for VF/representor pairs, so the pods really talk through the representors. Root.

#[path = "support/harness.rs"]
mod harness;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Node, netns_path, network, pod_netns};
use serde_json::json;
use ycloud_testsupport::netns::Netns;

fn put(root: &Path, dev: &str, file: &str, content: &str) {
    let p = root.join("class/net").join(dev).join(file);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, content).expect("write");
}

#[test]
fn the_host_gives_the_pod_a_vf_and_the_dpu_plugs_its_representor_then_both_undo_it_on_del() {
    // The host sees PF hpf (p0, legacy: its eswitch is on the DPU) with VFs hv0, hv1; the
    // DPU sees PF dpf (p0, switchdev) with representors dr0, dr1.
    let host_sys = tempfile::tempdir().expect("host sysfs");
    let dpu_sys = tempfile::tempdir().expect("dpu sysfs");
    put(host_sys.path(), "hpf", "device/sriov_numvfs", "2\n");
    put(host_sys.path(), "hpf", "phys_port_name", "p0\n");
    put(dpu_sys.path(), "dpf", "device/sriov_numvfs", "2\n");
    put(dpu_sys.path(), "dpf", "compat/devlink/mode", "switchdev\n");
    put(dpu_sys.path(), "dpf", "phys_port_name", "p0\n");
    put(dpu_sys.path(), "dpf", "phys_switch_id", "d00d\n");
    for i in 0..2 {
        fs::create_dir_all(
            host_sys
                .path()
                .join(format!("class/net/hpf/device/virtfn{i}/net/hv{i}")),
        )
        .expect("vf");
        fs::create_dir_all(
            dpu_sys
                .path()
                .join(format!("class/net/dpf/device/virtfn{i}/net/dpuvf{i}")),
        )
        .expect("dpu vf");
        put(
            dpu_sys.path(),
            &format!("dr{i}"),
            "phys_switch_id",
            "d00d\n",
        );
        put(
            dpu_sys.path(),
            &format!("dr{i}"),
            "phys_port_name",
            &format!("pf0vf{i}\n"),
        );
    }

    let mut node = Node::up();
    let host = Netns::existing(node.sb.node_netns());
    for i in 0..2 {
        host.exec(&[
            "ip",
            "link",
            "add",
            &format!("hv{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("dr{i}"),
        ])
        .expect("fake VF pair");
    }
    node.sb.nbctl(&["ls-add", "ls1"]).expect("ls-add");
    node.extra_args = vec![
        "--mode=dpu-host".into(),
        format!("--sysfs-root={}", host_sys.path().display()),
    ];
    node.start_daemon();
    let dpu_socket = node.dir.path().join("dpu/cni.sock");
    let dpu_args = vec![
        "--mode=dpu".to_string(),
        format!("--sysfs-root={}", dpu_sys.path().display()),
    ];
    let _dpu = node.spawn_daemon(&dpu_socket, &dpu_args);

    let mut nss = Vec::new();
    for (i, name) in ["p1", "p2"].iter().enumerate() {
        let n = 11 + i as u8;
        let (mac, ip) = (format!("0a:00:00:00:00:{n:02x}"), format!("10.0.0.{n}"));
        node.lsp("ls1", name, &mac, &ip);
        node.annotate(
            "default",
            name,
            &network(name, &mac, &format!("{ip}/24"), "10.0.0.1"),
        );
        let ns = pod_netns(&node.sb, name);
        node.cni(
            "ADD",
            &format!("c{i}"),
            Some(&netns_path(&ns)),
            "eth0",
            Some(("default", name)),
            json!({}),
        )
        .ok();
        nss.push(ns);
    }
    // The host wrote ycloud.io/vf, the DPU answered and plugged dr0 for p1.
    let vf: serde_json::Value = serde_json::from_slice(
        &fs::read(node.status_dir().join("pods/default/p1.vf.json")).expect("vf annotation"),
    )
    .expect("json");
    assert_eq!(vf, json!({"pfId": 0, "vfId": 0, "sandboxId": "c0"}));
    let st: serde_json::Value = serde_json::from_slice(
        &fs::read(node.status_dir().join("pods/default/p1.vf-status.json")).expect("status"),
    )
    .expect("json");
    assert_eq!(st["ready"], true);
    assert_eq!(st["representor"], "dr0");
    let ids = node
        .sb
        .vsctl(&["get", "Interface", "dr0", "external_ids"])
        .expect("dr0");
    assert!(
        ids.contains("iface-id=p1") && ids.contains("ovn-installed=\"true\""),
        "{ids}"
    );
    assert_eq!(
        node.sb
            .vsctl(&["get", "Open_vSwitch", ".", "other_config:hw-offload"])
            .expect("hw-offload")
            .trim(),
        "\"true\""
    );
    assert!(
        host.exec(&["ip", "link", "show", "hv0"]).is_err(),
        "hv0 should be in the pod"
    );
    harness::ping(&nss[0], "10.0.0.12").expect("p1 → p2 through the DPU's representors");
    node.cni(
        "CHECK",
        "c0",
        Some(&netns_path(&nss[0])),
        "eth0",
        Some(("default", "p1")),
        json!({}),
    )
    .ok();

    // DEL: the request goes, the DPU unplugs dr0, the VF is back on the host.
    node.cni(
        "DEL",
        "c0",
        Some(&netns_path(&nss[0])),
        "eth0",
        None,
        json!({}),
    )
    .ok();
    node.cni(
        "DEL",
        "c0",
        Some(&netns_path(&nss[0])),
        "eth0",
        None,
        json!({}),
    )
    .ok();
    assert!(!node.status_dir().join("pods/default/p1.vf.json").exists());
    host.exec(&["ip", "link", "show", "hv0"])
        .expect("hv0 back on the host");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .sb
        .vsctl(&["list-ports", "br-int"])
        .expect("ports")
        .lines()
        .any(|l| l == "dr0")
    {
        assert!(Instant::now() < deadline, "the DPU did not unplug dr0");
        std::thread::sleep(Duration::from_millis(50));
    }
}
