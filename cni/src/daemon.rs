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
use crate::error::{CniError, code};
use crate::link::{self, PodIface};
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
    /// Where the node status file (`nodes/<node>.json`, management ports) is; `None`: no
    /// management ports.
    pub node_status_dir: Option<PathBuf>,
    /// How often the management ports are checked and repaired; zero: never.
    pub mgmt_interval: Duration,
    /// How long ADD waits for the pod annotation.
    pub annotation_timeout: Duration,
    /// How long ADD waits for `ovn-installed`; zero: don't wait.
    pub ovn_installed_timeout: Duration,
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

pub struct Daemon {
    cfg: DaemonConfig,
    ovs: Ovs,
    source: Arc<dyn AnnotationSource>,
    /// One operation at a time per attachment; different pods run in parallel.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// smartnic mode: VF choice and claim (the OVS port) happen under this lock, so two
    /// ADDs never pick the same VF.
    vf_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("cfg", &self.cfg).finish()
    }
}

impl Daemon {
    pub async fn new(
        cfg: DaemonConfig,
        source: Arc<dyn AnnotationSource>,
    ) -> Result<Arc<Daemon>, CniError> {
        let ovs = Ovs::connect(&cfg.ovs_db, &cfg.bridge).await?;
        // The OVS that holds representors offloads to the NIC: a smartnic host, or the DPU.
        if matches!(cfg.mode, Mode::Smartnic | Mode::Dpu) {
            let mut other = vec![("hw-offload", "true")];
            if let Some(p) = &cfg.tc_policy {
                other.push(("tc-policy", p.as_str()));
            }
            ovs.set_other_config(&other).await?;
        }
        Ok(Arc::new(Daemon {
            cfg,
            ovs,
            source,
            locks: Mutex::new(HashMap::new()),
            vf_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Binds the socket (root-only: directory 0700 if we create it, socket 0600) and serves
    /// until the task is dropped; fails only if the socket cannot be bound.
    pub async fn serve(self: Arc<Self>) -> Result<(), CniError> {
        let listener = bind(&self.cfg.socket)?;
        if let (Some(dir), false, false) = (
            self.cfg.node_status_dir.clone(),
            self.cfg.mgmt_interval.is_zero(),
            self.cfg.node_name.is_empty(),
        ) {
            let me = self.clone();
            tokio::spawn(async move { me.mgmt_loop(dir).await });
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

    /// Keeps the management ports in place: one pass at start, then every `mgmt_interval`.
    async fn mgmt_loop(self: Arc<Self>, dir: PathBuf) {
        loop {
            match crate::mgmt::reconcile(
                &self.ovs,
                &dir,
                &self.cfg.node_name,
                self.cfg.tx_checksum_off,
            )
            .await
            {
                Ok(r) if r.is_empty() => {}
                Ok(r) => {
                    tracing::info!(plugged = ?r.ports_plugged, removed = ?r.ports_removed, kernel = ?r.kernel, "management ports repaired")
                }
                Err(e) => tracing::warn!(error = %e, "management ports: pass failed; retrying"),
            }
            tokio::time::sleep(self.cfg.mgmt_interval).await;
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
                    let r = self.handle(req).await;
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

    async fn wait_annotation(&self, ns: &str, name: &str) -> Result<PodNetwork, CniError> {
        let deadline = Instant::now() + self.cfg.annotation_timeout;
        loop {
            if let Some(net) = self.source.lookup(ns, name)? {
                return Ok(net);
            }
            if Instant::now() >= deadline {
                return Err(CniError::new(
                    code::ANNOTATION,
                    format!("pod {ns}/{name} has no ycloud.io/network annotation after {} ms", self.cfg.annotation_timeout.as_millis()),
                )
                .with_details("the controller has not allocated the pod's address yet (or the pod is not on a ycloud network)"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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
        let host = host_ifname(&cid, &ifname);
        let tmp = temp_ifname(&cid, &ifname);
        let want = Self::pod_iface(&ifname, &net)?;
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
        let ids = BTreeMap::from([
            (
                ovs::KEY_IFACE_ID.to_string(),
                net.logical_switch_port.clone(),
            ),
            (ovs::KEY_ATTACHED_MAC.to_string(), net.mac.clone()),
            (ovs::KEY_POD_NAMESPACE.to_string(), ns.clone()),
            (ovs::KEY_POD_NAME.to_string(), name.clone()),
            (ovs::KEY_CONTAINER.to_string(), cid.clone()),
            (ovs::KEY_IFNAME.to_string(), ifname.clone()),
        ]);
        // The pod end and the OVS port are independent once the pair exists: do both at
        // once (the OVSDB commit is off the critical path). ovn-installed is only awaited
        // after both, so the first packet still finds the pod configured.
        let (t3, w3) = (tmp.clone(), want.clone());
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
        if !self.cfg.ovn_installed_timeout.is_zero() {
            self.ovs
                .wait_ovn_installed(&host, self.cfg.ovn_installed_timeout)
                .await?;
        }

        Ok(pod_result(
            req,
            vec![
                Interface {
                    name: host.clone(),
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

    /// Removes the OVS port and the host veth (its peer in the pod goes with it). Every part
    /// may already be gone: DEL after DEL, DEL without ADD, DEL after the netns was deleted.
    async fn del(&self, req: &Request) -> Result<(), CniError> {
        let host = host_ifname(req.env.container_id(), req.env.ifname());
        let tmp = temp_ifname(req.env.container_id(), req.env.ifname());
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
mod smartnic;

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
