//! Stable addresses for the links the compiler creates: a VPC's address on an EIP
//! gateway's transit switch, and a VPC's transit network to the service gateway.
//!
//! The allocation lives in NB itself (the networks of the VPC's uplink router port), so it
//! survives restarts without a store of its own: an existing uplink keeps its address, a
//! new one takes the lowest free one. Pure over a cache snapshot.
//!
//! `vpcs` is every VPC attached now: the address of a VPC that is not in the list counts
//! as free, because the same reconcile deletes its uplink.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ycloud_ovsdb::cache::Snapshot;
use ycloud_ovsdb::value::Value;

use super::gateways::{eip_uplink_port, svcgw_uplink_port};
use super::network::gateway;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{what}: {range} has no free address for VPC {vpc}")]
    Exhausted {
        what: &'static str,
        range: IpNet,
        vpc: String,
    },
}

/// The first address of an existing router port's `networks`, parsed.
fn current(snap: &Snapshot, lrp: &str) -> Option<IpNet> {
    let row = snap.find_unique("Logical_Router_Port", &[("name", Value::from(lrp))])?;
    let nets = row.get("networks")?.atoms()?;
    nets.iter()
        .filter_map(|a| a.as_str())
        .filter_map(|s| s.parse::<IpNet>().ok())
        .next()
}

/// Each VPC's host address on EIP gateway `gw`'s transit network `transit` (the gateway
/// itself holds the first host).
pub fn eip_transit_addrs(
    snap: &Snapshot,
    gw: &str,
    transit: IpNet,
    vpcs: &[String],
) -> Result<BTreeMap<String, IpAddr>, AllocError> {
    let reserved: BTreeSet<IpAddr> = gateway(transit).into_iter().collect();
    let mut taken = reserved.clone();
    let mut out = BTreeMap::new();
    // Keep what NB already has (first come, in name order, on a conflict made by hand).
    for vpc in vpcs {
        if let Some(net) = current(snap, &eip_uplink_port(vpc, gw)) {
            let ip = net.addr();
            if transit.contains(&ip) && net.prefix_len() == transit.prefix_len() && taken.insert(ip)
            {
                out.insert(vpc.clone(), ip);
            }
        }
    }
    for vpc in vpcs {
        if out.contains_key(vpc) {
            continue;
        }
        let ip = transit
            .hosts()
            .find(|h| !taken.contains(h))
            .ok_or_else(|| AllocError::Exhausted {
                what: "EIP gateway transit network",
                range: transit,
                vpc: vpc.clone(),
            })?;
        taken.insert(ip);
        out.insert(vpc.clone(), ip);
    }
    Ok(out)
}

/// Each VPC's transit network to the service gateway: a `/29` (IPv4) or `/125` (IPv6)
/// out of `pool`.
pub fn svcgw_transit_nets(
    snap: &Snapshot,
    pool: IpNet,
    vpcs: &[String],
) -> Result<BTreeMap<String, IpNet>, AllocError> {
    let len = if pool.addr().is_ipv4() { 29 } else { 125 };
    let exhausted = |vpc: &String| AllocError::Exhausted {
        what: "service gateway transit pool",
        range: pool,
        vpc: vpc.clone(),
    };
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for vpc in vpcs {
        if let Some(net) = current(snap, &svcgw_uplink_port(vpc)) {
            let net = net.trunc();
            if net.prefix_len() == len && pool.contains(&net) && taken.insert(net) {
                out.insert(vpc.clone(), net);
            }
        }
    }
    for vpc in vpcs {
        if out.contains_key(vpc) {
            continue;
        }
        let mut subnets = pool.subnets(len).map_err(|_| exhausted(vpc))?;
        let net = subnets
            .find(|n| !taken.contains(n))
            .ok_or_else(|| exhausted(vpc))?;
        taken.insert(net);
        out.insert(vpc.clone(), net);
    }
    Ok(out)
}
