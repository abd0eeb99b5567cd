//! Kernel side of a veth attachment, over rtnetlink. Each function runs inside a
//! [`crate::netns::with_netlink`] closure, i.e. already in the right namespace.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::annotation::{AnnotationRoute, format_mac};
use crate::error::{CniError, code};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

fn nl(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> CniError {
    let step = step.into();
    move |e| CniError::new(code::NETLINK, format!("{step}: {e}"))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Moves a VF netdev (down) into the pod's network namespace `netns` (a file under
/// /var/run/netns or /proc/PID/ns/net).
pub async fn move_vf_to_netns(h: &Handle, vf_name: &str, netns: &Path) -> Result<(), CniError> {
    let l = get_link(h, vf_name)
        .await?
        .ok_or_else(|| CniError::new(code::NETLINK, format!("VF netdev {vf_name} vanished")))?;
    let ns = std::fs::File::open(netns).map_err(|e| {
        CniError::new(
            code::NETNS,
            format!("opening network namespace {}: {e}", netns.display()),
        )
    })?;
    h.link()
        .set(
            LinkUnspec::new_with_index(l.header.index)
                .down()
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| {
            CniError::new(
                code::NETLINK,
                format!("moving VF {vf_name} into {}: {e}", netns.display()),
            )
        })
}

/// The link named `name`, if any.
pub async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

pub fn link_mac(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => Some(format_mac(b)),
        _ => None,
    })
}

pub fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// Deletes link `name` if it exists; for a veth this removes the peer too, wherever it is.
pub async fn delete_link(h: &Handle, name: &str) -> Result<bool, CniError> {
    let Some(l) = get_link(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(l.header.index).execute().await {
        Ok(()) => Ok(true),
        // Raced with someone else's delete: the goal is met.
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("deleting link {name}"))(e)),
    }
}

/// Creates the veth pair `host`/`peer`: `host` in the current namespace, up, with `mtu`;
/// `peer` created directly in the namespace at `pod_netns` (moving an existing device
/// between namespaces costs an RCU grace period; creating it there does not). Stale links
/// of a previous, interrupted attempt under the same names are removed first (the peer
/// goes with its host end), so a retry always starts from nothing.
pub async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    mtu: u32,
    pod_netns: &Path,
) -> Result<LinkMessage, CniError> {
    delete_link(h, host).await?;
    delete_link(h, peer).await?;
    let ns = std::fs::File::open(pod_netns).map_err(|e| {
        CniError::new(
            code::NETNS,
            format!("opening network namespace {}: {e}", pod_netns.display()),
        )
    })?;
    let peer_msg = LinkUnspec::new_with_name(peer)
        .mtu(mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    h.link().add(msg).execute().await.map_err(nl(format!(
        "creating veth pair {host} / {peer} (in {})",
        pod_netns.display()
    )))?;
    get_link(h, host).await?.ok_or_else(|| {
        CniError::new(
            code::NETLINK,
            format!("veth {host} vanished after creation"),
        )
    })
}

/// What the pod end should look like.
#[derive(Debug, Clone)]
pub struct PodIface {
    pub ifname: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub ips: Vec<IpNet>,
    pub routes: Vec<AnnotationRoute>,
}

/// In the pod namespace: renames `peer` to the requested name, sets MAC and MTU, brings it
/// and `lo` up, adds addresses and routes.
pub async fn configure_pod_end(h: &Handle, peer: &str, want: &PodIface) -> Result<(), CniError> {
    if get_link(h, &want.ifname).await?.is_some() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "the pod namespace already has an interface {} that ycloud did not make",
                want.ifname
            ),
        ));
    }
    let l = get_link(h, peer).await?.ok_or_else(|| {
        CniError::new(
            code::NETLINK,
            format!("veth peer {peer} did not arrive in the pod namespace"),
        )
    })?;
    let idx = l.header.index;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name(want.ifname.clone())
                .address(want.mac.to_vec())
                .mtu(want.mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!(
            "renaming {peer} to {} and setting its MAC/MTU",
            want.ifname
        )))?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting {} up", want.ifname)))?;
    if let Some(lo) = get_link(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(nl("setting lo up"))?;
    }
    for ip in &want.ips {
        let mut req = h.address().add(idx, ip.addr(), ip.prefix_len());
        if ip.addr().is_ipv6() {
            // The address is ours by IPAM: skip duplicate address detection, which would
            // hold the address "tentative" (unusable) for a second or more.
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            req.message_mut().attributes.push(AddressAttribute::Flags(
                rtnetlink::packet_route::address::AddressFlags::Nodad,
            ));
        }
        match req.execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(format!("adding {ip} to {}", want.ifname))(e)),
        }
    }
    for r in &want.routes {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .and_then(|b| b.gateway(r.via))
            .map_err(|e| {
                CniError::new(
                    code::ANNOTATION,
                    format!("route {} via {}: {e}", r.dst, r.via),
                )
            })?
            .output_interface(idx)
            .build();
        match h.route().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => {
                return Err(nl(format!(
                    "adding route {} via {} on {}",
                    r.dst, r.via, want.ifname
                ))(e));
            }
        }
    }
    Ok(())
}

/// TX checksum offload off on `dev` (see [`crate::netns::tx_checksum_off`]).
pub fn tx_checksum_off(dev: &str) -> Result<(), CniError> {
    crate::netns::tx_checksum_off(dev)
}

/// What CHECK compares.
pub async fn check_pod_end(h: &Handle, want: &PodIface) -> Result<(), CniError> {
    let fail = |m: String| Err(CniError::new(code::CHECK_FAILED, m));
    let Some(l) = get_link(h, &want.ifname).await? else {
        return fail(format!(
            "interface {} is missing from the pod namespace",
            want.ifname
        ));
    };
    let mac = format_mac(&want.mac);
    if link_mac(&l).as_deref() != Some(mac.as_str()) {
        return fail(format!(
            "{}: MAC is {:?}, expected {mac}",
            want.ifname,
            link_mac(&l)
        ));
    }
    if link_mtu(&l) != Some(want.mtu) {
        return fail(format!(
            "{}: MTU is {:?}, expected {}",
            want.ifname,
            link_mtu(&l),
            want.mtu
        ));
    }
    if !l.header.flags.contains(LinkFlags::Up) {
        return fail(format!("{} is down", want.ifname));
    }
    let idx = l.header.index;
    let addrs: Vec<(IpAddr, u8)> = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(nl(format!("listing addresses of {}", want.ifname)))?
        .into_iter()
        .filter_map(|m| {
            let len = m.header.prefix_len;
            m.attributes.into_iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some((ip, len)),
                _ => None,
            })
        })
        .collect();
    for ip in &want.ips {
        if !addrs.contains(&(ip.addr(), ip.prefix_len())) {
            return fail(format!(
                "{}: address {ip} is missing (has {addrs:?})",
                want.ifname
            ));
        }
    }
    for r in &want.routes {
        let family = if r.dst.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        let routes: Vec<RouteMessage> = h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing routes"))?;
        let found = routes.iter().any(|m| {
            let mut oif = None;
            let mut gw = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(IpAddr::V4(*g)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some(IpAddr::V6(*g)),
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        dst = Some(IpAddr::V4(*d))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => {
                        dst = Some(IpAddr::V6(*d))
                    }
                    _ => {}
                }
            }
            let dst_ok = if r.dst.prefix_len() == 0 {
                dst.is_none() || dst == Some(r.dst.addr())
            } else {
                dst == Some(r.dst.addr())
            };
            m.header.destination_prefix_length == r.dst.prefix_len()
                && dst_ok
                && gw == Some(r.via)
                && oif == Some(idx)
        });
        if !found {
            return fail(format!(
                "{}: route {} via {} is missing",
                want.ifname, r.dst, r.via
            ));
        }
    }
    Ok(())
}
