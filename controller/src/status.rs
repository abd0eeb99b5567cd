//! Status in manifest mode: one YAML file per object under the status directory,
//! `<dir>/<Kind>/<namespace>/<name>.yaml` (or `<dir>/<Kind>/<name>.yaml` when cluster
//! scoped), shaped like the object with only `status` filled, and the pods' network
//! annotations for the CNI as `<dir>/pods/<namespace>/<name>.json`.
//!
//! A file is rewritten only when its content changes, and conditions keep their
//! `lastTransitionTime` while their status holds (read back from the file after a
//! restart), so a steady state writes nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use ycloud_crds::condition::{Condition, ConditionStatus, reasons, set_condition};

use crate::resolve::{ObjectStatus, PodNetwork};
use crate::store::ObjectRef;

/// Why a status file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("status file {path}")]
pub struct StatusError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `BackendsHealthy=False` reason of a service with a health check whose backends all
/// failed it (there are some, none is healthy): its VIPs reject.
pub const ALL_BACKENDS_UNHEALTHY: &str = "AllBackendsUnhealthy";

/// How the owner's transaction went for an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Programming {
    /// In NB as desired.
    Done,
    /// Not attempted (the object has a problem, or its owner is kept as it was).
    NotAttempted,
    /// The transaction failed: the message says why.
    Failed(String),
}

/// Writes status files.
#[derive(Debug)]
pub struct StatusWriter {
    dir: PathBuf,
    /// Files written (or found unchanged) in the current pass.
    seen: BTreeSet<PathBuf>,
    /// A fingerprint of what each file was last rendered from: the same inputs skip the
    /// rendering, the read-back and the comparison (most objects don't change between
    /// passes). A hash, not a copy: a copy of every status was ~19 MB at 10,000 services.
    last: BTreeMap<PathBuf, u64>,
    last_net: BTreeMap<PathBuf, PodNetwork>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The conditions of an object after a pass, merged into what it had: `Ready`,
/// `Programmed` (objects with an NB owner) and `BackendsHealthy` (services). A condition
/// whose state holds keeps its `lastTransitionTime`; one this pass does not compute (e.g.
/// `BackendsHealthy` of a service that turned invalid) is dropped rather than left stale.
/// Pure: the clock is passed in. Shared by the status files and the Kubernetes status.
pub fn merge_conditions(
    mut conditions: Vec<Condition>,
    st: &ObjectStatus,
    programming: &Programming,
    generation: Option<i64>,
    t: Time,
) -> Vec<Condition> {
    let (ready, programmed) = match (&st.problem, programming) {
        (Some(p), _) => (
            Condition::ready(false, p.reason, p.message.clone(), generation, t.clone()),
            Condition::programmed(false, p.reason, p.message.clone(), generation, t.clone()),
        ),
        (None, Programming::Failed(m)) => (
            Condition::ready(
                false,
                reasons::NORTHBOUND_ERROR,
                m.clone(),
                generation,
                t.clone(),
            ),
            Condition::programmed(
                false,
                reasons::NORTHBOUND_ERROR,
                m.clone(),
                generation,
                t.clone(),
            ),
        ),
        (None, Programming::NotAttempted) => (
            Condition::ready(
                false,
                reasons::PENDING,
                "waiting to be programmed",
                generation,
                t.clone(),
            ),
            Condition::programmed(
                false,
                reasons::PENDING,
                "waiting to be programmed",
                generation,
                t.clone(),
            ),
        ),
        (None, Programming::Done) => (
            Condition::ready(true, reasons::PROGRAMMED, "", generation, t.clone()),
            Condition::programmed(true, reasons::PROGRAMMED, "", generation, t.clone()),
        ),
    };
    let mut want = vec![ready];
    if st.owner.is_some() {
        want.push(programmed);
    }
    if let Some((counts, has_check)) = st.backends {
        let mut c = Condition::backends_healthy(counts, has_check, generation, t.clone());
        if has_check && counts.ready == 0 && counts.total > 0 {
            // Say what a client sees, not only the count.
            c.reason = ALL_BACKENDS_UNHEALTHY.to_owned();
            c.message = format!(
                "0/{} backends ready: every backend failed its health check; the service's \
                 VIPs reject connections (TCP reset, ICMP port unreachable)",
                counts.total
            );
        }
        want.push(c);
    }
    conditions.retain(|c| want.iter().any(|w| w.type_ == c.type_));
    for c in want {
        set_condition(&mut conditions, c);
    }
    conditions
}

/// An object's status document: `apiVersion`, `kind`, `metadata` (name, namespace) and
/// `status` (the kind's fields, `observedGeneration`, `conditions`). The same shape is a
/// status file and a server-side apply patch of the status subresource.
pub fn status_document(
    o: &ObjectRef,
    st: &ObjectStatus,
    conditions: &[Condition],
    generation: Option<i64>,
) -> serde_json::Value {
    let mut status = st.fields.to_map();
    if let Some(g) = generation {
        status.insert("observedGeneration".into(), g.into());
    }
    status.insert(
        "conditions".into(),
        serde_json::to_value(conditions).unwrap_or_default(),
    );
    let api_version = match o.kind.as_str() {
        "Pod" | "Node" | "Namespace" => "v1",
        _ => "ycloud.io/v1alpha1",
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), o.name.clone().into());
    if let Some(ns) = &o.namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    serde_json::json!({
        "apiVersion": api_version,
        "kind": o.kind,
        "metadata": metadata,
        "status": status,
    })
}

/// What [`StatusWriter::write`] remembers of a file's inputs. A 64-bit SipHash (as the
/// directory source uses for manifest texts): two different inputs of one file giving the
/// same hash, which would leave a stale file until the next change, is a 2^-64 chance.
fn fingerprint(st: &ObjectStatus, programming: &Programming, generation: Option<i64>) -> u64 {
    let mut h = DefaultHasher::new();
    (st, programming, generation).hash(&mut h);
    h.finish()
}

fn write_if_changed(path: &Path, content: &str) -> Result<bool, StatusError> {
    let err = |source| StatusError {
        path: path.to_owned(),
        source,
    };
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(true)
}

impl StatusWriter {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StatusWriter {
            dir: dir.into(),
            seen: BTreeSet::new(),
            last: BTreeMap::new(),
            last_net: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where an object's status goes.
    pub fn path_of(&self, o: &ObjectRef) -> PathBuf {
        let mut p = self.dir.join(&o.kind);
        if let Some(ns) = &o.namespace {
            p = p.join(ns);
        }
        p.join(format!("{}.yaml", o.name))
    }

    /// Where a pod's network annotation goes.
    pub fn pod_network_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir
            .join("pods")
            .join(namespace)
            .join(format!("{name}.json"))
    }

    /// Starts a pass: files not written in it are removed by [`StatusWriter::finish`].
    pub fn begin(&mut self) {
        self.seen.clear();
    }

    /// Writes one object's status. Returns whether the file changed.
    pub fn write(
        &mut self,
        o: &ObjectRef,
        st: &ObjectStatus,
        programming: &Programming,
        generation: Option<i64>,
    ) -> Result<bool, StatusError> {
        let path = self.path_of(o);
        self.seen.insert(path.clone());
        let inputs = fingerprint(st, programming, generation);
        if self.last.get(&path) == Some(&inputs) && path.exists() {
            return Ok(false);
        }
        // The conditions as they were, so transition times survive.
        let previous: Vec<Condition> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.pointer("/status/conditions").cloned())
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let conditions = merge_conditions(previous, st, programming, generation, now());
        let doc = status_document(o, st, &conditions, generation);
        let text = serde_yaml::to_string(&doc).map_err(|e| StatusError {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let changed = write_if_changed(&path, &text)?;
        self.last.insert(path, inputs);
        Ok(changed)
    }

    /// Removes the status file of an object that is gone. Full passes prune every file
    /// they did not write ([`StatusWriter::finish`]); a pass driven by one change writes
    /// and removes only the files of the objects it re-resolved.
    pub fn remove(&mut self, o: &ObjectRef) -> Result<bool, StatusError> {
        let path = self.path_of(o);
        self.last.remove(&path);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StatusError { path, source }),
        }
    }

    /// Writes a pod's network annotation. Returns whether the file changed.
    pub fn write_pod_network(&mut self, key: &str, net: &PodNetwork) -> Result<bool, StatusError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let path = self.pod_network_path(ns, name);
        self.seen.insert(path.clone());
        if self.last_net.get(&path) == Some(net) && path.exists() {
            return Ok(false);
        }
        let text = serde_json::to_string(net).unwrap_or_default();
        let changed = write_if_changed(&path, &text)?;
        self.last_net.insert(path, net.clone());
        Ok(changed)
    }

    /// Writes a node's management-port file for the node daemon,
    /// `<dir>/nodes/<node>.json`. Returns whether the file changed.
    pub fn write_node_network(
        &mut self,
        node: &str,
        doc: &serde_json::Value,
    ) -> Result<bool, StatusError> {
        let path = self.dir.join("nodes").join(format!("{node}.json"));
        self.seen.insert(path.clone());
        let text = serde_json::to_string(doc).unwrap_or_default();
        write_if_changed(&path, &text)
    }

    /// Writes a file of the controller's own (e.g. `controller.yaml`), kept across passes.
    pub fn write_own(&mut self, name: &str, content: &str) -> Result<bool, StatusError> {
        let path = self.dir.join(name);
        self.seen.insert(path.clone());
        write_if_changed(&path, content)
    }

    /// Ends a pass: removes status files of objects that are gone (and empty directories).
    /// `probes/` and `probe-status/` are not this writer's: the probe files are kept by
    /// [`crate::probes::ProbeFiles`], the verdicts by the node daemons.
    pub fn finish(&mut self) -> Result<usize, StatusError> {
        let mut removed = 0;
        let mut stack = vec![self.dir.clone()];
        let mut dirs = Vec::new();
        let not_ours = [
            self.dir.join(crate::probes::PROBES_DIR),
            self.dir.join(crate::probes::STATUS_DIR),
        ];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if not_ours.contains(&p) {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p.clone());
                    dirs.push(p);
                } else if !self.seen.contains(&p)
                    && p.extension().is_some_and(|x| x == "yaml" || x == "json")
                {
                    self.last.remove(&p);
                    self.last_net.remove(&p);
                    std::fs::remove_file(&p).map_err(|source| StatusError {
                        path: p.clone(),
                        source,
                    })?;
                    removed += 1;
                }
            }
        }
        // Deepest first; a directory that still holds files stays.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
        Ok(removed)
    }
}

/// The status of a condition type in a status file, for tests and tools.
pub fn condition_in(
    doc: &serde_json::Value,
    type_: &str,
) -> Option<(ConditionStatus, String, String)> {
    let conds: Vec<Condition> =
        serde_json::from_value(doc.pointer("/status/conditions")?.clone()).ok()?;
    conds
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Reads a status file as JSON.
pub fn read(path: &Path) -> Option<serde_json::Value> {
    serde_yaml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A small summary of every status file by kind, for the controller's own file.
pub fn summary(statuses: &BTreeMap<ObjectRef, ObjectStatus>) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (o, st) in statuses {
        let e = out.entry(o.kind.clone()).or_default();
        e.0 += 1;
        if st.problem.is_some() {
            e.1 += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Problem;

    fn st(problem: Option<Problem>) -> ObjectStatus {
        ObjectStatus {
            problem,
            owner: Some(crate::resolve::Owner::Vpc("a".into())),
            fields: serde_json::json!({"router": "yc-vpc-a"}).into(),
            backends: None,
        }
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten_and_keeps_its_transition_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = StatusWriter::new(dir.path());
        let o = ObjectRef::new("Vpc", None, "a");
        assert!(
            w.write(&o, &st(None), &Programming::Done, None)
                .expect("write")
        );
        let first = std::fs::read_to_string(w.path_of(&o)).expect("read");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(
            !w.write(&o, &st(None), &Programming::Done, None)
                .expect("write"),
            "no rewrite"
        );
        let doc = read(&w.path_of(&o)).expect("yaml");
        assert_eq!(
            condition_in(&doc, "Ready").map(|c| c.0),
            Some(ConditionStatus::True)
        );
        assert_eq!(doc["status"]["router"], "yc-vpc-a");
        assert_eq!(std::fs::read_to_string(w.path_of(&o)).expect("read"), first);
    }

    #[test]
    fn a_problem_is_ready_false_with_its_reason_and_message() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = StatusWriter::new(dir.path());
        let o = ObjectRef::new("YusurService", Some("shop"), "web2");
        let p = Problem {
            reason: reasons::INVALID_SPEC,
            message: "spec.clusterIPs[0]: taken".into(),
        };
        w.write(&o, &st(Some(p)), &Programming::NotAttempted, None)
            .expect("write");
        assert!(w.path_of(&o).ends_with("YusurService/shop/web2.yaml"));
        let doc = read(&w.path_of(&o)).expect("yaml");
        let (s, reason, msg) = condition_in(&doc, "Ready").expect("ready");
        assert_eq!(s, ConditionStatus::False);
        assert_eq!(reason, "InvalidSpec");
        assert_eq!(msg, "spec.clusterIPs[0]: taken");
    }

    #[test]
    fn files_of_objects_not_written_in_a_pass_are_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = StatusWriter::new(dir.path());
        let a = ObjectRef::new("Vpc", None, "a");
        let b = ObjectRef::new("Subnet", None, "b");
        w.begin();
        w.write(&a, &st(None), &Programming::Done, None)
            .expect("write");
        w.write(&b, &st(None), &Programming::Done, None)
            .expect("write");
        w.finish().expect("finish");
        w.begin();
        w.write(&a, &st(None), &Programming::Done, None)
            .expect("write");
        assert_eq!(w.finish().expect("finish"), 1);
        assert!(w.path_of(&a).exists());
        assert!(!w.path_of(&b).exists());
        assert!(
            !dir.path().join("Subnet").exists(),
            "empty kind directory removed"
        );
    }

    #[test]
    fn a_service_whose_backends_all_fail_their_check_says_so_and_that_its_vips_reject() {
        let t = now();
        let mut svc = st(None);
        let counts = |ready, total| ycloud_crds::BackendCounts { ready, total };
        svc.backends = Some((counts(0, 2), true));
        let c = merge_conditions(vec![], &svc, &Programming::Done, None, t.clone());
        let bh = c
            .iter()
            .find(|c| c.type_ == "BackendsHealthy")
            .expect("condition");
        assert_eq!(bh.reason, ALL_BACKENDS_UNHEALTHY);
        assert!(
            bh.message.contains("0/2") && bh.message.contains("reject"),
            "{}",
            bh.message
        );
        // Selecting nothing is not "unhealthy": the generic reason stays.
        svc.backends = Some((counts(0, 0), true));
        let c = merge_conditions(vec![], &svc, &Programming::Done, None, t.clone());
        let bh = c
            .iter()
            .find(|c| c.type_ == "BackendsHealthy")
            .expect("condition");
        assert_eq!(bh.reason, reasons::NO_READY_BACKENDS);
        // One back: partly healthy.
        svc.backends = Some((counts(1, 2), true));
        let c = merge_conditions(vec![], &svc, &Programming::Done, None, t);
        let bh = c
            .iter()
            .find(|c| c.type_ == "BackendsHealthy")
            .expect("condition");
        assert_eq!(bh.reason, reasons::SOME_BACKENDS_UNHEALTHY);
    }

    #[test]
    fn the_probe_directories_are_not_pruned_as_stale_status_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = StatusWriter::new(dir.path());
        let probe = dir.path().join("probes/shop/web-10-0-1-11-80.yaml");
        let verdict = dir.path().join("probe-status/shop/web-10-0-1-11-80.yaml");
        for f in [&probe, &verdict] {
            std::fs::create_dir_all(f.parent().unwrap()).expect("mkdir");
            std::fs::write(f, "x: 1\n").expect("write");
        }
        w.begin();
        assert_eq!(w.finish().expect("finish"), 0);
        assert!(probe.exists() && verdict.exists());
    }
}
