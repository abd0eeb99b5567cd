//! dpu-host and dpu modes: the pod's VF is on the host, its representor on the DPU, and
//! the two daemons meet through the pod (`ycloud.io/vf` from the host side,
//! `ycloud.io/vf-status` from the DPU side, as ovn-kubernetes does with its DPU connection
//! details). In manifest mode the annotations are files next to the pod's network file:
//! `<status-dir>/pods/<ns>/<name>.vf.json` and `….vf-status.json`, written with a rename; in
//! cluster mode they are the pod's annotations, written by merge patch (`crate::kube`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CniError, code};

/// `external_ids` key of a representor plugged by the dpu side: the pod sandbox it serves.
pub const KEY_DPU_SANDBOX: &str = "ycloud.io/dpu-sandbox";

/// `ycloud.io/vf`: which VF the host gave the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VfRequest {
    pub pf_id: u32,
    pub vf_id: u32,
    pub sandbox_id: String,
}

/// `ycloud.io/vf-status`: the DPU side's answer. `sandboxId`/`vfId` echo the request, so
/// the host never takes an answer to an earlier attempt for this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VfStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representor: Option<String>,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub sandbox_id: String,
    pub vf_id: u32,
}

impl VfStatus {
    pub fn answers(&self, r: &VfRequest) -> bool {
        self.sandbox_id == r.sandbox_id && self.vf_id == r.vf_id
    }
}

/// Where the two sides meet: files (manifest mode) or the pod's annotations (cluster mode).
#[derive(Debug, Clone)]
pub enum Exchange {
    Files(FileExchange),
    #[cfg(feature = "kube")]
    Kube(crate::kube::KubeExchange),
}

impl Exchange {
    /// Writes the host's claim `ycloud.io/vf` on the pod.
    pub async fn put_request(&self, ns: &str, name: &str, r: &VfRequest) -> Result<(), CniError> {
        match self {
            Exchange::Files(f) => f.put_request(ns, name, r),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => k.put(ns, name, crate::kube::VF_ANNOTATION, Some(r)).await,
        }
    }

    /// Withdraws `ycloud.io/vf`; a pod that is gone has none.
    pub async fn remove_request(&self, ns: &str, name: &str) -> Result<(), CniError> {
        match self {
            Exchange::Files(f) => f.remove_request(ns, name),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => {
                k.put::<VfRequest>(ns, name, crate::kube::VF_ANNOTATION, None)
                    .await
            }
        }
    }

    /// The DPU side's `ycloud.io/vf-status`, if any.
    pub fn status(&self, ns: &str, name: &str) -> Result<Option<VfStatus>, CniError> {
        match self {
            Exchange::Files(f) => f.status(ns, name),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => k.get(ns, name, crate::kube::VF_STATUS_ANNOTATION),
        }
    }

    pub async fn put_status(&self, ns: &str, name: &str, s: &VfStatus) -> Result<(), CniError> {
        match self {
            Exchange::Files(f) => f.put_status(ns, name, s),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => {
                k.put(ns, name, crate::kube::VF_STATUS_ANNOTATION, Some(s))
                    .await
            }
        }
    }

    pub async fn remove_status(&self, ns: &str, name: &str) -> Result<(), CniError> {
        match self {
            Exchange::Files(f) => f.remove_status(ns, name),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => {
                k.put::<VfStatus>(ns, name, crate::kube::VF_STATUS_ANNOTATION, None)
                    .await
            }
        }
    }

    /// Every `ycloud.io/vf` on this node: `(namespace, name, request)`, sorted.
    pub fn requests(&self) -> Result<Vec<(String, String, VfRequest)>, CniError> {
        match self {
            Exchange::Files(f) => f.requests(),
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => Ok(k.all(crate::kube::VF_ANNOTATION)),
        }
    }

    /// Marked changed when the exchange may read differently (cluster mode: a watch event).
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Exchange::Files(_) => None,
            #[cfg(feature = "kube")]
            Exchange::Kube(k) => Some(k.changes()),
        }
    }
}

/// The manifest-mode exchange: files in the status directory.
#[derive(Debug, Clone)]
pub struct FileExchange {
    pub dir: PathBuf,
}

impl FileExchange {
    fn path(&self, ns: &str, name: &str, suffix: &str) -> PathBuf {
        self.dir
            .join("pods")
            .join(ns)
            .join(format!("{name}.{suffix}.json"))
    }

    fn write<T: Serialize>(path: &Path, v: &T) -> Result<(), CniError> {
        let io =
            |e: std::io::Error| CniError::new(code::IO, format!("writing {}: {e}", path.display()));
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(v).expect("serializes")).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CniError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CniError::new(code::ANNOTATION, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::new(
                code::IO,
                format!("reading {}: {e}", path.display()),
            )),
        }
    }

    fn remove(path: &Path) -> Result<(), CniError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::new(
                code::IO,
                format!("removing {}: {e}", path.display()),
            )),
        }
    }

    pub fn put_request(&self, ns: &str, name: &str, r: &VfRequest) -> Result<(), CniError> {
        Self::write(&self.path(ns, name, "vf"), r)
    }

    pub fn remove_request(&self, ns: &str, name: &str) -> Result<(), CniError> {
        Self::remove(&self.path(ns, name, "vf"))
    }

    pub fn status(&self, ns: &str, name: &str) -> Result<Option<VfStatus>, CniError> {
        Self::read(&self.path(ns, name, "vf-status"))
    }

    pub fn put_status(&self, ns: &str, name: &str, s: &VfStatus) -> Result<(), CniError> {
        Self::write(&self.path(ns, name, "vf-status"), s)
    }

    pub fn remove_status(&self, ns: &str, name: &str) -> Result<(), CniError> {
        Self::remove(&self.path(ns, name, "vf-status"))
    }

    /// Every `ycloud.io/vf` on this node: `(namespace, name, request)`. Unreadable files are
    /// skipped (logged by the caller's next pass failing on them alone, not all).
    pub fn requests(&self) -> Result<Vec<(String, String, VfRequest)>, CniError> {
        let pods = self.dir.join("pods");
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&pods) else {
            return Ok(out);
        };
        for ns in namespaces.flatten() {
            let Ok(files) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            for f in files.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                let Some(pod) = fname.strip_suffix(".vf.json") else {
                    continue;
                };
                if let Ok(Some(r)) = Self::read::<VfRequest>(&f.path()) {
                    out.push((ns_name.clone(), pod.to_string(), r));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_the_status_dir_and_statuses_answer_only_their_request() {
        let d = tempfile::tempdir().expect("tmp");
        let ex = FileExchange {
            dir: d.path().into(),
        };
        assert!(ex.requests().expect("empty").is_empty());
        let r = VfRequest {
            pf_id: 0,
            vf_id: 3,
            sandbox_id: "5f0c8a2e6c1d".into(),
        };
        ex.put_request("ns", "web", &r).expect("put");
        // The shared fixture is exactly this request.
        let fixture = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/annotations/pod-vf.json"),
        )
        .expect("fixture");
        assert_eq!(
            serde_json::from_slice::<VfRequest>(&fixture).expect("fixture parses"),
            r
        );
        assert_eq!(
            ex.requests().expect("list"),
            vec![("ns".into(), "web".into(), r.clone())]
        );
        let s = VfStatus {
            representor: Some("pf0vf3".into()),
            ready: true,
            reason: None,
            sandbox_id: r.sandbox_id.clone(),
            vf_id: 3,
        };
        ex.put_status("ns", "web", &s).expect("status");
        assert!(
            ex.status("ns", "web")
                .expect("read")
                .expect("some")
                .answers(&r)
        );
        let retry = VfRequest {
            vf_id: 4,
            ..r.clone()
        };
        assert!(!s.answers(&retry), "an answer to VF 3 is not one to VF 4");
        ex.remove_request("ns", "web").expect("rm");
        ex.remove_request("ns", "web").expect("rm twice");
        assert!(ex.requests().expect("list").is_empty());
    }
}
