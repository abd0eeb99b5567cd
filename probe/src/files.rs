//! The manifest-mode files of the status directory `S` (see docs/probes.md):
//! `S/probes/<namespace>/<name>.yaml` (a whole `NetworkProbe`, written by the controller)
//! and `S/probe-status/<namespace>/<name>.yaml` (a `NetworkProbeStatus`, written by whoever
//! runs the probe). Writes are atomic (a temporary file, then a rename); readers skip files
//! whose name starts with `.` or does not end in `.yaml` (the writers' temporaries).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ycloud_crds::{NetworkProbe, NetworkProbeStatus};

use crate::error::ProbeError;

/// Subdirectory of `S` with the probes.
pub const PROBES_DIR: &str = "probes";
/// Subdirectory of `S` with the statuses.
pub const STATUS_DIR: &str = "probe-status";

/// `S/probes/<namespace>/<name>.yaml`.
pub fn probe_path(status_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    status_dir
        .join(PROBES_DIR)
        .join(namespace)
        .join(format!("{name}.yaml"))
}

/// `S/probe-status/<namespace>/<name>.yaml`.
pub fn status_path(status_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    status_dir
        .join(STATUS_DIR)
        .join(namespace)
        .join(format!("{name}.yaml"))
}

/// Whether `s` is safe as one path component (a Kubernetes name always is).
pub fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError {
    let path = path.to_path_buf();
    move |source| ProbeError::File { what, path, source }
}

/// Writes `contents` to `path` atomically (temporary `.name.tmp-…` in the same directory,
/// then rename), creating the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ProbeError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, contents).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("renaming into place", path)(e)
    })
}

/// Writes the status of probe `namespace/name`.
pub fn write_status(
    status_dir: &Path,
    namespace: &str,
    name: &str,
    status: &NetworkProbeStatus,
) -> Result<(), ProbeError> {
    let path = checked(status_path(status_dir, namespace, name), namespace, name)?;
    let yaml = serde_yaml::to_string(status).map_err(|e| ProbeError::Parse {
        path: path.clone(),
        why: format!("serializing the status: {e}"),
    })?;
    write_atomic(&path, yaml.as_bytes())
}

/// Reads the status of probe `namespace/name`; `None` if there is none yet.
pub fn read_status(
    status_dir: &Path,
    namespace: &str,
    name: &str,
) -> Result<Option<NetworkProbeStatus>, ProbeError> {
    let path = checked(status_path(status_dir, namespace, name), namespace, name)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|e| ProbeError::Parse {
                path,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// Deletes the status of probe `namespace/name`; whether there was one.
pub fn remove_status(status_dir: &Path, namespace: &str, name: &str) -> Result<bool, ProbeError> {
    let path = checked(status_path(status_dir, namespace, name), namespace, name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("removing", &path)(e)),
    }
}

/// The `(namespace, name)` of every status file.
pub fn list_statuses(status_dir: &Path) -> Result<Vec<(String, String)>, ProbeError> {
    Ok(list_yaml(&status_dir.join(STATUS_DIR))?
        .into_iter()
        .map(|(ns, name, _)| (ns, name))
        .collect())
}

fn checked(path: PathBuf, namespace: &str, name: &str) -> Result<PathBuf, ProbeError> {
    if valid_component(namespace) && valid_component(name) {
        Ok(path)
    } else {
        Err(ProbeError::Parse {
            path,
            why: format!("{namespace:?}/{name:?} is not a valid namespace/name"),
        })
    }
}

/// `(namespace, name, path)` of every `<dir>/<namespace>/<name>.yaml`; no dir: none.
fn list_yaml(dir: &Path) -> Result<Vec<(String, String, PathBuf)>, ProbeError> {
    let mut out = Vec::new();
    let namespaces = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    for ns in namespaces {
        let ns = ns.map_err(io("listing", dir))?;
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        if ns_name.starts_with('.') || !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let files = match std::fs::read_dir(ns.path()) {
            Ok(d) => d,
            // Removed between the two listings.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("listing", &ns.path())(e)),
        };
        for f in files {
            let f = f.map_err(io("listing", &ns.path()))?;
            let file = f.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".yaml") else {
                continue;
            };
            if file.starts_with('.') || name.is_empty() {
                continue;
            }
            out.push((ns_name.clone(), name.to_string(), f.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A probe file as read.
#[derive(Debug, Clone)]
pub struct ProbeFile {
    pub namespace: String,
    pub name: String,
    pub path: PathBuf,
    pub probe: Arc<NetworkProbe>,
}

/// What a scan of `S/probes` found.
#[derive(Debug, Default)]
pub struct Scan {
    pub probes: Vec<ProbeFile>,
    /// Files that could not be read or parsed: reported, and skipped (one bad file must
    /// not stop the others).
    pub errors: Vec<ProbeError>,
}

/// `S/probes`, rescanned cheaply: a file is parsed again only when its inode, size or
/// modification time changed (a rename-written file always gets a new inode), so a rescan
/// of thousands of unchanged probes costs a directory listing and a `stat` each.
#[derive(Debug, Default)]
pub struct ProbeDir {
    cache: HashMap<PathBuf, (Stamp, Result<Arc<NetworkProbe>, String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ProbeDir {
    pub fn new() -> ProbeDir {
        ProbeDir::default()
    }

    /// Every probe under `status_dir/probes`.
    pub fn scan(&mut self, status_dir: &Path) -> Scan {
        let mut scan = Scan::default();
        let files = match list_yaml(&status_dir.join(PROBES_DIR)) {
            Ok(f) => f,
            Err(e) => {
                scan.errors.push(e);
                return scan;
            }
        };
        let mut seen = HashMap::with_capacity(files.len());
        for (namespace, name, path) in files {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    scan.errors.push(io("reading", &path)(e));
                    continue;
                }
            };
            let stamp = Stamp {
                ino: meta.ino(),
                len: meta.len(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
            };
            let parsed = match self.cache.remove(&path) {
                Some((s, parsed)) if s == stamp => parsed,
                _ => parse_probe(&path, &namespace, &name),
            };
            match &parsed {
                Ok(probe) => scan.probes.push(ProbeFile {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: path.clone(),
                    probe: probe.clone(),
                }),
                Err(why) => scan.errors.push(ProbeError::Parse {
                    path: path.clone(),
                    why: why.clone(),
                }),
            }
            seen.insert(path, (stamp, parsed));
        }
        self.cache = seen;
        scan
    }
}

fn parse_probe(path: &Path, namespace: &str, name: &str) -> Result<Arc<NetworkProbe>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading: {e}"))?;
    let probe: NetworkProbe =
        serde_yaml::from_str(&text).map_err(|e| format!("not a NetworkProbe: {e}"))?;
    // The path is the identity; a file whose metadata disagrees was put in the wrong place.
    if probe.metadata.name.as_deref() != Some(name) {
        return Err(format!(
            "metadata.name is {:?}, the file is named {name:?}",
            probe.metadata.name
        ));
    }
    if let Some(ns) = probe.metadata.namespace.as_deref()
        && ns != namespace
    {
        return Err(format!(
            "metadata.namespace is {ns:?}, the file is under {namespace:?}"
        ));
    }
    Ok(Arc::new(probe))
}
