//! The port keeper (veth mode): every `--port-check-interval-ms` each attachment this daemon
//! made is checked, and what someone removed is put back — the OVS port (or its `iface-id`),
//! or the whole veth pair (deleting either end of a veth deletes both, so the pod's
//! interface is gone too and is configured again from the pod's annotation). Like the
//! management port keeper in `mgmt.rs`, it makes the node match what it should be, whatever
//! happened in between.
//!
//! The attachments are known from ADD, and at start from our ports on the bridge (their
//! `external_ids` carry the pod, the attachment and the netns path), so a restarted daemon
//! keeps watching the pods it plumbed before. A port deleted while the daemon was down is
//! not known after the restart: the next CHECK reports it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::Daemon;
use crate::annotation::PodNetwork;
use crate::error::CniError;
use crate::link;
use crate::netns::with_netlink;
use crate::ovs::{self, Ovs};

/// `external_ids` key: the pod's network namespace path (so the keeper of a restarted
/// daemon knows where to put the pod end back).
pub const KEY_NETNS: &str = "ycloud.io/netns";

/// One veth attachment, as ADD made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The host veth, also the OVS port and Interface name.
    pub host: String,
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    /// The Interface's `external_ids`: OVN's binding keys plus ours.
    pub fn external_ids(&self, net: &PodNetwork) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                ovs::KEY_IFACE_ID.to_string(),
                net.logical_switch_port.clone(),
            ),
            (ovs::KEY_ATTACHED_MAC.to_string(), net.mac.clone()),
            (ovs::KEY_POD_NAMESPACE.to_string(), self.namespace.clone()),
            (ovs::KEY_POD_NAME.to_string(), self.name.clone()),
            (ovs::KEY_CONTAINER.to_string(), self.container_id.clone()),
            (ovs::KEY_IFNAME.to_string(), self.ifname.clone()),
            (KEY_NETNS.to_string(), self.netns.display().to_string()),
        ])
    }
}

/// Our veth ports on the bridge that carry everything the keeper needs.
pub(super) async fn attachments_on_bridge(
    ovs: &Ovs,
) -> Result<BTreeMap<String, Attachment>, CniError> {
    Ok(ovs
        .owned_ports()
        .await?
        .into_iter()
        .filter(|p| !p.external_ids.contains_key(crate::smartnic::KEY_VF_NETDEV))
        .filter_map(|p| {
            let id = |k: &str| p.external_ids.get(k).cloned();
            let a = Attachment {
                host: p.name.clone(),
                netns: PathBuf::from(id(KEY_NETNS)?),
                namespace: id(ovs::KEY_POD_NAMESPACE)?,
                name: id(ovs::KEY_POD_NAME)?,
                container_id: p.container_id.clone(),
                ifname: p.ifname.clone(),
            };
            Some((p.name, a))
        })
        .collect())
}

/// What one check of an attachment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The veth pair was gone: made again, pod end configured, port plugged.
    Veth,
    /// The OVS port was gone (or bound to another LSP): plugged again.
    Port,
}

impl Daemon {
    pub(super) fn remember(&self, a: Attachment) {
        self.attachments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a.host.clone(), a);
    }

    pub(super) fn forget(&self, host: &str) {
        self.attachments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }

    pub(super) async fn keeper_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.port_check_interval).await;
            self.keep_ports().await;
        }
    }

    /// One pass over every known attachment; returns what was repaired (for logs, tests).
    pub async fn keep_ports(&self) -> Vec<(String, Repair)> {
        let all: Vec<Attachment> = self
            .attachments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut repaired = Vec::new();
        for a in all {
            // Under the attachment's lock: never in the middle of its ADD or DEL.
            let lock = self.lock_for(format!("{}/{}", a.container_id, a.ifname));
            let _held = lock.lock().await;
            let still_ours = self
                .attachments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&a.host)
                == Some(&a);
            if !still_ours {
                continue;
            }
            match self.keep_one(&a).await {
                Ok(Some(r)) => {
                    tracing::info!(port = %a.host, pod = %format!("{}/{}", a.namespace, a.name), repair = ?r, "pod port put back");
                    repaired.push((a.host.clone(), r));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(port = %a.host, pod = %format!("{}/{}", a.namespace, a.name), error = %e, "pod port check failed; retrying next pass")
                }
            }
        }
        repaired
    }

    async fn keep_one(&self, a: &Attachment) -> Result<Option<Repair>, CniError> {
        // The runtime deletes the netns before (or without) DEL: nothing to put back into.
        if !a.netns.exists() {
            return Ok(None);
        }
        let Some(net) = self.source.lookup(&a.namespace, &a.name)? else {
            return Ok(None);
        };
        let host = a.host.clone();
        let veth_there = with_netlink(None, move |h| async move {
            Ok(link::get_link(&h, &host).await?.is_some())
        })
        .await?;
        if !veth_there {
            let want = Self::pod_iface(&a.ifname, &net)?;
            self.plumb(a, &net, &want).await?;
            return Ok(Some(Repair::Veth));
        }
        let bound = self.ovs.port_on_bridge(&a.host).await?
            && self
                .ovs
                .interface_ids(&a.host)
                .await?
                .and_then(|ids| ids.get(ovs::KEY_IFACE_ID).cloned())
                == Some(net.logical_switch_port.clone());
        if !bound {
            // `add_port` replaces a port of that name in the same transaction.
            self.ovs
                .add_port(
                    &a.host,
                    &a.external_ids(&net),
                    ycloud_ovsdb::value::Row::new(),
                )
                .await?;
            return Ok(Some(Repair::Port));
        }
        Ok(None)
    }
}
