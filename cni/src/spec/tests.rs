use std::collections::BTreeMap;

use super::*;
use crate::annotation::{PodNetwork, parse_mac};

fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
    let m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CniEnv::from_vars(|k| m.get(k).cloned())
}

#[test]
fn cni_args_split_into_pairs_and_a_pair_without_equals_is_an_error() {
    let a = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1;").expect("args");
    assert_eq!(a["K8S_POD_NAMESPACE"], "ns");
    assert_eq!(a["K8S_POD_NAME"], "web-1");
    assert_eq!(parse_args("").expect("empty"), BTreeMap::new());
    assert_eq!(
        parse_args("A=1;B").expect_err("no =").code,
        code::INVALID_ENV
    );
}

#[test]
fn del_needs_no_netns_but_add_and_check_do() {
    let base = [("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")];
    let mut del = base.to_vec();
    del.push(("CNI_COMMAND", "DEL"));
    assert!(env(&del).is_ok());
    for cmd in ["ADD", "CHECK"] {
        let mut v = base.to_vec();
        v.push(("CNI_COMMAND", cmd));
        assert_eq!(env(&v).expect_err(cmd).code, code::INVALID_ENV);
    }
    assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
}

#[test]
fn a_valid_result_serializes_with_the_spec_field_names() {
    let r = CniResult {
        cni_version: "1.1.0".into(),
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: Some("0a:00:00:00:00:01".into()),
            mtu: Some(1400),
            sandbox: Some("/run/netns/x".into()),
        }],
        ips: vec![IpConfig {
            address: "10.0.0.2/24".into(),
            gateway: Some("10.0.0.1".into()),
            interface: Some(0),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.0.0.1".into()),
        }],
        dns: Dns::default(),
    };
    let j = serde_json::to_value(&r).expect("json");
    assert_eq!(j["cniVersion"], "1.1.0");
    assert_eq!(j["ips"][0]["interface"], 0);
    assert_eq!(j["interfaces"][0]["sandbox"], "/run/netns/x");
    assert_eq!(j["routes"][0]["gw"], "10.0.0.1");
    let back: CniResult = serde_json::from_value(j).expect("round trip");
    assert_eq!(back, r);
}

#[test]
fn the_shared_annotation_fixtures_parse_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/annotations");
    for f in ["pod-network.json", "pod-network-v4.json"] {
        let text = std::fs::read(dir.join(f)).expect("fixture");
        let net: PodNetwork = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        net.validate().unwrap_or_else(|e| panic!("{f}: {e}"));
        let routes = net.effective_routes();
        assert_eq!(
            routes.len(),
            net.gateways.len(),
            "{f}: one default route per family"
        );
        assert_eq!(routes[0].dst.to_string(), "0.0.0.0/0");
    }
    let dual: PodNetwork =
        serde_json::from_slice(&std::fs::read(dir.join("pod-network.json")).expect("fixture"))
            .expect("parse");
    assert_eq!(dual.effective_routes()[1].dst.to_string(), "::/0");
}

#[test]
fn annotations_with_mismatched_gateways_bad_macs_or_mtus_are_rejected_with_the_reason() {
    let ok: PodNetwork = serde_json::from_str(
        r#"{"vpc":"v","subnet":"s","logicalSwitch":"ls","logicalSwitchPort":"p","mac":"0a:00:00:00:00:01","ips":["10.0.0.2/24"],"gateways":["10.0.0.1"],"mtu":1400}"#,
    )
    .expect("parse");
    ok.validate().expect("valid");
    let mut bad = ok.clone();
    bad.gateways = vec!["fd00::1".parse().expect("ip")];
    assert!(bad.validate().expect_err("family").msg.contains("family"));
    let mut bad = ok.clone();
    bad.mac = "0a:00:00:00:00".into();
    assert!(bad.validate().expect_err("mac").msg.contains("mac"));
    let mut bad = ok.clone();
    bad.mtu = 20;
    assert!(bad.validate().expect_err("mtu").msg.contains("mtu"));
    let mut bad = ok;
    bad.gateways.clear();
    assert!(bad.validate().expect_err("count").msg.contains("gateways"));
}

#[test]
fn macs_parse_only_in_the_six_colon_separated_octets_form() {
    assert_eq!(
        parse_mac("0a:00:00:00:01:0B"),
        Some([0x0a, 0, 0, 0, 1, 0x0b])
    );
    for bad in [
        "",
        "0a:00:00:00:01",
        "0a:00:00:00:01:0b:0c",
        "0a-00-00-00-01-0b",
        "0a:00:00:00:01:zz",
        "0a:00:00:00:01:b",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn host_veth_names_are_stable_fifteen_bytes_and_differ_per_attachment() {
    use crate::daemon::{host_ifname, temp_ifname};
    let a = host_ifname("abc", "eth0");
    assert_eq!(a, host_ifname("abc", "eth0"));
    assert_eq!(a.len(), 15);
    validate_ifname(&a).expect("a valid link name");
    assert_ne!(a, host_ifname("abc", "eth1"));
    assert_ne!(a, host_ifname("abd", "eth0"));
    // The separator keeps ("ab", "ceth0") and ("abc", "eth0") apart.
    assert_ne!(host_ifname("ab", "ceth0"), a);
    assert_ne!(temp_ifname("abc", "eth0"), a);
    // Pinned: the name must not change across releases (DEL after an upgrade finds it).
    assert_eq!(host_ifname("c1", "eth0"), "ycf53f02b3bfe94");
}
