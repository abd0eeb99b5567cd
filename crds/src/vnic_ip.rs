//! `VNicIP`: an address on a virtual NIC that is not a pod.

use std::net::IpAddr;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::net;

/// An address on a virtual NIC that is not a pod: a bare-metal server behind a DPU, a VM
/// outside the cluster, an appliance. It becomes an OVN logical switch port on its subnet, with
/// `addresses` and `port_security` set, and can back services (`type: BM` or `type: VNicIP`)
/// through its labels.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "VNicIP",
    plural = "vnicips",
    namespaced,
    status = "VNicIPStatus",
    shortname = "vnic",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An address on a virtual NIC that is not a pod (bare-metal server, outside VM, appliance).",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IPs", type_ = "string", json_path = ".status.ips"),
    printcolumn(name = "MAC", type_ = "string", json_path = ".status.mac"),
    printcolumn(
        name = "Chassis",
        type_ = "string",
        json_path = ".spec.chassis",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VNicIPSpec {
    /// What sits behind the NIC. `BareMetal` addresses back services with `type: BM`; all
    /// kinds back services with `type: VNicIP`.
    pub kind: VNicKind,

    /// The subnet the address comes from. Immutable.
    #[schemars(schema_with = "crate::immutable_name_schema")]
    pub subnet: String,

    /// Fixed addresses (at most one per family); empty: allocated from the subnet, one per
    /// block. Immutable: the NIC is configured with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "immutable_ips_schema")]
    pub ips: Vec<IpAddr>,

    /// Fixed MAC address; absent: derived from the first address (`0a:58:` + IPv4 bytes, as
    /// for pods) or allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "net::mac_schema")]
    pub mac: Option<String>,

    /// The OVN chassis that binds the port: the DPU or host hosting the NIC (its `system-id`).
    /// Absent: the port is bound by whichever chassis claims it (`requested-chassis` unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub chassis: Option<String>,

    /// The node that runs health probes for this address (for a DPU: the DPU's node).
    /// Absent: the controller probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
}

fn immutable_ips_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = net::dual_stack_ips_schema(generator);
    crate::add_rule(&mut schema, "self == oldSelf", "is immutable");
    schema
}

/// What sits behind a [`VNicIP`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VNicKind {
    /// A bare-metal server behind a DPU or SmartNIC.
    BareMetal,
    /// A virtual machine not managed by the cluster.
    VirtualMachine,
    /// Anything else with an address: an appliance, a router, a storage head.
    Generic,
}

/// What the controller last did with a `VNicIP`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VNicIPStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Programmed`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The addresses in use (fixed or allocated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "net::ip_list_schema")]
    pub ips: Vec<IpAddr>,
    /// The MAC address in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Name of the OVN logical switch port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_switch_port: Option<String>,
}
