//! Desired rows of the gateways: EIP gateways (outside → a service's EIP) and the service
//! gateway (clients of other VPCs → a service), and the uplinks they add to VPC routers.
//!
//! Both follow the recipes proven with real packets on this OVN version
//! (`../shared/OVN-NOTES.md`):
//! - An EIP gateway is a router on the external network (a switch with a `localnet`
//!   port) and on a transit switch shared by the VPCs it serves. It only routes:
//!   `EIP/32` → the VPC's transit address; no LB and no NAT on it, so it adds no
//!   conntrack pass (the userspace datapath drops a packet at its 7th recirculation).
//!   Each VPC's port on the transit switch is a distributed gateway port, the EIP load
//!   balancer sits on the VPC router (DNAT and un-DNAT both work there), the VPC routes its
//!   default to the EIP gateway and SNATs its egress. Overlapping VPC CIDRs are fine.
//!   High availability: the gateway router is *not* pinned (`options:chassis` cannot fail
//!   over); its external port is a distributed gateway port with the `EipGateway`'s
//!   chassis priorities, the same priorities as every VPC uplink on its transit switch.
//!   All those `cr-` ports then live on the one chassis the BFD sessions elect, and move
//!   together when it dies: the transit switch is an overlay switch, and OVN admits a packet
//!   into a distributed gateway port only on the chassis where it resides, so the two ends
//!   of the transit hop must never sit on different chassis. The external switch's router
//!   port sends gratuitous ARPs (`nat-addresses=router`) from the new chassis, so the
//!   upstream L2 learns where the gateway's MAC went (measured in `docs/performance.md`).
//! - The service gateway is one gateway router for the cluster, joined to each VPC that
//!   has clients or backends of cross-VPC services by a transit switch of its own. It
//!   carries those services' load balancers with `lb_force_snat_ip=router_ip`: backends
//!   see its address on their VPC's transit switch and reply through it. It routes every
//!   backend and client subnet to its VPC, so those CIDRs must not overlap (the validator
//!   rejects a service that would need it).
//!   It is pinned to one chassis with `options:chassis`: OVN's HA forms do not hold for it
//!   on OVN 23.03. As a distributed router it cannot SNAT load-balanced
//!   traffic (`lb_force_snat_ip=router_ip` is rejected, an explicit address gets no SNAT
//!   flow, a `snat` row commits in the SNAT zone but un-SNATs in the common zone, so
//!   replies are dropped); with SNAT moved to each client VPC's uplink it works and fails
//!   over in 0.4 s, but every VPC uplink must then be a distributed gateway port, and a VPC
//!   with EIPs already has one carrying its EIP load balancer: OVN 23.03 does not support
//!   load balancers on a router with two (all seen with real packets; `docs/compiler.md`).
//!   It fails over all the same when the controller watches SB: a beacon port with the
//!   gateway's chassis priorities lets OVN elect the chassis, and the controller re-pins
//!   the router there ([`service_gateway_rows_ha`]). Without SB it stays on the
//!   highest-priority chassis.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ycloud_ovsdb::cache::Snapshot;
use ycloud_ovsdb::ops;
use ycloud_ovsdb::value::Row;

use super::names::{self, OwnerKind};
use super::network::{
    DesiredRoute, DesiredRouter, DesiredRouterPort, DesiredSnat, DesiredSwitch, DesiredSwitchPort,
    DesiredVpc, gateway, mac_for, router_name,
};
use super::plan::Plan;

/// Why a gateway can't be built. Its rows stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("EIP gateway {gateway}: {what}")]
    Eip { gateway: String, what: String },
    #[error("service gateway: {what}")]
    Service { what: String },
}

/// An `EipGateway`, with its transit network decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EipGateway {
    pub name: String,
    /// The gateway's own address on the external network, with the prefix
    /// (e.g. `200.0.0.1/24`): the upstream routes the EIP range to it.
    pub external: IpNet,
    /// The next hop for traffic leaving to the outside, if any.
    pub upstream: Option<IpAddr>,
    /// `ovn-bridge-mappings` network name of the external bridge.
    pub network_name: String,
    /// Chassis → priority. The highest hosts the gateway router.
    pub chassis: BTreeMap<String, u16>,
    /// The transit network between the gateway and its VPCs; the gateway takes the first
    /// host address, each VPC one other.
    pub transit: IpNet,
}

/// One VPC behind an EIP gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EipAttachment {
    pub vpc: String,
    /// The VPC router's address on the gateway's transit switch (allocated, stable).
    pub transit_ip: IpAddr,
    /// EIPs of the VPC's services: routed to the VPC.
    pub eips: BTreeSet<IpAddr>,
    /// Egress: the VPC's subnets leave as this address (usually one of its EIPs).
    pub egress: Option<(IpAddr, Vec<IpNet>)>,
}

/// The rows an owner of a topology slice wants: routers and switches.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DesiredGateway {
    pub routers: BTreeMap<String, DesiredRouter>,
    pub switches: BTreeMap<String, DesiredSwitch>,
}

/// The EIP gateway's router name.
pub fn eip_router_name(gw: &str) -> String {
    format!("yc-eipgw-{gw}")
}

/// The EIP gateway's external switch.
pub fn eip_external_switch(gw: &str) -> String {
    format!("yc-eipgw-{gw}-ext")
}

/// The EIP gateway's transit switch.
pub fn eip_transit_switch(gw: &str) -> String {
    format!("yc-eipgw-{gw}-ts")
}

/// The service gateway's router.
pub const SERVICE_GATEWAY_ROUTER: &str = "yc-svcgw";

/// The service gateway's transit switch to one VPC.
pub fn svcgw_transit_switch(vpc: &str) -> String {
    format!("yc-svcgw-ts-{vpc}")
}

fn router_link(
    switch: &str,
    router_port: &str,
    ids: &BTreeMap<String, String>,
) -> (String, DesiredSwitchPort) {
    let name = format!("{switch}-to-{router_port}");
    (
        name.clone(),
        DesiredSwitchPort {
            name,
            kind: "router".to_owned(),
            addresses: vec!["router".to_owned()],
            port_security: vec![],
            options: BTreeMap::from([("router-port".to_owned(), router_port.to_owned())]),
            external_ids: ids.clone(),
        },
    )
}

fn highest(chassis: &BTreeMap<String, u16>) -> Option<&str> {
    chassis
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| c.as_str())
}

fn host_route(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// An EIP gateway's rows: its router, external switch (with the localnet port) and
/// transit switch with a link for every attached VPC.
pub fn eip_gateway_rows(
    gw: &EipGateway,
    attachments: &[EipAttachment],
) -> Result<DesiredGateway, GatewayError> {
    let err = |what: String| GatewayError::Eip {
        gateway: gw.name.clone(),
        what,
    };
    if gw.chassis.is_empty() {
        return Err(err("no gateway chassis".into()));
    }
    let transit_gw = gateway(gw.transit)
        .ok_or_else(|| err(format!("transit network {} is too small", gw.transit)))?;
    let ids = |role: &str| names::owner_ids(OwnerKind::EipGateway, &gw.name, role);
    let rname = eip_router_name(&gw.name);
    let ext_sw = eip_external_switch(&gw.name);
    let ts = eip_transit_switch(&gw.name);
    let ext_lrp = format!("{rname}-ext");
    let ts_lrp = format!("{rname}-ts");

    let mut routes = BTreeSet::new();
    let mut seen = BTreeMap::new();
    for a in attachments {
        if !gw.transit.contains(&a.transit_ip) || a.transit_ip == transit_gw {
            return Err(err(format!(
                "VPC {}: transit address {} is not a free host of {}",
                a.vpc, a.transit_ip, gw.transit
            )));
        }
        for eip in &a.eips {
            if let Some(other) = seen.insert(*eip, &a.vpc) {
                return Err(err(format!(
                    "EIP {eip} is claimed by VPC {other} and VPC {}",
                    a.vpc
                )));
            }
            routes.insert(DesiredRoute {
                ip_prefix: host_route(*eip),
                nexthop: a.transit_ip.to_string(),
            });
        }
    }
    if let Some(up) = gw.upstream {
        let default = if up.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        routes.insert(DesiredRoute {
            ip_prefix: default.to_owned(),
            nexthop: up.to_string(),
        });
    }
    let router = DesiredRouter {
        name: rname.clone(),
        // Not a gateway router (`options:chassis` cannot fail over): its external port is
        // a distributed gateway port below.
        options: BTreeMap::new(),
        external_ids: ids("router"),
        ports: BTreeMap::from([
            (
                ext_lrp.clone(),
                DesiredRouterPort {
                    name: ext_lrp.clone(),
                    mac: mac_for(gw.external.addr()),
                    networks: BTreeSet::from([gw.external.to_string()]),
                    // The same priorities as the VPC uplinks (add_eip_uplink): one
                    // chassis hosts both ends of the transit hop.
                    gateway_chassis: gw.chassis.clone(),
                    external_ids: ids("external"),
                },
            ),
            (
                ts_lrp.clone(),
                DesiredRouterPort {
                    name: ts_lrp.clone(),
                    mac: mac_for(transit_gw),
                    networks: BTreeSet::from([format!("{transit_gw}/{}", gw.transit.prefix_len())]),
                    gateway_chassis: BTreeMap::new(),
                    external_ids: ids("transit"),
                },
            ),
        ]),
        routes,
        snat: BTreeSet::new(),
    };

    let localnet = format!("{ext_sw}-localnet");
    let external = DesiredSwitch {
        name: ext_sw.clone(),
        other_config: BTreeMap::new(),
        external_ids: ids("external"),
        ports: BTreeMap::from([
            (
                localnet.clone(),
                DesiredSwitchPort {
                    name: localnet,
                    kind: "localnet".to_owned(),
                    addresses: vec!["unknown".to_owned()],
                    port_security: vec![],
                    options: BTreeMap::from([("network_name".to_owned(), gw.network_name.clone())]),
                    external_ids: ids("external"),
                },
            ),
            {
                let (n, mut p) = router_link(&ext_sw, &ext_lrp, &ids("external"));
                // The active chassis announces the gateway's address (gratuitous ARP), also
                // right after a failover, so the upstream switches learn its new location.
                p.options
                    .insert("nat-addresses".to_owned(), "router".to_owned());
                (n, p)
            },
        ]),
        lb_groups: BTreeSet::new(),
    };
    let mut ts_ports = BTreeMap::from([router_link(&ts, &ts_lrp, &ids("transit"))]);
    for a in attachments {
        let (n, p) = router_link(&ts, &eip_uplink_port(&a.vpc, &gw.name), &ids("transit"));
        ts_ports.insert(n, p);
    }
    let transit = DesiredSwitch {
        name: ts.clone(),
        other_config: BTreeMap::new(),
        external_ids: ids("transit"),
        ports: ts_ports,
        lb_groups: BTreeSet::new(),
    };
    Ok(DesiredGateway {
        routers: BTreeMap::from([(rname, router)]),
        switches: BTreeMap::from([(ext_sw, external), (ts, transit)]),
    })
}

/// The VPC router's port on an EIP gateway's transit switch.
pub fn eip_uplink_port(vpc: &str, gw: &str) -> String {
    format!("{}-eipgw-{gw}", router_name(vpc))
}

/// Adds an EIP gateway's uplink to a VPC's rows: a distributed gateway port on the
/// transit switch (so the EIP load balancer on the VPC router un-DNATs its replies), the
/// default route to the gateway, and the egress SNAT.
pub fn add_eip_uplink(
    vpc: &mut DesiredVpc,
    gw: &EipGateway,
    a: &EipAttachment,
) -> Result<(), GatewayError> {
    let transit_gw = gateway(gw.transit).ok_or_else(|| GatewayError::Eip {
        gateway: gw.name.clone(),
        what: format!("transit network {} is too small", gw.transit),
    })?;
    let ids = names::owner_ids(OwnerKind::Vpc, &a.vpc, "eip-uplink");
    let name = eip_uplink_port(&a.vpc, &gw.name);
    vpc.router.ports.insert(
        name.clone(),
        DesiredRouterPort {
            name,
            mac: mac_for(a.transit_ip),
            networks: BTreeSet::from([format!("{}/{}", a.transit_ip, gw.transit.prefix_len())]),
            gateway_chassis: gw.chassis.clone(),
            external_ids: ids,
        },
    );
    let default = if transit_gw.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    vpc.router.routes.insert(DesiredRoute {
        ip_prefix: default.to_owned(),
        nexthop: transit_gw.to_string(),
    });
    if let Some((ip, cidrs)) = &a.egress {
        for c in cidrs {
            vpc.router.snat.insert(DesiredSnat {
                external_ip: ip.to_string(),
                logical_ip: c.trunc().to_string(),
            });
        }
    }
    Ok(())
}

/// One VPC joined to the service gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceGatewayAttachment {
    pub vpc: String,
    /// The transit network of this VPC (allocated, stable): the VPC router takes the
    /// first host, the service gateway the second.
    pub transit: IpNet,
    /// The VPC's subnets the service gateway routes to (backends and clients).
    pub subnets: Vec<IpNet>,
    /// VIPs of other VPCs' services this VPC may reach: routed to the service gateway.
    pub client_vips: BTreeSet<IpAddr>,
}

/// The service gateway's two addresses on a VPC's transit network: (VPC side, gateway side).
pub fn svcgw_transit_addrs(transit: IpNet) -> Option<(IpAddr, IpAddr)> {
    let vpc_side = gateway(transit)?;
    let gw_side = transit
        .hosts()
        .find(|h| *h != vpc_side && *h != transit.network())?;
    Some((vpc_side, gw_side))
}

/// The service gateway's rows: its router (with `lb_force_snat_ip=router_ip`) and a
/// transit switch per attached VPC, pinned to the highest-priority chassis (no failover:
/// the controller does not watch SB; see [`service_gateway_rows_ha`] for when it does).
pub fn service_gateway_rows(
    chassis: &BTreeMap<String, u16>,
    attachments: &[ServiceGatewayAttachment],
) -> Result<DesiredGateway, GatewayError> {
    let pinned = highest(chassis).ok_or_else(|| GatewayError::Service {
        what: "no gateway chassis".into(),
    })?;
    svcgw_rows_pinned(pinned, attachments)
}

/// The service gateway's beacon: a router whose one port is a distributed gateway port
/// with the service gateway's chassis priorities. It carries no traffic; its only job is
/// to make OVN elect, by BFD, the chassis the service gateway should run on:
/// `Port_Binding(cr-<port>).chassis` in SB, which the controller watches (`--ovn-sb`) and
/// pins `yc-svcgw` to. `yc-svcgw` itself must stay a gateway router: its SNAT recipe
/// (`lb_force_snat_ip=router_ip`) works only there on OVN 23.03.
pub const SVCGW_BEACON_ROUTER: &str = "yc-svcgw-beacon";
/// The beacon router's distributed gateway port; SB names its elected copy `cr-` + this.
pub const SVCGW_BEACON_PORT: &str = "yc-svcgw-beacon-gw";
/// The switch joining the beacon to `yc-svcgw`.
pub const SVCGW_BEACON_SWITCH: &str = "yc-svcgw-beacon-ls";
/// `yc-svcgw`'s port on the beacon switch.
pub const SVCGW_BEACON_LINK: &str = "yc-svcgw-beacon-link";
/// The beacon link's addresses (beacon side, service-gateway side): link-local, routed
/// nowhere, so they can't clash with a VPC's or a pool's addresses.
const SVCGW_BEACON_ADDRS: (&str, &str) = ("169.254.254.1/30", "169.254.254.2/30");

/// SB's name of the beacon's elected port.
pub fn svcgw_beacon_cr_port() -> String {
    format!("cr-{SVCGW_BEACON_PORT}")
}

/// The chassis `yc-svcgw` is pinned to: the one OVN elected for the beacon when SB says
/// one holds it and it is still among the configured chassis, else the highest-priority
/// one (before the first election, with every candidate dead, or after the list changed).
pub fn svcgw_pin<'a>(chassis: &'a BTreeMap<String, u16>, elected: Option<&str>) -> Option<&'a str> {
    if let Some(e) = elected
        && let Some((name, _)) = chassis.get_key_value(e)
    {
        return Some(name.as_str());
    }
    highest(chassis)
}

/// [`service_gateway_rows`] in its failover form: pinned to `elected` (see [`svcgw_pin`]),
/// plus the beacon. The beacon is linked to `yc-svcgw` by a switch of its own, and that
/// link is what makes the election work with two chassis: OVN sets up BFD sessions from
/// the gateway chassis to the chassis of the datapaths connected to the router
/// (`HA_Chassis_Group.ref_chassis`), and a standby whose only BFD peer was the dead active
/// chassis sees no live tunnel at all and does not take over (it takes itself for the
/// isolated one; seen by hand on 3 chassis: the port stayed unclaimed). Linked to
/// `yc-svcgw`, the beacon's group reaches every attached VPC, so the chassis running their
/// pods are peers too.
pub fn service_gateway_rows_ha(
    chassis: &BTreeMap<String, u16>,
    elected: Option<&str>,
    attachments: &[ServiceGatewayAttachment],
) -> Result<DesiredGateway, GatewayError> {
    let pinned = svcgw_pin(chassis, elected).ok_or_else(|| GatewayError::Service {
        what: "no gateway chassis".into(),
    })?;
    let mut d = svcgw_rows_pinned(pinned, attachments)?;
    let ids = |role: &str| names::owner_ids(OwnerKind::ServiceGateway, "cluster", role);
    let (beacon_net, link_net) = SVCGW_BEACON_ADDRS;
    let addr = |n: &str| n.parse::<IpNet>().expect("literal").addr();
    if let Some(r) = d.routers.get_mut(SERVICE_GATEWAY_ROUTER) {
        r.ports.insert(
            SVCGW_BEACON_LINK.to_owned(),
            DesiredRouterPort {
                name: SVCGW_BEACON_LINK.to_owned(),
                mac: mac_for(addr(link_net)),
                networks: BTreeSet::from([link_net.to_owned()]),
                gateway_chassis: BTreeMap::new(),
                external_ids: ids("beacon"),
            },
        );
    }
    d.routers.insert(
        SVCGW_BEACON_ROUTER.to_owned(),
        DesiredRouter {
            name: SVCGW_BEACON_ROUTER.to_owned(),
            options: BTreeMap::new(),
            external_ids: ids("beacon"),
            ports: BTreeMap::from([(
                SVCGW_BEACON_PORT.to_owned(),
                DesiredRouterPort {
                    name: SVCGW_BEACON_PORT.to_owned(),
                    mac: mac_for(addr(beacon_net)),
                    networks: BTreeSet::from([beacon_net.to_owned()]),
                    gateway_chassis: chassis.clone(),
                    external_ids: ids("beacon"),
                },
            )]),
            routes: BTreeSet::new(),
            snat: BTreeSet::new(),
        },
    );
    let mut ports = BTreeMap::from([router_link(
        SVCGW_BEACON_SWITCH,
        SVCGW_BEACON_PORT,
        &ids("beacon"),
    )]);
    let (n, p) = router_link(SVCGW_BEACON_SWITCH, SVCGW_BEACON_LINK, &ids("beacon"));
    ports.insert(n, p);
    d.switches.insert(
        SVCGW_BEACON_SWITCH.to_owned(),
        DesiredSwitch {
            name: SVCGW_BEACON_SWITCH.to_owned(),
            other_config: BTreeMap::new(),
            external_ids: ids("beacon"),
            ports,
            lb_groups: BTreeSet::new(),
        },
    );
    Ok(d)
}

fn svcgw_rows_pinned(
    pinned: &str,
    attachments: &[ServiceGatewayAttachment],
) -> Result<DesiredGateway, GatewayError> {
    let err = |what: String| GatewayError::Service { what };
    let ids = |role: &str| names::owner_ids(OwnerKind::ServiceGateway, "cluster", role);
    let mut router = DesiredRouter {
        name: SERVICE_GATEWAY_ROUTER.to_owned(),
        options: BTreeMap::from([
            ("chassis".to_owned(), pinned.to_owned()),
            // Backends see the gateway's address on their transit switch and reply to it,
            // whatever VPC the client is in.
            ("lb_force_snat_ip".to_owned(), "router_ip".to_owned()),
        ]),
        external_ids: ids("router"),
        ports: BTreeMap::new(),
        routes: BTreeSet::new(),
        snat: BTreeSet::new(),
    };
    let mut switches = BTreeMap::new();
    let mut routed: BTreeMap<IpNet, &str> = BTreeMap::new();
    for a in attachments {
        let (vpc_side, gw_side) = svcgw_transit_addrs(a.transit)
            .ok_or_else(|| err(format!("VPC {}: transit {} is too small", a.vpc, a.transit)))?;
        for s in &a.subnets {
            let s = s.trunc();
            if let Some((other, vpc)) = routed
                .iter()
                .find(|(o, _)| o.contains(&s) || s.contains(*o))
            {
                return Err(err(format!(
                    "subnet {s} of VPC {} overlaps {other} of VPC {vpc}: one gateway can't route both",
                    a.vpc
                )));
            }
            routed.insert(s, &a.vpc);
            router.routes.insert(DesiredRoute {
                ip_prefix: s.to_string(),
                nexthop: vpc_side.to_string(),
            });
        }
        let ts = svcgw_transit_switch(&a.vpc);
        let lrp = format!("{SERVICE_GATEWAY_ROUTER}-{}", a.vpc);
        router.ports.insert(
            lrp.clone(),
            DesiredRouterPort {
                name: lrp.clone(),
                mac: mac_for(gw_side),
                networks: BTreeSet::from([format!("{gw_side}/{}", a.transit.prefix_len())]),
                gateway_chassis: BTreeMap::new(),
                external_ids: ids("transit"),
            },
        );
        let mut ports = BTreeMap::from([router_link(&ts, &lrp, &ids("transit"))]);
        let (n, p) = router_link(&ts, &svcgw_uplink_port(&a.vpc), &ids("transit"));
        ports.insert(n, p);
        switches.insert(
            ts.clone(),
            DesiredSwitch {
                name: ts,
                other_config: BTreeMap::new(),
                external_ids: ids("transit"),
                ports,
                lb_groups: BTreeSet::new(),
            },
        );
    }
    Ok(DesiredGateway {
        routers: BTreeMap::from([(SERVICE_GATEWAY_ROUTER.to_owned(), router)]),
        switches,
    })
}

/// The VPC router's port on its service-gateway transit switch.
pub fn svcgw_uplink_port(vpc: &str) -> String {
    format!("{}-svcgw", router_name(vpc))
}

/// Adds the service-gateway uplink to a VPC's rows: a plain router port (the service
/// gateway is the stateful hop) and a host route to the gateway for every VIP the VPC's
/// clients may reach.
pub fn add_svcgw_uplink(
    vpc: &mut DesiredVpc,
    a: &ServiceGatewayAttachment,
) -> Result<(), GatewayError> {
    let (vpc_side, gw_side) =
        svcgw_transit_addrs(a.transit).ok_or_else(|| GatewayError::Service {
            what: format!("VPC {}: transit {} is too small", a.vpc, a.transit),
        })?;
    let name = svcgw_uplink_port(&a.vpc);
    vpc.router.ports.insert(
        name.clone(),
        DesiredRouterPort {
            name,
            mac: mac_for(vpc_side),
            networks: BTreeSet::from([format!("{vpc_side}/{}", a.transit.prefix_len())]),
            gateway_chassis: BTreeMap::new(),
            external_ids: names::owner_ids(OwnerKind::Vpc, &a.vpc, "svcgw-uplink"),
        },
    );
    for vip in &a.client_vips {
        vpc.router.routes.insert(DesiredRoute {
            ip_prefix: host_route(*vip),
            nexthop: gw_side.to_string(),
        });
    }
    Ok(())
}

/// `NB_Global` option keys of the BFD timers. ovn-controller copies them onto the BFD
/// sessions of every tunnel interface; the sessions decide which gateway chassis is alive,
/// so together they bound how long a gateway failover takes.
pub const BFD_MIN_RX: &str = "bfd-min-rx";
pub const BFD_MIN_TX: &str = "bfd-min-tx";
pub const BFD_MULT: &str = "bfd-mult";

/// The BFD timers the controller keeps in `NB_Global` (`--bfd-min-rx-ms`,
/// `--bfd-min-tx-ms`, `--bfd-mult`). A timer that is not configured is not ours: its key
/// is left as it is (absent = OVN's default of 1000 ms x 3, or whatever an operator set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BfdTimers {
    /// Slowest rate, in ms, at which this chassis wants BFD packets from its peers.
    pub min_rx_ms: Option<u32>,
    /// Fastest rate, in ms, at which this chassis sends BFD packets.
    pub min_tx_ms: Option<u32>,
    /// Missed packets before a peer is declared down.
    pub mult: Option<u8>,
}

impl BfdTimers {
    /// The `NB_Global` options these timers own, with their values.
    pub fn nb_options(&self) -> BTreeMap<&'static str, String> {
        [
            (BFD_MIN_RX, self.min_rx_ms.map(|v| v.to_string())),
            (BFD_MIN_TX, self.min_tx_ms.map(|v| v.to_string())),
            (BFD_MULT, self.mult.map(|v| v.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// The longest a dead gateway chassis can go unnoticed with these timers (the BFD
    /// detection time, `max(min-rx, peer's min-tx) x mult`), assuming every chassis has
    /// the same settings; OVN's defaults (1000 ms x 3) fill in what is not configured.
    pub fn detection_ms(&self) -> u64 {
        let rx = u64::from(self.min_rx_ms.unwrap_or(1000));
        let tx = u64::from(self.min_tx_ms.unwrap_or(1000));
        rx.max(tx) * u64::from(self.mult.unwrap_or(3))
    }
}

/// Plans the BFD timers into `NB_Global options`: one mutate of the configured keys whose
/// value differs (nothing when all match), never touching another key. No `NB_Global` row
/// (an NB nobody initialised): nothing, ovn-northd creates the row and the next pass
/// writes the keys.
pub fn plan_bfd(snap: &Snapshot, bfd: &BfdTimers, plan: &mut Plan) {
    let want = bfd.nb_options();
    if want.is_empty() {
        return;
    }
    for (uuid, row) in snap.rows("NB_Global") {
        let changed: Vec<(&str, &str)> = want
            .iter()
            .filter(|(k, v)| nb_option(row, k).as_deref() != Some(v.as_str()))
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if !changed.is_empty() {
            plan.ops
                .push(ops::map_set_keys("NB_Global", *uuid, "options", changed));
        }
    }
}

fn nb_option(row: &Row, key: &str) -> Option<String> {
    row.get("options")?
        .map_get(key)?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ycloud_ovsdb::cache::UpdateKind;
    use ycloud_ovsdb::ops::{Mutator, Operation};
    use ycloud_ovsdb::schema::DatabaseSchema;
    use ycloud_ovsdb::value::Value;

    use super::*;
    use crate::compiler::nb;

    const UUID: &str = "6b2a3e5c-0000-4000-8000-000000000001";

    /// A snapshot whose one `NB_Global` row has `options`.
    fn nb_global(options: &[(&str, &str)]) -> Snapshot {
        let schema = DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema")
            .expect("the OVN NB schema is installed");
        let cache = nb::cache(Arc::new(schema)).expect("cache");
        let pairs: Vec<serde_json::Value> = options
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        cache
            .apply(
                UpdateKind::Update2,
                &serde_json::json!({"NB_Global": {UUID: {"initial": {"options": ["map", pairs]}}}}),
            )
            .expect("apply");
        cache.snapshot()
    }

    fn timers(rx: Option<u32>, tx: Option<u32>, mult: Option<u8>) -> BfdTimers {
        BfdTimers {
            min_rx_ms: rx,
            min_tx_ms: tx,
            mult,
        }
    }

    /// What one mutate of `options` does: the keys it deletes, the pairs it inserts.
    type Mutate = (Vec<String>, Vec<(String, String)>);

    /// The mutate a plan sends, or `None` when it writes nothing.
    fn planned(snap: &Snapshot, bfd: &BfdTimers) -> Option<Mutate> {
        let mut plan = Plan::new("b");
        plan_bfd(snap, bfd, &mut plan);
        match plan.ops.as_slice() {
            [] => None,
            [
                Operation::Mutate {
                    table, mutations, ..
                },
            ] => {
                assert_eq!(table, "NB_Global");
                let mut deleted = Vec::new();
                let mut inserted = Vec::new();
                for m in mutations {
                    assert_eq!(m.column, "options", "only the options column");
                    match (&m.mutator, &m.value) {
                        (Mutator::Delete, Value::Set(keys)) => deleted
                            .extend(keys.iter().map(|k| k.as_str().expect("string").to_owned())),
                        (Mutator::Insert, Value::Map(pairs)) => {
                            inserted.extend(pairs.iter().map(|(k, v)| {
                                (
                                    k.as_str().expect("string").to_owned(),
                                    v.as_str().expect("string").to_owned(),
                                )
                            }))
                        }
                        other => panic!("unexpected mutation {other:?}"),
                    }
                }
                Some((deleted, inserted))
            }
            other => panic!("one mutate expected: {other:?}"),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn bfd_timers_reach_nb_global_as_one_mutate_of_only_the_keys_that_differ() {
        let all = timers(Some(100), Some(100), Some(3));
        struct Case {
            what: &'static str,
            have: &'static [(&'static str, &'static str)],
            bfd: BfdTimers,
            want: Option<&'static [(&'static str, &'static str)]>,
        }
        let cases = [
            Case {
                what: "nothing configured writes nothing, whatever is there",
                have: &[
                    ("bfd-min-rx", "250"),
                    ("svc_monitor_mac", "0a:58:00:00:ff:fe"),
                ],
                bfd: BfdTimers::default(),
                want: None,
            },
            Case {
                what: "all three on an NB_Global without them",
                have: &[("svc_monitor_mac", "0a:58:00:00:ff:fe")],
                bfd: all,
                want: Some(&[
                    ("bfd-min-rx", "100"),
                    ("bfd-min-tx", "100"),
                    ("bfd-mult", "3"),
                ]),
            },
            Case {
                what: "already there: nothing",
                have: &[
                    ("bfd-min-rx", "100"),
                    ("bfd-min-tx", "100"),
                    ("bfd-mult", "3"),
                ],
                bfd: all,
                want: None,
            },
            Case {
                what: "one drifted key (set by hand): only it",
                have: &[
                    ("bfd-min-rx", "100"),
                    ("bfd-min-tx", "1000"),
                    ("bfd-mult", "3"),
                ],
                bfd: all,
                want: Some(&[("bfd-min-tx", "100")]),
            },
            Case {
                what: "only min-rx configured: the others are not ours",
                have: &[("bfd-min-tx", "300"), ("bfd-mult", "5")],
                bfd: timers(Some(200), None, None),
                want: Some(&[("bfd-min-rx", "200")]),
            },
        ];
        for c in cases {
            let got = planned(&nb_global(c.have), &c.bfd);
            match (got, c.want) {
                (None, None) => {}
                (Some((deleted, inserted)), Some(want)) => {
                    let want = pairs(want);
                    assert_eq!(inserted, want, "{}", c.what);
                    // The delete-then-insert replaces exactly the inserted keys.
                    let keys: Vec<String> = want.iter().map(|(k, _)| k.clone()).collect();
                    assert_eq!(deleted, keys, "{}", c.what);
                }
                (got, want) => panic!("{}: planned {got:?}, wanted {want:?}", c.what),
            }
        }
    }

    #[test]
    fn without_an_nb_global_row_the_bfd_plan_is_empty() {
        let schema = DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema")
            .expect("the OVN NB schema is installed");
        let snap = nb::cache(Arc::new(schema)).expect("cache").snapshot();
        let mut plan = Plan::new("b");
        plan_bfd(&snap, &timers(Some(100), Some(100), Some(3)), &mut plan);
        assert!(plan.is_empty());
    }

    #[test]
    fn the_detection_time_fills_in_ovns_defaults() {
        assert_eq!(BfdTimers::default().detection_ms(), 3000);
        assert_eq!(timers(Some(100), Some(100), Some(3)).detection_ms(), 300);
        assert_eq!(timers(Some(100), None, None).detection_ms(), 3000);
        assert_eq!(timers(Some(300), Some(100), Some(5)).detection_ms(), 1500);
    }

    fn svcgw_chassis() -> BTreeMap<String, u16> {
        BTreeMap::from([
            ("node-1".to_owned(), 20),
            ("node-2".to_owned(), 10),
            ("node-3".to_owned(), 5),
        ])
    }

    #[test]
    fn the_service_gateway_follows_the_chassis_ovn_elected_and_else_the_highest_priority() {
        let c = svcgw_chassis();
        for (elected, want) in [
            (None, Some("node-1")),
            (Some("node-2"), Some("node-2")),
            (Some("node-3"), Some("node-3")),
            (Some("node-1"), Some("node-1")),
            // No longer configured (the list changed under the election): not followed.
            (Some("node-9"), Some("node-1")),
        ] {
            assert_eq!(svcgw_pin(&c, elected), want, "elected {elected:?}");
        }
        assert_eq!(svcgw_pin(&BTreeMap::new(), Some("node-2")), None);
        // Equal priorities: the name decides, the same way every time.
        let tie = BTreeMap::from([("b".to_owned(), 7), ("a".to_owned(), 7)]);
        assert_eq!(svcgw_pin(&tie, None), Some("a"));
    }

    #[test]
    fn the_failover_form_pins_the_gateway_router_to_the_elected_chassis_and_adds_a_linked_beacon() {
        let a = ServiceGatewayAttachment {
            vpc: "tenant-a".into(),
            transit: "100.66.0.0/29".parse().unwrap(),
            subnets: vec!["10.0.1.0/24".parse().unwrap()],
            client_vips: BTreeSet::new(),
        };
        let c = svcgw_chassis();
        let d = service_gateway_rows_ha(&c, Some("node-2"), std::slice::from_ref(&a)).unwrap();
        let gw = &d.routers[SERVICE_GATEWAY_ROUTER];
        assert_eq!(gw.options["chassis"], "node-2");
        assert_eq!(gw.options["lb_force_snat_ip"], "router_ip");
        assert!(gw.ports[SVCGW_BEACON_LINK].gateway_chassis.is_empty());
        let beacon = &d.routers[SVCGW_BEACON_ROUTER];
        assert!(
            beacon.options.is_empty(),
            "the beacon is not a gateway router"
        );
        assert_eq!(beacon.ports[SVCGW_BEACON_PORT].gateway_chassis, c);
        let sw = &d.switches[SVCGW_BEACON_SWITCH];
        let peers: BTreeSet<&str> = sw
            .ports
            .values()
            .map(|p| p.options["router-port"].as_str())
            .collect();
        assert_eq!(
            peers,
            BTreeSet::from([SVCGW_BEACON_PORT, SVCGW_BEACON_LINK])
        );
        assert_eq!(svcgw_beacon_cr_port(), "cr-yc-svcgw-beacon-gw");

        // Without the failover form: exactly the rows of before, pinned to the top chassis.
        let pinned = service_gateway_rows(&c, std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            pinned.routers[SERVICE_GATEWAY_ROUTER].options["chassis"],
            "node-1"
        );
        assert!(!pinned.routers.contains_key(SVCGW_BEACON_ROUTER));
        assert!(!pinned.switches.contains_key(SVCGW_BEACON_SWITCH));
        // The two forms differ only by the pin and the beacon.
        let mut ha = d.clone();
        ha.routers.remove(SVCGW_BEACON_ROUTER);
        ha.switches.remove(SVCGW_BEACON_SWITCH);
        let r = ha.routers.get_mut(SERVICE_GATEWAY_ROUTER).unwrap();
        r.ports.remove(SVCGW_BEACON_LINK);
        r.options.insert("chassis".into(), "node-1".into());
        assert_eq!(ha, pinned);
    }
}
