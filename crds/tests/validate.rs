//! Table tests of the semantic validator: each case is one object, validated against the
//! example objects (examples/*.yaml), with the exact errors expected.

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;

use harness::World;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::Value;

fn doc(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("test YAML")
}

/// (case, object, expected errors). An empty list means the object is valid.
const CASES: &[(&str, &str, &[&str])] = &[
    // ---- Vpc
    (
        "a vpc with a fresh namespace is valid",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.0/16], namespaces: [ops]}"#,
        &[],
    ),
    (
        "a vpc service cidr with host bits is refused",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.1/16]}"#,
        &["spec.serviceCIDRs[0]: 10.98.0.1/16 has host bits set; did you mean 10.98.0.0/16?"],
    ),
    (
        "two ipv4 service cidrs are refused",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.0/16, 10.99.0.0/16]}"#,
        &["spec.serviceCIDRs[1]: a second IPv4 entry; at most one per family"],
    ),
    (
        "a join cidr overlapping the service cidr is refused",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.0/16], joinCIDR: 10.98.128.0/17}"#,
        &["spec.joinCIDR: 10.98.128.0/17 overlaps service CIDR 10.98.0.0/16"],
    ),
    (
        "a second default vpc is refused",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.0/16], default: true}"#,
        &["spec.default: VPC \"tenant-a\" is the default VPC already; only one may be"],
    ),
    (
        "a namespace bound to two vpcs is refused",
        r#"
kind: Vpc
metadata: {name: tenant-d}
spec: {serviceCIDRs: [10.98.0.0/16], namespaces: [ops, partner]}"#,
        &["spec.namespaces[1]: namespace \"partner\" is also bound to VPC \"tenant-b\""],
    ),
    (
        "an example vpc revalidated against itself is valid",
        r#"
kind: Vpc
metadata: {name: tenant-a}
spec: {serviceCIDRs: [10.96.0.0/16, "fd00:96::/112"], namespaces: [shop, legacy], joinCIDR: 100.64.0.0/16, default: true}"#,
        &[],
    ),
    // ---- Subnet
    (
        "a subnet in a free range of its vpc is valid",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], gateways: [10.0.3.1], excludeIPs: [10.0.3.2..10.0.3.9], namespaces: [shop]}"#,
        &[],
    ),
    (
        "a subnet of a missing vpc is refused",
        r#"
kind: Subnet
metadata: {name: z}
spec: {vpc: tenant-z, cidrBlocks: [10.0.3.0/24]}"#,
        &["spec.vpc: VPC \"tenant-z\" not found"],
    ),
    (
        "a subnet may overlap a subnet of another vpc",
        r#"
kind: Subnet
metadata: {name: b-more}
spec: {vpc: tenant-b, cidrBlocks: [10.0.2.0/24]}"#,
        &[],
    ),
    (
        "a subnet overlapping its vpc's service cidr is refused",
        r#"
kind: Subnet
metadata: {name: a-bad}
spec: {vpc: tenant-a, cidrBlocks: [10.96.5.0/24]}"#,
        &[
            "spec.cidrBlocks[0]: 10.96.5.0/24 overlaps 10.96.0.0/16, a service or join CIDR of VPC \"tenant-a\"",
        ],
    ),
    (
        "a subnet overlapping its vpc's join cidr is refused",
        r#"
kind: Subnet
metadata: {name: a-bad}
spec: {vpc: tenant-a, cidrBlocks: [100.64.1.0/24]}"#,
        &[
            "spec.cidrBlocks[0]: 100.64.1.0/24 overlaps 100.64.0.0/16, a service or join CIDR of VPC \"tenant-a\"",
        ],
    ),
    (
        "a subnet overlapping another subnet of its vpc is refused",
        r#"
kind: Subnet
metadata: {name: a-bad}
spec: {vpc: tenant-a, cidrBlocks: ["fd00:a:1::/48"]}"#,
        &[
            "spec.cidrBlocks[0]: fd00:a:1::/48 overlaps fd00:a:1::/64 of subnet \"a-web\" in VPC \"tenant-a\"",
        ],
    ),
    (
        "a gateway outside the blocks is refused",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], gateways: [10.0.4.1]}"#,
        &["spec.gateways[0]: 10.0.4.1 is outside the cidrBlocks (10.0.3.0/24)"],
    ),
    (
        "a gateway on the broadcast address is refused",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], gateways: [10.0.3.255]}"#,
        &["spec.gateways[0]: 10.0.3.255 is the network or broadcast address of 10.0.3.0/24"],
    ),
    (
        "an excluded range outside the blocks is refused",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], excludeIPs: [10.0.3.250..10.0.4.5]}"#,
        &["spec.excludeIPs[0]: 10.0.3.250..10.0.4.5 is outside the cidrBlocks (10.0.3.0/24)"],
    ),
    (
        "a subnet serving a namespace of another vpc is refused",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], namespaces: [partner]}"#,
        &[
            "spec.namespaces[0]: namespace \"partner\" belongs to VPC \"tenant-b\", not \"tenant-a\"",
        ],
    ),
    (
        "an unlisted namespace belongs to the default vpc",
        r#"
kind: Subnet
metadata: {name: a-db}
spec: {vpc: tenant-a, cidrBlocks: [10.0.3.0/24], namespaces: [kube-system]}"#,
        &[],
    ),
    // ---- EipGateway
    (
        "a second gateway with its own pool is valid",
        r#"
kind: EipGateway
metadata: {name: public-2}
spec:
  externalNetwork: {cidr: 201.0.0.0/24, gateway: 201.0.0.1, address: 201.0.0.2, localnet: physnet2, vlan: 100}
  pool: [201.0.0.128/25, 201.0.0.10]
  gatewayChassis: [{name: node-1, priority: 10}, {name: node-2, priority: 20}]
  allowedVPCs: [tenant-a]"#,
        &[],
    ),
    (
        "gateway addresses outside the external network are refused",
        r#"
kind: EipGateway
metadata: {name: g}
spec:
  externalNetwork: {cidr: 201.0.0.0/24, gateway: 201.0.1.1, address: 201.0.1.2, localnet: physnet2}
  pool: [201.0.0.100]
  gatewayChassis: [{name: node-1, priority: 10}]"#,
        &[
            "spec.externalNetwork.gateway: 201.0.1.1 is outside the external network 201.0.0.0/24",
            "spec.externalNetwork.address: 201.0.1.2 is outside the external network 201.0.0.0/24",
        ],
    ),
    (
        "overlapping pool ranges are refused",
        r#"
kind: EipGateway
metadata: {name: g}
spec:
  externalNetwork: {cidr: 201.0.0.0/24, gateway: 201.0.0.1, address: 201.0.0.2, localnet: physnet2}
  pool: [201.0.0.100..201.0.0.150, 201.0.0.128/26]
  gatewayChassis: [{name: node-1, priority: 10}]"#,
        &["spec.pool[1]: 201.0.0.128/26 overlaps spec.pool[0] 201.0.0.100..201.0.0.150"],
    ),
    (
        "a pool containing the gateway's own address is refused",
        r#"
kind: EipGateway
metadata: {name: g}
spec:
  externalNetwork: {cidr: 201.0.0.0/24, gateway: 201.0.0.1, address: 201.0.0.2, localnet: physnet2}
  pool: [201.0.0.0/30]
  gatewayChassis: [{name: node-1, priority: 10}]"#,
        &[
            "spec.pool[0]: 201.0.0.0/30 contains the external network's address 201.0.0.2",
            "spec.pool[0]: 201.0.0.0/30 contains the external network's gateway 201.0.0.1",
        ],
    ),
    (
        "duplicate chassis and priorities are refused",
        r#"
kind: EipGateway
metadata: {name: g}
spec:
  externalNetwork: {cidr: 201.0.0.0/24, gateway: 201.0.0.1, address: 201.0.0.2, localnet: physnet2}
  pool: [201.0.0.100]
  gatewayChassis: [{name: node-1, priority: 10}, {name: node-1, priority: 10}]
  allowedVPCs: [tenant-z]"#,
        &[
            "spec.gatewayChassis[1].name: duplicate chassis \"node-1\"",
            "spec.gatewayChassis[1].priority: duplicate priority 10",
            "spec.allowedVPCs[0]: VPC \"tenant-z\" not found",
        ],
    ),
    // ---- VNicIP
    (
        "a vnic ip with a free fixed address is valid",
        r#"
kind: VNicIP
metadata: {name: bm-02, namespace: legacy}
spec: {kind: BareMetal, subnet: a-metal, ips: [10.0.2.11]}"#,
        &[],
    ),
    (
        "a vnic ip on a missing subnet is refused",
        r#"
kind: VNicIP
metadata: {name: x, namespace: legacy}
spec: {kind: Generic, subnet: nowhere}"#,
        &["spec.subnet: subnet \"nowhere\" not found"],
    ),
    (
        "a vnic ip on the subnet gateway is refused",
        r#"
kind: VNicIP
metadata: {name: x, namespace: legacy}
spec: {kind: Generic, subnet: a-metal, ips: [10.0.2.254]}"#,
        &["spec.ips[0]: 10.0.2.254 is the gateway of subnet \"a-metal\""],
    ),
    (
        "a vnic ip on the default gateway of a subnet is refused",
        r#"
kind: VNicIP
metadata: {name: x, namespace: shop}
spec: {kind: Generic, subnet: a-web, ips: ["fd00:a:1::1"]}"#,
        &["spec.ips[0]: fd00:a:1::1 is the gateway of subnet \"a-web\""],
    ),
    (
        "a vnic ip already held by an older vnic ip is refused",
        r#"
kind: VNicIP
metadata: {name: bm-99, namespace: legacy}
spec: {kind: BareMetal, subnet: a-metal, ips: [10.0.2.10]}"#,
        &["spec.ips[0]: 10.0.2.10 is already used by VNicIP legacy/bm-01"],
    ),
    (
        "a vnic ip on the network address is refused",
        r#"
kind: VNicIP
metadata: {name: x, namespace: legacy}
spec: {kind: Generic, subnet: a-metal, ips: [10.0.2.0]}"#,
        &["spec.ips[0]: 10.0.2.0 is the network or broadcast address of 10.0.2.0/24"],
    ),
    // ---- YusurService
    (
        "a dual stack service with fixed addresses in both families is valid",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.7, "fd00:96::7"], ports: [{name: http, port: 80}]}"#,
        &[],
    ),
    (
        "a service in a namespace of no vpc falls back to the default vpc",
        r#"
kind: YusurService
metadata: {name: s, namespace: somewhere}
spec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.8], ports: [{name: http, port: 80}]}"#,
        &[],
    ),
    (
        "an ipv6 family the vpc cannot serve is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: partner}
spec: {scenarios: [ClusterIP], ipFamilies: [IPv6], ports: [{name: http, port: 80}]}"#,
        &["spec.ipFamilies[0]: VPC \"tenant-b\" has no IPv6 service CIDR (10.96.0.0/16)"],
    ),
    (
        "the same vip in another vpc is fine",
        r#"
kind: YusurService
metadata: {name: s, namespace: partner}
spec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.100], ports: [{name: http, port: 80}]}"#,
        &[],
    ),
    (
        "a vip equal to the service cidr's network address is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.0], ports: [{name: http, port: 80}]}"#,
        &["spec.clusterIPs[0]: 10.96.0.0 is the network or broadcast address of 10.96.0.0/16"],
    ),
    (
        "per object rules are repeated for manifests that never met an api server",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec:
  scenarios: [ClusterIP, ClusterIP]
  clusterIPs: [10.96.0.9, 10.96.0.10]
  ipFamilies: [IPv6]
  eip: {gateway: public}
  crossVpc: {clients: [tenant-c]}
  ports: [{name: a, port: 80}, {name: a, port: 80, targetPort: 0}, {name: b, port: 81, targetPort: "8080"}]
  sessionAffinity: {type: None, timeoutSeconds: 5}
  healthCheck: {type: ICMP, port: 1, path: /x, native: true, intervalMillis: 500, timeoutMillis: 500}"#,
        &[
            "spec.ports[1].name: duplicate port name \"a\"",
            "spec.ports[1]: duplicate port 80/TCP",
            "spec.ports[1].targetPort: 0 is not a port number 1..65535",
            "spec.ports[2].targetPort: \"8080\" is a string; write a port number without quotes",
            "spec.scenarios[1]: duplicate scenario ClusterIP",
            "spec.eip: eip is only allowed with the EIP scenario",
            "spec.crossVpc: crossVpc is only allowed with the CrossVPC scenario",
            "spec.clusterIPs[1]: a second IPv4 entry; at most one per family",
            "spec.clusterIPs[0]: 10.96.0.9 is IPv4 but ipFamilies is [IPv6]",
            "spec.clusterIPs[1]: 10.96.0.10 is IPv4 but ipFamilies is [IPv6]",
            "spec.sessionAffinity.timeoutSeconds: only allowed with type ClientIP",
            "spec.healthCheck.intervalMillis: 500 must be greater than timeoutMillis (500)",
            "spec.healthCheck.path: only allowed with type HTTP or HTTPS",
            "spec.healthCheck.port: not allowed with type ICMP",
            "spec.healthCheck.native: native (OVN) health checks exist only for TCP and UDP",
            "spec.healthCheck.native: native (OVN) health checks count in whole seconds: intervalMillis and timeoutMillis must be multiples of 1000",
        ],
    ),
    (
        "the eip scenario without eip is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [EIP, CrossVPC], ports: [{name: http, port: 80}]}"#,
        &[
            "spec.eip: the EIP scenario needs eip (at least eip.gateway)",
            "spec.crossVpc: the CrossVPC scenario needs crossVpc.clients",
        ],
    ),
    (
        "an eip gateway that does not allow the vpc is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: partner}
spec: {scenarios: [EIP], eip: {gateway: only-a}, ports: [{name: http, port: 80}]}"#,
        &[
            "spec.eip.gateway: EipGateway \"only-a\" does not allow VPC \"tenant-b\" (allowedVPCs: tenant-a)",
        ],
    ),
    (
        "a cross vpc service whose clients include its own vpc is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [CrossVPC], crossVpc: {clients: [tenant-a]}, ports: [{name: http, port: 80}]}"#,
        &["spec.crossVpc.clients[0]: \"tenant-a\" is the service's own VPC"],
    ),
    (
        "a cross vpc service of a vpc overlapping another cross vpc service's vpc is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: partner}
spec: {scenarios: [CrossVPC], crossVpc: {clients: [tenant-c]}, ports: [{name: http, port: 80}]}"#,
        &[
            "spec.vpc: VPC \"tenant-b\" overlaps VPC \"tenant-a\" of cross-VPC service shop/catalog (subnet \"b-apps\" 10.0.1.0/24 overlaps subnet \"a-web\" 10.0.1.0/24); one service gateway cannot route to both",
        ],
    ),
    (
        "cross vpc backends selected in a non overlapping vpc are valid",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec:
  scenarios: [CrossVPC]
  crossVpc: {clients: [tenant-c]}
  ports: [{name: http, port: 80}]
  backends: [{type: Pod, selector: {}, namespaceSelector: {matchExpressions: [{key: tenant, operator: In, values: [a, c]}]}}]"#,
        &[],
    ),
    (
        "cross vpc backends selected in an overlapping vpc are refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec:
  scenarios: [CrossVPC]
  crossVpc: {clients: [tenant-c]}
  ports: [{name: http, port: 80}]
  backends: [{type: Pod, selector: {}, namespaceSelector: {matchLabels: {tenant: b}}}]"#,
        &[
            "spec.backends[0].namespaceSelector: VPC \"tenant-b\" overlaps VPC \"tenant-a\" (subnet \"b-apps\" 10.0.1.0/24 overlaps subnet \"a-web\" 10.0.1.0/24); one service gateway cannot route to both",
        ],
    ),
    (
        "backends in the service's namespace of another vpc need the cross vpc scenario",
        r#"
kind: YusurService
metadata: {name: s, namespace: partner}
spec: {vpc: tenant-c, scenarios: [ClusterIP], ports: [{name: http, port: 80}], backends: [{type: Pod, selector: {}}]}"#,
        &[
            "spec.backends[0]: selects namespace \"partner\" of VPC \"tenant-b\"; backends outside VPC \"tenant-c\" need the CrossVPC scenario",
        ],
    ),
    (
        "a static backend outside every subnet of its vpc is refused",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: http, port: 80}], staticBackends: [{address: 10.0.9.9}]}"#,
        &["spec.staticBackends[0].address: 10.0.9.9 is in no subnet of VPC \"tenant-a\""],
    ),
    (
        "a static backend in another vpc needs the cross vpc scenario",
        r#"
kind: YusurService
metadata: {name: s, namespace: shop}
spec: {scenarios: [ClusterIP], ports: [{name: http, port: 80}], staticBackends: [{address: 172.16.1.5, vpc: tenant-c}, {address: 10.0.1.5, vpc: tenant-z}]}"#,
        &[
            "spec.staticBackends[0].vpc: VPC \"tenant-c\" is not the service's VPC \"tenant-a\"; backends outside it need the CrossVPC scenario",
            "spec.staticBackends[1].vpc: VPC \"tenant-z\" not found",
        ],
    ),
    (
        "a service whose namespace has no vpc and no default vpc exists is refused",
        "NO_DEFAULT",
        &[
            "spec.vpc: not set, and namespace \"partner2\" is bound to no VPC and there is no default VPC",
        ],
    ),
    // ---- NetworkProbe
    (
        "a probe of a missing service is refused",
        r#"
kind: NetworkProbe
metadata: {name: p, namespace: shop}
spec:
  service: gone
  backend: {kind: Static, address: 10.0.1.9}
  probe: {type: ICMP}"#,
        &["spec.service: YusurService shop/gone not found"],
    ),
    (
        "an icmp probe with a backend port is refused",
        r#"
kind: NetworkProbe
metadata: {name: p, namespace: shop}
spec:
  service: checkout
  backend: {kind: Static, address: 10.0.1.9, port: 80}
  probe: {type: ICMP}"#,
        &["spec.backend.port: not allowed with an ICMP probe"],
    ),
];

#[test]
fn every_semantic_rule_reports_the_field_and_the_reason() {
    let mut world = World::examples();
    // A gateway only tenant-a may use, for the allowedVPCs case.
    world.add(&doc(r#"
apiVersion: ycloud.io/v1alpha1
kind: EipGateway
metadata: {name: only-a}
spec:
  externalNetwork: {cidr: 202.0.0.0/24, gateway: 202.0.0.1, address: 202.0.0.2, localnet: physnet3}
  pool: [202.0.0.100]
  gatewayChassis: [{name: node-1, priority: 1}]
  allowedVPCs: [tenant-a]"#));
    let mut no_default = World::examples();
    no_default.vpcs.retain(|v| !v.spec.default);
    let mut failures = vec![];
    for (case, yaml, expected) in CASES {
        let (world, object) = if *yaml == "NO_DEFAULT" {
            (
                &no_default,
                doc(
                    "kind: YusurService\nmetadata: {name: s, namespace: partner2}\nspec: {scenarios: [ClusterIP], ports: [{name: http, port: 80}]}",
                ),
            )
        } else {
            (&world, doc(yaml))
        };
        let got = world.semantic_errors(&object);
        let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("{case}:\n  want {want:#?}\n  got  {got:#?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_vip_conflict_is_lost_by_the_same_side_whichever_is_validated() {
    let mut world = World::examples();
    let a = doc(
        "kind: YusurService\nmetadata: {name: aa, namespace: shop}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.77], ports: [{name: http, port: 80}]}",
    );
    let b = doc(
        "kind: YusurService\nmetadata: {name: bb, namespace: shop}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.77], ports: [{name: http, port: 80}]}",
    );
    world.add(&a);
    world.add(&b);
    assert_eq!(
        world.semantic_errors(&a),
        Vec::<String>::new(),
        "the first by name keeps it"
    );
    assert_eq!(
        world.semantic_errors(&b),
        vec![
            "spec.clusterIPs[0]: 10.96.0.77 is already used by service shop/aa in VPC \"tenant-a\""
                .to_owned()
        ]
    );
}

#[test]
fn an_address_held_in_status_beats_an_older_request() {
    let mut world = World::examples();
    let older = doc(
        "kind: YusurService\nmetadata: {name: aa, namespace: shop, creationTimestamp: '2020-01-01T00:00:00Z'}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.78], ports: [{name: http, port: 80}]}",
    );
    let holder = doc(
        "kind: YusurService\nmetadata: {name: zz, namespace: shop, creationTimestamp: '2021-01-01T00:00:00Z'}\nspec: {scenarios: [ClusterIP], ports: [{name: http, port: 80}]}\nstatus: {clusterIPs: [10.96.0.78]}",
    );
    world.add(&older);
    world.add(&holder);
    assert_eq!(
        world.semantic_errors(&older),
        vec![
            "spec.clusterIPs[0]: 10.96.0.78 is already used by service shop/zz in VPC \"tenant-a\""
                .to_owned()
        ]
    );
}

#[test]
fn the_holder_of_a_vip_stays_valid_when_an_older_name_asks_for_it() {
    // The demo's case: web holds 10.96.0.79 (its status) and asks for it; "thief" sorts
    // before "web" and asks for it too. Only the newcomer loses.
    let mut world = World::examples();
    let holder = doc(
        "kind: YusurService\nmetadata: {name: web, namespace: shop}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.79], ports: [{name: http, port: 80}]}\nstatus: {clusterIPs: [10.96.0.79]}",
    );
    let thief = doc(
        "kind: YusurService\nmetadata: {name: thief, namespace: shop}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.79], ports: [{name: http, port: 80}]}",
    );
    world.add(&holder);
    world.add(&thief);
    assert_eq!(world.semantic_errors(&holder), Vec::<String>::new());
    // The controller validates the object as read (no status) against a snapshot that
    // carries what it holds: the same verdict.
    let as_read = doc(
        "kind: YusurService\nmetadata: {name: web, namespace: shop}\nspec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.79], ports: [{name: http, port: 80}]}",
    );
    assert_eq!(world.semantic_errors(&as_read), Vec::<String>::new());
    assert_eq!(
        world.semantic_errors(&thief),
        vec![
            "spec.clusterIPs[0]: 10.96.0.79 is already used by service shop/web in VPC \"tenant-a\""
                .to_owned()
        ]
    );
}

#[test]
fn an_eip_and_a_vnic_address_held_in_status_stay_with_their_holder() {
    let mut world = World::examples();
    let eip_holder = doc(
        "kind: YusurService\nmetadata: {name: zz-eip, namespace: shop}\nspec: {scenarios: [EIP], eip: {gateway: public, address: 200.0.0.101}, ports: [{name: http, port: 80}]}\nstatus: {eip: 200.0.0.101}",
    );
    let eip_asker = doc(
        "kind: YusurService\nmetadata: {name: aa-eip, namespace: shop}\nspec: {scenarios: [EIP], eip: {gateway: public, address: 200.0.0.101}, ports: [{name: http, port: 80}]}",
    );
    let vnic_holder = doc(
        "kind: VNicIP\nmetadata: {name: zz-vnic, namespace: legacy}\nspec: {kind: Generic, subnet: a-metal, ips: [10.0.2.12]}\nstatus: {ips: [10.0.2.12]}",
    );
    let vnic_asker = doc(
        "kind: VNicIP\nmetadata: {name: aa-vnic, namespace: legacy}\nspec: {kind: Generic, subnet: a-metal, ips: [10.0.2.12]}",
    );
    for d in [&eip_holder, &eip_asker, &vnic_holder, &vnic_asker] {
        world.add(d);
    }
    assert_eq!(world.semantic_errors(&eip_holder), Vec::<String>::new());
    assert_eq!(
        world.semantic_errors(&eip_asker),
        vec!["spec.eip.address: 200.0.0.101 is already used by service shop/zz-eip".to_owned()]
    );
    assert_eq!(world.semantic_errors(&vnic_holder), Vec::<String>::new());
    assert_eq!(
        world.semantic_errors(&vnic_asker),
        vec!["spec.ips[0]: 10.0.2.12 is already used by VNicIP legacy/zz-vnic".to_owned()]
    );
}

#[test]
fn of_any_set_of_services_asking_for_one_vip_exactly_one_is_valid() {
    // Three services ask for 10.96.0.80, each holding it in its status or not, with or
    // without a creation time: whatever the mix (two or three holders too), exactly one is
    // valid, and it is the same one whichever is validated first.
    let examples = World::examples();
    let times = [
        None,
        Some("2020-01-01T00:00:00Z"),
        Some("2021-01-01T00:00:00Z"),
    ];
    let mut combos = 0;
    for holds in 0..8u8 {
        for n in 0..27 {
            let (ta, tb, tc) = (&times[n % 3], &times[n / 3 % 3], &times[n / 9]);
            let mut world = examples.clone();
            let docs: Vec<Value> = [("x1", ta), ("x2", tb), ("x3", tc)]
                .iter()
                .enumerate()
                .map(|(i, (name, time))| {
                    let mut y = format!(
                        "kind: YusurService\nmetadata: {{name: {name}, namespace: shop{}}}\nspec: {{scenarios: [ClusterIP], clusterIPs: [10.96.0.80], ports: [{{name: http, port: 80}}]}}",
                        time.map(|t| format!(", creationTimestamp: '{t}'"))
                            .unwrap_or_default(),
                    );
                    if holds & (1 << i) != 0 {
                        y.push_str("\nstatus: {clusterIPs: [10.96.0.80]}");
                    }
                    doc(&y)
                })
                .collect();
            for d in &docs {
                world.add(d);
            }
            let valid: Vec<usize> = (0..docs.len())
                .filter(|i| world.semantic_errors(&docs[*i]).is_empty())
                .collect();
            assert_eq!(
                valid.len(),
                1,
                "holders {holds:03b}, times {ta:?}/{tb:?}/{tc:?}: valid {valid:?}"
            );
            combos += 1;
        }
    }
    assert_eq!(combos, 8 * 27);
}

#[test]
fn label_selectors_follow_kubernetes_semantics() {
    let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "fe")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.to_owned(),
        operator: op.to_owned(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    };
    let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: Some(exprs),
    };
    let cases = [
        (sel(&[], vec![]), true),
        (sel(&[("app", "web")], vec![]), true),
        (sel(&[("app", "db")], vec![]), false),
        (sel(&[], vec![req("app", "In", &["db", "web"])]), true),
        (sel(&[], vec![req("app", "NotIn", &["web"])]), false),
        (sel(&[], vec![req("zone", "NotIn", &["a"])]), true),
        (sel(&[], vec![req("tier", "Exists", &[])]), true),
        (sel(&[], vec![req("tier", "DoesNotExist", &[])]), false),
        (
            sel(&[("app", "web")], vec![req("tier", "In", &["be"])]),
            false,
        ),
        (sel(&[], vec![req("app", "Like", &["web"])]), false),
    ];
    for (i, (selector, want)) in cases.iter().enumerate() {
        assert_eq!(
            ycloud_crds::validate::selector_matches(selector, &labels),
            *want,
            "case {i}: {selector:?}"
        );
    }
}
