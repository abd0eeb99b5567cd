//! From the objects in the [`Store`] to the compiler's input and the desired rows of every
//! owner (VPC, EIP gateway, service gateway, service), with a status per object.
//!
//! Every object is validated on its own with the semantic validator; one that fails gets a
//! `Ready=False` status and is left out, and never affects the others: its owner is simply
//! not planned (its rows in NB stay as they were), and a Subnet or VNicIP that turns invalid
//! is replaced by its last valid version so the VPC it belongs to keeps its rows.
//!
//! Addresses are decided here: IPAM for ports ([`crate::ipam`]), cluster IPs out of the
//! VPC's service CIDRs, EIPs out of the gateway's pool, transit networks for the gateways.
//! All of it is kept across passes and seeded at start from what NB holds, so an address
//! never moves and is never given twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use ycloud_crds::validate::{self, FieldErrors, selector_matches};
use ycloud_crds::{BackendType, Scenario, Subnet as CrdSubnet, VNicIP, VNicKind, YusurService};
use ycloud_ovsdb::cache::Snapshot as NbSnapshot;
use ycloud_ovsdb::value::Value;

use crate::compiler::alloc;
use crate::compiler::gateways::{
    self, DesiredGateway, EipAttachment, EipGateway as TopoEipGateway, ServiceGatewayAttachment,
    eip_router_name,
};
use crate::compiler::lb::{DesiredLb, service_lbs};
use crate::compiler::names::{self, OwnerKind};
use crate::compiler::network::{self, DesiredVpc, vpc_rows};
use crate::compiler::topology::{
    self, Backend, DatapathMode, HashField, Port, PortOwner, Protocol, Scenarios,
};
use crate::index::{BackendObject, ServiceIndex};
use crate::ipam::{Allocation, Ipam, PoolSpec, Request, hosts_from, parse_mac};
use crate::probes::{ProbeTarget, desired_probe};
use crate::store::{ObjectRef, Store};
use ycloud_crds::ProbeBackendKind;

/// Pod annotation: the address decided by the controller (docs/pod-annotation.md).
pub const NETWORK_ANNOTATION: &str = "ycloud.io/network";
/// Pod annotation: the Subnet to take the address from.
pub const SUBNET_ANNOTATION: &str = "ycloud.io/subnet";
/// Pod annotation: fixed addresses, comma-separated, one per family.
pub const IP_ANNOTATION: &str = "ycloud.io/ip-address";
/// Pod annotation: fixed MAC.
pub const MAC_ANNOTATION: &str = "ycloud.io/mac-address";
/// What Geneve encapsulation takes off the underlay MTU.
pub const GENEVE_OVERHEAD: u32 = 58;

/// Cluster-wide settings the resolution needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: DatapathMode,
    /// Each EIP gateway gets a `/24` of this for its transit network.
    pub eip_transit_pool: IpNet,
    /// Each VPC joined to the service gateway gets a `/29` of this.
    pub svcgw_pool: IpNet,
    /// Chassis → priority for the service gateway; empty: cross-VPC services can't be
    /// programmed (their status says so).
    pub svcgw_chassis: BTreeMap<String, u16>,
    /// The service gateway fails over (`--ovn-sb`): it gets a beacon port whose chassis OVN
    /// elects, and is pinned to [`Config::svcgw_elected`]. Off: pinned to the top chassis.
    pub svcgw_failover: bool,
    /// The chassis SB says holds the beacon (kept up to date by the controller's SB watch).
    pub svcgw_elected: Option<String>,
    /// The underlay MTU; pods get it minus [`GENEVE_OVERHEAD`] unless their Subnet says.
    pub underlay_mtu: u32,
    /// EIP gateways' demoted chassis (`crate::demotions`, only with `--ovn-sb`), applied
    /// to their priorities while their basis holds.
    pub eipgw_demotions: BTreeMap<String, crate::compiler::demotion::Demotion>,
    /// The service gateway's demoted chassis (`crate::demotions`, with `--ovn-sb`), applied
    /// to the beacon's priorities while `--svcgw-chassis` is what it was decided for.
    pub svcgw_demotion: Option<crate::compiler::demotion::Demotion>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: DatapathMode::Default,
            eip_transit_pool: "100.67.0.0/16".parse().expect("literal"),
            svcgw_pool: "100.66.0.0/16".parse().expect("literal"),
            svcgw_chassis: BTreeMap::new(),
            svcgw_failover: false,
            svcgw_elected: None,
            underlay_mtu: 1500,
            eipgw_demotions: BTreeMap::new(),
            svcgw_demotion: None,
        }
    }
}

/// An EIP gateway's chassis priorities as programmed: the spec's, with `demotion` applied.
fn eipgw_chassis(
    gw: &ycloud_crds::EipGateway,
    demotion: Option<&crate::compiler::demotion::Demotion>,
) -> BTreeMap<String, u16> {
    let spec: BTreeMap<String, u16> = gw
        .spec
        .gateway_chassis
        .iter()
        .map(|c| (c.name.clone(), c.priority))
        .collect();
    match demotion {
        Some(d) => crate::compiler::demotion::effective(&spec, &d.demoted),
        None => spec,
    }
}

/// The `ycloud.io/network` annotation (docs/pod-annotation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    pub vpc: String,
    pub subnet: String,
    pub logical_switch: String,
    pub logical_switch_port: String,
    pub mac: String,
    pub ips: Vec<String>,
    pub gateways: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    pub mtu: u32,
}

/// An extra route of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    pub via: String,
}

/// The NB owner an object's rows belong to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Vpc(String),
    EipGateway(String),
    ServiceGateway,
    Service(String),
}

/// Why an object is not (fully) programmed: a condition reason and a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }

    fn invalid(e: &FieldErrors) -> Self {
        Problem::new(ycloud_crds::condition::reasons::INVALID_SPEC, e.to_string())
    }
}

/// What resolution says about one object: its problem if any, the owner whose
/// transaction programs it, and the kind-specific status fields.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct ObjectStatus {
    pub problem: Option<Problem>,
    pub owner: Option<Owner>,
    /// The status fields other than conditions, as the CRD's status type serializes them.
    pub fields: StatusFields,
    /// Ready/total backends and whether a health check is configured (services only).
    pub backends: Option<(ycloud_crds::BackendCounts, bool)>,
}

/// An object's status fields (other than conditions) as compact JSON text. Text, not a
/// `serde_json::Value` tree: a service's three fields took ~2 KB as a tree and ~100 bytes
/// as text, and every object's status is kept between passes (~18 MB at 10,000
/// services). Parsed back only when a status is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusFields(Box<str>);

impl StatusFields {
    /// The fields of a status type (`ycloud_crds::YusurServiceStatus`, ...).
    pub fn of(status: &impl Serialize) -> Self {
        // Serializing these plain structs and maps to a string cannot fail.
        StatusFields(
            serde_json::to_string(status)
                .unwrap_or_else(|_| "{}".to_owned())
                .into(),
        )
    }

    /// The fields as a JSON object (`{}` when there are none).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl Default for StatusFields {
    fn default() -> Self {
        StatusFields("{}".into())
    }
}

impl From<serde_json::Value> for StatusFields {
    fn from(v: serde_json::Value) -> Self {
        StatusFields::of(&v)
    }
}

/// The desired state of one pass.
#[derive(Debug, Default)]
pub struct Resolved {
    /// VPCs to program; a VPC that exists but can't be built is absent here and listed in
    /// `keep`.
    pub vpcs: BTreeMap<String, DesiredVpc>,
    pub eip_gateways: BTreeMap<String, DesiredGateway>,
    /// `None`: no cross-VPC service needs it (its rows go).
    pub service_gateway: Option<DesiredGateway>,
    /// Shared (`Arc`) with [`crate::incremental::Incremental`], which keeps the rows last
    /// applied: one copy in memory instead of two (~25 MB at 10,000 services).
    pub services: BTreeMap<String, Arc<[DesiredLb]>>,
    /// Owners that exist but could not be resolved: their rows stay untouched.
    pub keep: BTreeSet<Owner>,
    pub status: BTreeMap<ObjectRef, ObjectStatus>,
    /// `namespace/name` → the pod's network annotation.
    pub pod_networks: BTreeMap<String, PodNetwork>,
    /// Node name → its management ports, in the form the node daemon reads
    /// (`{"managementPorts": [{vpc, logicalSwitchPort, mac, ips, gateways, serviceCidrs,
    /// mtu}]}`, docs/cni.md).
    pub node_networks: BTreeMap<String, serde_json::Value>,
    /// `namespace/name` → the NetworkProbes the services with a (non-native) health
    /// check want (see [`crate::probes`]).
    pub probes: BTreeMap<String, ycloud_crds::NetworkProbe>,
}

/// From this many services on, a full pass resolves them on several threads
/// ([`crate::par::map_chunks`]).
const PARALLEL_SERVICES: usize = 1_000;

/// What resolving one service needs from the rest of the pass: the addresses of pods and
/// VNicIPs, and where OVN-native checks of a backend address come from.
#[derive(Debug)]
struct ServiceInputs<'a> {
    pod_ips: &'a BTreeMap<String, Vec<IpAddr>>,
    vnic_ips: &'a BTreeMap<String, Vec<IpAddr>>,
    monitor_ports: &'a BTreeMap<IpAddr, topology::MonitorPort>,
    /// The store's pods and VNicIPs by label and its down addresses, when many services
    /// are resolved at once; `None`: each service scans the store.
    selectable: Option<&'a Selectable<'a>>,
}

/// From this many services re-resolved at once on, a change pass indexes the store first
/// ([`Selectable`]); below it, each service scans the store (indexing costs about as much
/// as one scan).
const INDEX_SERVICES: usize = 32;

/// The store indexed for selecting many services' backends: its pods and VNicIPs by
/// (namespace, label key, label value), and the backend addresses whose probes say down.
/// Without it each service scans every pod (and every probe for each backend address): a
/// cold start of S services over P pods did S x P selector checks (1,000 services over
/// 8,000 pods: 8 million). A selector is looked up by its `matchLabels` pair with the
/// fewest objects, and every object found is still checked against the whole selector, so
/// the result is the scan's, in the same (key) order.
#[derive(Debug, Default)]
struct Selectable<'a> {
    /// [`Selectable::label_key`] → the keys of the pods that carry that label.
    pods: HashMap<String, Vec<&'a str>>,
    vnics: HashMap<String, Vec<&'a str>>,
    /// (namespace, service, address) of every probe whose verdict is down.
    down: HashSet<(&'a str, &'a str, IpAddr)>,
}

impl<'a> Selectable<'a> {
    fn build(store: &'a Store) -> Self {
        let mut ix = Selectable::default();
        let file =
            |ix: &mut HashMap<String, Vec<&'a str>>,
             key: &'a str,
             meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                let ns = meta.namespace.as_deref().unwrap_or_default();
                for (k, v) in meta.labels.iter().flatten() {
                    ix.entry(Self::label_key(ns, k, v)).or_default().push(key);
                }
            };
        for (key, pod) in &store.pods {
            file(&mut ix.pods, key, &pod.metadata);
        }
        for (key, v) in &store.vnics {
            file(&mut ix.vnics, key, &v.metadata);
        }
        for p in store.probes.values() {
            if p.status.as_ref().and_then(|s| s.healthy) == Some(false) {
                ix.down.insert((
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.spec.service.as_str(),
                    p.spec.backend.address,
                ));
            }
        }
        ix
    }

    /// The keys (in order) of the objects in `index` that may match a backend selecting
    /// in namespace `ns` with `selector`; `None` when the index can't narrow it (no
    /// `matchLabels`): scan them all.
    fn candidates<'s>(
        index: &'s HashMap<String, Vec<&'a str>>,
        ns: &str,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Option<&'s [&'a str]> {
        let labels = selector.match_labels.as_ref().filter(|m| !m.is_empty())?;
        Some(
            labels
                .iter()
                .map(|(k, v)| {
                    index
                        .get(&Self::label_key(ns, k, v))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|keys| keys.len())
                .unwrap_or_default(),
        )
    }

    /// One label of an object in a namespace, as the index's key (NUL-separated: a
    /// pathological name that collides only adds candidates, which the full check drops).
    fn label_key(ns: &str, key: &str, value: &str) -> String {
        format!("{ns}\0{key}\0{value}")
    }
}

/// The objects of `all` that `keys` names (an index's candidates, in key order), or all
/// of them.
fn objects<'m, T>(
    all: &'m BTreeMap<String, T>,
    keys: Option<&'m [&'m str]>,
) -> Box<dyn Iterator<Item = (&'m String, &'m T)> + 'm> {
    match keys {
        Some(keys) => Box::new(keys.iter().filter_map(|k| all.get_key_value(*k))),
        None => Box::new(all.iter()),
    }
}

/// The state kept between passes: IPAM, service addresses, last valid objects.
#[derive(Debug, Default)]
pub struct Resolver {
    pub config: Config,
    pub ipam: Ipam,
    /// Service key → its cluster IPs, as allocated (or fixed) last time.
    cluster_ips: BTreeMap<String, Vec<IpAddr>>,
    /// Service key → its EIP.
    eips: BTreeMap<String, IpAddr>,
    /// EIP gateway → its transit network.
    transit: BTreeMap<String, IpNet>,
    last_subnets: BTreeMap<String, CrdSubnet>,
    last_vnics: BTreeMap<String, VNicIP>,
    /// Objects whose manifest could not be read this pass (see [`Resolver::resolve_with_broken`]).
    broken: BTreeSet<ObjectRef>,
    seeded: bool,
    /// What the last full pass left for re-resolving single services (`None` before it).
    ctx: Option<ServiceContext>,
}

/// What re-resolving single services between full passes needs from the last full pass
/// (see [`Resolver::resolve_changes`]).
#[derive(Debug, Default)]
struct ServiceContext {
    pod_ips: BTreeMap<String, Vec<IpAddr>>,
    vnic_ips: BTreeMap<String, Vec<IpAddr>>,
    monitor_ports: BTreeMap<IpAddr, topology::MonitorPort>,
    /// The VPCs that are programmed.
    vpcs: BTreeSet<String>,
    /// Per service: what decides its addresses and the gateways' rows; `None`: a change
    /// of it needs a full pass (EIP, CrossVPC, fixed cluster IPs).
    shapes: HashMap<String, Option<String>>,
    /// Per pod: what decides its port and address (not whether it is a backend).
    pod_ports: HashMap<String, String>,
    /// Namespaces some Subnet binds (its pods get a port there).
    bound_namespaces: HashSet<String>,
    /// Pods that have no port or address of ours (see [`portless`]): their coming and
    /// going only changes what selects them.
    portless: HashSet<String>,
    /// Labels of pods and VMIs as last resolved: the services that selected the old
    /// version of a changed one are re-resolved too.
    labels: HashMap<ObjectRef, BTreeMap<String, String>>,
    index: ServiceIndex,
}

/// What of a service decides its addresses and the gateways' rows. `None` for services
/// whose change goes through a full pass: an EIP or CrossVPC service feeds the gateways'
/// rows, and fixed cluster IPs are checked against every other holder.
fn service_shape(svc: &YusurService) -> Option<String> {
    let s = &svc.spec;
    let global = !s.cluster_ips.is_empty()
        || s.eip.is_some()
        || s.cross_vpc.is_some()
        || s.scenarios
            .iter()
            .any(|x| matches!(x, Scenario::Eip | Scenario::CrossVpc));
    if global {
        return None;
    }
    serde_json::to_string(&(
        &svc.metadata.namespace,
        &s.vpc,
        &s.scenarios,
        &s.ip_families,
    ))
    .ok()
}

/// What of a pod decides its port and address: namespace, address annotations, host
/// network. Labels, readiness and node only change the services that select it.
fn pod_port_shape(pod: &Pod) -> String {
    let notes: Vec<Option<&str>> = [
        SUBNET_ANNOTATION,
        IP_ANNOTATION,
        MAC_ANNOTATION,
        NETWORK_ANNOTATION,
    ]
    .iter()
    .map(|k| annotation(pod, k))
    .collect();
    serde_json::to_string(&(&pod.metadata.namespace, notes, host_network(pod))).unwrap_or_default()
}

/// A pod that gets no port or address from us: on the host's network, or in a namespace no
/// Subnet binds without a subnet annotation, and without a fixed address (which IPAM
/// reserves whatever the pod is). Resolution skips it (never a backend, no status, no
/// pod-network file), so adding or removing one moves no address or topology row.
fn portless(pod: &Pod, bound_namespaces: &HashSet<String>) -> bool {
    annotation(pod, IP_ANNOTATION).is_none()
        && (host_network(pod)
            || (annotation(pod, SUBNET_ANNOTATION).is_none()
                && !bound_namespaces.contains(&meta_ns(&pod.metadata))))
}

fn labels_of(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

fn meta_name(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

fn meta_ns(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    m.namespace.clone().unwrap_or_default()
}

fn ext(row: &ycloud_ovsdb::value::Row, key: &str) -> Option<String> {
    row.get("external_ids")?
        .map_get(key)?
        .as_str()
        .map(str::to_owned)
}

fn owned(row: &ycloud_ovsdb::value::Row, kind: OwnerKind) -> bool {
    ext(row, names::OWNER_KEY).as_deref() == Some(names::OWNER_VALUE)
        && ext(row, names::KIND_KEY).as_deref() == Some(kind.as_str())
}

fn col_str<'a>(row: &'a ycloud_ovsdb::value::Row, col: &str) -> Option<&'a str> {
    row.get(col)?.as_atom()?.as_str()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::atoms)
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// Owners that have rows in NB, found by their ownership keys.
pub fn owners_in_nb(snap: &NbSnapshot) -> BTreeSet<Owner> {
    let mut out = BTreeSet::new();
    for (_, row) in snap.rows("Logical_Router") {
        let Some(name) = ext(row, names::NAME_KEY) else {
            continue;
        };
        if owned(row, OwnerKind::Vpc) {
            out.insert(Owner::Vpc(name));
        } else if owned(row, OwnerKind::EipGateway) {
            out.insert(Owner::EipGateway(name));
        } else if owned(row, OwnerKind::ServiceGateway) {
            out.insert(Owner::ServiceGateway);
        }
    }
    for (_, row) in snap.rows("Logical_Switch") {
        let Some(name) = ext(row, names::NAME_KEY) else {
            continue;
        };
        if owned(row, OwnerKind::Vpc) {
            out.insert(Owner::Vpc(name));
        } else if owned(row, OwnerKind::EipGateway) {
            out.insert(Owner::EipGateway(name));
        } else if owned(row, OwnerKind::ServiceGateway) {
            out.insert(Owner::ServiceGateway);
        }
    }
    for (_, row) in snap.rows("Load_Balancer") {
        if owned(row, OwnerKind::Service)
            && let Some(name) = ext(row, names::NAME_KEY)
        {
            out.insert(Owner::Service(name));
        }
    }
    out
}

/// The name of a node's management port on a VPC's join switch.
pub fn node_port_name(vpc: &str, node: &str) -> String {
    format!("yc-mgmt:{vpc}:{node}")
}

/// The LSP name of a pod or VNicIP: `namespace.name`.
pub fn lsp_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

fn pool_of_join(vpc: &str) -> String {
    format!("join:{vpc}")
}

fn ipam_owner(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
}

fn parse_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            // An address with a prefix (as the network annotation has it) is accepted too.
            let bare = p.split('/').next().unwrap_or(p);
            bare.parse::<IpAddr>()
                .map_err(|_| format!("{p:?} is not an IP address"))
        })
        .collect()
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// A pod is a backend when it is not terminating and not finished, and, when it reports
/// a `Ready` condition, that condition is `True`. A pod from a manifest directory has no
/// status (no kubelet runs it) and counts as ready.
fn pod_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return true;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True")
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn container_port(pod: &Pod, name: &str, protocol: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

fn protocol(p: ycloud_crds::Protocol) -> Protocol {
    match p {
        ycloud_crds::Protocol::TCP => Protocol::Tcp,
        ycloud_crds::Protocol::UDP => Protocol::Udp,
        ycloud_crds::Protocol::SCTP => Protocol::Sctp,
    }
}

fn protocol_name(p: ycloud_crds::Protocol) -> &'static str {
    match p {
        ycloud_crds::Protocol::TCP => "TCP",
        ycloud_crds::Protocol::UDP => "UDP",
        ycloud_crds::Protocol::SCTP => "SCTP",
    }
}

fn hash_field(h: ycloud_crds::HashField) -> HashField {
    match h {
        ycloud_crds::HashField::EthSrc => HashField::EthSrc,
        ycloud_crds::HashField::EthDst => HashField::EthDst,
        ycloud_crds::HashField::IpSrc => HashField::IpSrc,
        ycloud_crds::HashField::IpDst => HashField::IpDst,
        ycloud_crds::HashField::TpSrc => HashField::TpSrc,
        ycloud_crds::HashField::TpDst => HashField::TpDst,
    }
}

/// One candidate backend before the target port is known.
struct Candidate<'a> {
    ips: Vec<IpAddr>,
    pod: Option<&'a Pod>,
    /// What it is, its `namespace/name` and the node whose daemon probes it.
    kind: ProbeBackendKind,
    name: Option<String>,
    node: Option<String>,
}

impl Resolver {
    pub fn new(config: Config) -> Self {
        Resolver {
            config,
            ..Default::default()
        }
    }

    /// Seeds the allocations from what NB holds (LSP addresses, service VIPs, gateway
    /// transit networks) and from pods' network annotations. Done once, before the first
    /// pass, so nothing handed out before a restart is handed out again.
    pub fn seed(&mut self, store: &Store, snap: &NbSnapshot) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        // Ports: every LSP a VPC owns, with the switch it is on.
        for (_, sw) in snap.rows("Logical_Switch") {
            if !owned(sw, OwnerKind::Vpc) {
                continue;
            }
            let Some(sw_name) = col_str(sw, "name") else {
                continue;
            };
            let pool = if let Some(s) = sw_name.strip_prefix("yc-subnet-") {
                s.to_owned()
            } else if let Some(v) = sw_name.strip_prefix("yc-join-") {
                pool_of_join(v)
            } else {
                continue;
            };
            for atom in sw.get("ports").and_then(Value::atoms).unwrap_or_default() {
                let Some(lsp) = atom
                    .as_uuid()
                    .and_then(|u| snap.get("Logical_Switch_Port", &u))
                else {
                    continue;
                };
                let owner = [
                    ("pod", "ycloud.io/pod"),
                    ("vnic", "ycloud.io/vnicip"),
                    ("node", "ycloud.io/node"),
                ]
                .iter()
                .find_map(|(kind, key)| ext(lsp, key).map(|k| ipam_owner(kind, &k)));
                let Some(owner) = owner else { continue };
                let Some(addr) = strings(lsp.get("addresses")).into_iter().next() else {
                    continue;
                };
                let mut parts = addr.split_whitespace();
                let Some(mac) = parts.next() else { continue };
                let ips: Vec<IpAddr> = parts.filter_map(|p| p.parse().ok()).collect();
                let restored = self.ipam.restore(
                    &owner,
                    Allocation {
                        pool: pool.clone(),
                        ips,
                        mac: mac.to_owned(),
                    },
                );
                if let Err(e) = restored {
                    tracing::warn!(lsp = ?col_str(lsp, "name"), error = %e, "NB port not restored into IPAM");
                }
            }
        }
        // Pods that carry their network annotation (a cluster, or a manifest written from
        // one) hold those addresses.
        for (key, pod) in &store.pods {
            let Some(net) = annotation(pod, NETWORK_ANNOTATION)
                .and_then(|a| serde_json::from_str::<PodNetwork>(a).ok())
            else {
                continue;
            };
            let owner = ipam_owner("pod", key);
            if self.ipam.get(&owner).is_some() {
                continue;
            }
            let ips = parse_ips(&net.ips.join(",")).unwrap_or_default();
            if let Err(e) = self.ipam.restore(
                &owner,
                Allocation {
                    pool: net.subnet.clone(),
                    ips,
                    mac: net.mac.clone(),
                },
            ) {
                tracing::warn!(pod = %key, error = %e, "pod network annotation not restored");
            }
        }
        // Service VIPs and EIPs, from their load balancers.
        for (_, lb) in snap.rows("Load_Balancer") {
            if !owned(lb, OwnerKind::Service) {
                continue;
            }
            let (Some(key), Some(name)) = (ext(lb, names::NAME_KEY), col_str(lb, "name")) else {
                continue;
            };
            let placement = name.rsplit(':').next().unwrap_or_default();
            let vips: BTreeSet<IpAddr> = lb
                .get("vips")
                .and_then(|v| match v {
                    Value::Map(m) => Some(m),
                    _ => None,
                })
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.as_str()?.parse::<SocketAddr>().ok().map(|s| s.ip()))
                .collect();
            match placement {
                "cluster" | "svcgw" => {
                    let have = self.cluster_ips.entry(key).or_default();
                    for ip in vips {
                        if !have.contains(&ip) {
                            have.push(ip);
                        }
                    }
                    have.sort_by_key(|ip| !ip.is_ipv4());
                }
                "eip" => {
                    if let Some(ip) = vips.into_iter().next() {
                        self.eips.insert(key, ip);
                    }
                }
                _ => {}
            }
        }
        // EIP gateways' transit networks, from their router's transit port.
        for (_, lr) in snap.rows("Logical_Router") {
            if !owned(lr, OwnerKind::EipGateway) {
                continue;
            }
            let Some(gw) = ext(lr, names::NAME_KEY) else {
                continue;
            };
            let lrp = format!("{}-ts", eip_router_name(&gw));
            if let Some(net) = snap
                .find_unique(
                    "Logical_Router_Port",
                    &[("name", Value::from(lrp.as_str()))],
                )
                .and_then(|r| strings(r.get("networks")).into_iter().next())
                .and_then(|n| n.parse::<IpNet>().ok())
            {
                self.transit.insert(gw, net.trunc());
            }
        }
    }

    /// [`Resolver::resolve`], with the objects whose manifest could not be read: their
    /// owners are kept as they are in NB, and a Subnet or VNicIP among them is replaced by
    /// its last valid version.
    pub fn resolve_with_broken(
        &mut self,
        store: &Store,
        snap: &NbSnapshot,
        broken: &BTreeSet<ObjectRef>,
    ) -> Resolved {
        self.broken = broken.clone();
        let mut out = self.resolve(store, snap);
        for o in broken {
            match o.kind.as_str() {
                "Vpc" if !out.vpcs.contains_key(&o.name) => {
                    out.keep.insert(Owner::Vpc(o.name.clone()));
                }
                "EipGateway" if !out.eip_gateways.contains_key(&o.name) => {
                    out.keep.insert(Owner::EipGateway(o.name.clone()));
                }
                "YusurService" if !out.services.contains_key(&o.key()) => {
                    out.keep.insert(Owner::Service(o.key()));
                }
                _ => {}
            }
        }
        self.broken.clear();
        out
    }

    /// One pass: the desired rows of every owner and the status of every object.
    pub fn resolve(&mut self, store: &Store, snap: &NbSnapshot) -> Resolved {
        self.seed(store, snap);
        let broken = self.broken.clone();
        let is_broken =
            |kind: &str, key: &str| broken.iter().any(|o| o.kind == kind && o.key() == key);
        let mut store_subnets = store.subnets.clone();
        for (k, v) in &self.last_subnets {
            if is_broken("Subnet", k) {
                store_subnets.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut store_vnics = store.vnics.clone();
        for (k, v) in &self.last_vnics {
            if is_broken("VNicIP", k) {
                store_vnics.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut out = Resolved::default();
        let ns_labels: BTreeMap<String, BTreeMap<String, String>> = store
            .namespaces
            .iter()
            .map(|(k, n)| (k.clone(), n.metadata.labels.clone().unwrap_or_default()))
            .collect();
        // Services carry the addresses they hold as their status, as they would in a
        // cluster: the validator settles a conflict in favour of the holder, so a service
        // that turns invalid (and keeps its rows) keeps its VIP from a newcomer.
        // Only a service that holds addresses is copied (to carry them): on a cold start
        // none is.
        let held: BTreeMap<&String, std::borrow::Cow<'_, YusurService>> = store
            .services
            .iter()
            .map(|(k, s)| {
                let ips = self.cluster_ips.get(k).cloned().unwrap_or_default();
                let eip = self.eips.get(k).copied();
                if ips.is_empty() && eip.is_none() {
                    return (k, std::borrow::Cow::Borrowed(s));
                }
                let mut s = s.clone();
                let st = s.status.get_or_insert_with(Default::default);
                st.cluster_ips = ips;
                st.eip = eip;
                (k, std::borrow::Cow::Owned(s))
            })
            .collect();
        let vsnap = validate::Snapshot {
            vpcs: store.vpcs.values().collect(),
            subnets: store.subnets.values().collect(),
            gateways: store.gateways.values().collect(),
            services: held.values().map(|s| s.as_ref()).collect(),
            vnic_ips: store.vnics.values().collect(),
            namespaces: ns_labels.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            ..Default::default()
        };

        // VPCs.
        let mut vpcs: BTreeMap<String, topology::Vpc> = BTreeMap::new();
        for (name, vpc) in &store.vpcs {
            let oref = ObjectRef::new("Vpc", None, name);
            match validate::vpc(vpc, &vsnap) {
                Ok(()) => {
                    vpcs.insert(
                        name.clone(),
                        topology::Vpc {
                            name: name.clone(),
                            subnets: vec![],
                            join: vpc.spec.join_cidr,
                        },
                    );
                }
                Err(e) => {
                    out.keep.insert(Owner::Vpc(name.clone()));
                    out.status.insert(
                        oref,
                        status_err(Problem::invalid(&e), Some(Owner::Vpc(name.clone()))),
                    );
                }
            }
        }

        // Subnets: the valid ones, or the last valid version of an invalid one.
        let mut subnets: BTreeMap<String, CrdSubnet> = BTreeMap::new();
        for (name, s) in &store_subnets {
            let oref = ObjectRef::new("Subnet", None, name);
            let owner = Some(Owner::Vpc(s.spec.vpc.clone()));
            match validate::subnet(s, &vsnap) {
                Ok(()) => {
                    self.last_subnets.insert(name.clone(), s.clone());
                    subnets.insert(name.clone(), s.clone());
                }
                Err(e) => {
                    out.status
                        .insert(oref, status_err(Problem::invalid(&e), owner));
                    if let Some(last) = self.last_subnets.get(name) {
                        subnets.insert(name.clone(), last.clone());
                    }
                }
            }
        }
        self.last_subnets
            .retain(|k, _| store_subnets.contains_key(k));
        let mut pools = BTreeSet::new();
        for (name, s) in &subnets {
            let Some(v) = vpcs.get_mut(&s.spec.vpc) else {
                continue;
            };
            let gws: Vec<IpAddr> = s
                .spec
                .cidr_blocks
                .iter()
                .filter_map(|b| s.spec.gateway_for(b))
                .collect();
            v.subnets.push(topology::Subnet {
                name: name.clone(),
                cidrs: s.spec.cidr_blocks.clone(),
                gateways: gws.clone(),
            });
            // Each IPv4 block's native-health-check source (its last host) is held back
            // like a gateway: fixed by the CIDR, so it survives a restart with no state.
            let held: Vec<IpAddr> = gws
                .iter()
                .copied()
                .chain(
                    s.spec
                        .cidr_blocks
                        .iter()
                        .filter_map(|c| topology::monitor_source(*c)),
                )
                .collect();
            self.ipam.set_pool(
                name,
                PoolSpec::with_gateways(
                    s.spec.cidr_blocks.clone(),
                    &held,
                    s.spec.exclude_ips.clone(),
                ),
            );
            pools.insert(name.clone());
        }
        for v in vpcs.values() {
            if let Some(join) = v.join {
                self.ipam.set_pool(
                    &pool_of_join(&v.name),
                    PoolSpec::with_gateways(vec![join], &[], vec![]),
                );
                pools.insert(pool_of_join(&v.name));
            }
        }
        self.ipam.retain_pools(&pools);

        // Objects that are gone give their addresses back before anything is allocated.
        let candidates: BTreeSet<String> = store_vnics
            .keys()
            .map(|k| ipam_owner("vnic", k))
            .chain(store.pods.keys().map(|k| ipam_owner("pod", k)))
            .chain(vpcs.values().filter(|v| v.join.is_some()).flat_map(|v| {
                store
                    .nodes
                    .keys()
                    .map(move |n| ipam_owner("node", &format!("{}/{n}", v.name)))
            }))
            .collect();
        let gone: Vec<String> = self
            .ipam
            .owners()
            .filter(|o| !candidates.contains(*o))
            .map(str::to_owned)
            .collect();
        for o in gone {
            self.ipam.release(&o);
        }

        // Fixed addresses first, so a dynamic allocation made earlier in key order can't
        // take the address another object names. Errors are reported by the loops below.
        for (key, v) in &store_vnics {
            if !v.spec.ips.is_empty()
                && subnets.contains_key(&v.spec.subnet)
                && validate::vnic_ip(v, &vsnap).is_ok()
            {
                let req = Request {
                    ips: v.spec.ips.clone(),
                    mac: v.spec.mac.clone(),
                };
                let _ = self
                    .ipam
                    .allocate(&ipam_owner("vnic", key), &v.spec.subnet, &req);
            }
        }
        for (key, pod) in &store.pods {
            let Some(Ok(ips)) = annotation(pod, IP_ANNOTATION).map(parse_ips) else {
                continue;
            };
            let ns = meta_ns(&pod.metadata);
            let subnet = annotation(pod, SUBNET_ANNOTATION)
                .map(str::to_owned)
                .or_else(|| {
                    subnets
                        .iter()
                        .find(|(_, s)| s.spec.namespaces.contains(&ns))
                        .map(|(n, _)| n.clone())
                });
            if let Some(subnet) = subnet {
                let mac = annotation(pod, MAC_ANNOTATION).and_then(|m| parse_mac(m).ok());
                let _ = self
                    .ipam
                    .allocate(&ipam_owner("pod", key), &subnet, &Request { ips, mac });
            }
        }

        // Ports.
        let mut ports: Vec<Port> = Vec::new();
        let mut holders: BTreeSet<String> = BTreeSet::new();
        let mut vnic_ips: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for (key, vnic) in &store_vnics {
            let oref = ObjectRef::new(
                "VNicIP",
                Some(&meta_ns(&vnic.metadata)),
                &meta_name(&vnic.metadata),
            );
            let vnic_owner = ipam_owner("vnic", key);
            let (effective, mut problem) = match validate::vnic_ip(vnic, &vsnap) {
                Ok(()) => {
                    self.last_vnics.insert(key.clone(), vnic.clone());
                    (Some(vnic.clone()), None)
                }
                Err(e) => (
                    self.last_vnics.get(key).cloned(),
                    Some(Problem::invalid(&e)),
                ),
            };
            let Some(v) = effective else {
                out.status.insert(oref, pending(problem));
                continue;
            };
            let Some(subnet) = subnets.get(&v.spec.subnet) else {
                out.status.insert(
                    oref,
                    status_err(
                        problem.unwrap_or_else(|| {
                            Problem::new(
                                ycloud_crds::condition::reasons::SUBNET_NOT_FOUND,
                                format!("spec.subnet: subnet {:?} not found", v.spec.subnet),
                            )
                        }),
                        None,
                    ),
                );
                continue;
            };
            let req = Request {
                ips: v.spec.ips.clone(),
                mac: v.spec.mac.clone(),
            };
            let alloc = match self.ipam.allocate(&vnic_owner, &v.spec.subnet, &req) {
                Ok(a) => Some(a),
                Err(e) => {
                    problem
                        .get_or_insert_with(|| Problem::new(reason_of(&e), format!("IPAM: {e}")));
                    self.ipam.get(&vnic_owner).cloned()
                }
            };
            holders.insert(vnic_owner.clone());
            let Some(alloc) = alloc else {
                out.status.insert(oref, pending(problem));
                continue;
            };
            let lsp = lsp_name(&meta_ns(&v.metadata), &meta_name(&v.metadata));
            vnic_ips.insert(key.clone(), alloc.ips.clone());
            ports.push(Port {
                name: lsp.clone(),
                vpc: subnet.spec.vpc.clone(),
                subnet: Some(v.spec.subnet.clone()),
                mac: alloc.mac.clone(),
                ips: alloc.ips.clone(),
                owner: PortOwner::VNicIp(key.clone()),
            });
            let fields = StatusFields::of(&ycloud_crds::VNicIPStatus {
                ips: alloc.ips.clone(),
                mac: Some(alloc.mac.clone()),
                logical_switch_port: Some(lsp),
                ..Default::default()
            });
            out.status.insert(
                oref,
                ObjectStatus {
                    problem,
                    owner: Some(Owner::Vpc(subnet.spec.vpc.clone())),
                    fields,
                    backends: None,
                },
            );
        }
        self.last_vnics.retain(|k, _| store_vnics.contains_key(k));

        let mut pod_ips: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for (key, pod) in &store.pods {
            if host_network(pod) {
                continue;
            }
            let ns = meta_ns(&pod.metadata);
            let name = meta_name(&pod.metadata);
            let oref = ObjectRef::new("Pod", Some(&ns), &name);
            let subnet_name = match annotation(pod, SUBNET_ANNOTATION) {
                Some(s) => Some(s.to_owned()),
                None => subnets
                    .iter()
                    .find(|(_, s)| s.spec.namespaces.contains(&ns))
                    .map(|(n, _)| n.clone()),
            };
            // A pod whose namespace is bound to no Subnet is not on the ycloud network.
            let Some(subnet_name) = subnet_name else {
                continue;
            };
            let owner = ipam_owner("pod", key);
            holders.insert(owner.clone());
            let Some(subnet) = subnets.get(&subnet_name) else {
                out.status.insert(
                    oref,
                    status_err(
                        Problem::new(
                            ycloud_crds::condition::reasons::SUBNET_NOT_FOUND,
                            format!("metadata.annotations[{SUBNET_ANNOTATION}]: subnet {subnet_name:?} not found"),
                        ),
                        None,
                    ),
                );
                continue;
            };
            let vpc = subnet.spec.vpc.clone();
            let mut problem = None;
            let req = match (
                annotation(pod, IP_ANNOTATION).map(parse_ips).transpose(),
                annotation(pod, MAC_ANNOTATION).map(parse_mac).transpose(),
            ) {
                (Ok(ips), Ok(mac)) => Some(Request {
                    ips: ips.unwrap_or_default(),
                    mac,
                }),
                (Err(e), _) => {
                    problem = Some(Problem::new(
                        ycloud_crds::condition::reasons::INVALID_SPEC,
                        format!("metadata.annotations[{IP_ANNOTATION}]: {e}"),
                    ));
                    None
                }
                (_, Err(e)) => {
                    problem = Some(Problem::new(
                        ycloud_crds::condition::reasons::INVALID_SPEC,
                        format!("metadata.annotations[{MAC_ANNOTATION}]: {e}"),
                    ));
                    None
                }
            };
            let alloc = match req.map(|r| self.ipam.allocate(&owner, &subnet_name, &r)) {
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    problem = Some(Problem::new(reason_of(&e), format!("IPAM: {e}")));
                    self.ipam
                        .get(&owner)
                        .filter(|a| a.pool == subnet_name)
                        .cloned()
                }
                None => self
                    .ipam
                    .get(&owner)
                    .filter(|a| a.pool == subnet_name)
                    .cloned(),
            };
            let Some(alloc) = alloc else {
                out.status.insert(oref, pending(problem));
                continue;
            };
            let lsp = lsp_name(&ns, &name);
            let net = pod_network(subnet, &subnet_name, &lsp, &alloc, self.config.underlay_mtu);
            pod_ips.insert(key.clone(), alloc.ips.clone());
            ports.push(Port {
                name: lsp,
                vpc: vpc.clone(),
                subnet: Some(subnet_name.clone()),
                mac: alloc.mac.clone(),
                ips: alloc.ips.clone(),
                owner: PortOwner::Pod(key.clone()),
            });
            out.status.insert(
                oref,
                ObjectStatus {
                    problem,
                    owner: Some(Owner::Vpc(vpc)),
                    fields: StatusFields::of(&serde_json::json!({ "network": &net })),
                    backends: None,
                },
            );
            out.pod_networks.insert(key.clone(), net);
        }

        // Node management ports: one per node on every VPC with a join network.
        for node in store.nodes.keys() {
            let mut mgmt = serde_json::Map::new();
            let mut for_daemon = Vec::new();
            let mut problem = None;
            for v in vpcs.values().filter(|v| v.join.is_some()) {
                let owner = ipam_owner("node", &format!("{}/{node}", v.name));
                holders.insert(owner.clone());
                match self
                    .ipam
                    .allocate(&owner, &pool_of_join(&v.name), &Request::default())
                {
                    Ok(a) => {
                        let name = node_port_name(&v.name, node);
                        mgmt.insert(
                            v.name.clone(),
                            serde_json::json!({"logicalSwitchPort": name, "mac": a.mac, "ips": a.ips}),
                        );
                        // The daemon's form: addresses with their prefix, the join gateway
                        // (the router's port: the first host) and the VPC's service CIDRs,
                        // routed through the port.
                        let join = v.join.expect("filtered on join");
                        let service_cidrs: Vec<String> = store
                            .vpcs
                            .get(&v.name)
                            .map(|crd| {
                                crd.spec
                                    .service_cidrs
                                    .iter()
                                    .map(|c| c.to_string())
                                    .collect()
                            })
                            .unwrap_or_default();
                        for_daemon.push(serde_json::json!({
                            "vpc": v.name,
                            "logicalSwitchPort": name,
                            "mac": a.mac,
                            "ips": a.ips.iter().map(|ip| format!("{ip}/{}", join.prefix_len())).collect::<Vec<_>>(),
                            "gateways": crate::compiler::network::gateway(join).map(|g| g.to_string()).into_iter().collect::<Vec<_>>(),
                            "serviceCidrs": service_cidrs,
                            "mtu": self.config.underlay_mtu.saturating_sub(GENEVE_OVERHEAD),
                        }));
                        ports.push(Port {
                            name,
                            vpc: v.name.clone(),
                            subnet: None,
                            mac: a.mac,
                            ips: a.ips,
                            owner: PortOwner::Node(node.clone()),
                        });
                    }
                    Err(e) => {
                        problem = Some(Problem::new(reason_of(&e), format!("IPAM: {e}")));
                    }
                }
            }
            out.node_networks.insert(
                node.clone(),
                serde_json::json!({ "managementPorts": for_daemon }),
            );
            out.status.insert(
                ObjectRef::new("Node", None, node),
                ObjectStatus {
                    problem,
                    owner: None,
                    fields: StatusFields::of(&serde_json::json!({ "managementPorts": mgmt })),
                    backends: None,
                },
            );
        }
        // Release what nobody holds any more.
        let gone: Vec<String> = self
            .ipam
            .owners()
            .filter(|o| !holders.contains(*o))
            .map(str::to_owned)
            .collect();
        for o in gone {
            self.ipam.release(&o);
        }

        // The VPCs' rows (before the gateways add their uplinks).
        let mut desired_vpcs: BTreeMap<String, DesiredVpc> = BTreeMap::new();
        for (name, v) in &vpcs {
            let oref = ObjectRef::new("Vpc", None, name);
            match vpc_rows(v, &ports) {
                Ok(d) => {
                    desired_vpcs.insert(name.clone(), d);
                    let fields = StatusFields::of(&ycloud_crds::VpcStatus {
                        router: Some(network::router_name(name)),
                        subnets: v.subnets.iter().map(|s| s.name.clone()).collect(),
                        ..Default::default()
                    });
                    out.status.insert(
                        oref,
                        ObjectStatus {
                            problem: None,
                            owner: Some(Owner::Vpc(name.clone())),
                            fields,
                            backends: None,
                        },
                    );
                }
                Err(e) => {
                    out.keep.insert(Owner::Vpc(name.clone()));
                    out.status.insert(
                        oref,
                        status_err(
                            Problem::new("BuildFailed", e.to_string()),
                            Some(Owner::Vpc(name.clone())),
                        ),
                    );
                }
            }
        }
        for (name, s) in &subnets {
            let oref = ObjectRef::new("Subnet", None, name);
            if out.status.contains_key(&oref) {
                continue;
            }
            let spec = self.ipam.pool(name).cloned();
            let used = self.ipam.used(name);
            let fields = StatusFields::of(&ycloud_crds::SubnetStatus {
                logical_switch: Some(network::subnet_switch_name(name)),
                used_ips: used,
                available_ips: spec.map(|p| p.capacity().saturating_sub(used)).unwrap_or(0),
                ..Default::default()
            });
            let problem = (!vpcs.contains_key(&s.spec.vpc)).then(|| {
                Problem::new(
                    ycloud_crds::condition::reasons::VPC_NOT_FOUND,
                    format!("spec.vpc: VPC {:?} is not valid", s.spec.vpc),
                )
            });
            out.status.insert(
                oref,
                ObjectStatus {
                    problem,
                    owner: Some(Owner::Vpc(s.spec.vpc.clone())),
                    fields,
                    backends: None,
                },
            );
        }

        // Where OVN-native checks of each backend address come from: its LSP and its
        // subnet's reserved monitor source (IPv4 only).
        let monitor_ports: BTreeMap<IpAddr, topology::MonitorPort> = ports
            .iter()
            .filter_map(|p| Some((p, subnets.get(p.subnet.as_ref()?)?)))
            .flat_map(|(p, s)| {
                p.ips.iter().filter_map(move |ip| {
                    let block = s.spec.cidr_blocks.iter().find(|c| c.contains(ip))?;
                    Some((
                        *ip,
                        topology::MonitorPort {
                            lsp: p.name.clone(),
                            source: topology::monitor_source(*block)?,
                        },
                    ))
                })
            })
            .collect();

        // Services.
        let mut topo_services: BTreeMap<String, topology::Service> = BTreeMap::new();
        let mut valid: Vec<(&String, &YusurService, String)> = Vec::new();
        // Validated on several threads when there are many (each against the same
        // snapshot), the outcomes taken in key order.
        let services: Vec<(&String, &YusurService)> = store.services.iter().collect();
        let checked = crate::par::map_chunks(
            &services,
            |_| 1,
            PARALLEL_SERVICES,
            |chunk| {
                chunk
                    .iter()
                    .map(|&(key, svc)| {
                        let vpc_of = |svc| {
                            vsnap
                                .vpc_of_service(svc)
                                .map(|v| meta_name(&v.metadata))
                                .unwrap_or_default()
                        };
                        (
                            key,
                            svc,
                            validate::service(svc, &vsnap).map(|()| vpc_of(svc)),
                        )
                    })
                    .collect::<Vec<_>>()
            },
        );
        for (key, svc, checked) in checked.into_iter().flatten() {
            match checked {
                Ok(vpc) => valid.push((key, svc, vpc)),
                Err(e) => {
                    let oref = ObjectRef::new(
                        "YusurService",
                        Some(&meta_ns(&svc.metadata)),
                        &meta_name(&svc.metadata),
                    );
                    out.keep.insert(Owner::Service(key.clone()));
                    out.status.insert(
                        oref,
                        status_err(Problem::invalid(&e), Some(Owner::Service(key.clone()))),
                    );
                }
            }
        }
        let all_vpcs: BTreeMap<String, String> = held
            .iter()
            .filter_map(|(k, s)| {
                Some(((*k).clone(), meta_name(&vsnap.vpc_of_service(s)?.metadata)))
            })
            .collect();
        self.assign_service_addresses(store, &valid, &all_vpcs);
        // The VPCs a service's backends live in (by namespace, or a static backend's vpc),
        // as the validator sees them: addresses alone can't tell overlapping VPCs apart.
        let mut backend_vpcs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (key, svc, _) in &valid {
            let set = backend_vpcs.entry((*key).clone()).or_default();
            let ns = meta_ns(&svc.metadata);
            for b in &svc.spec.backends {
                let namespaces: Vec<String> = match &b.namespace_selector {
                    None => vec![ns.clone()],
                    Some(sel) => ns_labels
                        .iter()
                        .filter(|(_, l)| selector_matches(sel, l))
                        .map(|(n, _)| n.clone())
                        .collect(),
                };
                for n in namespaces {
                    if let Some(v) = vsnap.vpc_of_namespace(&n) {
                        set.insert(meta_name(&v.metadata));
                    }
                }
            }
            for b in &svc.spec.static_backends {
                if let Some(v) = &b.vpc {
                    set.insert(v.clone());
                }
            }
        }
        let selectable = Selectable::build(store);
        let inputs = ServiceInputs {
            pod_ips: &pod_ips,
            vnic_ips: &vnic_ips,
            monitor_ports: &monitor_ports,
            selectable: Some(&selectable),
        };
        // Each service on its own (its rows are most of resolving: ~55 % of a cold start's
        // resolve at 10,000 services), so on several threads when there are many; the
        // parts are disjoint (one service's rows, status and probes each).
        let parts = crate::par::map_chunks(
            &valid,
            |_| 1,
            PARALLEL_SERVICES,
            |chunk| {
                let mut part = Resolved::default();
                let mut topos = BTreeMap::new();
                for (key, svc, vpc) in chunk {
                    let programmed = desired_vpcs.contains_key(vpc);
                    if let Some(topo) =
                        self.resolve_service(store, key, svc, vpc, programmed, &inputs, &mut part)
                    {
                        topos.insert((*key).clone(), topo);
                    }
                }
                (part, topos)
            },
        );
        for (mut part, mut topos) in parts {
            out.services.append(&mut part.services);
            out.keep.append(&mut part.keep);
            out.status.append(&mut part.status);
            out.probes.append(&mut part.probes);
            topo_services.append(&mut topos);
        }

        // EIP gateways and the VPC uplinks to them.
        self.transit.retain(|gw, _| store.gateways.contains_key(gw));
        for (name, gw) in &store.gateways {
            let oref = ObjectRef::new("EipGateway", None, name);
            let owner = Owner::EipGateway(name.clone());
            if let Err(e) = validate::eip_gateway(gw, &vsnap) {
                out.keep.insert(owner.clone());
                out.status
                    .insert(oref, status_err(Problem::invalid(&e), Some(owner)));
                continue;
            }
            let mut eips_by_vpc: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
            for (key, s) in &topo_services {
                let on_this = store.services[key]
                    .spec
                    .eip
                    .as_ref()
                    .is_some_and(|e| e.gateway == *name);
                if let (true, Some(eip), true) = (on_this, s.eip, desired_vpcs.contains_key(&s.vpc))
                {
                    eips_by_vpc.entry(s.vpc.clone()).or_default().insert(eip);
                }
            }
            let result = self.eip_gateway(name, gw, &eips_by_vpc, &vpcs, snap, &mut desired_vpcs);
            let allocated = self
                .eips
                .iter()
                .filter(|(k, _)| {
                    store
                        .services
                        .get(*k)
                        .and_then(|s| s.spec.eip.as_ref())
                        .is_some_and(|e| e.gateway == *name)
                })
                .count() as u64;
            let pool_size: u64 = gw
                .spec
                .pool
                .iter()
                .map(|r| range_size(r.first(), r.last()))
                .fold(0u64, |a, b| a.saturating_add(b));
            let fields = StatusFields::of(&ycloud_crds::EipGatewayStatus {
                router: Some(eip_router_name(name)),
                allocated,
                available: pool_size.saturating_sub(allocated),
                active_chassis: crate::compiler::demotion::top(&eipgw_chassis(
                    gw,
                    self.eipgw_demotion(name, gw),
                ))
                .map(str::to_owned),
                demoted_chassis: self
                    .eipgw_demotion(name, gw)
                    .map(|d| d.demoted.clone())
                    .unwrap_or_default(),
                ..Default::default()
            });
            let problem = match result {
                Ok(d) => {
                    out.eip_gateways.insert(name.clone(), d);
                    None
                }
                Err(p) => {
                    out.keep.insert(owner.clone());
                    Some(p)
                }
            };
            out.status.insert(
                oref,
                ObjectStatus {
                    problem,
                    owner: Some(owner),
                    fields,
                    backends: None,
                },
            );
        }

        // The service gateway.
        match self.service_gateway(
            store,
            &topo_services,
            &backend_vpcs,
            &subnets,
            snap,
            &mut desired_vpcs,
        ) {
            Ok(d) => out.service_gateway = d,
            Err(p) => {
                out.keep.insert(Owner::ServiceGateway);
                for (key, s) in &topo_services {
                    if s.scenarios.cross_vpc
                        && let Some(st) = out
                            .status
                            .values_mut()
                            .find(|st| st.owner == Some(Owner::Service(key.clone())))
                    {
                        st.problem.get_or_insert(p.clone());
                    }
                }
            }
        }
        // Last: the reject of free service-CIDR addresses excludes what the uplinks route.
        for (name, d) in desired_vpcs.iter_mut() {
            if let Some(v) = store.vpcs.get(name) {
                network::add_service_reject(name, d, &v.spec.service_cidrs);
            }
        }
        let bound_namespaces: HashSet<String> = subnets
            .values()
            .flat_map(|s| s.spec.namespaces.iter().cloned())
            .collect();
        self.ctx = Some(ServiceContext {
            vpcs: desired_vpcs.keys().cloned().collect(),
            portless: store
                .pods
                .iter()
                .filter(|(_, p)| portless(p, &bound_namespaces))
                .map(|(k, _)| k.clone())
                .collect(),
            bound_namespaces,
            pod_ips,
            vnic_ips,
            monitor_ports,
            shapes: store
                .services
                .iter()
                .map(|(k, s)| (k.clone(), service_shape(s)))
                .collect(),
            pod_ports: store
                .pods
                .iter()
                .map(|(k, p)| (k.clone(), pod_port_shape(p)))
                .collect(),
            labels: store
                .pods
                .iter()
                .map(|(k, p)| (ObjectRef::from_key("Pod", k), labels_of(&p.metadata)))
                .chain(store.vmis.iter().map(|(k, v)| {
                    (
                        ObjectRef::from_key("VirtualMachineInstance", k),
                        v.labels.clone(),
                    )
                }))
                .collect(),
            index: ServiceIndex::build(store),
        });
        out.vpcs = desired_vpcs;
        out
    }

    /// Between full passes: brings `out` (the last pass's result, the store before these
    /// changes) up to date with the objects in `changed` by re-resolving only the services
    /// they touch: an edited or deleted service; the services that select (or selected) a
    /// pod or VMI whose labels, readiness or node changed; the service a NetworkProbe is
    /// of. Returns those services, or `None` (and changes nothing) when the change needs a
    /// full pass: topology objects, namespaces, nodes, VNicIPs, a pod with a port of ours
    /// added or removed or whose address may move (a [`portless`] pod may come and go), a
    /// service that is new or whose addresses or gateway rows may change.
    pub fn resolve_changes(
        &mut self,
        store: &Store,
        changed: &BTreeSet<ObjectRef>,
        out: &mut Resolved,
    ) -> Option<BTreeSet<String>> {
        let affected = self.affected(store, changed)?;
        if changed.is_empty() {
            // A pass for the echo of our own NB write: nothing to re-resolve (and no
            // validator snapshot of every object to build).
            return Some(affected);
        }
        let mut ctx = self.ctx.take()?;
        for o in changed.iter().filter(|o| o.kind == "Pod") {
            // Only portless pods come or go here; the others kept their shape.
            let key = o.key();
            match store.pods.get(&key) {
                Some(pod) => {
                    ctx.pod_ports.insert(key.clone(), pod_port_shape(pod));
                    if portless(pod, &ctx.bound_namespaces) {
                        ctx.portless.insert(key);
                    }
                }
                None => {
                    ctx.pod_ports.remove(&key);
                    ctx.portless.remove(&key);
                }
            }
        }
        for o in changed {
            let labels = match o.kind.as_str() {
                "Pod" => store.pods.get(&o.key()).map(|p| labels_of(&p.metadata)),
                "VirtualMachineInstance" => store.vmis.get(&o.key()).map(|v| v.labels.clone()),
                _ => continue,
            };
            match labels {
                Some(l) => ctx.labels.insert(o.clone(), l),
                None => ctx.labels.remove(o),
            };
        }
        let ns_labels: BTreeMap<String, BTreeMap<String, String>> = store
            .namespaces
            .iter()
            .map(|(k, n)| (k.clone(), labels_of(&n.metadata)))
            .collect();
        // No services or VNicIPs: the validator reads them only to check a claimed
        // address against every other holder (fixed cluster IPs, EIPs, VNicIP
        // addresses), and no service on this path has one. Listing 10,000 services for
        // each change was the largest cost of a change pass.
        let vsnap = validate::Snapshot {
            vpcs: store.vpcs.values().collect(),
            subnets: store.subnets.values().collect(),
            gateways: store.gateways.values().collect(),
            namespaces: ns_labels.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            ..Default::default()
        };
        let selectable = (affected.len() >= INDEX_SERVICES).then(|| Selectable::build(store));
        for key in &affected {
            let oref = ObjectRef::from_key("YusurService", key);
            let owner = Owner::Service(key.clone());
            out.services.remove(key);
            out.keep.remove(&owner);
            out.status.remove(&oref);
            out.probes.retain(|_, p| {
                p.metadata.namespace.as_deref() != oref.namespace.as_deref()
                    || p.spec.service != oref.name
            });
            let Some(svc) = store.services.get(key) else {
                self.cluster_ips.remove(key);
                self.eips.remove(key);
                ctx.shapes.remove(key);
                ctx.index.update(key, None);
                continue;
            };
            ctx.shapes.insert(key.clone(), service_shape(svc));
            ctx.index.update(key, Some(svc));
            if let Err(e) = validate::service(svc, &vsnap) {
                out.keep.insert(owner.clone());
                out.status
                    .insert(oref, status_err(Problem::invalid(&e), Some(owner)));
                continue;
            }
            let vpc = vsnap
                .vpc_of_service(svc)
                .map(|v| meta_name(&v.metadata))
                .unwrap_or_default();
            let inputs = ServiceInputs {
                pod_ips: &ctx.pod_ips,
                vnic_ips: &ctx.vnic_ips,
                monitor_ports: &ctx.monitor_ports,
                selectable: selectable.as_ref(),
            };
            self.resolve_service(store, key, svc, &vpc, ctx.vpcs.contains(&vpc), &inputs, out);
        }
        self.ctx = Some(ctx);
        Some(affected)
    }

    /// The services a change touches, or `None` when it needs a full pass (see
    /// [`Resolver::resolve_changes`]).
    pub fn affected(
        &self,
        store: &Store,
        changed: &BTreeSet<ObjectRef>,
    ) -> Option<BTreeSet<String>> {
        let ctx = self.ctx.as_ref()?;
        let mut out = BTreeSet::new();
        for o in changed {
            let key = o.key();
            let ns = o.namespace.as_deref().unwrap_or_default();
            match o.kind.as_str() {
                "YusurService" => {
                    // Known to the last pass, and neither then nor now a global one.
                    let was = ctx.shapes.get(&key)?.as_ref()?;
                    if let Some(svc) = store.services.get(&key) {
                        if service_shape(svc).as_ref() != Some(was) {
                            return None;
                        }
                        // Never given a cluster IP (invalid so far): allocation is global.
                        if svc.spec.scenarios.contains(&Scenario::ClusterIp)
                            && !self.cluster_ips.contains_key(&key)
                        {
                            return None;
                        }
                    }
                    out.insert(key);
                }
                "Pod" => {
                    // Added or removed: its address comes or goes (IPAM, the VPC's rows),
                    // unless it has none of ours, then or now.
                    let was = ctx.pod_ports.get(&key);
                    match (was, store.pods.get(&key)) {
                        (Some(was), Some(pod)) if *was == pod_port_shape(pod) => {}
                        (None, Some(pod)) if portless(pod, &ctx.bound_namespaces) => {}
                        (Some(_), None) if ctx.portless.contains(&key) => {}
                        _ => return None,
                    }
                    if let Some(old) = ctx.labels.get(o) {
                        out.extend(ctx.index.selecting(store, BackendObject::Pod, ns, old));
                    }
                    if let Some(pod) = store.pods.get(&key) {
                        let now = labels_of(&pod.metadata);
                        out.extend(ctx.index.selecting(store, BackendObject::Pod, ns, &now));
                    }
                }
                "VirtualMachineInstance" => {
                    // No port of ours: its addresses are its own.
                    if let Some(old) = ctx.labels.get(o) {
                        out.extend(ctx.index.selecting(store, BackendObject::Vmi, ns, old));
                    }
                    if let Some(v) = store.vmis.get(&key) {
                        out.extend(
                            ctx.index
                                .selecting(store, BackendObject::Vmi, ns, &v.labels),
                        );
                    }
                }
                "NetworkProbe" => {
                    let p = store.probes.get(&key)?;
                    let svc = format!("{ns}/{}", p.spec.service);
                    // A probe of a service on the full-pass path waits for a full pass.
                    ctx.shapes.get(&svc)?.as_ref()?;
                    out.insert(svc);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// One valid service: its load balancers (into `out.services`), probes and status;
    /// the compiler's view of it when it is programmed (the gateways need it). Shared by
    /// the full pass and the re-resolution of single services, so both give the same rows.
    #[allow(clippy::too_many_arguments)]
    fn resolve_service(
        &self,
        store: &Store,
        key: &str,
        svc: &YusurService,
        vpc: &str,
        vpc_programmed: bool,
        inputs: &ServiceInputs<'_>,
        out: &mut Resolved,
    ) -> Option<topology::Service> {
        let mut programmed = None;
        let ns = meta_ns(&svc.metadata);
        let oref = ObjectRef::new("YusurService", Some(&ns), &meta_name(&svc.metadata));
        let owner = Owner::Service(key.to_owned());
        let mut problem = None;
        if !vpc_programmed {
            problem = Some(Problem::new(
                ycloud_crds::condition::reasons::VPC_NOT_FOUND,
                format!("VPC {vpc:?} is not programmed"),
            ));
        }
        let has = |s: Scenario| svc.spec.scenarios.contains(&s);
        let cluster_ips = self.cluster_ips.get(key).cloned().unwrap_or_default();
        let eip = self.eips.get(key).copied();
        let needs_vip = has(Scenario::ClusterIp) || has(Scenario::CrossVpc);
        if needs_vip && cluster_ips.is_empty() {
            problem.get_or_insert(Problem::new(
                ycloud_crds::condition::reasons::POOL_EXHAUSTED,
                format!("no free cluster IP in the service CIDRs of VPC {vpc:?}"),
            ));
        }
        if has(Scenario::Eip) && eip.is_none() {
            problem.get_or_insert(Problem::new(
                ycloud_crds::condition::reasons::POOL_EXHAUSTED,
                format!(
                    "no free EIP in the pool of EipGateway {:?}",
                    svc.spec
                        .eip
                        .as_ref()
                        .map(|e| e.gateway.as_str())
                        .unwrap_or("")
                ),
            ));
        }
        if has(Scenario::CrossVpc) && self.config.svcgw_chassis.is_empty() {
            problem.get_or_insert(Problem::new(
                ycloud_crds::condition::reasons::PENDING,
                "CrossVPC: no service-gateway chassis is configured (--svcgw-chassis)",
            ));
        }
        let (ports, counts, targets) = self.backends(store, svc, &ns, inputs);
        let topo = topology::Service {
            namespace: ns.clone(),
            name: meta_name(&svc.metadata),
            vpc: vpc.to_owned(),
            scenarios: Scenarios {
                cluster_ip: has(Scenario::ClusterIp),
                eip: has(Scenario::Eip),
                cross_vpc: has(Scenario::CrossVpc),
            },
            cluster_ips: cluster_ips.clone(),
            eip,
            ports,
            affinity_timeout: svc
                .spec
                .session_affinity
                .as_ref()
                .and_then(|a| a.effective_timeout()),
            hash_fields: svc
                .spec
                .load_balancing
                .as_ref()
                .map(|l| l.hash_fields.iter().copied().map(hash_field).collect())
                .unwrap_or_default(),
        };
        if problem.is_none() {
            match service_lbs(&topo, self.config.mode) {
                Ok(mut lbs) => {
                    health_checks(
                        svc,
                        &ns,
                        &targets,
                        inputs.monitor_ports,
                        &mut lbs,
                        &mut out.probes,
                    );
                    out.services.insert(key.to_owned(), lbs.into());
                    programmed = Some(topo);
                }
                Err(e) => {
                    problem = Some(Problem::new(
                        ycloud_crds::condition::reasons::INVALID_SPEC,
                        e.to_string(),
                    ))
                }
            }
        }
        if problem.is_some() {
            out.keep.insert(owner.clone());
        }
        let fields = StatusFields::of(&ycloud_crds::YusurServiceStatus {
            vpc: Some(vpc.to_owned()),
            cluster_ips,
            eip,
            backends: counts,
            ..Default::default()
        });
        out.status.insert(
            oref,
            ObjectStatus {
                problem,
                owner: Some(owner),
                fields,
                backends: Some((counts, svc.spec.health_check.is_some())),
            },
        );
        programmed
    }

    /// Cluster IPs and EIPs: fixed ones first, then what each service had, then new ones
    /// (lowest free), in key order.
    fn assign_service_addresses(
        &mut self,
        store: &Store,
        valid: &[(&String, &YusurService, String)],
        all_vpcs: &BTreeMap<String, String>,
    ) {
        self.cluster_ips
            .retain(|k, _| store.services.contains_key(k));
        self.eips.retain(|k, _| store.services.contains_key(k));
        // Used VIPs per VPC and EIPs per gateway, by everyone that holds one.
        let mut used_vips: BTreeMap<String, BTreeMap<IpAddr, String>> = BTreeMap::new();
        let mut used_eips: BTreeMap<IpAddr, String> = BTreeMap::new();
        for (key, svc, _) in valid {
            if !svc.spec.cluster_ips.is_empty() {
                self.cluster_ips
                    .insert((*key).clone(), svc.spec.cluster_ips.clone());
            }
            if let Some(addr) = svc.spec.eip.as_ref().and_then(|e| e.address) {
                self.eips.insert((*key).clone(), addr);
            }
            if !svc.spec.scenarios.contains(&Scenario::Eip) {
                self.eips.remove(*key);
            }
        }
        // Valid services first (their fixed addresses won validation), then the ones kept
        // as they are (invalid now): what they hold stays theirs.
        let order = valid
            .iter()
            .map(|(k, _, v)| ((*k).clone(), v.clone()))
            .chain(all_vpcs.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (key, vpc) in order {
            for ip in self.cluster_ips.get(&key).into_iter().flatten() {
                used_vips
                    .entry(vpc.clone())
                    .or_default()
                    .entry(*ip)
                    .or_insert_with(|| key.clone());
            }
            if let Some(ip) = self.eips.get(&key) {
                used_eips.entry(*ip).or_insert_with(|| key.clone());
            }
        }
        // Per (VPC, service CIDR): the last address this call handed out.
        let mut lowest_free: BTreeMap<(String, IpNet), IpAddr> = BTreeMap::new();
        for (key, svc, vpc) in valid {
            let Some(v) = store.vpcs.get(vpc) else {
                continue;
            };
            let has = |s: Scenario| svc.spec.scenarios.contains(&s);
            if has(Scenario::ClusterIp) || has(Scenario::CrossVpc) {
                let families: Vec<bool> = match &svc.spec.ip_families {
                    Some(f) => f
                        .iter()
                        .map(|f| *f == ycloud_crds::IpFamily::IPv4)
                        .collect(),
                    None => v
                        .spec
                        .service_cidrs
                        .first()
                        .map(|c| c.addr().is_ipv4())
                        .into_iter()
                        .collect(),
                };
                let mut have = self.cluster_ips.get(*key).cloned().unwrap_or_default();
                // Drop addresses no longer inside the VPC's service CIDRs or families.
                have.retain(|ip| {
                    families.contains(&ip.is_ipv4())
                        && v.spec.service_cidrs.iter().any(|c| c.contains(ip))
                        && used_vips
                            .get(vpc)
                            .and_then(|u| u.get(ip))
                            .is_none_or(|h| h == *key)
                });
                for v4 in families {
                    if have.iter().any(|ip| ip.is_ipv4() == v4) {
                        continue;
                    }
                    let Some(cidr) = v
                        .spec
                        .service_cidrs
                        .iter()
                        .find(|c| c.addr().is_ipv4() == v4)
                    else {
                        continue;
                    };
                    let used = used_vips.entry(vpc.clone()).or_default();
                    // `used` only grows during this call, so the lowest free address is
                    // past the last one handed out here: start there (allocating n
                    // addresses in one pass was O(n²): 2.8 s at 10,000 services).
                    let from = lowest_free
                        .get(&(vpc.clone(), *cidr))
                        .and_then(|ip| next_ip(*ip));
                    let free = hosts_from(cidr, from)
                        .find(|h| *h != cidr.network() && !used.contains_key(h));
                    if let Some(ip) = free {
                        used.insert(ip, (*key).clone());
                        lowest_free.insert((vpc.clone(), *cidr), ip);
                        have.push(ip);
                    }
                }
                have.sort_by_key(|ip| !ip.is_ipv4());
                self.cluster_ips.insert((*key).clone(), have);
            } else {
                self.cluster_ips.remove(*key);
            }
            if let Some(req) = &svc.spec.eip
                && !self.eips.contains_key(*key)
                && let Some(gw) = store.gateways.get(&req.gateway)
            {
                let ext = &gw.spec.external_network;
                'ranges: for r in &gw.spec.pool {
                    let mut ip = r.first();
                    loop {
                        if ip != ext.address && ip != ext.gateway && !used_eips.contains_key(&ip) {
                            used_eips.insert(ip, (*key).clone());
                            self.eips.insert((*key).clone(), ip);
                            break 'ranges;
                        }
                        if ip >= r.last() {
                            break;
                        }
                        match next_ip(ip) {
                            Some(n) => ip = n,
                            None => break,
                        }
                    }
                }
            }
        }
    }

    /// The backends of every port of a service, the ready/total counts (by address), and
    /// every (backend address, target port) a health check would probe.
    fn backends(
        &self,
        store: &Store,
        svc: &YusurService,
        ns: &str,
        inputs: &ServiceInputs<'_>,
    ) -> (
        Vec<topology::ServicePort>,
        ycloud_crds::BackendCounts,
        Vec<ProbeTarget>,
    ) {
        let (pod_ips, vnic_ips) = (inputs.pod_ips, inputs.vnic_ips);
        // The keys the index narrows a backend to (it looks in its service's namespace by
        // `matchLabels`); `None`: every object of the kind.
        let narrowed =
            |index: for<'x> fn(&'x Selectable<'x>) -> &'x HashMap<String, Vec<&'x str>>,
             b: &ycloud_crds::BackendSelector| {
                inputs
                    .selectable
                    .filter(|_| b.namespace_selector.is_none())
                    .and_then(|ix| Selectable::candidates(index(ix), ns, &b.selector))
            };
        let ns_in =
            |sel: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
             other: &str| match sel {
                None => other == ns,
                Some(sel) => store.namespaces.get(other).is_some_and(|n| {
                    selector_matches(sel, n.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                }),
            };
        let empty = BTreeMap::new();
        let mut cands: Vec<Candidate<'_>> = Vec::new();
        // A manifest pod often has no `spec.nodeName`; with a single Node it can only be
        // there, and that node's daemon (which plugged it) is the one that can reach it.
        let only_node = (store.nodes.len() == 1)
            .then(|| store.nodes.keys().next().cloned())
            .flatten();
        for b in &svc.spec.backends {
            match b.kind {
                BackendType::Pod => {
                    for (key, pod) in objects(&store.pods, narrowed(|ix| &ix.pods, b)) {
                        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
                        if ns_in(&b.namespace_selector, &meta_ns(&pod.metadata))
                            && selector_matches(&b.selector, labels)
                            && pod_ready(pod)
                            && let Some(ips) = pod_ips.get(key)
                        {
                            cands.push(Candidate {
                                ips: ips.clone(),
                                pod: Some(pod),
                                kind: ProbeBackendKind::Pod,
                                name: Some(key.clone()),
                                node: pod
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.node_name.clone())
                                    .or_else(|| only_node.clone()),
                            });
                        }
                    }
                }
                BackendType::VM => {
                    for vmi in store.vmis.values() {
                        if ns_in(&b.namespace_selector, &vmi.namespace)
                            && selector_matches(&b.selector, &vmi.labels)
                        {
                            cands.push(Candidate {
                                ips: vmi.ips.clone(),
                                pod: None,
                                kind: ProbeBackendKind::VM,
                                name: Some(format!("{}/{}", vmi.namespace, vmi.name)),
                                // The store does not know a VMI's node yet: the
                                // controller probes it.
                                node: None,
                            });
                        }
                    }
                }
                BackendType::BM | BackendType::VNicIP => {
                    for (key, v) in objects(&store.vnics, narrowed(|ix| &ix.vnics, b)) {
                        let labels = v.metadata.labels.as_ref().unwrap_or(&empty);
                        if (b.kind == BackendType::VNicIP || v.spec.kind == VNicKind::BareMetal)
                            && ns_in(&b.namespace_selector, &meta_ns(&v.metadata))
                            && selector_matches(&b.selector, labels)
                            && let Some(ips) = vnic_ips.get(key)
                        {
                            cands.push(Candidate {
                                ips: ips.clone(),
                                pod: None,
                                kind: if v.spec.kind == VNicKind::BareMetal {
                                    ProbeBackendKind::BM
                                } else {
                                    ProbeBackendKind::VNicIP
                                },
                                name: Some(key.clone()),
                                // The node hosting its port, if the VNicIP names one.
                                node: v.spec.node.clone(),
                            });
                        }
                    }
                }
            }
        }
        for s in &svc.spec.static_backends {
            cands.push(Candidate {
                ips: vec![s.address],
                pod: None,
                kind: ProbeBackendKind::Static,
                name: None,
                node: None,
            });
        }
        let healthy = |ip: &IpAddr| -> bool {
            if svc.spec.health_check.is_none() {
                return true;
            }
            // No probe yet (or no verdict yet) is not a failure: the backend stays until a
            // probe says it is down.
            if let Some(ix) = inputs.selectable {
                let name = svc.metadata.name.as_deref().unwrap_or_default();
                return !ix.down.contains(&(ns, name, *ip));
            }
            !store.probes.values().any(|p| {
                meta_ns(&p.metadata) == ns
                    && Some(p.spec.service.as_str()) == svc.metadata.name.as_deref()
                    && p.spec.backend.address == *ip
                    && p.status.as_ref().and_then(|s| s.healthy) == Some(false)
            })
        };
        // A backend (a pod, VM, VNicIP or static address, all its addresses) is down when a
        // probe says any of its addresses is.
        let up = |c: &Candidate<'_>| c.ips.iter().all(&healthy);
        let mut all: BTreeMap<Vec<IpAddr>, bool> = BTreeMap::new();
        let mut ports = Vec::new();
        let mut targets: Vec<ProbeTarget> = Vec::new();
        for p in &svc.spec.ports {
            let mut backends = BTreeSet::new();
            for c in &cands {
                let target = match &p.target_port {
                    None => Some(p.port),
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                    Some(IntOrString::String(name)) => c
                        .pod
                        .and_then(|pod| container_port(pod, name, protocol_name(p.protocol))),
                };
                let Some(target) = target else { continue };
                let ok = up(c);
                all.insert(c.ips.clone(), ok);
                for ip in &c.ips {
                    backends.insert(Backend {
                        ip: *ip,
                        port: target,
                        healthy: ok,
                    });
                    let t = ProbeTarget {
                        kind: c.kind,
                        name: c.name.clone(),
                        address: *ip,
                        node: c.node.clone(),
                        target_port: target,
                    };
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
            ports.push(topology::ServicePort {
                name: p.name.clone(),
                protocol: protocol(p.protocol),
                port: p.port,
                backends: backends.into_iter().collect(),
            });
        }
        let counts = ycloud_crds::BackendCounts {
            total: all.len() as u32,
            ready: all.values().filter(|ok| **ok).count() as u32,
        };
        (ports, counts, targets)
    }

    /// [`gateways::service_gateway_rows_ha`] with the service gateway's demotion applied to
    /// the beacon's priorities and recorded on the beacon router, while `--svcgw-chassis`
    /// is still what it was decided for (else those priorities: the failback).
    fn service_gateway_rows_demoted(
        &self,
        attachments: &[ServiceGatewayAttachment],
    ) -> Result<DesiredGateway, gateways::GatewayError> {
        let spec = &self.config.svcgw_chassis;
        let demotion = self
            .config
            .svcgw_demotion
            .as_ref()
            .filter(|d| d.basis == crate::demotions::svcgw_basis(spec));
        let chassis = match demotion {
            Some(d) => crate::compiler::demotion::effective(spec, &d.demoted),
            None => spec.clone(),
        };
        let mut rows = gateways::service_gateway_rows_ha(
            &chassis,
            self.config.svcgw_elected.as_deref(),
            attachments,
        )?;
        if let (Some(d), Some(r)) = (
            demotion,
            rows.routers.get_mut(gateways::SVCGW_BEACON_ROUTER),
        ) {
            r.external_ids.extend(d.external_ids());
        }
        Ok(rows)
    }

    /// `gw`'s demotion, if one is recorded and its basis still holds (else the operator
    /// failed back, or the spec changed: the spec's priorities).
    fn eipgw_demotion(
        &self,
        name: &str,
        gw: &ycloud_crds::EipGateway,
    ) -> Option<&crate::compiler::demotion::Demotion> {
        self.config
            .eipgw_demotions
            .get(name)
            .filter(|d| d.basis == crate::demotions::basis_of(gw))
    }

    /// One EIP gateway's rows, and the uplinks of the VPCs behind it.
    fn eip_gateway(
        &mut self,
        name: &str,
        gw: &ycloud_crds::EipGateway,
        eips_by_vpc: &BTreeMap<String, BTreeSet<IpAddr>>,
        vpcs: &BTreeMap<String, topology::Vpc>,
        snap: &NbSnapshot,
        desired_vpcs: &mut BTreeMap<String, DesiredVpc>,
    ) -> Result<DesiredGateway, Problem> {
        let transit = self.transit_for(name, vpcs)?;
        let demotion = self.eipgw_demotion(name, gw);
        let topo = TopoEipGateway {
            name: name.to_owned(),
            external: gw.spec.external_network.address_with_prefix(),
            upstream: Some(gw.spec.external_network.gateway),
            network_name: gw.spec.external_network.localnet.clone(),
            chassis: eipgw_chassis(gw, demotion),
            transit,
        };
        let attached: Vec<String> = eips_by_vpc.keys().cloned().collect();
        let addrs = alloc::eip_transit_addrs(snap, name, transit, &attached).map_err(|e| {
            Problem::new(
                ycloud_crds::condition::reasons::POOL_EXHAUSTED,
                e.to_string(),
            )
        })?;
        let mut attachments = Vec::new();
        for (vpc, eips) in eips_by_vpc {
            let cidrs: Vec<IpNet> = vpcs
                .get(vpc)
                .map(|v| {
                    v.subnets
                        .iter()
                        .flat_map(|s| s.cidrs.iter().copied())
                        .filter(|c| c.addr().is_ipv4())
                        .collect()
                })
                .unwrap_or_default();
            let egress = eips.iter().find(|e| e.is_ipv4()).map(|e| (*e, cidrs));
            attachments.push(EipAttachment {
                vpc: vpc.clone(),
                transit_ip: addrs[vpc],
                eips: eips.clone(),
                egress,
            });
        }
        let mut rows = gateways::eip_gateway_rows(&topo, &attachments)
            .map_err(|e| Problem::new("BuildFailed", e.to_string()))?;
        // The record of the demotion lives with the priorities it explains: a restarted
        // controller reads it back (`crate::demotions`) instead of repairing them.
        if let (Some(d), Some(r)) = (demotion, rows.routers.get_mut(&eip_router_name(name))) {
            r.external_ids.extend(d.external_ids());
        }
        for a in &attachments {
            if let Some(d) = desired_vpcs.get_mut(&a.vpc) {
                gateways::add_eip_uplink(d, &topo, a)
                    .map_err(|e| Problem::new("BuildFailed", e.to_string()))?;
            }
        }
        Ok(rows)
    }

    /// A gateway's transit network: what it had, else the lowest `/24` of the pool that
    /// no other gateway has and that overlaps no VPC network (a VPC router with two
    /// overlapping ports would route neither right).
    fn transit_for(
        &mut self,
        gw: &str,
        vpcs: &BTreeMap<String, topology::Vpc>,
    ) -> Result<IpNet, Problem> {
        if let Some(t) = self.transit.get(gw) {
            return Ok(*t);
        }
        let len = if self.config.eip_transit_pool.addr().is_ipv4() {
            24
        } else {
            120
        };
        let busy: Vec<IpNet> = vpcs
            .values()
            .flat_map(|v| {
                v.subnets
                    .iter()
                    .flat_map(|s| s.cidrs.iter().copied())
                    .chain(v.join)
            })
            .collect();
        let taken: BTreeSet<IpNet> = self.transit.values().copied().collect();
        let found = self
            .config
            .eip_transit_pool
            .subnets(len)
            .ok()
            .into_iter()
            .flatten()
            .find(|n| !taken.contains(n) && !busy.iter().any(|b| b.contains(n) || n.contains(b)));
        match found {
            Some(n) => {
                self.transit.insert(gw.to_owned(), n);
                Ok(n)
            }
            None => Err(Problem::new(
                ycloud_crds::condition::reasons::POOL_EXHAUSTED,
                format!(
                    "EIP transit pool {} has no free /{len} for gateway {gw}",
                    self.config.eip_transit_pool
                ),
            )),
        }
    }

    /// The service gateway: attached to every VPC that has backends or clients of a
    /// cross-VPC service. `Ok(None)`: nothing needs it.
    fn service_gateway(
        &self,
        store: &Store,
        services: &BTreeMap<String, topology::Service>,
        backend_vpcs: &BTreeMap<String, BTreeSet<String>>,
        subnets: &BTreeMap<String, CrdSubnet>,
        snap: &NbSnapshot,
        desired_vpcs: &mut BTreeMap<String, DesiredVpc>,
    ) -> Result<Option<DesiredGateway>, Problem> {
        let mut involved: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (key, s) in services.iter().filter(|(_, s)| s.scenarios.cross_vpc) {
            involved.entry(s.vpc.clone()).or_default();
            let spec = &store.services[key].spec;
            for client in spec.cross_vpc.iter().flat_map(|c| c.clients.iter()) {
                involved
                    .entry(client.clone())
                    .or_default()
                    .extend(s.cluster_ips.iter().copied());
            }
            // Backends in other VPCs are reached through the gateway too.
            for v in backend_vpcs.get(key).into_iter().flatten() {
                involved.entry(v.clone()).or_default();
            }
        }
        involved.retain(|v, _| desired_vpcs.contains_key(v));
        if involved.is_empty() {
            return Ok(None);
        }
        if self.config.svcgw_chassis.is_empty() {
            return Err(Problem::new(
                ycloud_crds::condition::reasons::PENDING,
                "CrossVPC: no service-gateway chassis is configured (--svcgw-chassis)",
            ));
        }
        let vpc_names: Vec<String> = involved.keys().cloned().collect();
        let nets =
            alloc::svcgw_transit_nets(snap, self.config.svcgw_pool, &vpc_names).map_err(|e| {
                Problem::new(
                    ycloud_crds::condition::reasons::POOL_EXHAUSTED,
                    e.to_string(),
                )
            })?;
        let attachments: Vec<ServiceGatewayAttachment> = involved
            .iter()
            .map(|(vpc, vips)| ServiceGatewayAttachment {
                vpc: vpc.clone(),
                transit: nets[vpc],
                subnets: subnets
                    .values()
                    .filter(|s| s.spec.vpc == *vpc)
                    .flat_map(|s| s.spec.cidr_blocks.iter().copied())
                    .collect(),
                client_vips: vips.clone(),
            })
            .collect();
        let rows = if self.config.svcgw_failover {
            self.service_gateway_rows_demoted(&attachments)
        } else {
            gateways::service_gateway_rows(&self.config.svcgw_chassis, &attachments)
        }
        .map_err(|e| {
            Problem::new(
                ycloud_crds::condition::reasons::OVERLAPPING_CIDRS,
                e.to_string(),
            )
        })?;
        for a in &attachments {
            if let Some(d) = desired_vpcs.get_mut(&a.vpc) {
                gateways::add_svcgw_uplink(d, a)
                    .map_err(|e| Problem::new("BuildFailed", e.to_string()))?;
            }
        }
        Ok(Some(rows))
    }
}

/// A service's health check: OVN-native rows on its load balancers (`native: true`), or
/// one NetworkProbe per (backend address, probed port) for the node daemons.
fn health_checks(
    svc: &YusurService,
    ns: &str,
    targets: &[ProbeTarget],
    monitor_ports: &BTreeMap<IpAddr, topology::MonitorPort>,
    lbs: &mut [DesiredLb],
    probes: &mut BTreeMap<String, ycloud_crds::NetworkProbe>,
) {
    let Some(check) = &svc.spec.health_check else {
        return;
    };
    if check.native {
        let native = topology::NativeCheck::from_millis(
            check.interval_millis,
            check.timeout_millis,
            check.success_threshold,
            check.failure_threshold,
        );
        crate::compiler::lb::add_native_checks(lbs, &native, monitor_ports);
        return;
    }
    let name = meta_name(&svc.metadata);
    for t in targets {
        let p = desired_probe(ns, &name, check, t);
        probes.insert(crate::probes::key_of(&p), p);
    }
}

fn range_size(first: IpAddr, last: IpAddr) -> u64 {
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u64::from(u32::from(b).saturating_sub(u32::from(a))) + 1,
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            u64::try_from(u128::from(b).saturating_sub(u128::from(a))).unwrap_or(u64::MAX - 1) + 1
        }
        _ => 0,
    }
}

fn reason_of(e: &crate::ipam::IpamError) -> &'static str {
    use crate::ipam::IpamError as E;
    use ycloud_crds::condition::reasons as R;
    match e {
        E::Exhausted { .. } => R::POOL_EXHAUSTED,
        E::AddressTaken { .. } | E::MacTaken { .. } => R::ADDRESS_CONFLICT,
        E::OutsidePool { .. } | E::Reserved { .. } => R::ADDRESS_OUT_OF_RANGE,
        E::UnknownPool { .. } => R::SUBNET_NOT_FOUND,
        E::BadMac { .. } | E::TwoOfOneFamily { .. } => R::INVALID_SPEC,
    }
}

/// The status of an object with no address: its problem, else "pending".
fn pending(problem: Option<Problem>) -> ObjectStatus {
    status_err(
        problem.unwrap_or_else(|| {
            Problem::new(
                ycloud_crds::condition::reasons::PENDING,
                "no address allocated",
            )
        }),
        None,
    )
}

fn status_err(problem: Problem, owner: Option<Owner>) -> ObjectStatus {
    ObjectStatus {
        problem: Some(problem),
        owner,
        fields: StatusFields::default(),
        backends: None,
    }
}

/// The network annotation of a pod: the addresses with the subnet's prefix, the gateway
/// the router really has (the first host of each block: what the compiler programs).
fn pod_network(
    subnet: &CrdSubnet,
    name: &str,
    lsp: &str,
    alloc: &Allocation,
    underlay_mtu: u32,
) -> PodNetwork {
    let mut ips = Vec::new();
    let mut gws = Vec::new();
    for ip in &alloc.ips {
        if let Some(block) = subnet.spec.cidr_blocks.iter().find(|b| b.contains(ip)) {
            ips.push(format!("{ip}/{}", block.prefix_len()));
            if let Some(gw) = network::gateway(*block) {
                gws.push(gw.to_string());
            }
        }
    }
    PodNetwork {
        vpc: subnet.spec.vpc.clone(),
        subnet: name.to_owned(),
        logical_switch: network::subnet_switch_name(name),
        logical_switch_port: lsp.to_owned(),
        mac: alloc.mac.clone(),
        ips,
        gateways: gws,
        routes: vec![],
        mtu: subnet
            .spec
            .mtu
            .unwrap_or(underlay_mtu.saturating_sub(GENEVE_OVERHEAD)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::compiler::nb;

    fn empty_nb() -> NbSnapshot {
        let schema =
            ycloud_ovsdb::schema::DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema")
                .expect("the OVN NB schema is installed");
        nb::cache(Arc::new(schema)).expect("cache").snapshot()
    }

    fn examples() -> Store {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut store = Store::default();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("examples")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let errors = store.load_yaml(&f, &std::fs::read_to_string(&f).expect("read"));
            assert!(errors.is_empty(), "{errors:?}");
        }
        store
    }

    const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}, annotations: {ycloud.io/ip-address: 10.0.1.2}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: grpc, containerPort: 9091}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: catalog-1, namespace: shop, labels: {app: catalog}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: checkout-1, namespace: shop, labels: {app: checkout}, annotations: {ycloud.io/ip-address: 10.0.1.15}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lonely, namespace: nowhere, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
";

    fn run(extra: &str) -> (Resolver, Resolved) {
        let mut store = examples();
        assert!(store.load_yaml(Path::new("pods.yaml"), PODS).is_empty());
        let errors = store.load_yaml(Path::new("extra.yaml"), extra);
        assert!(errors.is_empty(), "{errors:?}");
        let mut r = Resolver::new(Config {
            svcgw_chassis: BTreeMap::from([("node-1".to_owned(), 100)]),
            ..Config::default()
        });
        let out = r.resolve(&store, &empty_nb());
        (r, out)
    }

    fn vips(out: &Resolved, svc: &str, placement: &str) -> BTreeMap<String, String> {
        out.services[svc]
            .iter()
            .filter(|lb| lb.placement.as_str() == placement)
            .flat_map(|lb| lb.vips.clone())
            .collect()
    }

    fn problem(out: &Resolved, kind: &str, ns: Option<&str>, name: &str) -> Option<Problem> {
        out.status[&ObjectRef::new(kind, ns, name)].problem.clone()
    }

    type Check = fn(&Resolver, &Resolved);

    #[test]
    fn cluster_ips_are_the_lowest_free_addresses_and_a_released_one_is_reused() {
        let svc = |name: &str, fixed: Option<&str>| {
            format!(
                "apiVersion: ycloud.io/v1alpha1\nkind: YusurService\nmetadata: {{name: {name}, namespace: ns}}\n\
                 spec:\n  scenarios: [ClusterIP]\n{}  ports: [{{name: http, protocol: TCP, port: 80}}]\n\
                 \x20 backends: [{{type: Pod, selector: {{matchLabels: {{app: {name}}}}}}}]\n---\n",
                fixed
                    .map(|ip| format!("  clusterIPs: [{ip}]\n"))
                    .unwrap_or_default()
            )
        };
        let base = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n---\n\
                    apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: v}\n\
                    spec: {serviceCIDRs: [10.200.0.0/24], namespaces: [ns]}\n---\n";
        let mut text = base.to_owned() + &svc("fixed", Some("10.200.0.3"));
        for i in 0..50 {
            text += &svc(&format!("s{i:03}"), None);
        }
        let ips = |out: &Resolved| -> BTreeMap<String, IpAddr> {
            out.services
                .iter()
                .map(|(k, lbs)| {
                    let vip = lbs[0].vips.keys().next().expect("a VIP").clone();
                    let ip = vip
                        .rsplit_once(':')
                        .expect("ip:port")
                        .0
                        .parse()
                        .expect("an IP");
                    (k.clone(), ip)
                })
                .collect()
        };
        let mut store = Store::default();
        assert!(store.load_yaml(Path::new("a.yaml"), &text).is_empty());
        let mut r = Resolver::new(Config::default());
        let first = ips(&r.resolve(&store, &empty_nb()));
        let mut got: Vec<IpAddr> = first.values().copied().collect();
        got.sort();
        let want: Vec<IpAddr> = (1..=51u8).map(|h| IpAddr::from([10, 200, 0, h])).collect();
        assert_eq!(got, want, "51 services hold .1-.51 (.3 by the fixed one)");
        assert_eq!(first["ns/fixed"], IpAddr::from([10, 200, 0, 3]));

        // s010 goes, t000 comes: t000 gets the address s010 freed, the others keep theirs.
        let mut store = Store::default();
        let text = text.replace(&svc("s010", None), &svc("t000", None));
        assert!(store.load_yaml(Path::new("a.yaml"), &text).is_empty());
        let second = ips(&r.resolve(&store, &empty_nb()));
        assert_eq!(second["ns/t000"], first["ns/s010"]);
        for (k, ip) in &second {
            if k != "ns/t000" {
                assert_eq!(first[k], *ip, "{k} kept its address");
            }
        }
    }

    #[test]
    fn resolution_table() {
        let cases: Vec<(&str, &str, Check)> = vec![
            (
                "fixed cluster IP and pod backends on targetPort; fixed pod address claimed first",
                "",
                |_, out| {
                    assert_eq!(
                        vips(out, "shop/web", "cluster"),
                        BTreeMap::from([(
                            "10.96.0.100:80".to_owned(),
                            "10.0.1.2:8080,10.0.1.6:8080".to_owned()
                        )])
                    );
                },
            ),
            (
                "a named targetPort resolves per pod; pods without the port are skipped; dual stack VIPs allocated",
                "",
                |_, out| {
                    let v = vips(out, "shop/api", "cluster");
                    // legacy/db sorts first and took 10.96.0.1.
                    assert_eq!(
                        v.get("10.96.0.2:9090").map(String::as_str),
                        Some("10.0.1.3:9091"),
                        "{v:?}"
                    );
                    assert_eq!(
                        v.get("[fd00:96::1]:9090").map(String::as_str),
                        Some("[fd00:a:1::4]:9091"),
                        "{v:?}"
                    );
                },
            ),
            (
                "EIPs: fixed ones kept, free ones allocated from the pool skipping taken ones",
                "",
                |_, out| {
                    assert!(vips(out, "partner/storefront", "eip").contains_key("200.0.0.100:80"));
                    assert!(vips(out, "shop/catalog", "eip").contains_key("200.0.0.101:80"));
                },
            ),
            (
                "VM, BM and VNicIP backends plus static ones",
                "
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: vm-db, namespace: legacy, labels: {app: db}}
status: {interfaces: [{ipAddress: 10.0.2.40}]}
",
                |_, out| {
                    let v = vips(out, "legacy/db", "cluster");
                    let backends = v.values().next().expect("one VIP");
                    // bm-01 (BM), vm-legacy (allocated: first free after the excluded range and
                    // the fixed .10 and .20), appliance (VNicIP), the VMI, the static one.
                    assert_eq!(
                        backends,
                        "10.0.2.10:5432,10.0.2.11:5432,10.0.2.20:5432,10.0.2.30:5432,10.0.2.40:5432"
                    );
                },
            ),
            (
                "a probe that says down takes the backend out and the counts say so",
                "
apiVersion: ycloud.io/v1alpha1
kind: NetworkProbe
metadata: {name: down, namespace: shop}
spec:
  service: checkout
  backend: {kind: Pod, address: 10.0.1.15, port: 8080}
  probe: {type: TCP, intervalMillis: 2000, timeoutMillis: 1000}
status: {healthy: false}
",
                |_, out| {
                    // Two probes name 10.0.1.15 (healthy in example 18, down here): down wins.
                    let v = vips(out, "shop/checkout", "cluster");
                    assert_eq!(v.values().next().map(String::as_str), Some(""));
                    let st = &out.status[&ObjectRef::new("YusurService", Some("shop"), "checkout")];
                    assert_eq!(st.backends.map(|b| (b.0.ready, b.0.total)), Some((0, 1)));
                },
            ),
            (
                "an invalid service gets InvalidSpec, is kept as it is in NB, and others are unaffected",
                "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: web2, namespace: shop}
spec: {scenarios: [ClusterIP], clusterIPs: [10.96.0.100], ports: [{name: http, port: 80}]}
",
                |_, out| {
                    let p = problem(out, "YusurService", Some("shop"), "web2").expect("problem");
                    assert_eq!(p.reason, "InvalidSpec");
                    assert!(
                        p.message
                            .contains("10.96.0.100 is already used by service shop/web"),
                        "{}",
                        p.message
                    );
                    assert!(out.keep.contains(&Owner::Service("shop/web2".into())));
                    assert!(!out.services.contains_key("shop/web2"));
                    assert!(out.services.contains_key("shop/web"));
                },
            ),
            (
                "pods outside every subnet are not on the network; node ports land on join switches",
                "",
                |_, out| {
                    assert!(!out.pod_networks.contains_key("nowhere/lonely"));
                    let join = &out.vpcs["tenant-a"].switches["yc-join-tenant-a"];
                    assert!(
                        join.ports.contains_key("yc-mgmt:tenant-a:node-1"),
                        "{:?}",
                        join.ports.keys()
                    );
                    assert!(
                        out.vpcs["tenant-e"].switches["yc-join-tenant-e"]
                            .ports
                            .contains_key("yc-mgmt:tenant-e:node-1")
                    );
                    // The node daemon's file: one entry per VPC with a join network, in its form.
                    let ports = out.node_networks["node-1"]["managementPorts"]
                        .as_array()
                        .expect("managementPorts");
                    let a = ports
                        .iter()
                        .find(|p| p["vpc"] == "tenant-a")
                        .expect("tenant-a entry");
                    assert_eq!(a["logicalSwitchPort"], "yc-mgmt:tenant-a:node-1");
                    let ip = a["ips"][0].as_str().expect("ip");
                    assert!(ip.contains('/'), "address with prefix: {ip}");
                    assert_eq!(a["gateways"].as_array().map(Vec::len), Some(1));
                    assert!(
                        !a["serviceCidrs"].as_array().expect("cidrs").is_empty(),
                        "{a}"
                    );
                    assert_eq!(a["mtu"], 1442);
                },
            ),
            (
                "the pod annotation carries prefix, programmed gateway and MTU",
                "",
                |_, out| {
                    let n = &out.pod_networks["shop/web-2"];
                    assert_eq!(n.ips, ["10.0.1.2/24", "fd00:a:1::3/64"]);
                    assert_eq!(n.gateways, ["10.0.1.1", "fd00:a:1::1"]);
                    assert_eq!(n.mtu, 1442);
                    assert_eq!(n.logical_switch_port, "shop.web-2");
                    assert_eq!(n.mac, "0a:58:0a:00:01:02");
                },
            ),
            (
                "cross-VPC services build the service gateway with every involved VPC",
                "",
                |_, out| {
                    let gw = out.service_gateway.as_ref().expect("service gateway");
                    let switches: Vec<&String> = gw.switches.keys().collect();
                    assert_eq!(
                        switches,
                        [
                            "yc-svcgw-ts-tenant-a",
                            "yc-svcgw-ts-tenant-c",
                            "yc-svcgw-ts-tenant-e"
                        ]
                    );
                    // tenant-c routes the catalog VIP to the gateway.
                    let c = &out.vpcs["tenant-c"].router;
                    assert!(
                        c.routes.iter().any(|r| r.ip_prefix == "10.96.0.4/32"),
                        "{:?}",
                        c.routes
                    );
                },
            ),
            (
                "EIP gateways get a transit /24 clear of every VPC network and uplink their VPCs",
                "",
                |_, out| {
                    assert!(out.eip_gateways.contains_key("public"));
                    let b = &out.vpcs["tenant-b"].router;
                    assert!(
                        b.ports.contains_key("yc-vpc-tenant-b-eipgw-public"),
                        "{:?}",
                        b.ports.keys()
                    );
                    let net = &b.ports["yc-vpc-tenant-b-eipgw-public"].networks;
                    assert!(net.iter().all(|n| n.starts_with("100.67.0.")), "{net:?}");
                },
            ),
            (
                "a pod asking for a taken address gets AddressConflict and no port",
                "
apiVersion: v1
kind: Pod
metadata: {name: zz-thief, namespace: shop, annotations: {ycloud.io/ip-address: 10.0.1.2}}
spec: {containers: [{name: c}]}
",
                |_, out| {
                    // Among pods that are new together, key order decides; a pod that already
                    // holds an address (restored from NB) always keeps it.
                    let p = problem(out, "Pod", Some("shop"), "zz-thief").expect("problem");
                    assert_eq!(p.reason, "AddressConflict");
                    assert!(p.message.contains("pod:shop/web-2"), "{}", p.message);
                    assert!(!out.pod_networks.contains_key("shop/zz-thief"));
                },
            ),
            (
                "a VNicIP on a missing subnet is an error of its own",
                "
apiVersion: ycloud.io/v1alpha1
kind: VNicIP
metadata: {name: lost, namespace: legacy}
spec: {kind: Generic, subnet: nope}
",
                |_, out| {
                    let p = problem(out, "VNicIP", Some("legacy"), "lost").expect("problem");
                    assert!(p.message.contains("nope"), "{}", p.message);
                    assert!(problem(out, "VNicIP", Some("legacy"), "appliance").is_none());
                },
            ),
        ];
        for (name, extra, check) in cases {
            let (r, out) = run(extra);
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&r, &out)));
            assert!(outcome.is_ok(), "case failed: {name}");
        }
    }

    #[test]
    fn the_shared_annotation_fixtures_parse_and_round_trip() {
        // The CNI parses the same files with its own type: a change one side can't read
        // fails a test on that side.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/annotations");
        for f in ["pod-network.json", "pod-network-v4.json"] {
            let text = std::fs::read_to_string(dir.join(f)).expect("fixture");
            let net: PodNetwork = serde_json::from_str(&text).expect(f);
            let back: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&net).expect("json")).expect("json");
            let mut orig: serde_json::Value = serde_json::from_str(&text).expect("json");
            // `routes` absent means empty; we always write it.
            orig.as_object_mut()
                .expect("object")
                .entry("routes")
                .or_insert(serde_json::json!([]));
            assert_eq!(back, orig, "{f}");
        }
    }

    #[test]
    fn health_checks_become_probes_per_backend_address_and_port_or_native_rows_on_the_lbs() {
        let (r, out) = run("
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-1, containers: [{name: c}]}
---
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {name: stat, namespace: shop}
spec:
  scenarios: [ClusterIP]
  ports: [{name: dns, port: 53, protocol: UDP}]
  staticBackends: [{address: 10.0.1.200}]
  healthCheck: {type: UDP, intervalMillis: 500, timeoutMillis: 300, failureThreshold: 2}
");
        // checkout (example 15): one HTTP probe of checkout-1 on the check's port, run by
        // the daemon of the only Node (the pod names no node).
        let p = &out.probes["shop/checkout-10-0-1-15-8080"];
        assert_eq!(p.spec.service, "checkout");
        assert_eq!(p.spec.backend.kind, ProbeBackendKind::Pod);
        assert_eq!(p.spec.backend.name.as_deref(), Some("shop/checkout-1"));
        assert_eq!(p.spec.backend.port, Some(8080));
        assert_eq!(p.spec.backend.node.as_deref(), Some("node-1"));
        // A static backend: probed on its target port, by the controller.
        let p = out
            .probes
            .get("shop/stat-10-0-1-200-53")
            .unwrap_or_else(|| {
                panic!(
                    "{:?} {:?}",
                    out.probes.keys().collect::<Vec<_>>(),
                    problem(&out, "YusurService", Some("shop"), "stat")
                )
            });
        assert_eq!(p.spec.backend.kind, ProbeBackendKind::Static);
        assert_eq!(p.spec.backend.name, None);
        // cart (example 16) is native: no NetworkProbe, OVN rows instead, the backend mapped
        // to its LSP and its subnet's reserved source.
        assert!(out.probes.values().all(|p| p.spec.service != "cart"));
        let lb = &out.services["shop/cart"][0];
        let ip = r.ipam.get("pod:shop/cart-1").expect("cart-1 address").ips[0];
        assert_eq!(
            lb.ip_port_mappings[&ip.to_string()],
            "shop.cart-1:10.0.1.254"
        );
        let hc: Vec<_> = lb.health_checks.values().collect();
        assert_eq!(hc.len(), 1, "the IPv4 VIP only");
        assert_eq!(hc[0]["interval"], "2");
        assert_eq!(hc[0]["failure_count"], "2");
        // The monitor source is never handed out.
        assert!(
            r.ipam
                .pool("a-web")
                .expect("pool")
                .reserved
                .contains(&"10.0.1.254".parse().unwrap())
        );
    }

    /// Backends selected through the pass's index are exactly those a scan of the store
    /// selects, in the same order, with the same health: for every example service and
    /// selectors of every shape (one and several `matchLabels` pairs, a pair nothing
    /// carries, `matchExpressions` only, a namespace selector, `{}`), pods that are not
    /// ready, and a probe's down verdict.
    #[test]
    fn backends_found_through_the_index_are_the_ones_a_scan_finds() {
        let mut extra = "
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web, tier: front}}
spec: {containers: [{name: c}]}
status: {conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-4, namespace: shop, labels: {app: web, tier: front}}
spec: {containers: [{name: c}]}
"
        .to_owned();
        // (name, target port, backends, health check)
        let services = [
            (
                "pairs",
                80,
                "{type: Pod, selector: {matchLabels: {app: web, tier: front}}}",
                "",
            ),
            (
                "nobody",
                80,
                "{type: Pod, selector: {matchLabels: {app: web, tier: none}}}",
                "",
            ),
            (
                "expressions",
                80,
                "{type: Pod, selector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}}",
                "",
            ),
            (
                "everything",
                80,
                "{type: Pod, selector: {}}, {type: VNicIP, selector: {}}",
                "",
            ),
            (
                "across",
                80,
                "{type: Pod, selector: {matchLabels: {app: web}}, namespaceSelector: {}}",
                "",
            ),
            (
                "checked",
                8080,
                "{type: Pod, selector: {matchLabels: {app: web}}}",
                "\n  healthCheck: {type: TCP, intervalMillis: 500, timeoutMillis: 300, failureThreshold: 2}",
            ),
        ];
        for (name, target, backends, check) in services {
            extra.push_str(&format!(
                "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\n\
                 metadata: {{name: {name}, namespace: shop}}\nspec:\n  scenarios: [ClusterIP]\n  \
                 ports: [{{name: http, port: 80, targetPort: {target}}}]\n  \
                 backends: [{backends}]{check}\n"
            ));
        }
        let extra = extra.as_str();
        let (r, out) = run(extra);
        let mut store = examples();
        assert!(store.load_yaml(Path::new("pods.yaml"), PODS).is_empty());
        assert!(store.load_yaml(Path::new("extra.yaml"), extra).is_empty());
        // A down verdict for one of checked's backends (web-4, by the address it got).
        let web4 = r.ipam.get("pod:shop/web-4").expect("web-4 address").ips[0];
        let probe = format!(
            "apiVersion: ycloud.io/v1alpha1\nkind: NetworkProbe\n\
             metadata: {{name: checked-web-4, namespace: shop}}\n\
             spec: {{service: checked, backend: {{kind: Pod, address: {web4}, port: 8080}}, \
             probe: {{type: TCP, port: 8080}}}}\nstatus: {{healthy: false}}\n"
        );
        let errors = store.load_yaml(Path::new("probe.yaml"), &probe);
        assert!(errors.is_empty(), "{errors:?}");
        let ctx = r.ctx.as_ref().expect("the pass's context");
        let index = Selectable::build(&store);
        let inputs = |selectable| ServiceInputs {
            pod_ips: &ctx.pod_ips,
            vnic_ips: &ctx.vnic_ips,
            monitor_ports: &ctx.monitor_ports,
            selectable,
        };
        let mut compared = 0;
        for svc in store.services.values() {
            let ns = meta_ns(&svc.metadata);
            let scanned = r.backends(&store, svc, &ns, &inputs(None));
            let indexed = r.backends(&store, svc, &ns, &inputs(Some(&index)));
            assert_eq!(indexed, scanned, "{ns}/{}", meta_name(&svc.metadata));
            compared += 1;
        }
        assert!(compared >= 10, "only {compared} services");
        // The cases are real ones: what the scan found is what the selectors say.
        let svc = |name: &str| &store.services[&format!("shop/{name}")];
        let web4_ips = &r.ipam.get("pod:shop/web-4").expect("web-4").ips;
        let ips = |ports: &[topology::ServicePort]| -> Vec<IpAddr> {
            ports[0].backends.iter().map(|b| b.ip).collect()
        };
        let (ports, counts, _) = r.backends(&store, svc("pairs"), "shop", &inputs(Some(&index)));
        assert_eq!(&ips(&ports), web4_ips, "web-4 only (web-3 is not ready)");
        assert_eq!(counts.total, 1);
        let (ports, ..) = r.backends(&store, svc("nobody"), "shop", &inputs(Some(&index)));
        assert!(ports[0].backends.is_empty());
        let (ports, counts, _) = r.backends(&store, svc("checked"), "shop", &inputs(Some(&index)));
        // Down: both of web-4's addresses (a backend is down when any of its is).
        let down: Vec<IpAddr> = ports[0]
            .backends
            .iter()
            .filter(|b| !b.healthy)
            .map(|b| b.ip)
            .collect();
        assert_eq!(&down, web4_ips, "{:?}", ports[0].backends);
        assert_eq!(counts.ready + 1, counts.total);
        assert!(
            out.status
                .contains_key(&ObjectRef::from_key("YusurService", "shop/checked"))
        );
    }

    #[test]
    fn a_subnet_that_turns_invalid_keeps_its_last_good_version_and_its_switch() {
        let mut store = examples();
        let mut r = Resolver::new(Config::default());
        let snap = empty_nb();
        let before = r.resolve(&store, &snap);
        assert!(
            before.vpcs["tenant-a"]
                .switches
                .contains_key("yc-subnet-a-metal")
        );
        let mut bad = store.subnets["a-metal"].clone();
        bad.spec.cidr_blocks = vec!["10.0.1.0/24".parse().expect("cidr")]; // overlaps a-web
        store.subnets.insert("a-metal".into(), bad);
        let after = r.resolve(&store, &snap);
        assert!(
            after.vpcs["tenant-a"]
                .switches
                .contains_key("yc-subnet-a-metal")
        );
        assert_eq!(
            problem(&after, "Subnet", None, "a-metal").map(|p| p.reason),
            Some("InvalidSpec")
        );
    }

    #[test]
    fn addresses_stay_put_across_passes_when_objects_come_and_go() {
        let mut store = examples();
        assert!(store.load_yaml(Path::new("pods.yaml"), PODS).is_empty());
        let mut r = Resolver::new(Config::default());
        let snap = empty_nb();
        let first = r.resolve(&store, &snap);
        let web1 = first.pod_networks["shop/web-1"].ips.clone();
        // A pod sorting before web-1 appears, and api-1 goes: web-1 keeps its address and
        // the newcomer takes api-1's freed one.
        store.pods.remove("shop/api-1");
        let mut extra = store.pods["shop/web-1"].clone();
        extra.metadata.name = Some("aaa".into());
        store.pods.insert("shop/aaa".into(), extra);
        let second = r.resolve(&store, &snap);
        assert_eq!(second.pod_networks["shop/web-1"].ips, web1);
        assert_eq!(
            second.pod_networks["shop/aaa"].ips,
            first.pod_networks["shop/api-1"].ips
        );
    }
}
