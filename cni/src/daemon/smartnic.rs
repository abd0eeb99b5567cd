//! The daemon's smartnic-mode ADD, DEL and CHECK (see [`crate::smartnic`] for the sysfs
//! side). The VF moves into the pod and is configured like a veth's pod end; its
//! representor, not a veth, goes on the bridge. The claim on a VF is the OVS port of its
//! representor (`ycloud.io/vf-netdev`), so a restarted daemon knows which VFs are taken.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use rtnetlink::LinkUnspec;
use ycloud_ovsdb::value::Row;

use super::Daemon;
use super::pod_result;
use crate::annotation::format_mac;
use crate::error::{CniError, code};
use crate::link;
use crate::netns::with_netlink;
use crate::ovs::{self, OwnedPort};
use crate::protocol::Request;
use crate::smartnic::{KEY_PF, KEY_VF_INDEX, KEY_VF_NETDEV, Sysfs, codes};
use crate::spec::{CniResult, Interface};

impl Daemon {
    async fn attachment_ports(&self, req: &Request) -> Result<Vec<OwnedPort>, CniError> {
        Ok(self
            .ovs
            .owned_ports()
            .await?
            .into_iter()
            .filter(|p| p.container_id == req.env.container_id() && p.ifname == req.env.ifname())
            .collect())
    }

    pub(super) async fn add_smartnic(&self, req: &Request) -> Result<CniResult, CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let net = self.wait_annotation(&ns, &name).await?;
        let ifname = req.env.ifname().to_string();
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        let want = Self::pod_iface(&ifname, &net)?;
        // A retried ADD: give back what the earlier attempt took, then start over.
        self.del_smartnic(req).await?;

        let held = self.vf_lock.lock().await;
        let sysfs = Sysfs {
            root: self.cfg.sysfs_root.clone(),
        };
        let pf = sysfs.find_pf(self.cfg.pf.as_deref())?;
        let vfs = sysfs.vfs(&pf)?;
        let claimed: Vec<String> = self
            .ovs
            .owned_ports()
            .await?
            .into_iter()
            .filter_map(|p| p.external_ids.get(KEY_VF_NETDEV).cloned())
            .collect();
        let candidates: Vec<String> = vfs
            .iter()
            .filter(|v| !claimed.contains(&v.netdev))
            .map(|v| v.netdev.clone())
            .collect();
        // Free = not claimed and still in the node namespace (not sitting in some pod).
        let present = with_netlink(None, move |h| async move {
            let mut out = Vec::new();
            for c in candidates {
                if link::get_link(&h, &c).await?.is_some() {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await?;
        let Some(vf) = vfs.iter().find(|v| present.contains(&v.netdev)).cloned() else {
            return Err(CniError::new(
                codes::VF_EXHAUSTED,
                format!("all {} VFs of {pf} are in use", vfs.len()),
            )
            .with_details(
                "raise device/sriov_numvfs on the PF or schedule the pod on another node",
            ));
        };
        let rep = sysfs.representor(&pf, vf.index)?;
        let rep_q = rep.clone();
        let rep_here = with_netlink(None, move |h| async move {
            Ok(link::get_link(&h, &rep_q).await?.is_some())
        })
        .await?;
        if !rep_here {
            return Err(CniError::new(
                codes::NO_REPRESENTOR,
                format!(
                    "representor {rep} of VF {} is in sysfs but not in the node's network namespace",
                    vf.index
                ),
            ));
        }
        // The claim (the representor's port, naming the VF) is written before the VF moves:
        // a daemon that dies after the move still knows, on restart, whose VF it is.
        let ids = BTreeMap::from([
            (
                ovs::KEY_IFACE_ID.to_string(),
                net.logical_switch_port.clone(),
            ),
            (ovs::KEY_ATTACHED_MAC.to_string(), net.mac.clone()),
            (ovs::KEY_POD_NAMESPACE.to_string(), ns.clone()),
            (ovs::KEY_POD_NAME.to_string(), name.clone()),
            (
                ovs::KEY_CONTAINER.to_string(),
                req.env.container_id().to_string(),
            ),
            (ovs::KEY_IFNAME.to_string(), ifname.clone()),
            (KEY_VF_NETDEV.to_string(), vf.netdev.clone()),
            (KEY_VF_INDEX.to_string(), vf.index.to_string()),
            (KEY_PF.to_string(), pf.clone()),
        ]);
        self.ovs
            .del_port_synced(&rep, Duration::from_secs(10))
            .await?;
        // The representor goes up *before* OVS opens it: ovs-vswitchd keeps its own copy of
        // a port's interface flags and writes them back when it adds the port (promiscuous
        // on), so a representor set up while vswitchd was still opening it could be put back
        // down with a stale copy: `Network is down` on every packet to the pod (seen in ~1
        // of 4 runs of the SmartNIC test).
        let (rep2, mtu, txoff) = (rep.clone(), net.mtu, self.cfg.tx_checksum_off);
        with_netlink(None, move |h| async move {
            let Some(r) = link::get_link(&h, &rep2).await? else {
                return Err(CniError::new(
                    codes::NO_REPRESENTOR,
                    format!(
                        "representor {rep2} is in sysfs but not in the node's network namespace"
                    ),
                ));
            };
            h.link()
                .set(
                    LinkUnspec::new_with_index(r.header.index)
                        .mtu(mtu)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| {
                    CniError::new(code::NETLINK, format!("setting representor {rep2} up: {e}"))
                })?;
            if txoff {
                link::tx_checksum_off(&rep2)?;
            }
            Ok(())
        })
        .await?;
        self.ovs.add_port(&rep, &ids, Row::new()).await?;
        drop(held);

        let (vf_name, pod_ns) = (vf.netdev.clone(), netns.clone());
        with_netlink(None, move |h| async move {
            link::move_vf_to_netns(&h, &vf_name, &pod_ns).await
        })
        .await?;
        let (vf_name, w2) = (vf.netdev.clone(), want.clone());
        with_netlink(Some(netns.clone()), move |h| async move {
            link::configure_pod_end(&h, &vf_name, &w2).await?;
            if txoff {
                link::tx_checksum_off(&w2.ifname)?;
            }
            Ok(())
        })
        .await?;
        if !self.cfg.ovn_installed_timeout.is_zero() {
            self.ovs
                .wait_ovn_installed(&rep, self.cfg.ovn_installed_timeout)
                .await?;
        }
        Ok(pod_result(
            req,
            vec![Interface {
                name: ifname,
                mac: Some(format_mac(&want.mac)),
                mtu: Some(net.mtu),
                sandbox: Some(netns.display().to_string()),
            }],
            &want,
            &net,
        ))
    }

    /// Unplugs the representor and brings the VF home (renamed back, into the node
    /// namespace). A gone netns is fine: the kernel returns a real VF to the root namespace
    /// by itself.
    pub(super) async fn del_smartnic(&self, req: &Request) -> Result<(), CniError> {
        for p in self.attachment_ports(req).await? {
            self.ovs.del_port(&p.name).await?;
            let Some(vf) = p.external_ids.get(KEY_VF_NETDEV).cloned() else {
                continue;
            };
            let Some(netns) = req
                .env
                .netns
                .clone()
                .map(PathBuf::from)
                .filter(|p| p.exists())
            else {
                continue;
            };
            // The node namespace, opened here (the daemon's) before the thread enters the pod's.
            let home = File::open("/proc/self/ns/net").map_err(|e| {
                CniError::new(code::IO, format!("opening the node network namespace: {e}"))
            })?;
            let ifname = req.env.ifname().to_string();
            with_netlink(Some(netns), move |h| async move {
                // Renamed to the pod's ifname, or still under its own name if an ADD died
                // between the move and the rename.
                let l = match link::get_link(&h, &ifname).await? {
                    Some(l) => l,
                    None => match link::get_link(&h, &vf).await? {
                        Some(l) => l,
                        None => return Ok(()),
                    },
                };
                h.link()
                    .set(
                        LinkUnspec::new_with_index(l.header.index)
                            .down()
                            .name(vf.clone())
                            .setns_by_fd(home.as_raw_fd())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| {
                        CniError::new(
                            code::NETLINK,
                            format!("returning VF {ifname} (as {vf}) to the node: {e}"),
                        )
                    })
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn check_smartnic(&self, req: &Request) -> Result<(), CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let fail = |m: String| CniError::new(code::CHECK_FAILED, m);
        let net = self.source.lookup(&ns, &name)?.ok_or_else(|| {
            fail(format!(
                "pod {ns}/{name} has no ycloud.io/network annotation"
            ))
        })?;
        let ports = self.attachment_ports(req).await?;
        let Some(p) = ports.first() else {
            return Err(fail(format!(
                "no representor port for {} {}",
                req.env.container_id(),
                req.env.ifname()
            )));
        };
        if p.external_ids.get(ovs::KEY_IFACE_ID) != Some(&net.logical_switch_port)
            || !self.ovs.port_on_bridge(&p.name).await?
        {
            return Err(fail(format!(
                "representor port {} is not on {} with iface-id {}",
                p.name,
                self.ovs.bridge(),
                net.logical_switch_port
            )));
        }
        let want = Self::pod_iface(req.env.ifname(), &net)?;
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        with_netlink(Some(netns), move |h| async move {
            link::check_pod_end(&h, &want).await
        })
        .await
    }
}
