//! The daemon in dpu-host mode (ADD/DEL/CHECK: the VF into the pod, `ycloud.io/vf` out, wait
//! for `ycloud.io/vf-status`) and in dpu mode (a loop: plug the representor of every
//! requested VF with the pod's `iface-id`, answer `ycloud.io/vf-status`; unplug when the
//! request goes). See [`crate::dpu`].

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtnetlink::LinkUnspec;
use ycloud_ovsdb::value::Row;

use super::Daemon;
use super::pod_result;
use crate::annotation::format_mac;
use crate::dpu::{Exchange, KEY_DPU_SANDBOX, VfRequest, VfStatus};
use crate::error::{CniError, code};
use crate::link;
use crate::netns::with_netlink;
use crate::ovs;
use crate::protocol::Request;
use crate::smartnic::{KEY_VF_INDEX, Sysfs, codes};
use crate::spec::{CniResult, Interface};

/// ycloud: the DPU side did not plug the representor in time (or said why not).
pub const DPU_NOT_READY: u32 = 114;

impl Daemon {
    fn exchange(&self) -> Result<Exchange, CniError> {
        self.exchange.clone().ok_or_else(|| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "dpu modes need an exchange: the status directory (manifest mode) or the API server (cluster mode)",
            )
        })
    }

    fn sysfs(&self) -> Sysfs {
        Sysfs {
            root: self.cfg.sysfs_root.clone(),
        }
    }

    pub(super) async fn add_dpu_host(&self, req: &Request) -> Result<CniResult, CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let net = self.wait_annotation(&ns, &name).await?;
        let cid = req.env.container_id().to_string();
        let ifname = req.env.ifname().to_string();
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        let want = Self::pod_iface(&ifname, &net)?;
        let ex = self.exchange()?;
        // A retried ADD: give back what the earlier attempt took, then start over.
        self.del_dpu_host(req).await?;

        let held = self.vf_lock.lock().await;
        let sysfs = self.sysfs();
        let pf = sysfs.find_host_pf(self.cfg.pf.as_deref())?;
        let pf_id = sysfs.pf_number(&pf);
        let vfs = sysfs.vfs(&pf)?;
        let claimed: Vec<u32> = ex
            .requests()?
            .into_iter()
            .filter(|(_, _, r)| r.pf_id == pf_id)
            .map(|(_, _, r)| r.vf_id)
            .collect();
        let candidates: Vec<String> = vfs
            .iter()
            .filter(|v| !claimed.contains(&v.index))
            .map(|v| v.netdev.clone())
            .collect();
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
            ));
        };
        let request = VfRequest {
            pf_id,
            vf_id: vf.index,
            sandbox_id: cid.clone(),
        };
        // The claim goes out first: a daemon restarted after the move knows whose VF it is.
        ex.put_request(&ns, &name, &request).await?;
        drop(held);

        let (vf_name, pod_ns) = (vf.netdev.clone(), netns.clone());
        with_netlink(None, move |h| async move {
            link::move_vf_to_netns(&h, &vf_name, &pod_ns).await
        })
        .await?;
        let (vf_name, w2, txoff) = (vf.netdev.clone(), want.clone(), self.cfg.tx_checksum_off);
        with_netlink(Some(netns.clone()), move |h| async move {
            link::configure_pod_end(&h, &vf_name, &w2).await?;
            if txoff {
                link::tx_checksum_off(&w2.ifname)?;
            }
            Ok(())
        })
        .await?;

        if !self.cfg.ovn_installed_timeout.is_zero() {
            let deadline = Instant::now() + self.cfg.ovn_installed_timeout;
            let mut changes = ex.changes();
            loop {
                let status = ex.status(&ns, &name)?.filter(|s| s.answers(&request));
                match status {
                    Some(s) if s.ready => break,
                    _ if Instant::now() >= deadline => {
                        let why = status
                            .and_then(|s| s.reason)
                            .unwrap_or_else(|| "no ycloud.io/vf-status answer".into());
                        return Err(CniError::new(
                            DPU_NOT_READY,
                            format!(
                                "the DPU did not plug the representor of VF {} of PF {pf_id} within {} ms: {why}",
                                vf.index,
                                self.cfg.ovn_installed_timeout.as_millis()
                            ),
                        ));
                    }
                    // Cluster mode wakes on the watch event; files are polled.
                    _ => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match changes.is_some() {
                            true => super::wait_change(&mut changes, left).await,
                            false => tokio::time::sleep(left.min(Duration::from_millis(20))).await,
                        }
                    }
                }
            }
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

    /// Withdraws the pod's `ycloud.io/vf` (the DPU side then unplugs) and brings the VF home.
    pub(super) async fn del_dpu_host(&self, req: &Request) -> Result<(), CniError> {
        let ex = self.exchange()?;
        let cid = req.env.container_id();
        for (ns, name, r) in ex
            .requests()?
            .into_iter()
            .filter(|(_, _, r)| r.sandbox_id == cid)
        {
            ex.remove_request(&ns, &name).await?;
            ex.remove_status(&ns, &name).await?;
            let sysfs = self.sysfs();
            let Ok(pf) = sysfs.find_host_pf(self.cfg.pf.as_deref()) else {
                continue;
            };
            let Some(vf) = sysfs.vfs(&pf)?.into_iter().find(|v| v.index == r.vf_id) else {
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
            let home = File::open("/proc/self/ns/net").map_err(|e| {
                CniError::new(code::IO, format!("opening the node network namespace: {e}"))
            })?;
            let ifname = req.env.ifname().to_string();
            with_netlink(Some(netns), move |h| async move {
                let l = match link::get_link(&h, &ifname).await? {
                    Some(l) => l,
                    None => match link::get_link(&h, &vf.netdev).await? {
                        Some(l) => l,
                        None => return Ok(()),
                    },
                };
                h.link()
                    .set(
                        LinkUnspec::new_with_index(l.header.index)
                            .down()
                            .name(vf.netdev.clone())
                            .setns_by_fd(home.as_raw_fd())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| {
                        CniError::new(
                            code::NETLINK,
                            format!("returning VF {} to the node: {e}", vf.netdev),
                        )
                    })
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn check_dpu_host(&self, req: &Request) -> Result<(), CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let fail = |m: String| CniError::new(code::CHECK_FAILED, m);
        let net = self.source.lookup(&ns, &name)?.ok_or_else(|| {
            fail(format!(
                "pod {ns}/{name} has no ycloud.io/network annotation"
            ))
        })?;
        let ex = self.exchange()?;
        let cid = req.env.container_id();
        let Some((_, _, r)) = ex
            .requests()?
            .into_iter()
            .find(|(n, p, r)| *n == ns && *p == name && r.sandbox_id == cid)
        else {
            return Err(fail(format!(
                "pod {ns}/{name} has no ycloud.io/vf for sandbox {cid}"
            )));
        };
        if !ex
            .status(&ns, &name)?
            .is_some_and(|s| s.ready && s.answers(&r))
        {
            return Err(fail(format!(
                "the DPU has not reported VF {} of pod {ns}/{name} ready",
                r.vf_id
            )));
        }
        let want = Self::pod_iface(req.env.ifname(), &net)?;
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        with_netlink(Some(netns), move |h| async move {
            link::check_pod_end(&h, &want).await
        })
        .await
    }

    /// dpu mode: every `interval`, plug what is requested and unplug what is not.
    pub(super) async fn dpu_loop(self: Arc<Self>, interval: Duration) {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            if let Err(e) = self.dpu_pass(&busy).await {
                tracing::warn!(error = %e, "dpu: pass failed; retrying");
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn dpu_pass(
        self: &Arc<Self>,
        busy: &Arc<Mutex<HashSet<String>>>,
    ) -> Result<(), CniError> {
        let ex = self.exchange()?;
        let reqs = ex.requests()?;
        for (ns, name, r) in &reqs {
            let done = match ex.status(ns, name)? {
                Some(s) if s.ready && s.answers(r) => match &s.representor {
                    Some(rep) => self.ovs.port_on_bridge(rep).await?,
                    None => false,
                },
                _ => false,
            };
            let key = format!("{ns}/{name}/{}", r.sandbox_id);
            if done
                || !busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone())
            {
                continue;
            }
            let (me, ex, ns, name, r, busy) = (
                self.clone(),
                ex.clone(),
                ns.clone(),
                name.clone(),
                r.clone(),
                busy.clone(),
            );
            // One task per pod: a pod whose LSP is missing must not hold up the others.
            tokio::spawn(async move {
                let status = match me.plug_representor(&ns, &name, &r).await {
                    Ok(rep) => VfStatus {
                        representor: Some(rep),
                        ready: true,
                        reason: None,
                        sandbox_id: r.sandbox_id.clone(),
                        vf_id: r.vf_id,
                    },
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "dpu: plugging the representor failed");
                        VfStatus {
                            representor: None,
                            ready: false,
                            reason: Some(e.msg),
                            sandbox_id: r.sandbox_id.clone(),
                            vf_id: r.vf_id,
                        }
                    }
                };
                // The request may have been withdrawn meanwhile: answer only a live one.
                if ex.requests().is_ok_and(|all| {
                    all.iter()
                        .any(|(n, p, q)| *n == ns && *p == name && *q == r)
                }) && let Err(e) = ex.put_status(&ns, &name, &status).await
                {
                    tracing::warn!(error = %e, "dpu: writing ycloud.io/vf-status");
                }
                busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            });
        }
        // Representors of withdrawn requests.
        for (port, sandbox) in self.ovs.ports_with_key(KEY_DPU_SANDBOX).await? {
            if !reqs.iter().any(|(_, _, r)| r.sandbox_id == sandbox) {
                tracing::info!(port = %port, sandbox = %sandbox, "dpu: unplugging the representor of a withdrawn VF");
                self.ovs.del_port(&port).await?;
            }
        }
        Ok(())
    }

    async fn plug_representor(
        &self,
        ns: &str,
        name: &str,
        r: &VfRequest,
    ) -> Result<String, CniError> {
        let net = self.source.lookup(ns, name)?.ok_or_else(|| {
            CniError::new(
                code::ANNOTATION,
                format!("pod {ns}/{name} has no ycloud.io/network annotation yet"),
            )
        })?;
        let sysfs = self.sysfs();
        let pf = sysfs.find_pf(self.cfg.pf.as_deref())?;
        if sysfs.pf_number(&pf) != r.pf_id {
            return Err(CniError::new(
                codes::SYSFS,
                format!(
                    "PF {pf} is p{}, the request names PF {}",
                    sysfs.pf_number(&pf),
                    r.pf_id
                ),
            ));
        }
        let rep = sysfs.representor(&pf, r.vf_id)?;
        let (rep2, mtu, txoff) = (rep.clone(), net.mtu, self.cfg.tx_checksum_off);
        with_netlink(None, move |h| async move {
            let l = link::get_link(&h, &rep2).await?.ok_or_else(|| {
                CniError::new(
                    codes::NO_REPRESENTOR,
                    format!("representor {rep2} is not in this network namespace"),
                )
            })?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(l.header.index)
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
        let ids = BTreeMap::from([
            (
                ovs::KEY_IFACE_ID.to_string(),
                net.logical_switch_port.clone(),
            ),
            (ovs::KEY_ATTACHED_MAC.to_string(), net.mac.clone()),
            (ovs::KEY_POD_NAMESPACE.to_string(), ns.to_string()),
            (ovs::KEY_POD_NAME.to_string(), name.to_string()),
            (KEY_DPU_SANDBOX.to_string(), r.sandbox_id.clone()),
            (KEY_VF_INDEX.to_string(), r.vf_id.to_string()),
        ]);
        self.ovs
            .del_port_synced(&rep, Duration::from_secs(10))
            .await?;
        self.ovs.add_port(&rep, &ids, Row::new()).await?;
        if !self.cfg.ovn_installed_timeout.is_zero() {
            self.ovs
                .wait_ovn_installed(&rep, self.cfg.ovn_installed_timeout)
                .await?;
        }
        Ok(rep)
    }
}
