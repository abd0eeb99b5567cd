//! Desired `Load_Balancer` rows of one service.
//!
//! One row per (service, protocol, placement):
//! - `cluster`: the ClusterIP VIPs; a member of the VPC's load-balancer group, which every
//!   switch of the VPC (the join switch included) carries, so pods and nodes reach it.
//! - `eip`: the EIP VIPs; attached to the VPC router, whose uplink is a distributed gateway
//!   port (switch-attached LBs never see traffic routed in from outside).
//! - `svcgw`: the ClusterIP VIPs again, on the service-gateway router, for clients of
//!   other VPCs (the router SNATs to its own address with `lb_force_snat_ip`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::names::{self, OwnerKind};
use super::topology::{DatapathMode, HashField, MonitorPort, NativeCheck, Protocol, Service};

/// OVN refuses larger `affinity_timeout` values (ovn-nb(5)).
pub const MAX_AFFINITY_TIMEOUT: u32 = 65_535;

/// Where a load balancer is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    /// Member of the VPC's load-balancer group.
    Cluster,
    /// On the VPC router.
    Eip,
    /// On the service-gateway router.
    ServiceGateway,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Cluster => "cluster",
            Placement::Eip => "eip",
            Placement::ServiceGateway => "svcgw",
        }
    }
}

/// One desired `Load_Balancer` row and where it is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredLb {
    pub name: String,
    pub vpc: String,
    pub placement: Placement,
    pub protocol: Protocol,
    /// `"vip:port"` → `"backend:port,backend:port"` (empty: no healthy backend, rejects).
    pub vips: BTreeMap<String, String>,
    pub selection_fields: BTreeSet<HashField>,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// OVN-native checks: VIP → its `Load_Balancer_Health_Check` options (empty: none).
    pub health_checks: BTreeMap<String, BTreeMap<String, String>>,
    /// `ip_port_mappings`: backend IP → `<lsp>:<monitor source>` (native checks only).
    pub ip_port_mappings: BTreeMap<String, String>,
}

/// Why a service can't be compiled. Its rows stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error(
        "service {service}: spec.sessionAffinity.timeoutSeconds {value} is above {MAX_AFFINITY_TIMEOUT}, the most OVN supports"
    )]
    AffinityTimeout { service: String, value: u32 },
    #[error("service {service}: scenario {scenario} needs {what}, and none is allocated")]
    MissingAddress {
        service: String,
        scenario: &'static str,
        what: &'static str,
    },
    #[error("service {service}: spec.ports is empty")]
    NoPorts { service: String },
}

/// The OVN form of a VIP or backend address: `1.2.3.4:80`, `[fd00::1]:80`.
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// The desired load balancers of one service.
pub fn service_lbs(svc: &Service, mode: DatapathMode) -> Result<Vec<DesiredLb>, LbError> {
    let key = svc.key();
    if svc.ports.is_empty() {
        return Err(LbError::NoPorts { service: key });
    }
    if let Some(t) = svc.affinity_timeout
        && t > MAX_AFFINITY_TIMEOUT
    {
        return Err(LbError::AffinityTimeout {
            service: key,
            value: t,
        });
    }
    let mut placements: Vec<(Placement, Vec<IpAddr>)> = Vec::new();
    if svc.scenarios.cluster_ip || svc.scenarios.cross_vpc {
        if svc.cluster_ips.is_empty() {
            return Err(LbError::MissingAddress {
                service: key,
                scenario: if svc.scenarios.cluster_ip {
                    "ClusterIP"
                } else {
                    "CrossVPC"
                },
                what: "a cluster IP",
            });
        }
        if svc.scenarios.cluster_ip {
            placements.push((Placement::Cluster, svc.cluster_ips.clone()));
        }
        if svc.scenarios.cross_vpc {
            placements.push((Placement::ServiceGateway, svc.cluster_ips.clone()));
        }
    }
    if svc.scenarios.eip {
        let Some(eip) = svc.eip else {
            return Err(LbError::MissingAddress {
                service: key,
                scenario: "EIP",
                what: "an EIP",
            });
        };
        placements.push((Placement::Eip, vec![eip]));
    }

    let selection_fields: BTreeSet<HashField> = match (svc.hash_fields.is_empty(), mode) {
        (false, _) => svc.hash_fields.iter().copied().collect(),
        (true, DatapathMode::Offload) => HashField::OFFLOAD_DEFAULT.into_iter().collect(),
        (true, DatapathMode::Default) => BTreeSet::new(),
    };
    let protocols: BTreeSet<Protocol> = svc.ports.iter().map(|p| p.protocol).collect();

    let mut out = Vec::new();
    for (placement, vips) in &placements {
        for &protocol in &protocols {
            let mut vip_map = BTreeMap::new();
            for port in svc.ports.iter().filter(|p| p.protocol == protocol) {
                for &vip in vips {
                    // A VIP only balances to backends of its own address family.
                    let backends: BTreeSet<String> = port
                        .backends
                        .iter()
                        .filter(|b| b.healthy && b.ip.is_ipv4() == vip.is_ipv4())
                        .map(|b| endpoint(b.ip, b.port))
                        .collect();
                    let joined = backends.into_iter().collect::<Vec<_>>().join(",");
                    vip_map.insert(endpoint(vip, port.port), joined);
                }
            }
            let mut options = BTreeMap::from([
                // No healthy backend: reset/unreachable at once, never a silent black hole.
                ("reject".to_owned(), "true".to_owned()),
                // A removed backend's connections are flushed, so clients reconnect to a
                // live one instead of retrying into conntrack state that points at a corpse.
                ("ct_flush".to_owned(), "true".to_owned()),
                // VIPs are routed to where they live, never answered by ARP: the
                // responder flows would cost northd work on every router for nothing.
                ("neighbor_responder".to_owned(), "none".to_owned()),
            ]);
            if let Some(t) = svc.affinity_timeout {
                options.insert("affinity_timeout".to_owned(), t.to_string());
            }
            if *placement == Placement::Cluster {
                // A pod that reaches its own service sees the VIP as the source: explicit, so
                // a reader of the row need not know OVN's default.
                let v4 = vips.iter().find(|a| a.is_ipv4());
                let v6 = vips.iter().find(|a| a.is_ipv6());
                let snat: Vec<String> = v4.into_iter().chain(v6).map(|a| a.to_string()).collect();
                options.insert("hairpin_snat_ip".to_owned(), snat.join(" "));
            }
            let role = format!("{}:{}", protocol.as_str(), placement.as_str());
            let mut external_ids = names::owner_ids(OwnerKind::Service, &key, &role);
            external_ids.insert("ycloud.io/vpc".to_owned(), svc.vpc.clone());
            out.push(DesiredLb {
                name: names::service_lb(
                    &svc.namespace,
                    &svc.name,
                    protocol.as_str(),
                    placement.as_str(),
                ),
                vpc: svc.vpc.clone(),
                placement: *placement,
                protocol,
                vips: vip_map,
                selection_fields: selection_fields.clone(),
                options,
                external_ids,
                health_checks: BTreeMap::new(),
                ip_port_mappings: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

/// Adds OVN-native health checks to a service's load balancers (`healthCheck.native`):
/// a `Load_Balancer_Health_Check` for every IPv4 VIP of a TCP or UDP row, and the
/// `ip_port_mappings` of every backend address OVN can monitor (one on a logical switch
/// port of ours, given by `ports`). OVN 23.03 monitors neither SCTP nor IPv6, and a backend
/// without a mapping is never monitored (always in the VIP): both are left as they are.
pub fn add_native_checks(
    lbs: &mut [DesiredLb],
    check: &NativeCheck,
    ports: &BTreeMap<IpAddr, MonitorPort>,
) {
    let options = BTreeMap::from([
        ("interval".to_owned(), check.interval_secs.to_string()),
        ("timeout".to_owned(), check.timeout_secs.to_string()),
        ("success_count".to_owned(), check.success_count.to_string()),
        ("failure_count".to_owned(), check.failure_count.to_string()),
    ]);
    for lb in lbs {
        if !matches!(lb.protocol, Protocol::Tcp | Protocol::Udp) {
            continue;
        }
        for (vip, backends) in &lb.vips {
            if !vip.parse::<SocketAddr>().is_ok_and(|v| v.ip().is_ipv4()) {
                continue;
            }
            lb.health_checks.insert(vip.clone(), options.clone());
            for b in backends
                .split(',')
                .filter_map(|b| b.parse::<SocketAddr>().ok())
            {
                if let Some(p) = ports.get(&b.ip()) {
                    lb.ip_port_mappings
                        .insert(b.ip().to_string(), format!("{}:{}", p.lsp, p.source));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::topology::{Backend, Scenarios, ServicePort};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn backend(addr: &str, port: u16, healthy: bool) -> Backend {
        Backend {
            ip: ip(addr),
            port,
            healthy,
        }
    }

    fn web() -> Service {
        Service {
            namespace: "shop".into(),
            name: "web".into(),
            vpc: "tenant-a".into(),
            scenarios: Scenarios {
                cluster_ip: true,
                ..Default::default()
            },
            cluster_ips: vec![ip("10.96.0.100")],
            eip: None,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                backends: vec![
                    backend("10.0.1.12", 8080, true),
                    backend("10.0.1.11", 8080, true),
                ],
            }],
            affinity_timeout: None,
            hash_fields: vec![],
        }
    }

    #[test]
    fn a_cluster_ip_service_is_one_group_member_with_sorted_backends() {
        let lbs = service_lbs(&web(), DatapathMode::Default).unwrap();
        assert_eq!(lbs.len(), 1);
        let lb = &lbs[0];
        assert_eq!(lb.name, "ysvc:shop/web:tcp:cluster");
        assert_eq!(lb.placement, Placement::Cluster);
        assert_eq!(
            lb.vips,
            BTreeMap::from([(
                "10.96.0.100:80".to_owned(),
                "10.0.1.11:8080,10.0.1.12:8080".to_owned()
            )])
        );
        assert!(lb.selection_fields.is_empty());
        assert_eq!(lb.options["reject"], "true");
        assert_eq!(lb.options["hairpin_snat_ip"], "10.96.0.100");
        assert_eq!(lb.options["neighbor_responder"], "none");
        assert!(!lb.options.contains_key("affinity_timeout"));
        assert_eq!(lb.external_ids[names::NAME_KEY], "shop/web");
        assert_eq!(lb.external_ids[names::ROLE_KEY], "tcp:cluster");
    }

    #[test]
    fn offload_mode_always_sets_selection_fields_so_no_dp_hash_is_needed() {
        let lbs = service_lbs(&web(), DatapathMode::Offload).unwrap();
        let fields: Vec<_> = lbs[0].selection_fields.iter().map(|f| f.as_str()).collect();
        assert_eq!(fields, ["ip_src", "ip_dst", "tp_src", "tp_dst"]);
    }

    #[test]
    fn explicit_hash_fields_win_in_every_mode() {
        let mut svc = web();
        svc.hash_fields = vec![HashField::IpSrc];
        for mode in [DatapathMode::Default, DatapathMode::Offload] {
            let lbs = service_lbs(&svc, mode).unwrap();
            assert_eq!(lbs[0].selection_fields, BTreeSet::from([HashField::IpSrc]));
        }
    }

    #[test]
    fn unhealthy_backends_leave_the_vip_and_none_left_means_an_empty_rejecting_vip() {
        let mut svc = web();
        svc.ports[0].backends[0].healthy = false;
        let lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        assert_eq!(lbs[0].vips["10.96.0.100:80"], "10.0.1.11:8080");
        svc.ports[0].backends[1].healthy = false;
        let lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        assert_eq!(lbs[0].vips["10.96.0.100:80"], "");
        assert_eq!(lbs[0].options["reject"], "true");
    }

    #[test]
    fn dual_stack_vips_balance_only_to_backends_of_their_family() {
        let mut svc = web();
        svc.cluster_ips.push(ip("fd00:96::100"));
        svc.ports[0]
            .backends
            .push(backend("fd00:1::11", 8080, true));
        let lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        assert_eq!(
            lbs[0].vips["10.96.0.100:80"],
            "10.0.1.11:8080,10.0.1.12:8080"
        );
        assert_eq!(lbs[0].vips["[fd00:96::100]:80"], "[fd00:1::11]:8080");
        assert_eq!(
            lbs[0].options["hairpin_snat_ip"],
            "10.96.0.100 fd00:96::100"
        );
    }

    #[test]
    fn each_protocol_and_each_scenario_gets_its_own_row() {
        let mut svc = web();
        svc.scenarios = Scenarios {
            cluster_ip: true,
            eip: true,
            cross_vpc: true,
        };
        svc.eip = Some(ip("200.0.0.100"));
        svc.ports.push(ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            backends: vec![backend("10.0.1.11", 5353, true)],
        });
        let lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        let names: Vec<_> = lbs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ysvc:shop/web:tcp:cluster",
                "ysvc:shop/web:udp:cluster",
                "ysvc:shop/web:tcp:svcgw",
                "ysvc:shop/web:udp:svcgw",
                "ysvc:shop/web:tcp:eip",
                "ysvc:shop/web:udp:eip",
            ]
        );
        let eip_udp = &lbs[5];
        assert_eq!(
            eip_udp.vips,
            BTreeMap::from([("200.0.0.100:53".to_owned(), "10.0.1.11:5353".to_owned())])
        );
        assert!(!eip_udp.options.contains_key("hairpin_snat_ip"));
    }

    #[test]
    fn affinity_timeout_is_per_service_and_bounded_by_what_ovn_accepts() {
        let mut svc = web();
        svc.affinity_timeout = Some(600);
        let lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        assert_eq!(lbs[0].options["affinity_timeout"], "600");
        svc.affinity_timeout = Some(86_400);
        let err = service_lbs(&svc, DatapathMode::Default).unwrap_err();
        assert!(err.to_string().contains("timeoutSeconds 86400"), "{err}");
    }

    #[test]
    fn a_scenario_without_its_address_is_an_error_not_a_half_service() {
        let mut svc = web();
        svc.scenarios.eip = true;
        let err = service_lbs(&svc, DatapathMode::Default).unwrap_err();
        assert_eq!(
            err,
            LbError::MissingAddress {
                service: "shop/web".into(),
                scenario: "EIP",
                what: "an EIP"
            }
        );
        let mut svc = web();
        svc.cluster_ips.clear();
        assert!(matches!(
            service_lbs(&svc, DatapathMode::Default),
            Err(LbError::MissingAddress {
                scenario: "ClusterIP",
                ..
            })
        ));
        let mut svc = web();
        svc.ports.clear();
        assert!(matches!(
            service_lbs(&svc, DatapathMode::Default),
            Err(LbError::NoPorts { .. })
        ));
    }

    #[test]
    fn native_checks_add_one_health_check_per_ipv4_vip_and_map_only_backends_on_our_ports() {
        let mut svc = web();
        svc.cluster_ips.push(ip("fd00:96::100"));
        svc.ports[0]
            .backends
            .push(backend("192.168.9.9", 8080, true));
        svc.ports.push(ServicePort {
            name: "sctp".into(),
            protocol: Protocol::Sctp,
            port: 9,
            backends: vec![backend("10.0.1.11", 9, true)],
        });
        let mut lbs = service_lbs(&svc, DatapathMode::Default).unwrap();
        let check = NativeCheck::from_millis(500, 1500, 1, 2);
        assert_eq!(
            check,
            NativeCheck {
                interval_secs: 1,
                timeout_secs: 2,
                success_count: 1,
                failure_count: 2
            }
        );
        let ports = BTreeMap::from([
            (
                ip("10.0.1.11"),
                MonitorPort {
                    lsp: "shop.web-1".into(),
                    source: ip("10.0.1.254"),
                },
            ),
            (
                ip("10.0.1.12"),
                MonitorPort {
                    lsp: "shop.web-2".into(),
                    source: ip("10.0.1.254"),
                },
            ),
        ]);
        add_native_checks(&mut lbs, &check, &ports);
        let tcp = lbs.iter().find(|l| l.protocol == Protocol::Tcp).unwrap();
        // IPv6 VIPs are not monitored by OVN 23.03: only the IPv4 VIP gets a check.
        assert_eq!(
            tcp.health_checks.keys().collect::<Vec<_>>(),
            ["10.96.0.100:80"]
        );
        assert_eq!(
            tcp.health_checks["10.96.0.100:80"],
            BTreeMap::from([
                ("failure_count".to_owned(), "2".to_owned()),
                ("interval".to_owned(), "1".to_owned()),
                ("success_count".to_owned(), "1".to_owned()),
                ("timeout".to_owned(), "2".to_owned()),
            ])
        );
        // The static-like 192.168.9.9 has no port of ours: not mapped, never monitored.
        assert_eq!(
            tcp.ip_port_mappings,
            BTreeMap::from([
                ("10.0.1.11".to_owned(), "shop.web-1:10.0.1.254".to_owned()),
                ("10.0.1.12".to_owned(), "shop.web-2:10.0.1.254".to_owned()),
            ])
        );
        let sctp = lbs.iter().find(|l| l.protocol == Protocol::Sctp).unwrap();
        assert!(sctp.health_checks.is_empty() && sctp.ip_port_mappings.is_empty());
    }

    #[test]
    fn the_monitor_source_is_the_last_host_of_an_ipv4_block_and_none_for_ipv6_or_tiny_blocks() {
        use crate::compiler::topology::monitor_source;
        let src = |c: &str| monitor_source(c.parse().unwrap());
        assert_eq!(src("10.0.1.0/24"), Some(ip("10.0.1.254")));
        assert_eq!(src("10.0.0.0/16"), Some(ip("10.0.255.254")));
        assert_eq!(src("10.0.0.0/29"), Some(ip("10.0.0.6")));
        assert_eq!(src("10.0.0.0/30"), None);
        assert_eq!(src("fd00:1::/64"), None);
    }
}
