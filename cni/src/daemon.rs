//! `ycloud-cnid`: serves the plugin's requests on a root-only unix socket and plumbs pod
//! interfaces (veth mode). Flow of an ADD: annotation (wait) → veth pair in the node
//! namespace, peer moved into the pod → pod end configured on its own netns thread → port
//! on the integration bridge with the LSP name as `iface-id` → wait for `ovn-installed`.
//!
//! Every step first removes what an interrupted earlier attempt under the same names may
//! have left, so a retried ADD (after a daemon restart, a timeout, or simply twice) finishes
//! the job instead of failing on leftovers.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use ycloud_ovsdb::value::Row;

use crate::annotation::{AnnotationSource, PodNetwork, format_mac, parse_mac};
use crate::dpu::Exchange;
use crate::error::{CniError, code};
use crate::link::{self, PodIface};
use crate::mgmt::NodeSource;
use crate::netns::with_netlink;
use crate::ovs::{self, Ovs};
use crate::protocol::{MAX_MESSAGE, Request, Response};
use crate::spec::{CniResult, Command, Dns, Interface, IpConfig, Route};

/// How the pod's interface is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A veth pair; the host end on br-int (default).
    Veth,
    /// An SR-IOV VF in the pod, its representor on br-int, OVS hardware offload on.
    Smartnic,
    /// The host of a DPU: the VF into the pod, `ycloud.io/vf` out; the DPU plugs.
    DpuHost,
    /// On the DPU: plug the representors the hosts' `ycloud.io/vf` ask for.
    Dpu,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    /// `unix:…` or `tcp:…` of the node's Open_vSwitch database.
    pub ovs_db: String,
    pub bridge: String,
    pub node_name: String,
    /// Manifest mode: the controller's status directory; `None` in cluster mode. (Where
    /// pods, management ports and the dpu exchange come from is in [`Sources`].)
    pub node_status_dir: Option<PathBuf>,
    /// How often the management ports are checked and repaired; zero: never.
    pub mgmt_interval: Duration,
    /// How long ADD waits for the pod annotation.
    pub annotation_timeout: Duration,
    /// How long ADD waits for `ovn-installed`; zero: don't wait.
    pub ovn_installed_timeout: Duration,
    /// How often the pods' ports and host veths are checked and put back; zero: never.
    pub port_check_interval: Duration,
    pub mode: Mode,
    /// Turn TX checksum offload off on both veth ends (needed with the userspace datapath).
    pub tx_checksum_off: bool,
    /// smartnic mode: where sysfs is (`/sys`; a fake tree in tests).
    pub sysfs_root: PathBuf,
    /// smartnic mode: the PF to take VFs from; `None`: the first SR-IOV PF in switchdev mode.
    pub pf: Option<String>,
    /// smartnic mode: `Open_vSwitch other_config:tc-policy` (`skip_sw`, `skip_hw`, `none`).
    pub tc_policy: Option<String>,
}

/// The host-side veth name of an attachment: stable across retries and restarts (derived
/// from container id and ifname), 15 bytes, so DEL and GC find it without any state.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("yc{}", attachment_hash(container_id, ifname))
}

/// The peer's name while it is created in the node namespace, before it is renamed in the pod.
pub fn temp_ifname(container_id: &str, ifname: &str) -> String {
    format!("yt{}", attachment_hash(container_id, ifname))
}

fn attachment_hash(container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across Rust versions (unlike DefaultHasher), which matters because the
    // name must survive a daemon upgrade between ADD and DEL.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")[..13].to_string()
}

/// Where the daemon learns what the controller decided, per mode: files in the status
/// directory (manifest mode) or watches on the API server (cluster mode, `crate::kube`).
pub struct Sources {
    /// The pods' `ycloud.io/network`.
    pub pods: Arc<dyn AnnotationSource>,
    /// This node's management ports; `None`: not managed.
    pub node: Option<Arc<dyn NodeSource>>,
    /// dpu-host and dpu modes: where `ycloud.io/vf` and `ycloud.io/vf-status` meet.
    pub exchange: Option<Exchange>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("node", &self.node.is_some())
            .field("exchange", &self.exchange)
            .finish()
    }
}

pub struct Daemon {
    cfg: DaemonConfig,
    ovs: Ovs,
    source: Arc<dyn AnnotationSource>,
    node_source: Option<Arc<dyn NodeSource>>,
    exchange: Option<Exchange>,
    /// The veth attachments this daemon made (or found on the bridge at start), for the
    /// port keeper: what to put back when someone removes the port or the host veth.
    attachments: Mutex<BTreeMap<String, keeper::Attachment>>,
    /// One operation at a time per attachment; different pods run in parallel.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// smartnic mode: VF choice and claim (the OVS port) happen under this lock, so two
    /// ADDs never pick the same VF.
    vf_lock: tokio::sync::Mutex<()>,
    /// Pod → netns index for the probe runner (`crate::probes`), fed by successful ADD/DEL.
    pod_netns: std::sync::OnceLock<Arc<crate::probes::PodNetnsStore>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("cfg", &self.cfg).finish()
    }
}

impl Daemon {
    pub async fn new(cfg: DaemonConfig, sources: Sources) -> Result<Arc<Daemon>, CniError> {
        let ovs = Ovs::connect(&cfg.ovs_db, &cfg.bridge).await?;
        // The OVS that holds representors offloads to the NIC: a smartnic host, or the DPU.
        if matches!(cfg.mode, Mode::Smartnic | Mode::Dpu) {
            let mut other = vec![("hw-offload", "true")];
            if let Some(p) = &cfg.tc_policy {
                other.push(("tc-policy", p.as_str()));
            }
            ovs.set_other_config(&other).await?;
        }
        let attachments = if cfg.mode == Mode::Veth {
            keeper::attachments_on_bridge(&ovs).await?
        } else {
            BTreeMap::new()
        };
        Ok(Arc::new(Daemon {
            cfg,
            ovs,
            source: sources.pods,
            node_source: sources.node,
            exchange: sources.exchange,
            attachments: Mutex::new(attachments),
            locks: Mutex::new(HashMap::new()),
            vf_lock: tokio::sync::Mutex::new(()),
            pod_netns: std::sync::OnceLock::new(),
        }))
    }

    /// Binds the socket (root-only: directory 0700 if we create it, socket 0600) and serves
    /// until the task is dropped; fails only if the socket cannot be bound.
    pub async fn serve(self: Arc<Self>) -> Result<(), CniError> {
        let listener = bind(&self.cfg.socket)?;
        if let (Some(node), false) = (self.node_source.clone(), self.cfg.mgmt_interval.is_zero()) {
            let me = self.clone();
            tokio::spawn(async move { me.mgmt_loop(node).await });
        }
        if self.cfg.mode == Mode::Veth && !self.cfg.port_check_interval.is_zero() {
            let me = self.clone();
            tokio::spawn(async move { me.keeper_loop().await });
        }
        if self.cfg.mode == Mode::Dpu {
            let me = self.clone();
            tokio::spawn(async move { me.dpu_loop(Duration::from_millis(100)).await });
        }
        tracing::info!(socket = %self.cfg.socket.display(), bridge = %self.cfg.bridge, "ycloud-cnid serving");
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                // Out of file descriptors and the like: transient for a daemon; the plugin
                // reports "try again later" meanwhile.
                Err(e) => {
                    tracing::warn!(error = %e, socket = %self.cfg.socket.display(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move { me.serve_one(stream).await });
        }
    }

    /// Keeps the management ports in place: one pass at start, then every `mgmt_interval`
    /// or as soon as the source reports a change (cluster mode: the Node's annotation).
    async fn mgmt_loop(self: Arc<Self>, node: Arc<dyn NodeSource>) {
        let mut changes = node.changes();
        loop {
            let want = match node.node_network() {
                Ok(Some(w)) => Ok(w),
                // Not known yet (no first list): no pass, rather than removing every port.
                Ok(None) => {
                    wait_change(&mut changes, self.cfg.mgmt_interval).await;
                    continue;
                }
                Err(e) => Err(e),
            };
            let pass = match want {
                Ok(w) => crate::mgmt::reconcile(&self.ovs, &w, self.cfg.tx_checksum_off).await,
                Err(e) => Err(e),
            };
            match pass {
                Ok(r) if r.is_empty() => {}
                Ok(r) => {
                    tracing::info!(plugged = ?r.ports_plugged, removed = ?r.ports_removed, kernel = ?r.kernel, "management ports repaired")
                }
                Err(e) => tracing::warn!(error = %e, "management ports: pass failed; retrying"),
            }
            wait_change(&mut changes, self.cfg.mgmt_interval).await;
        }
    }

    async fn serve_one(&self, mut stream: UnixStream) {
        let mut buf = Vec::new();
        // The plugin writes its request at once: a peer that holds the connection open
        // without finishing must not hold a task forever.
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            (&mut stream).take(MAX_MESSAGE).read_to_end(&mut buf),
        )
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete request within 10 s",
            ))
        });
        let resp = match read {
            Err(e) => Response::Error(CniError::new(code::IO, format!("reading the request: {e}"))),
            Ok(_) => match serde_json::from_slice::<Request>(&buf) {
                Err(e) => Response::Error(CniError::new(
                    code::PROTOCOL,
                    format!("unreadable request: {e}"),
                )),
                Ok(req) => {
                    let started = Instant::now();
                    let cmd = req.env.command;
                    let cid = req.env.container_id().to_string();
                    let netns_event = crate::probes::NetnsEvent::of(&req);
                    let r = self.handle(req).await;
                    self.note_netns(&r, netns_event);
                    match &r {
                        Ok(_) => {
                            tracing::info!(command = cmd.as_str(), container = %cid, ms = started.elapsed().as_millis() as u64, "done")
                        }
                        Err(e) => {
                            tracing::warn!(command = cmd.as_str(), container = %cid, error = %e, "failed")
                        }
                    }
                    match r {
                        Ok(v) => Response::Ok(v),
                        Err(e) => Response::Error(e),
                    }
                }
            },
        };
        let body = serde_json::to_vec(&resp).unwrap_or_else(|_| {
            b"{\"error\":{\"code\":105,\"msg\":\"serializing the answer\"}}".to_vec()
        });
        // The plugin may have gone (timeout): nothing to do about a failed write.
        let _ = stream.write_all(&body).await;
        let _ = stream.shutdown().await;
    }

    /// Keeps `store` up to date with every successful ADD and DEL from now on (the probe
    /// runner probes pods inside the namespaces it records). Set once; later calls are ignored.
    pub fn set_pod_netns_store(&self, store: Arc<crate::probes::PodNetnsStore>) {
        let _ = self.pod_netns.set(store);
    }

    fn note_netns(&self, r: &Result<Json, CniError>, event: Option<crate::probes::NetnsEvent>) {
        if let (Ok(_), Some(event), Some(store)) = (r, event, self.pod_netns.get())
            && let Err(e) = store.apply(event)
        {
            // The attachment itself is fine; only probing this pod is affected.
            tracing::warn!(error = %e, "recording the pod's network namespace for probes");
        }
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds, so the map does not grow with every pod ever seen.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key).or_default().clone()
    }

    /// One request, as the plugin's JSON answer.
    pub async fn handle(&self, req: Request) -> Result<Json, CniError> {
        match req.env.command {
            Command::Version => Ok(crate::spec::version_result(&req.config.cni_version)),
            Command::Status => {
                self.ovs
                    .ping()
                    .await
                    .map_err(|e| CniError::new(code::PLUGIN_NOT_AVAILABLE, e.msg))?;
                Ok(Json::Null)
            }
            Command::Gc => self.gc(&req).await.map(|()| Json::Null),
            Command::Add | Command::Del | Command::Check => {
                let lock =
                    self.lock_for(format!("{}/{}", req.env.container_id(), req.env.ifname()));
                let _held = lock.lock().await;
                if self.cfg.mode == Mode::DpuHost {
                    return match req.env.command {
                        Command::Add => self
                            .add_dpu_host(&req)
                            .await
                            .map(|r| serde_json::to_value(r).expect("a result serializes")),
                        Command::Del => self.del_dpu_host(&req).await.map(|()| Json::Null),
                        _ => self.check_dpu_host(&req).await.map(|()| Json::Null),
                    };
                }
                if self.cfg.mode == Mode::Dpu {
                    return Err(CniError::new(
                        code::PLUGIN_NOT_AVAILABLE,
                        "this ycloud-cnid runs in dpu mode (on a DPU): pods are added on the host",
                    ));
                }
                if self.cfg.mode == Mode::Smartnic {
                    return match req.env.command {
                        Command::Add => self
                            .add_smartnic(&req)
                            .await
                            .map(|r| serde_json::to_value(r).expect("a result serializes")),
                        Command::Del => self.del_smartnic(&req).await.map(|()| Json::Null),
                        _ => self.check_smartnic(&req).await.map(|()| Json::Null),
                    };
                }
                match req.env.command {
                    Command::Add => self
                        .add(&req)
                        .await
                        .map(|r| serde_json::to_value(r).expect("a result serializes")),
                    Command::Del => self.del(&req).await.map(|()| Json::Null),
                    _ => self.check(&req).await.map(|()| Json::Null),
                }
            }
        }
    }

    fn pod_of(req: &Request) -> Result<(String, String), CniError> {
        let get = |k: &str| {
            req.env
                .args
                .get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_ENV,
                        format!("CNI_ARGS has no {k}: ycloud needs the pod's namespace and name"),
                    )
                })
        };
        Ok((get("K8S_POD_NAMESPACE")?, get("K8S_POD_NAME")?))
    }

    /// Waits for the pod's `ycloud.io/network`. With a source that reports changes (cluster
    /// mode) the wait wakes on the watch event that brings it; files are polled (20 ms).
    async fn wait_annotation(&self, ns: &str, name: &str) -> Result<PodNetwork, CniError> {
        let deadline = Instant::now() + self.cfg.annotation_timeout;
        // Subscribed before the first lookup: an event between the two is not lost.
        let mut changes = self.source.changes();
        let mut not_synced = None;
        loop {
            match self.source.lookup(ns, name) {
                Ok(Some(net)) => return Ok(net),
                Ok(None) => {}
                // The cache has not listed yet: as good as "not there yet".
                Err(e) if e.code == code::TRY_AGAIN_LATER => not_synced = Some(e),
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                let why = match not_synced {
                    Some(e) => e.msg,
                    None => "the controller has not allocated the pod's address yet (or the pod is not on a ycloud network)".into(),
                };
                return Err(CniError::new(
                    code::ANNOTATION,
                    format!(
                        "pod {ns}/{name} has no ycloud.io/network annotation after {} ms",
                        self.cfg.annotation_timeout.as_millis()
                    ),
                )
                .with_details(why));
            }
            let left = deadline - now;
            match &mut changes {
                Some(rx) => {
                    // A closed channel (the watch task ended) degrades to polling.
                    if let Ok(Err(_)) = tokio::time::timeout(left, rx.changed()).await {
                        changes = None;
                    }
                }
                None => tokio::time::sleep(left.min(Duration::from_millis(20))).await,
            }
        }
    }

    fn pod_iface(ifname: &str, net: &PodNetwork) -> Result<PodIface, CniError> {
        Ok(PodIface {
            ifname: ifname.to_string(),
            mac: parse_mac(&net.mac)
                .ok_or_else(|| CniError::new(code::ANNOTATION, format!("bad mac {:?}", net.mac)))?,
            mtu: net.mtu,
            ips: net.ips.clone(),
            routes: net.effective_routes(),
        })
    }

    async fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let net = self.wait_annotation(&ns, &name).await?;
        let cid = req.env.container_id().to_string();
        let ifname = req.env.ifname().to_string();
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        let a = keeper::Attachment {
            host: host_ifname(&cid, &ifname),
            netns: netns.clone(),
            namespace: ns,
            name,
            container_id: cid,
            ifname: ifname.clone(),
        };
        let want = Self::pod_iface(&ifname, &net)?;
        let host_link = self.plumb(&a, &net, &want).await?;
        self.remember(a.clone());
        if !self.cfg.ovn_installed_timeout.is_zero() {
            self.ovs
                .wait_ovn_installed(&a.host, self.cfg.ovn_installed_timeout)
                .await?;
        }

        Ok(pod_result(
            req,
            vec![
                Interface {
                    name: a.host.clone(),
                    mac: link::link_mac(&host_link),
                    mtu: Some(net.mtu),
                    sandbox: None,
                },
                Interface {
                    name: ifname.clone(),
                    mac: Some(format_mac(&want.mac)),
                    mtu: Some(net.mtu),
                    sandbox: Some(netns.display().to_string()),
                },
            ],
            &want,
            &net,
        ))
    }

    /// The veth pair, the pod end and the OVS port of attachment `a`, from nothing: what ADD
    /// does before waiting for `ovn-installed`, and what the port keeper redoes when the
    /// pair is gone. Whatever an earlier attempt left under the same names goes first.
    async fn plumb(
        &self,
        a: &keeper::Attachment,
        net: &PodNetwork,
        want: &PodIface,
    ) -> Result<rtnetlink::packet_route::link::LinkMessage, CniError> {
        let (host, netns) = (a.host.clone(), a.netns.clone());
        let tmp = temp_ifname(&a.container_id, &a.ifname);
        let txoff = self.cfg.tx_checksum_off;

        // A port left by an earlier attempt goes first (see `del_port_synced` for why).
        self.ovs
            .del_port_synced(&host, Duration::from_secs(10))
            .await?;
        let (h2, t2, n2, mtu) = (host.clone(), tmp.clone(), netns.clone(), net.mtu);
        let host_link = with_netlink(None, move |h| async move {
            let l = link::create_veth(&h, &h2, &t2, mtu, &n2).await?;
            if txoff {
                link::tx_checksum_off(&h2)?;
            }
            Ok(l)
        })
        .await?;
        // The pod end and the OVS port are independent once the pair exists: do both at
        // once (the OVSDB commit is off the critical path). ovn-installed is only awaited
        // after both, so the first packet still finds the pod configured.
        let (t3, w3, ids) = (tmp.clone(), want.clone(), a.external_ids(net));
        tokio::try_join!(
            with_netlink(Some(netns.clone()), move |h| async move {
                link::configure_pod_end(&h, &t3, &w3).await?;
                if txoff {
                    link::tx_checksum_off(&w3.ifname)?;
                }
                Ok(())
            }),
            self.ovs.add_port(&host, &ids, Row::new()),
        )?;
        Ok(host_link)
    }

    /// Removes the OVS port and the host veth (its peer in the pod goes with it). Every part
    /// may already be gone: DEL after DEL, DEL without ADD, DEL after the netns was deleted.
    async fn del(&self, req: &Request) -> Result<(), CniError> {
        let host = host_ifname(req.env.container_id(), req.env.ifname());
        let tmp = temp_ifname(req.env.container_id(), req.env.ifname());
        self.forget(&host);
        self.ovs.del_port(&host).await?;
        with_netlink(None, move |h| async move {
            link::delete_link(&h, &host).await?;
            link::delete_link(&h, &tmp).await?;
            Ok(())
        })
        .await
    }

    async fn check(&self, req: &Request) -> Result<(), CniError> {
        let (ns, name) = Self::pod_of(req)?;
        let fail = |m: String| CniError::new(code::CHECK_FAILED, m);
        let net = self.source.lookup(&ns, &name)?.ok_or_else(|| {
            fail(format!(
                "pod {ns}/{name} has no ycloud.io/network annotation"
            ))
        })?;
        let cid = req.env.container_id().to_string();
        let ifname = req.env.ifname().to_string();
        if let Some(prev) = &req.config.prev_result {
            let prev: CniResult = serde_json::from_value(prev.clone()).map_err(|e| {
                CniError::new(code::INVALID_NETWORK_CONFIG, format!("prevResult: {e}"))
            })?;
            if !prev
                .interfaces
                .iter()
                .any(|i| i.name == ifname && i.sandbox.is_some())
            {
                return Err(fail(format!(
                    "prevResult has no interface {ifname} in a sandbox"
                )));
            }
        }
        let host = host_ifname(&cid, &ifname);
        let want = Self::pod_iface(&ifname, &net)?;
        let netns = PathBuf::from(req.env.netns.clone().unwrap_or_default());
        with_netlink(Some(netns), move |h| async move {
            link::check_pod_end(&h, &want).await
        })
        .await?;
        let h2 = host.clone();
        let host_ok = with_netlink(None, move |h| async move {
            Ok(link::get_link(&h, &h2).await?.is_some())
        })
        .await?;
        if !host_ok {
            return Err(fail(format!("host veth {host} is missing")));
        }
        if !self.ovs.port_on_bridge(&host).await? {
            return Err(fail(format!(
                "port {host} is not on bridge {}",
                self.ovs.bridge()
            )));
        }
        let ids = self.ovs.interface_ids(&host).await?.unwrap_or_default();
        if ids.get(ovs::KEY_IFACE_ID) != Some(&net.logical_switch_port) {
            return Err(fail(format!(
                "interface {host}: iface-id is {:?}, expected {:?}",
                ids.get(ovs::KEY_IFACE_ID),
                net.logical_switch_port
            )));
        }
        Ok(())
    }

    /// Deletes every port of ours whose attachment is not in `cni.dev/valid-attachments`.
    async fn gc(&self, req: &Request) -> Result<(), CniError> {
        let valid = req.config.valid_attachments()?;
        for p in self.ovs.owned_ports().await? {
            if valid
                .iter()
                .any(|a| a.container_id == p.container_id && a.ifname == p.ifname)
            {
                continue;
            }
            let lock = self.lock_for(format!("{}/{}", p.container_id, p.ifname));
            let _held = lock.lock().await;
            tracing::info!(port = %p.name, container = %p.container_id, "GC: removing stale attachment");
            self.forget(&p.name);
            self.ovs.del_port(&p.name).await?;
            // A representor belongs to the NIC: unplugged, never deleted. Its VF comes back
            // to the node when the pod's namespace goes.
            if p.external_ids.contains_key(crate::smartnic::KEY_VF_NETDEV) {
                continue;
            }
            let name = p.name.clone();
            with_netlink(None, move |h| async move {
                link::delete_link(&h, &name).await.map(|_| ())
            })
            .await?;
        }
        Ok(())
    }
}

mod dpu;
mod keeper;
mod smartnic;

/// Waits until `changes` reports a change or `period` passes; without a channel (or once it
/// closed) just `period`.
pub(crate) async fn wait_change(
    changes: &mut Option<tokio::sync::watch::Receiver<u64>>,
    period: Duration,
) {
    match changes {
        Some(rx) => {
            if let Ok(Err(_)) = tokio::time::timeout(period, rx.changed()).await {
                *changes = None;
            }
        }
        None => tokio::time::sleep(period).await,
    }
}

fn bind(socket: &Path) -> Result<UnixListener, CniError> {
    let io = |what: &str, e: std::io::Error| {
        CniError::new(code::IO, format!("{what} {}: {e}", socket.display()))
    };
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        // A directory we made is ours to lock down; an existing one (e.g. /run) is not.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod 0700 the directory of", e))?;
    }
    // A socket file left by a previous run refuses new binds; nobody listens on it.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing stale", e)),
    }
    let listener = UnixListener::bind(socket).map_err(|e| io("binding", e))?;
    // Root-only: anyone who can talk to the daemon can plumb interfaces into any netns.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("chmod 0600", e))?;
    Ok(listener)
}

/// The CNI result of an attachment: `interfaces` as given, the pod's own interface last;
/// the pod's addresses and routes point at it.
pub(crate) fn pod_result(
    req: &Request,
    interfaces: Vec<Interface>,
    want: &PodIface,
    net: &PodNetwork,
) -> CniResult {
    let pod = interfaces.len().saturating_sub(1);
    CniResult {
        cni_version: req.config.cni_version.clone(),
        interfaces,
        ips: net
            .ips
            .iter()
            .zip(&net.gateways)
            .map(|(ip, gw)| IpConfig {
                address: ip.to_string(),
                gateway: Some(gw.to_string()),
                interface: Some(pod),
            })
            .collect(),
        routes: want
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst.to_string(),
                gw: Some(r.via.to_string()),
            })
            .collect(),
        dns: Dns::default(),
    }
}
