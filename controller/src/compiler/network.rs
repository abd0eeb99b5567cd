//! Desired rows of a VPC: its router, a switch per subnet, the join switch, the
//! load-balancer group every switch carries, and the logical switch ports of pods,
//! VNicIPs and node management ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::names::{self, OwnerKind};
use super::topology::{Port, PortOwner, Vpc};

/// A logical switch port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSwitchPort {
    pub name: String,
    /// `""` for a VIF, `router` for the switch side of a router port.
    pub kind: String,
    pub addresses: Vec<String>,
    pub port_security: Vec<String>,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// A logical switch and what hangs off it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSwitch {
    pub name: String,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// By port name.
    pub ports: BTreeMap<String, DesiredSwitchPort>,
    /// Names of the load-balancer groups it carries.
    pub lb_groups: BTreeSet<String>,
}

/// A logical router port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRouterPort {
    pub name: String,
    pub mac: String,
    /// `address/prefix`, one per family.
    pub networks: BTreeSet<String>,
    /// Chassis name → priority. Non-empty makes this a distributed gateway port, which
    /// fails over between the chassis by priority.
    pub gateway_chassis: BTreeMap<String, u16>,
    pub external_ids: BTreeMap<String, String>,
}

/// A static route: `ip_prefix` via `nexthop`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredRoute {
    pub ip_prefix: String,
    pub nexthop: String,
}

/// A source NAT rule: traffic from `logical_ip` leaves as `external_ip`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredSnat {
    pub external_ip: String,
    pub logical_ip: String,
}

/// A logical router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRouter {
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub ports: BTreeMap<String, DesiredRouterPort>,
    pub routes: BTreeSet<DesiredRoute>,
    pub snat: BTreeSet<DesiredSnat>,
}

/// A load-balancer group; its members are the `cluster` load balancers of the VPC.
/// `Load_Balancer_Group` has no `external_ids`: its unique name (`yc-lbg-<vpc>`) is what
/// marks it as ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredLbGroup {
    pub name: String,
}

/// An ACL. The VPC's ACLs are stateless `reject`s that every switch of the VPC carries
/// (see [`add_service_reject`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAcl {
    /// `ACL.name` (at most 63 bytes): the key the planner finds it by among a switch's ACLs.
    pub name: String,
    /// `from-lport` or `to-lport`.
    pub direction: String,
    pub priority: i64,
    /// `ACL.match`.
    pub match_: String,
    pub action: String,
    pub external_ids: BTreeMap<String, String>,
}

/// Everything one VPC owns in NB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVpc {
    pub router: DesiredRouter,
    /// By switch name: the subnets' switches and the join switch.
    pub switches: BTreeMap<String, DesiredSwitch>,
    pub lb_group: DesiredLbGroup,
    /// ACLs every switch of the VPC carries, by name (empty until [`add_service_reject`]).
    pub acls: BTreeMap<String, DesiredAcl>,
}

/// Why a VPC's rows can't be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("subnet {subnet}: {cidr} has no room for a gateway and hosts")]
    CidrTooSmall { subnet: String, cidr: IpNet },
    #[error("subnet {subnet}: more than one {family} CIDR")]
    TwoCidrsOfOneFamily {
        subnet: String,
        family: &'static str,
    },
    #[error("subnet {subnet}: no CIDR")]
    NoCidr { subnet: String },
    #[error("port {port}: subnet {subnet} is not in VPC {vpc}")]
    UnknownSubnet {
        port: String,
        subnet: String,
        vpc: String,
    },
    #[error("port {port}: VPC {vpc} has no join network for node ports")]
    NoJoinNetwork { port: String, vpc: String },
    #[error("port {port}: address {ip} is outside every CIDR of {switch}")]
    AddressOutsideSubnet {
        port: String,
        ip: IpAddr,
        switch: String,
    },
}

/// The VPC's router name.
pub fn router_name(vpc: &str) -> String {
    format!("yc-vpc-{vpc}")
}

/// A subnet's switch name (subnet names are cluster-wide unique).
pub fn subnet_switch_name(subnet: &str) -> String {
    format!("yc-subnet-{subnet}")
}

/// The VPC's join switch name.
pub fn join_switch_name(vpc: &str) -> String {
    format!("yc-join-{vpc}")
}

/// The router port that connects `switch` (names are unique: `Logical_Router_Port.name`
/// has a unique index).
pub fn router_port_name(switch: &str) -> String {
    format!("{switch}-rtr")
}

/// The switch-side peer of [`router_port_name`].
pub fn switch_router_port_name(switch: &str) -> String {
    format!("{switch}-to-rtr")
}

/// The gateway of a CIDR: the address after the network address, when the CIDR also has
/// room for hosts (at least a /30 or a /126).
pub fn gateway(cidr: IpNet) -> Option<IpAddr> {
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    if host_bits < 2 {
        return None;
    }
    Some(match cidr.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n) + 1).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n) + 1).into()),
    })
}

/// A locally administered MAC derived from an address (`0a:58` + the low 4 bytes), so a
/// router port keeps its MAC across restarts and rebuilds.
pub fn mac_for(ip: IpAddr) -> String {
    let b: [u8; 4] = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

struct SwitchPlan {
    name: String,
    role: &'static str,
    cidrs: Vec<IpNet>,
    gateways: Vec<IpAddr>,
}

/// The rows of one VPC, with the ports of its pods, VNicIPs and nodes.
pub fn vpc_rows(vpc: &Vpc, ports: &[Port]) -> Result<DesiredVpc, NetworkError> {
    let owner = vpc.name.as_str();
    let router_name = router_name(owner);
    let lb_group = DesiredLbGroup {
        name: names::vpc_lb_group(owner),
    };
    let mut plans = Vec::new();
    for s in &vpc.subnets {
        check_families(&s.name, &s.cidrs)?;
        plans.push(SwitchPlan {
            name: subnet_switch_name(&s.name),
            role: "subnet",
            cidrs: s.cidrs.clone(),
            gateways: s.gateways.clone(),
        });
    }
    if let Some(join) = vpc.join {
        plans.push(SwitchPlan {
            name: join_switch_name(owner),
            role: "join",
            cidrs: vec![join],
            gateways: vec![],
        });
    }

    let mut router = DesiredRouter {
        name: router_name.clone(),
        options: BTreeMap::new(),
        external_ids: names::owner_ids(OwnerKind::Vpc, owner, "router"),
        ports: BTreeMap::new(),
        routes: BTreeSet::new(),
        snat: BTreeSet::new(),
    };
    let mut switches = BTreeMap::new();
    for plan in &plans {
        let mut networks = BTreeSet::new();
        let mut first_gw = None;
        for &cidr in &plan.cidrs {
            let first = gateway(cidr).ok_or_else(|| NetworkError::CidrTooSmall {
                subnet: plan.name.clone(),
                cidr,
            })?;
            // The subnet's own gateway for this CIDR, if it names one (the API checks that
            // it is a host of the CIDR), else the first host.
            let gw = plan
                .gateways
                .iter()
                .copied()
                .find(|g| cidr.contains(g) && *g != cidr.network())
                .unwrap_or(first);
            first_gw.get_or_insert(gw);
            networks.insert(format!("{gw}/{}", cidr.prefix_len()));
        }
        let gw = first_gw.ok_or_else(|| NetworkError::NoCidr {
            subnet: plan.name.clone(),
        })?;
        let lrp = router_port_name(&plan.name);
        router.ports.insert(
            lrp.clone(),
            DesiredRouterPort {
                name: lrp.clone(),
                mac: mac_for(gw),
                networks,
                gateway_chassis: BTreeMap::new(),
                external_ids: names::owner_ids(OwnerKind::Vpc, owner, plan.role),
            },
        );
        let peer = switch_router_port_name(&plan.name);
        let mut other_config = BTreeMap::new();
        if let Some(v4) = plan.cidrs.iter().find(|c| matches!(c, IpNet::V4(_))) {
            other_config.insert("subnet".to_owned(), v4.trunc().to_string());
        }
        if let Some(v6) = plan.cidrs.iter().find(|c| matches!(c, IpNet::V6(_))) {
            other_config.insert("ipv6_prefix".to_owned(), v6.trunc().addr().to_string());
        }
        let sw_ports = BTreeMap::from([(
            peer.clone(),
            DesiredSwitchPort {
                name: peer,
                kind: "router".to_owned(),
                addresses: vec!["router".to_owned()],
                port_security: vec![],
                options: BTreeMap::from([("router-port".to_owned(), lrp)]),
                external_ids: names::owner_ids(OwnerKind::Vpc, owner, plan.role),
            },
        )]);
        switches.insert(
            plan.name.clone(),
            DesiredSwitch {
                name: plan.name.clone(),
                other_config,
                external_ids: names::owner_ids(OwnerKind::Vpc, owner, plan.role),
                ports: sw_ports,
                lb_groups: BTreeSet::from([lb_group.name.clone()]),
            },
        );
    }

    for port in ports.iter().filter(|p| p.vpc == vpc.name) {
        let switch = match &port.subnet {
            Some(subnet) => {
                let name = subnet_switch_name(subnet);
                if !vpc.subnets.iter().any(|s| &s.name == subnet) {
                    return Err(NetworkError::UnknownSubnet {
                        port: port.name.clone(),
                        subnet: subnet.clone(),
                        vpc: vpc.name.clone(),
                    });
                }
                name
            }
            None => {
                if vpc.join.is_none() {
                    return Err(NetworkError::NoJoinNetwork {
                        port: port.name.clone(),
                        vpc: vpc.name.clone(),
                    });
                }
                join_switch_name(owner)
            }
        };
        let plan = plans
            .iter()
            .find(|p| p.name == switch)
            .expect("switch planned above");
        for ip in &port.ips {
            if !plan.cidrs.iter().any(|c| c.contains(ip)) {
                return Err(NetworkError::AddressOutsideSubnet {
                    port: port.name.clone(),
                    ip: *ip,
                    switch,
                });
            }
        }
        let mut addr = port.mac.clone();
        for ip in &port.ips {
            addr.push(' ');
            addr.push_str(&ip.to_string());
        }
        let (kind, key) = match &port.owner {
            PortOwner::Pod(k) => ("pod", k),
            PortOwner::VNicIp(k) => ("vnicip", k),
            PortOwner::Node(k) => ("node", k),
        };
        let mut external_ids = names::owner_ids(OwnerKind::Vpc, owner, "port");
        external_ids.insert(format!("ycloud.io/{kind}"), key.clone());
        let sw = switches.get_mut(&switch).expect("switch built above");
        sw.ports.insert(
            port.name.clone(),
            DesiredSwitchPort {
                name: port.name.clone(),
                kind: String::new(),
                addresses: vec![addr.clone()],
                port_security: vec![addr],
                options: BTreeMap::new(),
                external_ids,
            },
        );
    }
    Ok(DesiredVpc {
        router,
        switches,
        lb_group,
        acls: BTreeMap::new(),
    })
}

/// The name of the ACL that refuses a free address of the VPC's service CIDR of one
/// family (`ipv4`, `ipv6`).
pub fn service_reject_acl_name(family: &str) -> String {
    format!("yc-svc-reject-{family}")
}

/// The priority of the service-CIDR reject ACLs. Any value works for OVN (our switches
/// carry no other ACL); a middle one leaves room above and below for an operator's.
pub const SERVICE_REJECT_PRIORITY: i64 = 1000;

/// Makes the VPC refuse, at once, a connection to an address of its service CIDRs that no
/// load balancer serves: a free address, a deleted service's VIP, or a port a live VIP
/// does not listen on. Call it after the gateway uplinks are added (it reads the router's
/// routes).
///
/// Why a `to-lport` reject on every switch of the VPC: the switch's load balancers DNAT a
/// served VIP:port in the ingress pipeline, so in the egress pipeline a packet whose
/// destination is still inside the service CIDR is one no load balancer took. Without this
/// it reaches the VPC router, which has no route for it (or sends it out the EIP uplink's
/// default route) and the client waits for its own timeout; OVN 23.03's routers have no
/// reject action (static routes can only `discard`, policies only `drop`). The ACL is
/// stateless, so it puts no conntrack on live traffic, and `reject` answers a TCP SYN
/// with a RST and anything else with ICMP unreachable (ovn-controller builds them, for
/// refused packets only). Rows: one ACL per switch and family, none per service.
///
/// Addresses of the CIDR the router routes elsewhere (the cross-VPC VIPs of other VPCs
/// that this VPC reaches through the service gateway, when the VPCs' service CIDRs
/// overlap) are excluded from the match.
pub fn add_service_reject(vpc: &str, d: &mut DesiredVpc, service_cidrs: &[IpNet]) {
    d.acls.clear();
    for cidr in service_cidrs {
        let cidr = cidr.trunc();
        let (family, field) = match cidr {
            IpNet::V4(_) => ("ipv4", "ip4.dst"),
            IpNet::V6(_) => ("ipv6", "ip6.dst"),
        };
        // Routed prefixes inside the CIDR, sorted and deduplicated (BTreeSet), so the
        // match is stable across rebuilds and a recompile writes nothing.
        let routed: BTreeSet<String> = d
            .router
            .routes
            .iter()
            .filter_map(|r| r.ip_prefix.parse::<IpNet>().ok())
            .filter(|p| cidr.contains(p))
            .map(|p| {
                if p.prefix_len() == p.max_prefix_len() {
                    p.addr().to_string()
                } else {
                    p.trunc().to_string()
                }
            })
            .collect();
        let mut m = format!("{field} == {cidr}");
        if !routed.is_empty() {
            let list: Vec<&str> = routed.iter().map(String::as_str).collect();
            m.push_str(&format!(" && {field} != {{{}}}", list.join(", ")));
        }
        let name = service_reject_acl_name(family);
        d.acls.insert(
            name.clone(),
            DesiredAcl {
                name,
                direction: "to-lport".to_owned(),
                priority: SERVICE_REJECT_PRIORITY,
                match_: m,
                action: "reject".to_owned(),
                external_ids: names::owner_ids(OwnerKind::Vpc, vpc, "service-reject"),
            },
        );
    }
}

fn check_families(subnet: &str, cidrs: &[IpNet]) -> Result<(), NetworkError> {
    if cidrs.is_empty() {
        return Err(NetworkError::NoCidr {
            subnet: subnet.to_owned(),
        });
    }
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        if cidrs
            .iter()
            .filter(|c| matches!(c, IpNet::V4(_)) == v4)
            .count()
            > 1
        {
            return Err(NetworkError::TwoCidrsOfOneFamily {
                subnet: subnet.to_owned(),
                family,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::topology::Subnet;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn tenant_a() -> Vpc {
        Vpc {
            name: "tenant-a".into(),
            subnets: vec![
                Subnet {
                    name: "a1".into(),
                    cidrs: vec![net("10.0.1.0/24"), net("fd00:a1::/64")],
                    gateways: vec![],
                },
                Subnet {
                    name: "a2".into(),
                    cidrs: vec![net("10.0.2.0/24")],
                    gateways: vec![],
                },
            ],
            join: Some(net("100.64.0.0/24")),
        }
    }

    fn pod(name: &str, subnet: Option<&str>, ips: &[&str]) -> Port {
        Port {
            name: name.into(),
            vpc: "tenant-a".into(),
            subnet: subnet.map(Into::into),
            mac: "0a:00:00:00:01:0b".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            owner: PortOwner::Pod(format!("shop/{name}")),
        }
    }

    #[test]
    fn a_vpc_is_a_router_a_switch_per_subnet_and_a_join_switch_all_in_one_lb_group() {
        let d = vpc_rows(&tenant_a(), &[]).unwrap();
        assert_eq!(d.router.name, "yc-vpc-tenant-a");
        let lrps: Vec<_> = d.router.ports.keys().cloned().collect();
        assert_eq!(
            lrps,
            [
                "yc-join-tenant-a-rtr",
                "yc-subnet-a1-rtr",
                "yc-subnet-a2-rtr"
            ]
        );
        let a1 = &d.router.ports["yc-subnet-a1-rtr"];
        assert_eq!(
            a1.networks,
            BTreeSet::from(["10.0.1.1/24".to_owned(), "fd00:a1::1/64".to_owned()])
        );
        assert_eq!(a1.mac, "0a:58:0a:00:01:01");
        assert_eq!(d.switches.len(), 3);
        for sw in d.switches.values() {
            assert_eq!(
                sw.lb_groups,
                BTreeSet::from(["yc-lbg-tenant-a".to_owned()]),
                "{}",
                sw.name
            );
            let rp = &sw.ports[&switch_router_port_name(&sw.name)];
            assert_eq!(rp.kind, "router");
            assert_eq!(rp.options["router-port"], router_port_name(&sw.name));
        }
        let s1 = &d.switches["yc-subnet-a1"];
        assert_eq!(s1.other_config["subnet"], "10.0.1.0/24");
        assert_eq!(s1.other_config["ipv6_prefix"], "fd00:a1::");
        assert_eq!(
            d.switches["yc-join-tenant-a"].other_config["subnet"],
            "100.64.0.0/24"
        );
    }

    #[test]
    fn pods_and_node_ports_land_on_their_switch_with_port_security() {
        let ports = [
            pod("web-1", Some("a1"), &["10.0.1.11", "fd00:a1::11"]),
            Port {
                owner: PortOwner::Node("node1".into()),
                ..pod("node-node1", None, &["100.64.0.2"])
            },
        ];
        let d = vpc_rows(&tenant_a(), &ports).unwrap();
        let p = &d.switches["yc-subnet-a1"].ports["web-1"];
        assert_eq!(p.addresses, ["0a:00:00:00:01:0b 10.0.1.11 fd00:a1::11"]);
        assert_eq!(p.port_security, p.addresses);
        assert_eq!(p.external_ids["ycloud.io/pod"], "shop/web-1");
        let n = &d.switches["yc-join-tenant-a"].ports["node-node1"];
        assert_eq!(n.external_ids["ycloud.io/node"], "node1");
    }

    #[test]
    fn ports_of_other_vpcs_are_ignored() {
        let mut other = pod("x", Some("b1"), &["10.0.1.11"]);
        other.vpc = "tenant-b".into();
        let d = vpc_rows(&tenant_a(), &[other]).unwrap();
        assert!(d.switches.values().all(|s| s.ports.len() == 1));
    }

    #[test]
    fn bad_ports_and_subnets_are_errors_that_name_the_culprit() {
        let err = vpc_rows(&tenant_a(), &[pod("p", Some("nope"), &["10.0.1.5"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port p: subnet nope is not in VPC tenant-a"
        );
        let err = vpc_rows(&tenant_a(), &[pod("p", Some("a2"), &["10.0.1.5"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port p: address 10.0.1.5 is outside every CIDR of yc-subnet-a2"
        );
        let mut vpc = tenant_a();
        vpc.join = None;
        let err = vpc_rows(&vpc, &[pod("n", None, &["100.64.0.2"])]).unwrap_err();
        assert!(matches!(err, NetworkError::NoJoinNetwork { .. }));
        let mut vpc = tenant_a();
        vpc.subnets[1].cidrs.push(net("10.0.3.0/24"));
        assert_eq!(
            vpc_rows(&vpc, &[]).unwrap_err().to_string(),
            "subnet a2: more than one IPv4 CIDR"
        );
        let mut vpc = tenant_a();
        vpc.subnets[1].cidrs = vec![net("10.0.3.7/32")];
        assert!(matches!(
            vpc_rows(&vpc, &[]),
            Err(NetworkError::CidrTooSmall { .. })
        ));
    }

    #[test]
    fn a_subnet_that_names_its_gateway_gets_it_on_the_router_port() {
        let mut vpc = tenant_a();
        vpc.subnets[1].gateways = vec!["10.0.2.254".parse().unwrap()];
        let d = vpc_rows(&vpc, &[]).unwrap();
        let p = &d.router.ports["yc-subnet-a2-rtr"];
        assert_eq!(p.networks, BTreeSet::from(["10.0.2.254/24".to_owned()]));
        assert_eq!(p.mac, "0a:58:0a:00:02:fe");
        // A gateway outside the CIDR is ignored: the first host it is.
        vpc.subnets[1].gateways = vec!["10.9.9.9".parse().unwrap()];
        let d = vpc_rows(&vpc, &[]).unwrap();
        assert_eq!(
            d.router.ports["yc-subnet-a2-rtr"].networks,
            BTreeSet::from(["10.0.2.1/24".to_owned()])
        );
    }

    #[test]
    fn service_reject_is_one_acl_per_family_whatever_the_routes_outside_the_cidr() {
        // (service CIDRs, routed prefixes, expected (name, match))
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], &["10.96.0.100/32"], &[]),
            (
                &["10.96.0.0/16"],
                &[],
                &[("yc-svc-reject-ipv4", "ip4.dst == 10.96.0.0/16")],
            ),
            (
                // the EIP uplink's default route and routes outside the CIDR change nothing
                &["10.96.0.0/16"],
                &["0.0.0.0/0", "10.97.0.5/32"],
                &[("yc-svc-reject-ipv4", "ip4.dst == 10.96.0.0/16")],
            ),
            (
                // cross-VPC VIPs of other VPCs, routed to the service gateway: left alone
                &["10.96.0.0/16", "fd00:96::/112"],
                &["10.96.0.200/32", "10.96.0.100/32", "fd00:96::64/128"],
                &[
                    (
                        "yc-svc-reject-ipv4",
                        "ip4.dst == 10.96.0.0/16 && ip4.dst != {10.96.0.100, 10.96.0.200}",
                    ),
                    (
                        "yc-svc-reject-ipv6",
                        "ip6.dst == fd00:96::/112 && ip6.dst != {fd00:96::64}",
                    ),
                ],
            ),
        ];
        for (cidrs, routed, want) in cases {
            let mut d = vpc_rows(&tenant_a(), &[]).unwrap();
            for r in *routed {
                d.router.routes.insert(DesiredRoute {
                    ip_prefix: (*r).to_owned(),
                    nexthop: "100.65.0.2".to_owned(),
                });
            }
            let cidrs: Vec<IpNet> = cidrs.iter().map(|c| net(c)).collect();
            add_service_reject("tenant-a", &mut d, &cidrs);
            let got: Vec<(&str, &str)> = d
                .acls
                .values()
                .map(|a| (a.name.as_str(), a.match_.as_str()))
                .collect();
            assert_eq!(&got, want, "cidrs {cidrs:?} routes {routed:?}");
            for a in d.acls.values() {
                assert_eq!(
                    (a.direction.as_str(), a.action.as_str()),
                    ("to-lport", "reject")
                );
                assert_eq!(a.external_ids[names::ROLE_KEY], "service-reject");
                assert_eq!(a.external_ids[names::NAME_KEY], "tenant-a");
            }
        }
    }

    #[test]
    fn service_reject_is_rebuilt_not_accumulated() {
        let mut d = vpc_rows(&tenant_a(), &[]).unwrap();
        add_service_reject(
            "tenant-a",
            &mut d,
            &[net("10.96.0.0/16"), net("fd00:96::/112")],
        );
        add_service_reject("tenant-a", &mut d, &[net("10.96.0.0/16")]);
        assert_eq!(d.acls.keys().collect::<Vec<_>>(), ["yc-svc-reject-ipv4"]);
    }

    #[test]
    fn router_macs_are_derived_from_addresses_and_stable() {
        assert_eq!(mac_for("10.0.1.1".parse().unwrap()), "0a:58:0a:00:01:01");
        assert_eq!(mac_for("fd00::a:1".parse().unwrap()), "0a:58:00:0a:00:01");
    }
}
