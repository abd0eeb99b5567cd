//! `NetworkProbe`: one health probe of one backend of one service, with live status.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::net;
use crate::service::HealthCheck;

/// One health probe of one backend of one service. The controller creates one per backend of
/// a service with a `healthCheck` (owned by the service); the agent on `backend.node` runs it
/// and writes the status; the controller keeps only healthy backends in the load balancer.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "NetworkProbe",
    plural = "networkprobes",
    namespaced,
    status = "NetworkProbeStatus",
    shortname = "nprobe",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "One health probe of one backend of a YusurService, with live status.",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".spec.backend.address"
    ),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.backend.kind"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.backend.node"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.probe.type"),
    printcolumn(name = "Healthy", type_ = "boolean", json_path = ".status.healthy"),
    printcolumn(
        name = "Latency-ms",
        type_ = "integer",
        json_path = ".status.latencyMillis"
    ),
    printcolumn(
        name = "Last-Error",
        type_ = "string",
        json_path = ".status.lastError",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProbeSpec {
    /// Name of the YusurService (same namespace) the backend belongs to. Immutable.
    #[schemars(schema_with = "crate::immutable_name_schema")]
    pub service: String,
    /// The backend probed. Immutable: a different backend is a different probe.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "is immutable"}
    ]))]
    pub backend: ProbeBackend,
    /// What to probe and how often (the service's `healthCheck`).
    pub probe: HealthCheck,
}

/// The backend a probe checks.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeBackend {
    /// What the backend is.
    pub kind: ProbeBackendKind,
    /// The backend object (`namespace/name` of the Pod, VM or VNicIP); absent for `Static`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub name: Option<String>,
    /// The address probed.
    #[schemars(schema_with = "net::ip_schema")]
    pub address: IpAddr,
    /// The node whose agent runs the probe; absent: the controller runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
    /// The port probed (the health check's port, else the backend's target port); absent
    /// for ICMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Kinds of probed backends.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeBackendKind {
    Pod,
    VM,
    BM,
    VNicIP,
    /// One of the service's `staticBackends`.
    Static,
}

/// The live result of a probe, written by the agent that runs it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProbeStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the probe runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Whether the backend is healthy; absent until the thresholds decide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Successes in a row (reset by a failure).
    #[serde(default)]
    pub consecutive_successes: u32,
    /// Failures in a row (reset by a success).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the last probe finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// When `healthy` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Duration of the last successful probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_millis: Option<u32>,
    /// Why the last probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
}
