use std::path::Path;

use super::*;

fn put(root: &Path, dev: &str, file: &str, content: &str) {
    let p = root.join("class/net").join(dev).join(file);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

fn pf(root: &Path, name: &str, mode: &str, vfs: u32, port: &str) {
    put(root, name, "compat/devlink/mode", &format!("{mode}\n"));
    put(root, name, "device/sriov_numvfs", &format!("{vfs}\n"));
    put(root, name, "phys_switch_id", &format!("sw-{name}\n"));
    put(root, name, "phys_port_name", &format!("{port}\n"));
    for i in 0..vfs {
        std::fs::create_dir_all(
            root.join(format!("class/net/{name}/device/virtfn{i}/net/{name}v{i}")),
        )
        .expect("vf");
    }
}

#[test]
fn the_first_pf_in_switchdev_mode_is_chosen_and_a_named_legacy_pf_is_refused_with_its_mode() {
    let d = tempfile::tempdir().expect("tmp");
    pf(d.path(), "eth0", "legacy", 2, "p0");
    pf(d.path(), "eth1", "switchdev", 2, "p1");
    put(d.path(), "lo", "phys_port_name", "");
    let s = Sysfs {
        root: d.path().into(),
    };
    assert_eq!(s.find_pf(None).expect("pf"), "eth1");
    let e = s.find_pf(Some("eth0")).expect_err("legacy");
    assert_eq!(e.code, codes::NOT_SWITCHDEV);
    assert!(e.msg.contains("legacy"), "{e}");
    assert_eq!(
        s.find_pf(Some("nope")).expect_err("missing").code,
        codes::SYSFS
    );
}

#[test]
fn no_switchdev_pf_at_all_is_an_error_listing_the_pfs_seen() {
    let d = tempfile::tempdir().expect("tmp");
    pf(d.path(), "eth0", "legacy", 1, "p0");
    let e = Sysfs {
        root: d.path().into(),
    }
    .find_pf(None)
    .expect_err("none");
    assert_eq!(e.code, codes::NOT_SWITCHDEV);
    assert!(e.msg.contains("eth0"), "{e}");
}

#[test]
fn vfs_are_listed_in_index_order_and_representors_match_switch_id_and_port_name() {
    let d = tempfile::tempdir().expect("tmp");
    pf(d.path(), "eth1", "switchdev", 3, "p1");
    put(d.path(), "rep-b", "phys_switch_id", "sw-eth1\n");
    put(d.path(), "rep-b", "phys_port_name", "pf1vf1\n");
    // Same port name on another switch: not ours.
    put(d.path(), "rep-x", "phys_switch_id", "sw-other\n");
    put(d.path(), "rep-x", "phys_port_name", "pf1vf0\n");
    let s = Sysfs {
        root: d.path().into(),
    };
    let vfs = s.vfs("eth1").expect("vfs");
    assert_eq!(
        vfs.iter().map(|v| v.netdev.as_str()).collect::<Vec<_>>(),
        ["eth1v0", "eth1v1", "eth1v2"]
    );
    assert_eq!(vfs[2].index, 2);
    assert_eq!(s.representor("eth1", 1).expect("rep"), "rep-b");
    assert_eq!(
        s.representor("eth1", 0).expect_err("no rep").code,
        codes::NO_REPRESENTOR
    );
}
