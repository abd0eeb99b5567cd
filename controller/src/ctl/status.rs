//! `ycloudctl status`: what the controller says about itself and every service, read from
//! the status files it writes in manifest mode (`<status dir>/controller.yaml` and
//! `<status dir>/YusurService/<namespace>/<name>.yaml`, see `crate::status`).
//!
//! Reading files rather than asking the controller means the command works while the
//! controller is down (it shows the last state written, and says whether it had synced).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::CtlError;

/// The controller's own state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControllerState {
    pub synced: bool,
    pub objects: u64,
    pub problems: u64,
}

/// One service's row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceState {
    /// `namespace/name`.
    pub name: String,
    pub vpc: Option<String>,
    pub cluster_ips: Vec<String>,
    pub eip: Option<String>,
    pub backends_ready: u64,
    pub backends_total: u64,
    /// The `Ready` condition: `True`, `False`, `Unknown`, or `None` when not written yet.
    pub ready: Option<String>,
    /// `Ready`'s reason and message when it is not `True`.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// `(scenario, state)` per scenario, when the controller reports them.
    pub scenarios: Vec<(String, String)>,
}

/// Everything `status` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// The status directory read (manifest mode); empty when read from the API.
    pub status_dir: PathBuf,
    /// The API server the services were listed from (`ctl::status_api`), when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    pub controller: Option<ControllerState>,
    pub services: Vec<ServiceState>,
}

impl StatusReport {
    /// Every service is `Ready=True` (and, from a status directory, the controller has
    /// synced; the API has no such flag: each service's status is the controller's word).
    pub fn all_ready(&self) -> bool {
        (self.api_server.is_some() || self.controller.as_ref().is_some_and(|c| c.synced))
            && self
                .services
                .iter()
                .all(|s| s.ready.as_deref() == Some("True"))
    }
}

/// The status directory for a manifest directory (`<dir>/.status`) or a status directory
/// given as is (it holds `controller.yaml`).
pub fn status_dir_of(dir: &Path) -> PathBuf {
    if dir.join("controller.yaml").is_file() || !dir.join(".status").is_dir() {
        dir.to_path_buf()
    } else {
        dir.join(".status")
    }
}

fn read_yaml(path: &Path) -> Result<Value, CtlError> {
    let text = fs::read_to_string(path).map_err(|source| CtlError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| CtlError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Reads the status files under `dir` (a manifest directory or its `.status`); `service`
/// (`namespace/name`) restricts the services to one.
pub fn read(dir: &Path, service: Option<&str>) -> Result<StatusReport, CtlError> {
    let status_dir = status_dir_of(dir);
    if !status_dir.is_dir() {
        return Err(CtlError::NotFound(format!(
            "status directory {} does not exist (give the controller's manifest directory or its --status-dir)",
            status_dir.display()
        )));
    }
    let controller_file = status_dir.join("controller.yaml");
    let controller = if controller_file.is_file() {
        let v = read_yaml(&controller_file)?;
        Some(ControllerState {
            synced: v["synced"].as_bool().unwrap_or(false),
            objects: v["objects"].as_u64().unwrap_or(0),
            problems: v["problems"].as_u64().unwrap_or(0),
        })
    } else {
        None
    };
    let mut files = Vec::new();
    let svc_dir = status_dir.join("YusurService");
    for ns in fs::read_dir(&svc_dir).into_iter().flatten().flatten() {
        for f in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut services = Vec::new();
    for f in files {
        let v = read_yaml(&f)?;
        let s = service_state(&v);
        if service.is_none_or(|want| want == s.name) {
            services.push(s);
        }
    }
    if let Some(want) = service
        && services.is_empty()
    {
        return Err(CtlError::NotFound(format!(
            "service {want}: no status file under {} (unknown service, or the controller has not seen it yet)",
            svc_dir.display()
        )));
    }
    Ok(StatusReport {
        status_dir,
        api_server: None,
        controller,
        services,
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One service's row from a `YusurService` document (a status file, or an object from the
/// API as JSON): `metadata` and `.status`.
pub(crate) fn service_state(doc: &Value) -> ServiceState {
    let meta = &doc["metadata"];
    let st = &doc["status"];
    let name = format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("?")
    );
    let ready = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let ready_status = ready.and_then(|c| c["status"].as_str()).map(str::to_owned);
    let not_true = ready_status.as_deref() != Some("True");
    let text = |k: &str| {
        ready
            .and_then(|c| c[k].as_str())
            .filter(|s| not_true && !s.is_empty())
            .map(str::to_owned)
    };
    ServiceState {
        name,
        vpc: st["vpc"].as_str().map(str::to_owned),
        cluster_ips: strings(&st["clusterIPs"]),
        eip: st["eip"].as_str().map(str::to_owned),
        backends_ready: st["backends"]["ready"].as_u64().unwrap_or(0),
        backends_total: st["backends"]["total"].as_u64().unwrap_or(0),
        ready: ready_status,
        reason: text("reason"),
        message: text("message"),
        scenarios: st["scenarios"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["scenario"].as_str().unwrap_or("?").to_owned(),
                            s["state"].as_str().unwrap_or("?").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The report as a table.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    match (&r.api_server, &r.controller) {
        (Some(server), _) => {
            let _ = writeln!(out, "API server {server}: {} service(s)", r.services.len());
        }
        (None, Some(c)) => {
            let _ = writeln!(
                out,
                "controller: {}, {} object(s), {} with problems (status dir {})",
                if c.synced { "synced" } else { "NOT synced yet" },
                c.objects,
                c.problems,
                r.status_dir.display()
            );
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "controller: no controller.yaml in {} (never started on this directory?)",
                r.status_dir.display()
            );
        }
    }
    let rows: Vec<[String; 7]> = r
        .services
        .iter()
        .map(|s| {
            let scen = if s.scenarios.is_empty() {
                "-".to_string()
            } else {
                s.scenarios
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut ready = s.ready.clone().unwrap_or_else(|| "?".into());
            if let Some(reason) = &s.reason {
                ready = format!("{ready} ({reason})");
            }
            [
                s.name.clone(),
                s.vpc.clone().unwrap_or_else(|| "-".into()),
                if s.cluster_ips.is_empty() {
                    "-".into()
                } else {
                    s.cluster_ips.join(",")
                },
                s.eip.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", s.backends_ready, s.backends_total),
                ready,
                scen,
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "VPC",
        "CLUSTER-IPS",
        "EIP",
        "BACKENDS",
        "READY",
        "SCENARIOS",
    ];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header));
    for (row, s) in rows.iter().zip(&r.services) {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
        if let Some(m) = &s.message {
            let _ = writeln!(out, "    {}: {m}", s.name);
        }
    }
    if r.services.is_empty() {
        let _ = writeln!(out, "(no services)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web, namespace: shop}
status:
  backends: {ready: 2, total: 3}
  clusterIPs: [10.96.0.100]
  eip: 200.0.0.100
  vpc: tenant-a
  conditions:
  - {type: Ready, status: 'True', reason: Programmed, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}
";
    const BAD: &str = "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: bad, namespace: shop}
status:
  backends: {ready: 0, total: 0}
  conditions:
  - {type: Ready, status: 'False', reason: InvalidSpec, message: 'spec.clusterIPs[0]: 10.96.0.100 is already used', lastTransitionTime: '2026-01-01T00:00:00Z'}
";

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = d.path().join(".status").join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        d
    }

    #[test]
    fn a_manifest_directory_shows_every_service_with_backends_and_readiness() {
        let d = dir_with(&[
            ("controller.yaml", "synced: true\nobjects: 5\nproblems: 1\n"),
            ("YusurService/shop/web.yaml", WEB),
            ("YusurService/shop/bad.yaml", BAD),
        ]);
        let r = read(d.path(), None).unwrap();
        assert_eq!(r.services.len(), 2);
        assert!(!r.all_ready());
        let text = render(&r);
        assert!(
            text.contains("controller: synced, 5 object(s), 1 with problems"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("shop/web ")
                && l.contains("tenant-a")
                && l.contains("10.96.0.100")
                && l.contains("200.0.0.100")
                && l.contains("2/3")
                && l.contains("True")),
            "{text}"
        );
        assert!(text.contains("False (InvalidSpec)"), "{text}");
        assert!(
            text.contains("shop/bad: spec.clusterIPs[0]: 10.96.0.100 is already used"),
            "{text}"
        );
    }

    #[test]
    fn one_service_is_selected_by_name_and_an_unknown_one_is_an_error() {
        let d = dir_with(&[
            ("controller.yaml", "synced: true\nobjects: 1\nproblems: 0\n"),
            ("YusurService/shop/web.yaml", WEB),
        ]);
        let r = read(&d.path().join(".status"), Some("shop/web")).unwrap();
        assert_eq!(r.services.len(), 1);
        assert!(r.all_ready());
        let err = read(d.path(), Some("shop/nope")).unwrap_err().to_string();
        assert!(
            err.contains("shop/nope") && err.contains("no status file"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let err = read(Path::new("/nonexistent/ycloud"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ycloud"), "{err}");
    }
}
