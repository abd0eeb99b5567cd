//! The pod's addressing as the controller wrote it (`ycloud.io/network`, see
//! docs/pod-annotation.md), and where the daemon reads it from.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{CniError, code};

/// `ycloud.io/network`. Our own serde type (the controller has its own): both parse the
/// fixtures in `examples/annotations/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    pub vpc: String,
    pub subnet: String,
    pub logical_switch: String,
    pub logical_switch_port: String,
    pub mac: String,
    pub ips: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    #[serde(default)]
    pub routes: Vec<AnnotationRoute>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationRoute {
    pub dst: IpNet,
    pub via: IpAddr,
}

impl PodNetwork {
    /// Checks what the kernel would otherwise reject halfway through an ADD.
    pub fn validate(&self) -> Result<(), CniError> {
        let bad = |what: String| {
            Err(CniError::new(
                code::ANNOTATION,
                format!("pod annotation ycloud.io/network: {what}"),
            ))
        };
        if parse_mac(&self.mac).is_none() {
            return bad(format!("mac {:?} is not xx:xx:xx:xx:xx:xx", self.mac));
        }
        if self.ips.is_empty() {
            return bad("ips is empty".into());
        }
        if self.gateways.len() != self.ips.len() {
            return bad(format!(
                "{} ips but {} gateways (one per family, same order)",
                self.ips.len(),
                self.gateways.len()
            ));
        }
        for (ip, gw) in self.ips.iter().zip(&self.gateways) {
            if ip.addr().is_ipv4() != gw.is_ipv4() {
                return bad(format!("gateway {gw} is not of the family of {ip}"));
            }
        }
        if !(68..=65535).contains(&self.mtu) {
            return bad(format!("mtu {} is out of range 68-65535", self.mtu));
        }
        if self.logical_switch_port.is_empty() {
            return bad("logicalSwitchPort is empty".into());
        }
        Ok(())
    }

    /// The routes to install: the annotation's, or one default route per family.
    pub fn effective_routes(&self) -> Vec<AnnotationRoute> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        self.gateways
            .iter()
            .map(|gw| AnnotationRoute {
                dst: match gw {
                    IpAddr::V4(_) => "0.0.0.0/0".parse().expect("literal"),
                    IpAddr::V6(_) => "::/0".parse().expect("literal"),
                },
                via: *gw,
            })
            .collect()
    }
}

/// `xx:xx:xx:xx:xx:xx` → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the daemon learns a pod's addressing. Cluster mode watches the API server's pods
/// on this node (`crate::kube`); manifest mode reads the controller's status directory. A
/// lookup must be cheap (a cache or a small file): ADD repeats it until the annotation
/// appears or its timeout passes.
pub trait AnnotationSource: Send + Sync + 'static {
    /// `Ok(None)` while the pod or its annotation does not exist yet. Code 11 (try again
    /// later) while the source cannot tell yet (cluster mode before the first list).
    fn lookup(&self, namespace: &str, name: &str) -> Result<Option<PodNetwork>, CniError>;

    /// A receiver marked changed whenever a lookup may answer differently (a watch event),
    /// so a waiting ADD wakes on the event instead of polling. `None`: the source cannot
    /// say (files), and the waiter polls.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Parses and validates a `ycloud.io/network` value; `whence` names where it came from in
/// the error (a file path, or the pod and annotation key).
pub fn parse_network(text: &[u8], whence: &str) -> Result<PodNetwork, CniError> {
    let net: PodNetwork = serde_json::from_slice(text).map_err(|e| {
        CniError::new(
            code::ANNOTATION,
            format!("{whence}: not a ycloud.io/network object: {e}"),
        )
    })?;
    net.validate()
        .map_err(|e| CniError::new(e.code, format!("{whence}: {}", e.msg)))?;
    Ok(net)
}

/// Manifest mode: `<status-dir>/pods/<namespace>/<name>.json` holds the annotation's JSON
/// object (written by the controller with a rename, so a reader never sees half a file).
#[derive(Debug, Clone)]
pub struct StatusDirSource {
    pub dir: PathBuf,
}

impl StatusDirSource {
    pub fn path_of(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir
            .join("pods")
            .join(namespace)
            .join(format!("{name}.json"))
    }
}

pub(crate) fn valid_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !s.starts_with('.')
}

impl AnnotationSource for StatusDirSource {
    fn lookup(&self, namespace: &str, name: &str) -> Result<Option<PodNetwork>, CniError> {
        // Names become path components: refuse anything that could climb out of the dir.
        if !valid_k8s_name(namespace) || !valid_k8s_name(name) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_ARGS: pod {namespace:?}/{name:?} is not a valid Kubernetes namespace/name"
                ),
            ));
        }
        let path = self.path_of(namespace, name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CniError::new(
                    code::IO,
                    format!("reading {}: {e}", path.display()),
                ));
            }
        };
        parse_network(&text, &path.display().to_string()).map(Some)
    }
}
