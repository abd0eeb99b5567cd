//! The offload rules one by one, on single datapath flow lines in the exact syntax OVS 3.1
//! prints (`lib/odp-util.c` keys and actions, `lib/dpctl.c` line layout). The lines that a
//! sandbox cannot produce here (tc form, tunnels, IPv6, helpers) are written by hand from
//! that syntax; the real captured dumps are in `offload_fixtures.rs`.

use ycloud_controller::offload::dpflow::{Term, parse_dump, parse_flow};
use ycloud_controller::offload::groups::parse_groups;
use ycloud_controller::offload::rules::{self, classify};
use ycloud_controller::offload::{Scope, classify_all};

/// A flow with an ordinary match (as -m prints it) and the given match extras and actions.
fn line(extra_match: &str, actions: &str) -> String {
    let sep = if extra_match.is_empty() { "" } else { "," };
    format!(
        "ufid:72344b91-c77f-4881-a431-6b51525beb6e, skb_priority(0/0),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(p-p2),packet_type(ns=0,id=0),eth(src=0a:00:00:00:00:02,dst=0a:00:00:00:00:03),eth_type(0x0800),ipv4(src=10.0.0.12,dst=10.0.0.13,proto=6,tos=0/0,ttl=64/0,frag=no),tcp(src=8080/0,dst=0/0){sep}{extra_match}, packets:3, bytes:222, used:0.1s, flags:S., dp:ovs, actions:{actions}, dp-extra-info:miniflow_bits(5,2)"
    )
}

/// The ids of the rules that make the flow not eligible.
fn blocked_by(extra_match: &str, actions: &str) -> Vec<&'static str> {
    let text = line(extra_match, actions);
    let flow = parse_flow(&text, 1).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut ids: Vec<_> = classify(&flow).reasons.iter().map(|r| r.rule).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn each_blocking_rule_fires_on_its_own_construct_and_only_there() {
    let cases: &[(&str, &str, &[&str])] = &[
        // eligible: what the OVN service path uses
        ("", "p-p3", &[]),
        (
            "",
            "ct_clear,set(eth(src=00:00:00:00:ff:01,dst=0a:00:00:00:00:01)),set(ipv4(ttl=63)),ct(zone=2,nat),recirc(0x8)",
            &[],
        ),
        (
            "",
            "ct(commit,zone=5,mark=0x2/0x2,nat(dst=10.0.0.11:8080)),recirc(0x7)",
            &[],
        ),
        ("", "ct(commit,zone=5,nat(src=100.66.0.2)),p-p1", &[]),
        ("", "push_vlan(vid=10,pcp=0),p-p1", &[]),
        ("", "pop_vlan,drop", &[]),
        ("", "set(tcp(dst=80)),set(ipv6(src=fd00::1)),p-p1", &[]),
        (
            "",
            "set(tunnel(tun_id=0x5,dst=172.16.0.2,ttl=64,tp_dst=6081,geneve({class=0x102,type=0x80,len=4,0x10003}),flags(df|csum|key))),genev_sys_6081",
            &[],
        ),
        ("", "check_pkt_len(size=1514,gt(p-p1),le(p-p2))", &[]),
        ("", "meter(0),p-p1", &[]),
        ("skb_mark(0)", "p-p1", &[]),
        ("ct_state(0x21/0x3f)", "p-p1", &[]),
        ("ct_state(-new+est-rel-rpl-inv+trk)", "p-p1", &[]),
        (
            "ct_tuple4(src=10.0.0.13/0.0.0.0,dst=10.96.0.100/0.0.0.0,proto=6/0,tp_src=59306/0,tp_dst=80/0)",
            "p-p1",
            &[],
        ),
        ("vlan(vid=10,pcp=0)", "p-p1", &[]),
        ("icmp(type=8,code=0)", "p-p1", &[]),
        // not eligible
        ("", "hash(l4(0)),recirc(0x6)", &["action-hash"]),
        ("", "hash(sym_l4(0)),recirc(0x6)", &["action-hash"]),
        (
            "",
            "userspace(pid=0,slow_path(action))",
            &["action-userspace"],
        ),
        (
            "",
            "sample(sample=100%,actions(meter(2),userspace(pid=0,controller(reason=1))))",
            &["action-sample"],
        ),
        ("", "trunc(100),p-p1,p-p2", &["action-trunc"]),
        ("", "clone(ct_clear,p-p1),p-p2", &["action-clone"]),
        (
            "",
            "push_eth(src=00:00:00:00:00:01,dst=00:00:00:00:00:02),p-p1",
            &["action-unsupported"],
        ),
        ("", "dec_ttl(le_1(drop)),p-p1", &["action-unsupported"]),
        ("", "tnl_pop(3)", &["action-userspace-datapath"]),
        ("", "lb_output(1)", &["action-userspace-datapath"]),
        (
            "",
            "check_pkt_len(size=1414,gt(userspace(pid=0,controller(reason=1))),le(p-p1))",
            &["action-check-pkt-len-branch", "action-userspace"],
        ),
        (
            "",
            "check_pkt_len(size=1414,gt(p-p1),le(sample(sample=50%,actions(p-p2))))",
            &["action-check-pkt-len-branch", "action-sample"],
        ),
        ("", "set(ipv4(proto=17)),p-p1", &["action-set-subfield"]),
        (
            "",
            "set(ipv6(label=0x12345)),p-p1",
            &["action-set-subfield"],
        ),
        ("", "set(skb_mark(0x1)),p-p1", &["action-set-key"]),
        ("", "set(icmp(type=0)),p-p1", &["action-set-key"]),
        (
            "",
            "set(tunnel(tun_id=0x5,dst=172.16.0.2,tp_src=1234,tp_dst=4789)),vxlan_sys_4789",
            &["action-set-tunnel"],
        ),
        (
            "",
            "set(tunnel(tun_id=0x5,dst=172.16.0.2,flags(oam))),genev_sys_6081",
            &["action-set-tunnel"],
        ),
        (
            "",
            "ct(commit,zone=1,helper=ftp),p-p1",
            &["action-ct-helper"],
        ),
        ("", "foo_bar(1),p-p1", &["action-unsupported"]),
        ("", &["p-p1"; 17].join(","), &["action-count"]),
        ("dp_hash(0xd2de9a2d/0xf)", "p-p1", &["match-dp-hash"]),
        ("skb_mark(0x1)", "p-p1", &["match-skb-mark"]),
        ("skb_priority(0x1)", "p-p1", &["match-skb-priority"]),
        ("ct_state(0x80/0x80)", "p-p1", &["match-ct-state-nat"]),
        ("ct_state(+trk+dnat)", "p-p1", &["match-ct-state-nat"]),
        ("ct_state(-snat)", "p-p1", &["match-ct-state-nat"]),
        (
            "ct_tuple4(src=10.0.0.13/0.0.0.0,dst=10.96.0.100,proto=6/0,tp_src=0/0,tp_dst=80)",
            "p-p1",
            &["match-ct-tuple"],
        ),
        (
            "ct_tuple6(src=::/::,dst=fd00::1,proto=6,tp_src=0/0,tp_dst=80)",
            "p-p1",
            &["match-ct-tuple"],
        ),
        (
            "ipv6(src=fd00::1,dst=fd00::2,label=0x12345,proto=6,frag=no)",
            "p-p1",
            &["match-ipv6-label"],
        ),
        (
            "ipv6(src=fd00::1,dst=fd00::2,proto=17,frag=first)",
            "p-p1",
            &["match-ipv6-frag"],
        ),
        ("nd(target=fd00::1)", "p-p1", &["match-nd"]),
        ("vlan(vid=10/0xf,pcp=0)", "p-p1", &["match-vlan-partial"]),
        (
            "tunnel(tun_id=0x5,src=172.16.0.2,dst=172.16.0.1,erspan(ver=1,idx=0x7)),encap(nsh(np=3))",
            "p-p1",
            &["match-tunnel-metadata", "match-unknown"],
        ),
        (
            "tunnel(tun_id=0x5,src=172.16.0.2,dst=172.16.0.1,tp_dst=6081,flags(+key))",
            "p-p1,recirc(0x3)",
            &["action-decap-output-recirc"],
        ),
        ("conj_id(5)", "p-p1", &["match-unknown"]),
    ];
    for (m, a, want) in cases {
        assert_eq!(blocked_by(m, a), *want, "match +{m:?} actions {a:?}");
    }
}

#[test]
fn a_non_ethernet_packet_type_is_not_eligible() {
    let text = line("", "p-p1").replace("packet_type(ns=0,id=0)", "packet_type(ns=1,id=0x800)");
    let flow = parse_flow(&text, 1).unwrap();
    let ids: Vec<_> = classify(&flow).reasons.iter().map(|r| r.rule).collect();
    assert_eq!(ids, ["match-packet-type"]);
}

#[test]
fn eligible_flows_carry_the_conditions_the_dump_cannot_show() {
    let text = line(
        "ct_state(0x2a/0x3f)",
        "set(ipv4(ttl=63)),meter(3),ct(zone=2,nat),recirc(0x8)",
    );
    let v = classify(&parse_flow(&text, 1).unwrap());
    assert!(v.eligible, "{:?}", v.reasons);
    let ids: Vec<_> = v.conditions.iter().map(|c| c.rule).collect();
    for want in [
        "needs-ct-probe",
        "needs-ct-inv-rpl-probe",
        "needs-meter-police",
        "needs-recirc-sharing",
        "needs-tc-ports",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    // the flow matches tcp: an IP rewrite can update the L4 checksum
    assert!(!ids.contains(&"needs-ip-proto"));
    // with the L4 protocol wildcarded, tc's checksum update cannot be known to work
    let text = "recirc_id(0),in_port(2),eth_type(0x0800),ipv4(dst=10.0.0.11,frag=no), packets:0, bytes:0, used:never, actions:set(ipv4(ttl=63)),3";
    let v = classify(&parse_flow(text, 1).unwrap());
    assert!(v.conditions.iter().any(|c| c.rule == "needs-ip-proto"));
}

#[test]
fn the_kernel_tc_form_is_parsed_and_counted_as_already_in_tc_and_hardware() {
    // lib/dpctl.c prints `offloaded:yes` and `dp:tc` before the actions for flows in tc
    let dump = "\
ufid:1c8e2b5a-0b47-4a21-9b8f-0d1c8b7c6a01, skb_priority(0/0),tunnel(tun_id=0x5,src=172.16.0.2,dst=172.16.0.1,ttl=64/0,tp_src=54321/0,tp_dst=6081,geneve({class=0x102,type=0x80,len=4,0x10003/0x7fffffff}),flags(+key)),skb_mark(0/0),ct_state(0/0),ct_zone(0/0),ct_mark(0/0),ct_label(0/0),recirc_id(0),dp_hash(0/0),in_port(genev_sys_6081),packet_type(ns=0,id=0),eth(src=0a:00:00:00:00:02,dst=0a:00:00:00:00:03),eth_type(0x0800),ipv4(src=10.0.0.1/0.0.0.0,dst=10.0.0.2,proto=6,tos=0/0,ttl=0/0,frag=no),tcp(src=0/0,dst=0/0),tcp_flags(0/0), packets:10, bytes:1000, used:0.540s, offloaded:yes, dp:tc, actions:ct(zone=4,nat),recirc(0x3)
ufid:1c8e2b5a-0b47-4a21-9b8f-0d1c8b7c6a02, recirc_id(0x3),in_port(genev_sys_6081),ct_state(-new+est+trk),eth_type(0x0800),ipv4(frag=no), packets:9, bytes:900, used:0.540s, dp:tc, actions:enp3s0f0_1
ufid:1c8e2b5a-0b47-4a21-9b8f-0d1c8b7c6a03, recirc_id(0),in_port(enp3s0f0_1),eth_type(0x0800),ipv4(frag=no), packets:1, bytes:60, used:2.000s, flags:S, dp:ovs, actions:hash(l4(0)),recirc(0x9)
";
    let flows = parse_dump(dump, "kernel").unwrap();
    assert_eq!(flows.len(), 3);
    assert_eq!(flows[0].dp.as_deref(), Some("tc"));
    assert_eq!(flows[0].offloaded.as_deref(), Some("yes"));
    assert_eq!(flows[1].offloaded, None);
    assert_eq!(flows[2].flags.as_deref(), Some("S"));
    assert_eq!(flows[0].in_port(), Some("genev_sys_6081"));
    let geneve = flows[0]
        .field("tunnel")
        .unwrap()
        .arg_call("geneve")
        .unwrap();
    assert!(matches!(&geneve.args()[0], Term::Bare(b) if b.starts_with("{class=0x102")));
    let r = classify_all("kernel".into(), &flows, Vec::new(), Scope::All);
    assert_eq!((r.summary.in_tc, r.summary.in_hw), (2, 1));
    assert_eq!(
        (r.summary.judged_eligible, r.summary.judged_not_eligible),
        (2, 1)
    );
}

#[test]
fn malformed_lines_are_errors_naming_the_source_and_line() {
    let good = line("", "p-p1");
    let dump = format!("flow-dump from the main thread:\n{good}\nthis is not a flow\n");
    let err = parse_dump(&dump, "dump.txt").unwrap_err().to_string();
    assert!(err.starts_with("dump.txt, line 3:"), "{err}");
    assert!(err.contains("this is not a flow"), "{err}");

    let unbalanced = line("", "ct(commit,nat(dst=10.0.0.1),p-p1");
    let err = parse_dump(&unbalanced, "d").unwrap_err().to_string();
    assert!(
        err.contains("line 1") && err.contains("missing `)`"),
        "{err}"
    );

    let bad_count = good.replace("packets:3", "packets:x");
    assert!(parse_flow(&bad_count, 1).unwrap_err().contains("packets:x"));
}

#[test]
fn an_empty_dump_and_pmd_headers_give_no_flows() {
    let dump = "flow-dump from the main thread:\nflow-dump from pmd on cpu core: 1\n\n";
    assert!(parse_dump(dump, "d").unwrap().is_empty());
    let r = classify_all("d".into(), &[], Vec::new(), Scope::ServicePath);
    assert!(r.summary.ok);
    assert!(r.summary_line().contains("no flows to judge"));
}

#[test]
fn groups_without_a_selection_method_default_to_dp_hash_and_bad_lines_are_errors() {
    let text = "OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):\n group_id=7,type=select,bucket=bucket_id:0,actions=ct(commit,table=21,zone=NXM_NX_REG13[0..15],nat(dst=[fd00::11]:8080))\n group_id=8,type=all,bucket=bucket_id:0,actions=output:1\n";
    let g = parse_groups(text, "groups").unwrap();
    assert_eq!(g.len(), 2);
    assert!(g[0].forces_dp_hash(), "{g:?}");
    assert_eq!(g[0].backends, ["[fd00::11]:8080"]);
    assert!(!g[1].forces_dp_hash());
    let err = parse_groups(" type=select,bucket=x\n", "groups")
        .unwrap_err()
        .to_string();
    assert!(err.contains("groups, line 1: no group_id="), "{err}");
}

#[test]
fn every_rule_names_a_source_in_the_reference() {
    for r in rules::ALL {
        assert!(
            r.source.starts_with("ovs-tc-offload.md §"),
            "{}: {}",
            r.id,
            r.source
        );
        assert!(!r.summary.is_empty());
    }
    let mut ids: Vec<_> = rules::ALL.iter().map(|r| r.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate rule ids");
}
