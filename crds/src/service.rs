//! `YusurService`: a load-balanced service in a VPC, reachable by ClusterIP, EIP and across
//! VPCs, with backends of any kind.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::condition::{BackendCounts, Condition};
use crate::net;

/// A service: ports and VIPs in a VPC, the scenarios it is reachable in, backends by selectors
/// over Pods, VMs, bare-metal servers and VNicIPs, load balancing, affinity and health checks.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "YusurService",
    plural = "yusurservices",
    namespaced,
    status = "YusurServiceStatus",
    shortname = "ysvc",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A load-balanced service in a VPC: ClusterIP, EIP and cross-VPC access to Pods, VMs, bare-metal servers and VNicIPs.",
    printcolumn(name = "VPC", type_ = "string", json_path = ".status.vpc"),
    printcolumn(name = "Scenarios", type_ = "string", json_path = ".spec.scenarios"),
    printcolumn(
        name = "Cluster-IPs",
        type_ = "string",
        json_path = ".status.clusterIPs"
    ),
    printcolumn(name = "EIP", type_ = "string", json_path = ".status.eip"),
    printcolumn(name = "Ports", type_ = "string", json_path = ".spec.ports[*].port"),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.backends.ready"
    ),
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.backends.total"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Programmed")].status"#,
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.eip) || 'EIP' in self.scenarios",
     "message": "eip is only allowed with the EIP scenario", "fieldPath": ".eip"},
    {"rule": "!('EIP' in self.scenarios) || has(self.eip)",
     "message": "the EIP scenario needs eip (at least eip.gateway)", "fieldPath": ".eip"},
    {"rule": "!has(self.crossVpc) || 'CrossVPC' in self.scenarios",
     "message": "crossVpc is only allowed with the CrossVPC scenario", "fieldPath": ".crossVpc"},
    {"rule": "!('CrossVPC' in self.scenarios) || has(self.crossVpc)",
     "message": "the CrossVPC scenario needs crossVpc.clients", "fieldPath": ".crossVpc"},
    {"rule": "!has(self.ipFamilies) || !has(self.clusterIPs) || self.clusterIPs.all(a, !isIP(a) || (ip(a).family() == 4 ? 'IPv4' : 'IPv6') in self.ipFamilies)",
     "message": "every clusterIP must be of a family listed in ipFamilies", "fieldPath": ".clusterIPs"},
    {"rule": "has(self.vpc) == has(oldSelf.vpc) && (!has(self.vpc) || self.vpc == oldSelf.vpc)",
     "message": "vpc is immutable: delete and recreate the service to move it", "fieldPath": ".vpc"}
]))]
pub struct YusurServiceSpec {
    /// The VPC the service lives in; default: the VPC of the service's namespace. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::name_schema")]
    pub vpc: Option<String>,

    /// How the service is reached: `ClusterIP` (from the VPC, and from nodes when the VPC has
    /// a `joinCIDR`), `EIP` (from outside, through an EipGateway), `CrossVPC` (from the
    /// `crossVpc.clients` VPCs, through the service gateway).
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub scenarios: Vec<Scenario>,

    /// IP families to serve; default: every family of the VPC's `serviceCIDRs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ip_families: Option<Vec<IpFamily>>,

    /// Fixed ClusterIPs (at most one per family) inside the VPC's `serviceCIDRs`; families
    /// without one get an address allocated.
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "net::dual_stack_ips_schema")]
    pub cluster_ips: Vec<IpAddr>,

    /// The EIP: the gateway it comes from and, optionally, a fixed address in its pool.
    /// Only with the `EIP` scenario, which requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<EipRequest>,

    /// Cross-VPC access. Only with the `CrossVPC` scenario, which requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_vpc: Option<CrossVpc>,

    /// Ports served on every VIP.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(p, self.exists_one(q, q.name == p.name))", "message": "port names must be unique"},
        {"rule": "self.all(p, self.exists_one(q, q.port == p.port && q.protocol == p.protocol))",
         "message": "each (port, protocol) pair must be unique"}
    ]))]
    pub ports: Vec<ServicePort>,

    /// Backends chosen by label selectors, per kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backends: Vec<BackendSelector>,

    /// Backends given by address (in the service's VPC, or another VPC for cross-VPC
    /// services); they need numeric target ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub static_backends: Vec<StaticBackend>,

    /// Client affinity, per service; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,

    /// How a backend is chosen; absent: the controller's default for its mode (OVN's
    /// `dp_hash` in veth mode, `[ip_src, ip_dst, tp_src, tp_dst]` in offload mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancing>,

    /// Health check run against every backend (one `NetworkProbe` each); absent: every
    /// selected backend is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// How a service is reached.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Scenario {
    /// From inside the VPC (and from nodes, if the VPC has a `joinCIDR`).
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// From outside, at an EIP routed by an EipGateway.
    #[serde(rename = "EIP")]
    Eip,
    /// From other VPCs, through the service gateway.
    #[serde(rename = "CrossVPC")]
    CrossVpc,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClusterIp => "ClusterIP",
            Self::Eip => "EIP",
            Self::CrossVpc => "CrossVPC",
        })
    }
}

/// An IP family.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::IPv4 } else { Self::IPv6 }
    }
}

/// Which EIP a service gets.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EipRequest {
    /// Name of the EipGateway.
    #[schemars(schema_with = "crate::name_schema")]
    pub gateway: String,
    /// A fixed EIP inside the gateway's pool; absent: allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "net::ip_schema")]
    pub address: Option<IpAddr>,
}

/// Who may reach a service across VPCs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CrossVpc {
    /// VPCs whose workloads may reach the service through the service gateway.
    #[schemars(schema_with = "clients_schema")]
    pub clients: Vec<String>,
}

fn clients_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = crate::name_list_schema(generator);
    schema.insert("minItems".into(), 1.into());
    schema
}

/// One port of a service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Unique name of the port (a DNS label), used by probes, status and events.
    #[schemars(schema_with = "crate::dns_label_schema")]
    pub name: String,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The port on the VIPs.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The backends' port: a number, or the name of a container port (Pod backends only);
    /// default: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "target_port_schema")]
    pub target_port: Option<IntOrString>,
}

// Written without `type(self)` so that every CEL implementation we test with evaluates it:
// `string()` of an int is its digits.
fn target_port_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "string(self).matches('^[0-9]+$') ? (int(string(self)) >= 1 && int(string(self)) <= 65535) : (size(string(self)) <= 15 && string(self).matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",
            "message": "must be a port number 1..65535 or a port name (a DNS label of at most 15 characters)"
        }]
    })
}

/// A transport protocol of a service port.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// Backends of one kind chosen by labels.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendSelector {
    /// What the selector selects: `Pod`s, KubeVirt `VM`s, `BM` (VNicIPs of kind
    /// BareMetal) or any `VNicIP`.
    #[serde(rename = "type")]
    pub kind: BackendType,
    /// Labels the backends must carry; `{}` selects every object of the kind.
    pub selector: LabelSelector,
    /// Namespaces to look in; absent: the service's namespace only. Backends in namespaces of
    /// another VPC need the CrossVPC scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Kinds of backends.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendType {
    /// Pods.
    Pod,
    /// KubeVirt VirtualMachineInstances (used if KubeVirt is installed).
    VM,
    /// VNicIPs of kind BareMetal.
    BM,
    /// VNicIPs of any kind.
    VNicIP,
}

/// A backend given by address.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticBackend {
    /// The backend's address; it must lie in a subnet of `vpc`.
    #[schemars(schema_with = "net::ip_schema")]
    pub address: IpAddr,
    /// The VPC the address is in; default: the service's VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::name_schema")]
    pub vpc: Option<String>,
    /// The node that probes this backend; absent: the controller does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
}

/// Client affinity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'ClientIP' || !has(self.timeoutSeconds)",
     "message": "timeoutSeconds is only allowed with type ClientIP", "fieldPath": ".timeoutSeconds"}
]))]
pub struct SessionAffinity {
    /// `None`, or `ClientIP`: a client keeps its backend while it keeps talking.
    #[serde(rename = "type")]
    pub kind: AffinityType,
    /// How long a ClientIP affinity lasts after the last packet (OVN `affinity_timeout`);
    /// default 10800 with `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u32>,
}

impl SessionAffinity {
    /// The affinity timeout OVN gets, if any.
    pub fn effective_timeout(&self) -> Option<u32> {
        match self.kind {
            AffinityType::None => None,
            AffinityType::ClientIP => Some(self.timeout_seconds.unwrap_or(10800)),
        }
    }
}

/// Kinds of client affinity.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AffinityType {
    None,
    ClientIP,
}

/// Backend selection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancing {
    /// Packet fields hashed to pick a backend (OVN `selection_fields`). Any set makes OVS pick
    /// the backend at upcall time, so datapath flows carry no `hash`+`recirc` and can be
    /// offloaded; fewer fields mean fewer megaflows (`ip_src`: one per client).
    #[schemars(length(min = 1, max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hash_fields: Vec<HashField>,
}

/// Fields OVN can hash on to choose a backend (`Load_Balancer.selection_fields`).
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum HashField {
    EthSrc,
    EthDst,
    IpSrc,
    IpDst,
    TpSrc,
    TpDst,
}

impl HashField {
    /// The name OVN uses.
    pub fn as_ovn(&self) -> &'static str {
        match self {
            Self::EthSrc => "eth_src",
            Self::EthDst => "eth_dst",
            Self::IpSrc => "ip_src",
            Self::IpDst => "ip_dst",
            Self::TpSrc => "tp_src",
            Self::TpDst => "tp_dst",
        }
    }
}

/// A health check, run against every backend of a service (and the spec of a NetworkProbe).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.intervalMillis > self.timeoutMillis",
     "message": "intervalMillis must be greater than timeoutMillis", "fieldPath": ".intervalMillis"},
    {"rule": "self.type == 'HTTP' || self.type == 'HTTPS' || (!has(self.path) && !has(self.host) && !has(self.expectedStatus))",
     "message": "path, host and expectedStatus are only allowed with type HTTP or HTTPS"},
    {"rule": "self.type != 'ICMP' || !has(self.port)",
     "message": "port is not allowed with type ICMP", "fieldPath": ".port"},
    {"rule": "!self.native || self.type == 'TCP' || self.type == 'UDP'",
     "message": "native (OVN) health checks exist only for TCP and UDP", "fieldPath": ".native"},
    {"rule": "!self.native || (self.intervalMillis % 1000 == 0 && self.timeoutMillis % 1000 == 0)",
     "message": "native (OVN) health checks count in whole seconds: intervalMillis and timeoutMillis must be multiples of 1000",
     "fieldPath": ".native"}
]))]
pub struct HealthCheck {
    /// `TCP` (connect), `UDP` (send, no ICMP error back), `HTTP`, `HTTPS` (no certificate
    /// check) or `ICMP` (echo).
    #[serde(rename = "type")]
    pub kind: ProbeType,
    /// Port to probe; default: each backend's target port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// HTTP(S) path; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// HTTP(S) `Host` header; default: the backend address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// HTTP(S) statuses counted as success; default 200..399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<StatusRange>,
    /// Time between probes.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 100, max = 300000))]
    pub interval_millis: u32,
    /// Time a probe may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 10, max = 60000))]
    pub timeout_millis: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive successes that make an unhealthy backend healthy.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
    /// Use OVN's own health checks (`Load_Balancer_Health_Check`, TCP and UDP only) instead of
    /// node agents.
    #[serde(default)]
    pub native: bool,
}

fn default_interval() -> u32 {
    5000
}
fn default_timeout() -> u32 {
    1000
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    1
}

/// Kinds of health probes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeType {
    TCP,
    UDP,
    HTTP,
    HTTPS,
    ICMP,
}

/// An inclusive range of HTTP statuses.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.min <= self.max", "message": "min must not be greater than max"}
]))]
pub struct StatusRange {
    /// Lowest status counted as success.
    #[schemars(range(min = 100, max = 599))]
    pub min: u16,
    /// Highest status counted as success.
    #[schemars(range(min = 100, max = 599))]
    pub max: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        Self { min: 200, max: 399 }
    }
}

/// What the controller last did with a `YusurService`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct YusurServiceStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Programmed`, `BackendsHealthy`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The VPC the service was placed in (`spec.vpc` or the namespace's VPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// The ClusterIPs in use (fixed or allocated).
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "net::ip_list_schema")]
    pub cluster_ips: Vec<IpAddr>,
    /// The EIP in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "net::ip_schema")]
    pub eip: Option<IpAddr>,
    /// Ready and total backends.
    #[serde(default)]
    pub backends: BackendCounts,
    /// Programming state per scenario.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["scenario"]))]
    pub scenarios: Vec<ScenarioStatus>,
}

/// Programming state of one scenario of a service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioStatus {
    /// The scenario.
    pub scenario: Scenario,
    /// `Pending`, `Programmed` or `Failed`.
    pub state: ProgrammingState,
    /// Why the scenario is not programmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether a scenario's OVN rows are in place.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgrammingState {
    Pending,
    Programmed,
    Failed,
}
