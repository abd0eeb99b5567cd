//! Host access to ClusterIPs: the node's management port(s).
//!
//! For each VPC with a join network the controller creates an LSP for this node on the
//! VPC's join switch and records it in the node status file
//! `<status-dir>/nodes/<node>.json` (manifest mode) or in the Node's
//! `ycloud.io/management-ports` annotation (cluster mode), see docs/cni.md. The daemon makes an OVS internal port
//! on the integration bridge bound to that LSP (`iface-id`), gives the resulting device its
//! address, and routes the VPC's service CIDRs through the join gateway. A periodic pass
//! puts back whatever someone removed (the port, the address, a route) and removes
//! management ports of VPCs no longer listed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};
use ycloud_ovsdb::value::{Row, Value};

use crate::error::{CniError, code};
use crate::link;
use crate::netns::with_netlink;
use crate::ovs::{self, Ovs};

/// `external_ids` key marking a management port, valued with its VPC.
pub const KEY_MGMT_VPC: &str = "ycloud.io/mgmt-vpc";

/// The node status file the controller writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    #[serde(default)]
    pub management_ports: Vec<MgmtPort>,
}

/// One management port: the node's LSP on one VPC's join switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MgmtPort {
    pub vpc: String,
    pub logical_switch_port: String,
    pub mac: String,
    /// `address/prefix` on the join network, one per family.
    pub ips: Vec<IpNet>,
    /// The VPC router's address on the join switch, per family, same order as `ips`.
    pub gateways: Vec<IpAddr>,
    /// Routed through the gateway: the VPC's ClusterIP ranges.
    #[serde(default)]
    pub service_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// The device name of a VPC's management port: stable, 15 bytes.
pub fn mgmt_ifname(vpc: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in vpc.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("ycm{:012x}", h & 0xffff_ffff_ffff)
}

pub fn node_file(status_dir: &Path, node: &str) -> PathBuf {
    status_dir.join("nodes").join(format!("{node}.json"))
}

impl NodeNetwork {
    /// Parses and checks a node network document; `whence` names where it came from (the
    /// file, or the Node and annotation key) in the error.
    pub fn parse(text: &[u8], whence: &str) -> Result<NodeNetwork, CniError> {
        let n: NodeNetwork = serde_json::from_slice(text).map_err(|e| {
            CniError::new(
                code::ANNOTATION,
                format!("{whence}: not a node network object: {e}"),
            )
        })?;
        for p in &n.management_ports {
            if crate::annotation::parse_mac(&p.mac).is_none()
                || p.ips.len() != p.gateways.len()
                || p.ips.is_empty()
            {
                return Err(CniError::new(
                    code::ANNOTATION,
                    format!(
                        "{whence}: management port of VPC {}: needs a MAC and one gateway per address",
                        p.vpc
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// Reads the node status file; absent file: no management ports.
pub fn read_node(status_dir: &Path, node: &str) -> Result<NodeNetwork, CniError> {
    let path = node_file(status_dir, node);
    match std::fs::read(&path) {
        Ok(b) => NodeNetwork::parse(&b, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeNetwork::default()),
        Err(e) => Err(CniError::new(
            code::IO,
            format!("reading {}: {e}", path.display()),
        )),
    }
}

/// Where the daemon learns this node's management ports: the node status file (manifest
/// mode) or the Node's `ycloud.io/management-ports` annotation (cluster mode, `crate::kube`).
pub trait NodeSource: Send + Sync + 'static {
    /// `Ok(None)` while the source cannot tell yet (cluster mode before the first list): the
    /// pass is skipped rather than taken as "no ports" (which would remove them).
    fn node_network(&self) -> Result<Option<NodeNetwork>, CniError>;

    /// Marked changed when the answer may differ, so a change is applied at once rather
    /// than at the next periodic pass. `None`: only the periodic pass.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Manifest mode: `<status-dir>/nodes/<node>.json`.
#[derive(Debug, Clone)]
pub struct NodeFileSource {
    pub dir: PathBuf,
    pub node: String,
}

impl NodeSource for NodeFileSource {
    fn node_network(&self) -> Result<Option<NodeNetwork>, CniError> {
        read_node(&self.dir, &self.node).map(Some)
    }
}

/// What one reconcile pass changed (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    pub ports_plugged: Vec<String>,
    pub ports_removed: Vec<String>,
    /// Addresses and routes added back.
    pub kernel: Vec<String>,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        self.ports_plugged.is_empty() && self.ports_removed.is_empty() && self.kernel.is_empty()
    }
}

/// One pass: make the OVS ports and the kernel state match `want`.
pub async fn reconcile(
    ovs: &Ovs,
    want: &NodeNetwork,
    tx_checksum_off: bool,
) -> Result<Repairs, CniError> {
    let mut repairs = Repairs::default();
    for p in &want.management_ports {
        let name = mgmt_ifname(&p.vpc);
        let ids = ovs.interface_ids(&name).await?;
        let plugged = ovs.port_on_bridge(&name).await?;
        if !plugged
            || ids.as_ref().and_then(|i| i.get(ovs::KEY_IFACE_ID)) != Some(&p.logical_switch_port)
        {
            let ext = BTreeMap::from([
                (ovs::KEY_IFACE_ID.to_string(), p.logical_switch_port.clone()),
                (ovs::KEY_ATTACHED_MAC.to_string(), p.mac.clone()),
                (KEY_MGMT_VPC.to_string(), p.vpc.clone()),
            ]);
            let extra = Row::from([
                ("type".to_string(), Value::from("internal")),
                // ovs-vswitchd sets an internal port's MAC from this column (and would put
                // back its own if we only set it through netlink).
                ("mac".to_string(), Value::set([p.mac.as_str()])),
            ]);
            ovs.del_port_synced(&name, Duration::from_secs(10)).await?;
            ovs.add_port(&name, &ext, extra).await?;
            repairs.ports_plugged.push(name.clone());
        }
        let (p2, n2) = (p.clone(), name.clone());
        let fixed = with_netlink(None, move |h| async move {
            configure(&h, &n2, &p2, tx_checksum_off).await
        })
        .await?;
        repairs.kernel.extend(fixed);
    }
    // Management ports of VPCs that are gone.
    for (name, vpc) in ovs.ports_with_key(KEY_MGMT_VPC).await? {
        if !want.management_ports.iter().any(|p| p.vpc == vpc) {
            ovs.del_port(&name).await?;
            repairs.ports_removed.push(name);
        }
    }
    Ok(repairs)
}

/// Kernel side of one management port; returns what had to be added.
async fn configure(
    h: &Handle,
    name: &str,
    p: &MgmtPort,
    tx_checksum_off: bool,
) -> Result<Vec<String>, CniError> {
    // ovs-vswitchd creates the device after the transaction: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let l = loop {
        if let Some(l) = link::get_link(h, name).await? {
            break l;
        }
        if Instant::now() > deadline {
            return Err(CniError::new(
                code::OVS,
                format!("ovs-vswitchd did not create the management port device {name}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let idx = l.header.index;
    let mut fixed = Vec::new();
    let nl = |what: String| {
        move |e: rtnetlink::Error| CniError::new(code::NETLINK, format!("{what}: {e}"))
    };
    let mut set = LinkUnspec::new_with_index(idx).up();
    if let Some(mtu) = p.mtu {
        set = set.mtu(mtu);
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(nl(format!("setting {name} up")))?;
    if tx_checksum_off {
        link::tx_checksum_off(name)?;
    }
    let have: Vec<(IpAddr, u8)> = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(nl(format!("listing addresses of {name}")))?
        .into_iter()
        .filter_map(|m| {
            let len = m.header.prefix_len;
            m.attributes.into_iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some((ip, len)),
                _ => None,
            })
        })
        .collect();
    for ip in &p.ips {
        if !have.contains(&(ip.addr(), ip.prefix_len())) {
            h.address()
                .add(idx, ip.addr(), ip.prefix_len())
                .execute()
                .await
                .map_err(nl(format!("adding {ip} to {name}")))?;
            fixed.push(format!("address {ip} on {name}"));
        }
    }
    for cidr in &p.service_cidrs {
        let Some(gw) = p
            .gateways
            .iter()
            .find(|g| g.is_ipv4() == cidr.addr().is_ipv4())
        else {
            continue;
        };
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(cidr.addr(), cidr.prefix_len())
            .and_then(|b| b.gateway(*gw))
            .map_err(|e| CniError::new(code::ANNOTATION, format!("route {cidr} via {gw}: {e}")))?
            .output_interface(idx)
            .build();
        // Adding is the check: EEXIST means it is there.
        match h.route().add(msg).execute().await {
            Ok(()) => fixed.push(format!("route {cidr} via {gw} dev {name}")),
            Err(rtnetlink::Error::NetlinkError(m)) if m.code.map(|c| -c.get()) == Some(17) => {}
            Err(e) => return Err(nl(format!("adding route {cidr} via {gw} dev {name}"))(e)),
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_file_means_no_management_ports_and_a_bad_one_is_an_error_naming_it() {
        let d = tempfile::tempdir().expect("tmp");
        assert_eq!(
            read_node(d.path(), "n1").expect("absent"),
            NodeNetwork::default()
        );
        std::fs::create_dir_all(d.path().join("nodes")).expect("mkdir");
        std::fs::write(node_file(d.path(), "n1"), r#"{"managementPorts":[{"vpc":"v","logicalSwitchPort":"l","mac":"zz","ips":["100.64.0.2/24"],"gateways":["100.64.0.1"]}]}"#).expect("write");
        let e = read_node(d.path(), "n1").expect_err("bad mac");
        assert_eq!(e.code, code::ANNOTATION);
        assert!(e.msg.contains("n1.json") && e.msg.contains("VPC v"), "{e}");
        std::fs::write(node_file(d.path(), "n1"), r#"{"managementPorts":[{"vpc":"v","logicalSwitchPort":"l","mac":"0a:00:00:00:00:01","ips":["100.64.0.2/24"],"gateways":["100.64.0.1"],"serviceCidrs":["10.96.0.0/16"]}]}"#).expect("write");
        let n = read_node(d.path(), "n1").expect("good");
        assert_eq!(
            n.management_ports[0].service_cidrs[0].to_string(),
            "10.96.0.0/16"
        );
    }

    #[test]
    fn management_port_names_are_stable_valid_link_names_per_vpc() {
        let a = mgmt_ifname("tenant-a");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ycm"));
        assert_eq!(a, mgmt_ifname("tenant-a"));
        assert_ne!(a, mgmt_ifname("tenant-b"));
        crate::spec::validate_ifname(&a).expect("valid");
    }
}
