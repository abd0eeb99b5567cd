//! The cluster-mode status sink: what the manifest mode writes to files goes to the API
//! server instead: the status subresource by server-side apply (one field manager, no
//! request when nothing changed), pods' network annotation, nodes' management ports, our
//! finalizer, and Events on condition transitions.
//!
//! Every write first asks the [`WriteGate`]: a replica that is not (or no longer) the
//! leader writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ycloud_crds::condition::{Condition, ConditionStatus};

use crate::kube::probes::ProbeApiError;
use crate::kube::source::KubeSource;
use crate::kube_status::{
    FIELD_MANAGER, KubeStatusError, MANAGEMENT_PORTS_ANNOTATION, api_resource, apply_node_network,
    apply_pod_network, apply_status, set_finalizer,
};
use crate::reconcile::WriteGate;
use crate::resolve::{NETWORK_ANNOTATION, ObjectStatus, PodNetwork};
use crate::status::{Programming, merge_conditions};
use crate::store::ObjectRef;

/// Why a write to the API server was not made.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("not the leader: {what} of {object} not written")]
    NotLeader { what: &'static str, object: String },
    #[error(transparent)]
    Write(#[from] KubeStatusError),
    #[error(transparent)]
    Probe(#[from] ProbeApiError),
}

/// `Ready`'s (status, reason, message).
type ReadyState = (ConditionStatus, String, String);

fn ready_of(conditions: &[Condition]) -> Option<ReadyState> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

/// The event a change of `Ready` deserves, if any: a first sight that is not ready, or any
/// change of status or reason. A first sight that is ready is quiet (a restart would
/// otherwise announce every object again).
pub fn transition_event(previous: Option<&ReadyState>, now: &ReadyState) -> Option<Event> {
    let changed = match previous {
        None => now.0 != ConditionStatus::True,
        Some(p) => (&p.0, &p.1) != (&now.0, &now.1),
    };
    if !changed {
        return None;
    }
    let note: String = now.2.chars().take(1000).collect();
    Some(Event {
        type_: if now.0 == ConditionStatus::True {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: now.1.clone(),
        note: (!note.is_empty()).then_some(note),
        action: "Reconcile".into(),
        secondary: None,
    })
}

fn reference(o: &ObjectRef, obj: &DynamicObject) -> ObjectReference {
    let api_version = match api_resource(&o.kind) {
        Some(ar) => ar.api_version,
        None => "v1".to_owned(),
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(o.kind.clone()),
        name: Some(o.name.clone()),
        namespace: o.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        // No resourceVersion: the recorder keys its series on the reference, and a repeat
        // of the same event for the same object should count up, not be a new event.
        ..Default::default()
    }
}

/// The reference of NetworkProbe `namespace/name`.
fn probe_ref(key: &str) -> ObjectRef {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    ObjectRef::new("NetworkProbe", Some(ns), name)
}

/// Writes status, annotations, finalizers and events to the API server.
pub struct ApiSink {
    client: Client,
    recorder: Recorder,
    gate: WriteGate,
    /// `Ready` last computed for objects with no status of ours (pods, nodes).
    last: BTreeMap<ObjectRef, ReadyState>,
    /// Requests made, events published, events that failed (for tests and metrics).
    pub requests: u64,
    pub events: u64,
    pub event_errors: u64,
}

impl std::fmt::Debug for ApiSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSink")
            .field("requests", &self.requests)
            .field("events", &self.events)
            .finish()
    }
}

impl ApiSink {
    /// `instance`: this replica (the pod name), shown as the events' reporting instance.
    pub fn new(client: Client, instance: Option<String>, gate: WriteGate) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        ApiSink {
            client,
            recorder,
            gate,
            last: BTreeMap::new(),
            requests: 0,
            events: 0,
            event_errors: 0,
        }
    }

    fn may_write(&self, what: &'static str, o: &ObjectRef) -> Result<(), SinkError> {
        if self.gate.is_open() {
            Ok(())
        } else {
            Err(SinkError::NotLeader {
                what,
                object: o.to_string(),
            })
        }
    }

    fn count(&mut self, sent: bool) -> bool {
        self.requests += u64::from(sent);
        sent
    }

    /// An object's status (kinds with a status subresource of ours) and the event of its
    /// `Ready` transition (every kind). Returns whether the status was written.
    pub async fn status(
        &mut self,
        o: &ObjectRef,
        st: &ObjectStatus,
        programming: &Programming,
        generation: Option<i64>,
        current: Option<&DynamicObject>,
    ) -> Result<bool, SinkError> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let has_status = api_resource(&o.kind).is_some();
        let current_status = current.and_then(|c| c.data.get("status"));
        let previous: Option<ReadyState> = if has_status {
            current_status
                .and_then(|s| s.get("conditions"))
                .and_then(|c| serde_json::from_value::<Vec<Condition>>(c.clone()).ok())
                .and_then(|c| ready_of(&c))
        } else {
            self.last.get(o).cloned()
        };
        let merged = merge_conditions(Vec::new(), st, programming, generation, now);
        let ready = ready_of(&merged);
        let mut wrote = false;
        if has_status {
            self.may_write("status", o)?;
            wrote =
                apply_status(&self.client, o, current_status, st, programming, generation).await?;
            self.count(wrote);
        }
        if let Some(ready) = ready {
            if let (Some(ev), Some(obj)) = (transition_event(previous.as_ref(), &ready), current)
                && self.gate.is_open()
            {
                match self.recorder.publish(&ev, &reference(o, obj)).await {
                    Ok(()) => self.events += 1,
                    // Events are best effort: the status says it too.
                    Err(e) => {
                        self.event_errors += 1;
                        tracing::warn!(object = %o, error = %e, "event not published");
                    }
                }
            }
            if !has_status {
                self.last.insert(o.clone(), ready);
            }
        }
        Ok(wrote)
    }

    /// A pod's `ycloud.io/network` annotation. Returns whether a request was made.
    pub async fn pod_network(
        &mut self,
        pod: &ObjectRef,
        net: &PodNetwork,
        current: Option<&DynamicObject>,
    ) -> Result<bool, SinkError> {
        let annotation = current
            .and_then(|p| p.metadata.annotations.as_ref())
            .and_then(|a| a.get(NETWORK_ANNOTATION))
            .map(String::as_str);
        let ns = pod.namespace.as_deref().unwrap_or_default();
        self.may_write("network annotation", pod)?;
        let sent = apply_pod_network(&self.client, ns, &pod.name, annotation, net).await?;
        Ok(self.count(sent))
    }

    /// A node's management-ports annotation. Returns whether a request was made.
    pub async fn node_network(
        &mut self,
        node: &ObjectRef,
        doc: &serde_json::Value,
        current: Option<&DynamicObject>,
    ) -> Result<bool, SinkError> {
        let annotation = current
            .and_then(|p| p.metadata.annotations.as_ref())
            .and_then(|a| a.get(MANAGEMENT_PORTS_ANNOTATION))
            .map(String::as_str);
        self.may_write("management-ports annotation", node)?;
        let sent = apply_node_network(&self.client, &node.name, annotation, doc).await?;
        Ok(self.count(sent))
    }

    /// Makes the API server hold exactly `desired` among the NetworkProbes we manage
    /// ([`crate::kube::probes`]): applies new and changed ones, deletes ours nobody wants,
    /// sends nothing for the rest. Returns the requests made and the failures, by probe
    /// (one failure does not stop the others).
    pub async fn probes(
        &mut self,
        desired: &BTreeMap<String, ycloud_crds::NetworkProbe>,
        src: &KubeSource,
    ) -> (usize, Vec<(String, SinkError)>) {
        let current = src.objects_of("NetworkProbe");
        let plan = crate::kube::probes::plan(desired, &current, |ns, svc| {
            src.object(&ObjectRef::new("YusurService", Some(ns), svc))?
                .metadata
                .uid
                .clone()
        });
        let mut errors: Vec<(String, SinkError)> = plan
            .problems
            .into_iter()
            .map(|e| {
                let key = match &e {
                    ProbeApiError::NoOwner { probe, .. }
                    | ProbeApiError::Apply { probe, .. }
                    | ProbeApiError::Status { probe, .. }
                    | ProbeApiError::Delete { probe, .. } => probe.clone(),
                };
                (key, e.into())
            })
            .collect();
        let mut sent = 0;
        for (key, doc) in &plan.apply {
            let o = probe_ref(key);
            let res = match self.may_write("NetworkProbe", &o) {
                Ok(()) => crate::kube::probes::apply(&self.client, key, doc)
                    .await
                    .map_err(SinkError::from),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => sent += usize::from(self.count(true)),
                Err(e) => errors.push((key.clone(), e)),
            }
        }
        for key in &plan.delete {
            let o = probe_ref(key);
            let res = match self.may_write("NetworkProbe deletion", &o) {
                Ok(()) => crate::kube::probes::delete(&self.client, key)
                    .await
                    .map_err(SinkError::from),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => sent += usize::from(self.count(true)),
                Err(e) => errors.push((key.clone(), e)),
            }
        }
        (sent, errors)
    }

    /// Writes the statuses of the probes this controller runs itself (no node hosts their
    /// backends) that changed since they were last written; marks each written one.
    pub async fn local_probe_statuses(
        &mut self,
        local: &mut crate::probes::LocalVerdicts,
    ) -> (usize, Vec<(String, SinkError)>) {
        let mut sent = 0;
        let mut errors = Vec::new();
        for (key, status) in local.unpublished() {
            let o = probe_ref(&key);
            let res = match self.may_write("NetworkProbe status", &o) {
                Ok(()) => crate::kube::probes::apply_status(&self.client, &key, &status)
                    .await
                    .map_err(SinkError::from),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {
                    sent += usize::from(self.count(true));
                    local.published(&key, status);
                }
                Err(e) => errors.push((key, e)),
            }
        }
        (sent, errors)
    }

    /// Adds (`present`) or removes our finalizer. Returns whether a request was made.
    pub async fn finalizer(
        &mut self,
        o: &ObjectRef,
        current: &DynamicObject,
        present: bool,
    ) -> Result<bool, SinkError> {
        self.may_write("finalizer", o)?;
        let sent = set_finalizer(
            &self.client,
            o,
            current.metadata.finalizers.as_deref(),
            present,
        )
        .await?;
        Ok(self.count(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: ConditionStatus, reason: &str) -> ReadyState {
        (s, reason.to_owned(), format!("{reason} message"))
    }

    #[test]
    fn events_are_for_transitions_and_first_failures_only() {
        let ok = st(ConditionStatus::True, "Programmed");
        let bad = st(ConditionStatus::False, "InvalidSpec");
        let nb = st(ConditionStatus::False, "NorthboundError");
        assert!(transition_event(None, &ok).is_none(), "a quiet start");
        let e = transition_event(None, &bad).expect("first failure");
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.reason, "InvalidSpec");
        assert_eq!(e.note.as_deref(), Some("InvalidSpec message"));
        assert!(transition_event(Some(&bad), &bad).is_none(), "no repeat");
        assert_eq!(
            transition_event(Some(&bad), &nb)
                .expect("new reason")
                .reason,
            "NorthboundError"
        );
        assert_eq!(
            transition_event(Some(&nb), &ok).expect("recovery").type_,
            EventType::Normal
        );
    }
}
