//! The offload rules: which datapath match fields and actions OVS 3.1 can put into
//! tc/flower, each with where that is decided in OVS's own code.
//!
//! Every rule cites `shared/reference/ovs-tc-offload.md` (docs/offload.md repeats the
//! table), which read `lib/netdev-offload-tc.c` ("3.1:LINE"), `lib/tc.c` ("3.1-tc:LINE") and
//! `lib/dpif-netlink.c` ("3.1-nl:LINE") at branch-3.1 commit ef6723c1. A flow is eligible only
//! if every match field and every action (including those nested in `check_pkt_len`) is
//! (§5 of the reference). Conditions are facts the dump cannot show (kernel probes, port
//! kinds): they are reported with an eligible flow, never hidden.

use serde::Serialize;

use super::dpflow::{DpFlow, Term, mask_is_zero, mask_part, parse_u64, value_part, walk};

/// One rule of the reference, with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub summary: &'static str,
    pub source: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $summary:literal, $source:literal;)*) => {
        $(pub const $name: Rule = Rule { id: $id, summary: $summary, source: $source };)*
        /// Every rule, for docs and `--rules`.
        pub const ALL: &[Rule] = &[$($name),*];
    };
}

rules! {
    // ---- actions: netdev_tc_parse_nl_actions() (3.1:2009-2156), catch-all 3.1:2149-2153
    HASH_ACTION = "action-hash",
        "`hash(…)` (dp_hash bucket selection of a select group) is never offloaded",
        "ovs-tc-offload.md §1 HASH (8): no case in netdev_tc_parse_nl_actions, catch-all EOPNOTSUPP (3.1:2149-2153)";
    USERSPACE_ACTION = "action-userspace",
        "`userspace(…)` (controller, slow path, sFlow/IPFIX) is not offloadable",
        "ovs-tc-offload.md §1 USERSPACE (2): catch-all EOPNOTSUPP (3.1:2149-2153)";
    SAMPLE_ACTION = "action-sample",
        "`sample(…)` (also controller() with a meter) is not offloadable",
        "ovs-tc-offload.md §1 SAMPLE (6): catch-all EOPNOTSUPP (3.1:2149-2153)";
    TRUNC_ACTION = "action-trunc",
        "`trunc(…)` (mirror snaplen) is not offloadable",
        "ovs-tc-offload.md §1 TRUNC (13): catch-all EOPNOTSUPP (3.1:2149-2153)";
    CLONE_ACTION = "action-clone",
        "`clone(…)` is not offloadable",
        "ovs-tc-offload.md §1 CLONE (20): catch-all EOPNOTSUPP (3.1:2149-2153)";
    OTHER_ACTION = "action-unsupported",
        "an action type netdev_tc_parse_nl_actions does not handle",
        "ovs-tc-offload.md §1: only OUTPUT, PUSH/POP_VLAN, PUSH/POP_MPLS, SET, SET_MASKED, CT, CT_CLEAR, RECIRC, DROP, METER, CHECK_PKT_LEN are handled (3.1:2009-2156)";
    USERSPACE_DP_ACTION = "action-userspace-datapath",
        "`tnl_push`/`tnl_pop`/`lb_output` exist only in the userspace datapath",
        "ovs-tc-offload.md §1 last row: not applicable to tc";
    CHECK_PKT_LEN_NESTED = "action-check-pkt-len-branch",
        "an action inside `check_pkt_len(gt(…),le(…))` is not offloadable, so the whole flow is not",
        "ovs-tc-offload.md §1 CHECK_PKT_LEN: both branches parsed by the same function (parse_check_pkt_len_action, 3.1:1901-2006)";
    SET_KEY = "action-set-key",
        "`set(…)` of a key tc cannot rewrite (only eth, ipv4, ipv6, tcp, udp, mpls, tunnel)",
        "ovs-tc-offload.md §1: \"unsupported set action type\" (3.1:1483), set_flower_map[] (3.1:118-191)";
    SET_SUBFIELD = "action-set-subfield",
        "`set(ipv4|ipv6(…))` of a sub-field tc cannot rewrite (ipv4: only src,dst,ttl,tos; ipv6: only src,dst,hlimit,tclass)",
        "ovs-tc-offload.md §1: \"unsupported sub attribute\" (3.1:1511)";
    SET_TUNNEL = "action-set-tunnel",
        "`set(tunnel(…))` with `tp_src` or an attribute tc does not encode (OAM, erspan, gtpu, vxlan gbp)",
        "ovs-tc-offload.md §1: parse_put_flow_set_action tp_src EOPNOTSUPP (3.1:1595), default: EOPNOTSUPP (3.1:1610)";
    CT_HELPER = "action-ct-helper",
        "`ct(…,helper=…)` (an ALG) is not offloadable",
        "ovs-tc-offload.md §3: case OVS_CT_ATTR_HELPER: return EOPNOTSUPP (3.1:1446-1447); tc-offload.rst: tc does not support ALGs";
    TOO_MANY_ACTIONS = "action-count",
        "more than 16 actions (TCA_ACT_MAX_NUM)",
        "ovs-tc-offload.md §1: action limit TCA_ACT_MAX_NUM = 16 (3.1:2022-2026)";
    DECAP_OUTPUT_RECIRC = "action-decap-output-recirc",
        "with a tunnel match, `output` followed by `recirc` is refused",
        "ovs-tc-offload.md §1 note b: \"tunnel release + output + goto\" (3.1-tc:3374)";
    // ---- matches: netdev_tc_flow_put() (3.1:2159-2498), test_key_and_mask() (3.1:1635-1737)
    DP_HASH_MATCH = "match-dp-hash",
        "a match on `dp_hash` (the buckets after `hash`) is never offloaded",
        "ovs-tc-offload.md §2: \"offloading attribute dp_hash isn't supported\" (3.1:1646-1649)";
    SKB_MARK_MATCH = "match-skb-mark",
        "a match on `skb_mark` other than exactly 0",
        "ovs-tc-offload.md §2: test_key_and_mask (3.1:1641), exact 0 ignored (3.1:2447)";
    SKB_PRIORITY_MATCH = "match-skb-priority",
        "a match on `skb_priority`",
        "ovs-tc-offload.md §2: test_key_and_mask (3.1:1656)";
    CT_STATE_NAT_MATCH = "match-ct-state-nat",
        "a match on the ct_state `snat`/`dnat` bits",
        "ovs-tc-offload.md §2: not in ct_state_support (3.1:1819, 3.1:2683-2720)";
    CT_TUPLE_MATCH = "match-ct-tuple",
        "a match on `ct_tuple4`/`ct_tuple6` (ct_nw_src/dst, ct_tp_src/dst, ct_nw_proto)",
        "ovs-tc-offload.md §2: never translated, left in the mask (test_key_and_mask, 3.1:1635-1737)";
    IPV6_LABEL_MATCH = "match-ipv6-label",
        "a match on the IPv6 flow label",
        "ovs-tc-offload.md §2: ipv6(label=…) not translated (3.1:2364-2442)";
    IPV6_FRAG_MATCH = "match-ipv6-frag",
        "a match on IPv6 fragments (frag=first/later)",
        "ovs-tc-offload.md §2: IPv6 fragments rejected (3.1:1717)";
    ND_MATCH = "match-nd",
        "a match on `nd`/`nd_ext` (IPv6 neighbor discovery)",
        "ovs-tc-offload.md §2: never translated (test_key_and_mask, 3.1:1635-1737)";
    PACKET_TYPE_MATCH = "match-packet-type",
        "a non-Ethernet `packet_type`",
        "ovs-tc-offload.md §2: test_key_and_mask (3.1:1712)";
    MPLS_MATCH = "match-mpls-labels",
        "a match on more than the first MPLS label",
        "ovs-tc-offload.md §2: only lse[0] (3.1:1693)";
    TUNNEL_META_MATCH = "match-tunnel-metadata",
        "a tunnel match on erspan/gtpu/vxlan-gbp metadata or the OAM flag (not in 3.1)",
        "ovs-tc-offload.md §2: tunnel rows (3.1:2192-2250; inferred from code)";
    VLAN_MASK_MATCH = "match-vlan-partial",
        "a partially masked VLAN TCI",
        "ovs-tc-offload.md §2: partial TCI mask EOPNOTSUPP (3.1:2296, 3.1:2330)";
    UNKNOWN_MATCH = "match-unknown",
        "a match field netdev_tc_flow_put does not translate",
        "ovs-tc-offload.md §0.2: any mask bit still set gives \"offloading isn't supported, unknown attribute\" (3.1:1726)";
    // ---- conditions: eligible, but only if the system has what the dump cannot show
    RECIRC_SHARING = "needs-recirc-sharing",
        "recirc_id≠0 or `recirc` needs kernel recirc sharing (OVS_DP_F_TC_RECIRC_SHARING)",
        "ovs-tc-offload.md §0.4: \"flow_put: recirc_id sharing not supported\" (3.1:2465, 3.1-nl:2295)";
    CT_SUPPORT = "needs-ct-probe",
        "ct() / ct_* matches need flower conntrack support (probed at start-up)",
        "ovs-tc-offload.md §1 CT: ct_state_support == 0 → EOPNOTSUPP (3.1:2108-2110), probe 3.1:2658-2727";
    CT_STATE_INV_RPL = "needs-ct-inv-rpl-probe",
        "ct_state inv/rpl bits need the kernel probe to pass (\"supported ovs ct_state bits: 0x3f\")",
        "ovs-tc-offload.md §2/§3: probe_ct_state_support (3.1:2658-2727), since 2.16.0";
    METER_POLICE = "needs-meter-police",
        "`meter(N)` only if that meter is offloaded as a tc police action",
        "ovs-tc-offload.md §1 METER: meter_id_lookup (3.1:2129-2137)";
    SET_IP_PROTO = "needs-ip-proto",
        "an IP rewrite needs the flow's L4 protocol to be TCP/UDP/ICMP/ICMPv6 (csum update); not matched here",
        "ovs-tc-offload.md §1 set(ipv4): csum_update_flag (3.1-tc:2856-2900)";
    TC_PORTS = "needs-tc-ports",
        "in_port and every output must be tc-capable netdevs (representor, uplink, system tunnel vport)",
        "ovs-tc-offload.md §0.1 (3.1-nl:2275) and §1 OUTPUT (3.1:2030-2061)";
}

/// A rule that applies to one flow, with what in the flow triggered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub summary: &'static str,
    pub source: &'static str,
    /// The flow's text that triggered it, e.g. `hash(l4(0))` or `dp_hash(0xd2/0xf)`.
    pub detail: String,
}

impl Finding {
    fn new(rule: Rule, detail: impl Into<String>) -> Finding {
        Finding {
            rule: rule.id,
            summary: rule.summary,
            source: rule.source,
            detail: detail.into(),
        }
    }
}

/// The classification of one flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub eligible: bool,
    /// Why it is not eligible (empty when eligible).
    pub reasons: Vec<Finding>,
    /// What must hold on the system for an eligible flow to actually land in tc.
    pub conditions: Vec<Finding>,
}

/// Classifies one flow.
pub fn classify(flow: &DpFlow) -> Verdict {
    let mut v = Check::default();
    for field in &flow.matches {
        check_match(field, &mut v);
    }
    check_actions(&flow.actions, &mut v, false);
    let count = count_actions(&flow.actions);
    if count > 16 {
        v.no(TOO_MANY_ACTIONS, format!("{count} actions"));
    }
    if flow_matches_tunnel(flow) {
        let mut seen_output = false;
        for a in &flow.actions {
            if is_output(a) {
                seen_output = true;
            } else if seen_output && a.name() == "recirc" {
                v.no(DECAP_OUTPUT_RECIRC, a.text());
            }
        }
    }
    if flow.recirc_id() != 0 || !flow.recirc_targets().is_empty() {
        v.cond(
            RECIRC_SHARING,
            format!("recirc_id({:#x})", flow.recirc_id()),
        );
    }
    let mut ip_rewrite = None;
    walk(&flow.actions, &mut |t| {
        if matches!(t.name(), "set" | "set_masked")
            && let Some(k) = t.args().first()
            && matches!(k.name(), "ipv4" | "ipv6")
        {
            ip_rewrite.get_or_insert_with(|| t.text());
        }
    });
    if let Some(text) = ip_rewrite
        && !ip_proto_is_csum_capable(flow)
    {
        v.cond(SET_IP_PROTO, text);
    }
    v.cond(
        TC_PORTS,
        format!("in_port({})", flow.in_port().unwrap_or("?")),
    );
    Verdict {
        eligible: v.reasons.is_empty(),
        reasons: v.reasons,
        conditions: v.conditions,
    }
}

#[derive(Default)]
struct Check {
    reasons: Vec<Finding>,
    conditions: Vec<Finding>,
}

impl Check {
    fn no(&mut self, rule: Rule, detail: impl Into<String>) {
        self.reasons.push(Finding::new(rule, detail));
    }
    fn cond(&mut self, rule: Rule, detail: impl Into<String>) {
        if !self.conditions.iter().any(|c| c.rule == rule.id) {
            self.conditions.push(Finding::new(rule, detail));
        }
    }
}

/// Whether a printed field/sub-field value takes part in the match: no mask means exact;
/// an all-zero mask means wildcarded (`-m` prints those too).
fn is_used(value: &str) -> bool {
    mask_part(value).is_none_or(|m| !mask_is_zero(m))
}

/// The used sub-fields (`key=value`) of a field, and whether a scalar field is used.
fn field_used(field: &Term) -> bool {
    field.args().iter().any(|a| match a {
        Term::Assign { value, .. } => is_used(value),
        Term::Bare(b) => is_used(b),
        Term::Call { .. } => field_used(a),
    })
}

fn used_subfields(field: &Term) -> Vec<&Term> {
    field
        .args()
        .iter()
        .filter(|a| match a {
            Term::Assign { value, .. } => is_used(value),
            Term::Bare(b) => is_used(b),
            Term::Call { .. } => field_used(a),
        })
        .collect()
}

// OVS_CS_F_* (lib/packets.h): the ct_state bits as the datapath prints them.
const CS_RPL: u64 = 0x08;
const CS_INV: u64 = 0x10;
const CS_SNAT: u64 = 0x40;
const CS_DNAT: u64 = 0x80;

/// The ct_state mask: `0x21/0x3f` → 0x3f, `0x21` → all bits, `+new-est+trk` → the named bits.
fn ct_state_mask(field: &Term) -> u64 {
    let Some(arg) = field.args().first() else {
        return 0;
    };
    let text = arg.name();
    if text.starts_with('+') || text.starts_with('-') {
        let mut mask = 0;
        for flag in text.split(['+', '-']).filter(|f| !f.is_empty()) {
            mask |= match flag {
                "new" => 0x01,
                "est" => 0x02,
                "rel" => 0x04,
                "rpl" => CS_RPL,
                "inv" => CS_INV,
                "trk" => 0x20,
                "snat" => CS_SNAT,
                "dnat" => CS_DNAT,
                // an unknown flag name: count it as something tc may not know
                _ => 1 << 16,
            };
        }
        return mask;
    }
    match mask_part(text) {
        Some(m) => parse_u64(m).unwrap_or(u64::MAX),
        None => u64::MAX,
    }
}

fn check_match(field: &Term, v: &mut Check) {
    let name = field.name();
    if !field_used(field) {
        return;
    }
    match name {
        "recirc_id" | "in_port" | "eth" | "eth_type" | "arp" | "tcp" | "tcp_flags" | "udp"
        | "sctp" | "icmp" | "icmpv6" | "ipv4" => {}
        "ct_zone" | "ct_mark" | "ct_label" => v.cond(CT_SUPPORT, field.text()),
        "dp_hash" => v.no(DP_HASH_MATCH, field.text()),
        "skb_priority" => v.no(SKB_PRIORITY_MATCH, field.text()),
        "skb_mark" => {
            let arg = field.args().first().map_or("", Term::name);
            if parse_u64(value_part(arg)) != Some(0) {
                v.no(SKB_MARK_MATCH, field.text());
            }
        }
        "ct_state" => {
            let mask = ct_state_mask(field);
            if mask & (CS_SNAT | CS_DNAT) != 0 {
                v.no(CT_STATE_NAT_MATCH, field.text());
            } else if mask & !0x3f != 0 {
                v.no(UNKNOWN_MATCH, field.text());
            } else {
                v.cond(CT_SUPPORT, field.text());
                if mask & (CS_INV | CS_RPL) != 0 {
                    v.cond(CT_STATE_INV_RPL, field.text());
                }
            }
        }
        "ct_tuple4" | "ct_tuple6" => v.no(CT_TUPLE_MATCH, field.text()),
        "ipv6" => {
            for sub in used_subfields(field) {
                match (sub.name(), sub) {
                    ("label", _) => v.no(IPV6_LABEL_MATCH, field.text()),
                    ("frag", Term::Assign { value, .. })
                        if matches!(value_part(value), "first" | "later") =>
                    {
                        v.no(IPV6_FRAG_MATCH, field.text())
                    }
                    ("proto", Term::Assign { value, .. })
                        if parse_u64(value_part(value)) == Some(44) =>
                    {
                        v.no(IPV6_FRAG_MATCH, field.text())
                    }
                    _ => {}
                }
            }
        }
        "nd" | "nd_ext" => v.no(ND_MATCH, field.text()),
        "packet_type" => {
            let ethernet = field.arg_value("ns").map(value_part) == Some("0")
                && field.arg_value("id").map(value_part) == Some("0");
            if !ethernet {
                v.no(PACKET_TYPE_MATCH, field.text());
            }
        }
        "vlan" => {
            for sub in used_subfields(field) {
                if let Term::Assign { key, value } = sub
                    && key == "vid"
                    && let Some(m) = mask_part(value)
                    && parse_u64(m) != Some(0xfff)
                {
                    v.no(VLAN_MASK_MATCH, field.text());
                }
            }
        }
        "mpls" => {
            // one `lse0=…` sub-field (or label/tc/ttl/bos of the first) is fine; lse1+ not
            if field
                .args()
                .iter()
                .any(|a| a.name().starts_with("lse") && a.name() != "lse0" && field_used(a))
            {
                v.no(MPLS_MATCH, field.text());
            }
        }
        "encap" => {
            for inner in field.args() {
                check_match(inner, v);
            }
        }
        "tunnel" => {
            for sub in used_subfields(field) {
                match sub.name() {
                    "tun_id" | "src" | "dst" | "ipv6_src" | "ipv6_dst" | "tos" | "ttl"
                    | "tp_src" | "tp_dst" | "geneve" => {}
                    "flags" => {
                        if sub.args().iter().any(|f| f.name().contains("oam")) {
                            v.no(TUNNEL_META_MATCH, sub.text());
                        }
                    }
                    _ => v.no(TUNNEL_META_MATCH, sub.text()),
                }
            }
        }
        _ => v.no(UNKNOWN_MATCH, field.text()),
    }
}

fn is_output(t: &Term) -> bool {
    matches!(t, Term::Bare(b) if b != "drop" && b != "ct_clear" && b != "pop_vlan" && b != "pop_eth" && b != "pop_nsh" && b != "dec_ttl")
}

/// Actions as tc counts them: nested branch actions count, their containers do not.
fn count_actions(actions: &[Term]) -> usize {
    actions
        .iter()
        .map(|a| match a.name() {
            "check_pkt_len" => a
                .args()
                .iter()
                .filter(|b| matches!(b.name(), "gt" | "le"))
                .map(|b| count_actions(b.args()))
                .sum::<usize>()
                .max(1),
            _ => 1,
        })
        .sum()
}

fn check_actions(actions: &[Term], v: &mut Check, nested: bool) {
    for a in actions {
        let before = v.reasons.len();
        check_action(a, v);
        if nested && v.reasons.len() > before {
            v.no(CHECK_PKT_LEN_NESTED, a.text());
        }
    }
}

fn check_action(a: &Term, v: &mut Check) {
    match (a, a.name()) {
        (Term::Bare(_), "drop" | "ct_clear" | "pop_vlan" | "pop_mpls") => {}
        (Term::Bare(_), "pop_eth" | "pop_nsh" | "dec_ttl") => v.no(OTHER_ACTION, a.text()),
        (Term::Bare(_), _) => {} // output to a port (name or number)
        (Term::Call { .. }, "push_vlan" | "push_mpls" | "pop_mpls") => {}
        (Term::Call { .. }, "recirc") => {}
        (Term::Call { .. }, "meter") => v.cond(METER_POLICE, a.text()),
        (Term::Call { .. }, "ct") => {
            v.cond(CT_SUPPORT, a.text());
            if a.arg_value("helper").is_some() || a.arg_value("alg").is_some() {
                v.no(CT_HELPER, a.text());
            }
        }
        (Term::Call { .. }, "set" | "set_masked") => check_set(a, v),
        (Term::Call { .. }, "check_pkt_len") => {
            for branch in a.args() {
                if matches!(branch.name(), "gt" | "le") {
                    check_actions(branch.args(), v, true);
                }
            }
        }
        (Term::Call { .. }, "hash") => v.no(HASH_ACTION, a.text()),
        (Term::Call { .. }, "userspace") => v.no(USERSPACE_ACTION, a.text()),
        (Term::Call { .. }, "sample") => v.no(SAMPLE_ACTION, a.text()),
        (Term::Call { .. }, "trunc") => v.no(TRUNC_ACTION, a.text()),
        (Term::Call { .. }, "clone") => v.no(CLONE_ACTION, a.text()),
        (Term::Call { .. }, "tnl_push" | "tnl_pop" | "lb_output") => {
            v.no(USERSPACE_DP_ACTION, a.text())
        }
        _ => v.no(OTHER_ACTION, a.text()),
    }
}

fn check_set(a: &Term, v: &mut Check) {
    let Some(key) = a.args().first() else {
        v.no(SET_KEY, a.text());
        return;
    };
    let allowed: &[&str] = match key.name() {
        "eth" | "tcp" | "udp" | "mpls" | "eth_type" => return,
        "ipv4" => &["src", "dst", "ttl", "tos"],
        "ipv6" => &["src", "dst", "hlimit", "tclass"],
        "tunnel" => {
            for sub in key.args() {
                match sub.name() {
                    "tun_id" | "src" | "dst" | "ipv6_src" | "ipv6_dst" | "tos" | "ttl"
                    | "tp_dst" | "geneve" => {}
                    "flags" => {
                        if sub.args().iter().any(|f| {
                            f.name()
                                .split(['|', '+', '-'])
                                .any(|x| !matches!(x, "" | "df" | "csum" | "key"))
                        }) {
                            v.no(SET_TUNNEL, sub.text());
                        }
                    }
                    _ => v.no(SET_TUNNEL, sub.text()),
                }
            }
            return;
        }
        _ => {
            v.no(SET_KEY, a.text());
            return;
        }
    };
    for sub in key.args() {
        let ok = allowed.contains(&sub.name());
        // an all-zero mask (set_masked) does not rewrite that sub-field
        let rewrites = match sub {
            Term::Assign { value, .. } => is_used(value),
            _ => true,
        };
        if !ok && rewrites {
            v.no(SET_SUBFIELD, a.text());
            return;
        }
    }
}

fn flow_matches_tunnel(flow: &DpFlow) -> bool {
    flow.field("tunnel").is_some_and(field_used)
}

fn ip_proto_is_csum_capable(flow: &DpFlow) -> bool {
    let proto = |f: &str| {
        flow.field(f)
            .and_then(|t| t.arg_value("proto"))
            .filter(|v| is_used(v))
            .and_then(|v| parse_u64(value_part(v)))
    };
    let has_l4 = ["tcp", "udp", "icmp", "icmpv6"]
        .iter()
        .any(|f| flow.field(f).is_some_and(field_used));
    has_l4
        || matches!(
            proto("ipv4").or_else(|| proto("ipv6")),
            Some(6 | 17 | 1 | 58)
        )
}
