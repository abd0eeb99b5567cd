//! Which network namespace each pod of this node lives in, as CNI ADD told us, kept on disk
//! (`<state-dir>/pod-netns/<container-id>.json`) so a restarted daemon goes on probing its
//! pods without waiting for ADDs that will never come again. DEL forgets the container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{CniError, code};
use crate::protocol::Request;
use crate::spec::Command;

/// Subdirectory of the state directory.
pub const DIR: &str = "pod-netns";

/// One pod sandbox's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetns {
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    pub netns: PathBuf,
    /// When ADD recorded it (Unix milliseconds): the newest sandbox of a pod wins.
    pub recorded_at_ms: u64,
}

/// What a CNI request means for the index: only a successful ADD or DEL changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsEvent {
    Added(PodNetns),
    Deleted { container_id: String },
}

impl NetnsEvent {
    /// The event `req` causes once it has succeeded; `None` for other commands and for an
    /// ADD without the pod's name or netns (the daemon rejects those anyway).
    pub fn of(req: &Request) -> Option<NetnsEvent> {
        match req.env.command {
            Command::Add => {
                let arg = |k: &str| req.env.args.get(k).filter(|v| !v.is_empty()).cloned();
                Some(NetnsEvent::Added(PodNetns {
                    namespace: arg("K8S_POD_NAMESPACE")?,
                    name: arg("K8S_POD_NAME")?,
                    container_id: req.env.container_id().to_string(),
                    netns: PathBuf::from(req.env.netns.clone().filter(|n| !n.is_empty())?),
                    recorded_at_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                }))
            }
            Command::Del => Some(NetnsEvent::Deleted {
                container_id: req.env.container_id().to_string(),
            }),
            _ => None,
        }
    }
}

/// The index, in memory and on disk.
#[derive(Debug)]
pub struct PodNetnsStore {
    /// `None`: kept in memory only (no `--state-dir`).
    dir: Option<PathBuf>,
    by_container: Mutex<BTreeMap<String, PodNetns>>,
}

impl PodNetnsStore {
    /// Loads `<state_dir>/pod-netns` (creating it). Records whose namespace file is gone
    /// (the pod went away while the daemon was down) are dropped; unreadable files are
    /// logged and skipped.
    pub fn open(state_dir: &Path) -> Result<PodNetnsStore, CniError> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let mut by_container = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))? {
            let path = entry.map_err(|e| io("listing", &dir, e))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let rec = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<PodNetns>(&b).map_err(|e| e.to_string()));
            match rec {
                Ok(r) if r.netns.exists() => {
                    by_container.insert(r.container_id.clone(), r);
                }
                Ok(r) => {
                    tracing::info!(pod = %format!("{}/{}", r.namespace, r.name), netns = %r.netns.display(), "pod netns gone while the daemon was down: forgetting it");
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable pod netns record: skipped")
                }
            }
        }
        Ok(PodNetnsStore {
            dir: Some(dir),
            by_container: Mutex::new(by_container),
        })
    }

    /// An index that is not persisted: a restarted daemon knows a pod again only after its
    /// next ADD (for daemons run without `--state-dir`, e.g. in tests).
    pub fn in_memory() -> PodNetnsStore {
        PodNetnsStore {
            dir: None,
            by_container: Mutex::new(BTreeMap::new()),
        }
    }

    /// Applies a successful ADD or DEL.
    pub fn apply(&self, event: NetnsEvent) -> Result<(), CniError> {
        match event {
            NetnsEvent::Added(rec) => self.record(rec),
            NetnsEvent::Deleted { container_id } => self.forget(&container_id).map(|_| ()),
        }
    }

    pub fn record(&self, rec: PodNetns) -> Result<(), CniError> {
        if let Some(path) = self.file(&rec.container_id)? {
            let body = serde_json::to_vec(&rec).expect("a record serializes");
            ycloud_probe::files::write_atomic(&path, &body)
                .map_err(|e| CniError::new(code::IO, e.to_string()))?;
        }
        self.lock().insert(rec.container_id.clone(), rec);
        Ok(())
    }

    /// Forgets a container; whether it was known.
    pub fn forget(&self, container_id: &str) -> Result<bool, CniError> {
        if let Some(path) = self.file(container_id)? {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &path, e)),
            }
        }
        Ok(self.lock().remove(container_id).is_some())
    }

    /// The network namespace of pod `namespace/name` (its newest sandbox).
    pub fn lookup(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        self.lock()
            .values()
            .filter(|r| r.namespace == namespace && r.name == name)
            .max_by_key(|r| r.recorded_at_ms)
            .map(|r| r.netns.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PodNetns>> {
        self.by_container.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self, container_id: &str) -> Result<Option<PathBuf>, CniError> {
        // The plugin already checked the id's alphabet; the store does not rely on it.
        if !ycloud_probe::files::valid_component(container_id) || container_id.starts_with('.') {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("container id {container_id:?} cannot name a state file"),
            ));
        }
        Ok(self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{container_id}.json"))))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(code::IO, format!("{what} {}: {e}", path.display()))
}
