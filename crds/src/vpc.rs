//! `Vpc`: an isolated tenant network, one OVN distributed logical router.

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::net;

/// An isolated network: one OVN distributed logical router, its subnets and its services.
///
/// Namespaces are bound to exactly one VPC; pods of a namespace get addresses from the
/// subnets of that VPC and reach only what the VPC reaches.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "Vpc",
    plural = "vpcs",
    status = "VpcStatus",
    shortname = "yvpc",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An isolated tenant network (one OVN distributed logical router).",
    printcolumn(
        name = "Service-CIDRs",
        type_ = "string",
        json_path = ".spec.serviceCIDRs"
    ),
    printcolumn(
        name = "Join-CIDR",
        type_ = "string",
        json_path = ".spec.joinCIDR",
        priority = 1
    ),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
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
pub struct VpcSpec {
    /// CIDRs (at most one IPv4 and one IPv6) from which ClusterIPs of the VPC's services are
    /// allocated. They are virtual: no subnet may overlap them. Immutable, because addresses
    /// already handed out would fall outside a changed range.
    #[serde(rename = "serviceCIDRs")]
    #[schemars(schema_with = "immutable_service_cidrs_schema")]
    pub service_cidrs: Vec<IpNet>,

    /// Namespaces bound to this VPC. A namespace may be bound to one VPC only; namespaces bound
    /// to none belong to the `default` VPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::namespace_list_schema")]
    pub namespaces: Vec<String>,

    /// Node access: when set, every node gets a management port with an address from this CIDR
    /// on the VPC's join switch, and the node routes the service CIDRs through it, so host
    /// processes reach the VPC's ClusterIPs through OVN. Immutable once set.
    #[serde(default, rename = "joinCIDR", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "immutable_cidr_schema")]
    pub join_cidr: Option<IpNet>,

    /// The VPC of every namespace that no VPC lists. At most one VPC may be the default.
    #[serde(default)]
    pub default: bool,
}

fn immutable_service_cidrs_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = net::dual_stack_cidrs_schema(generator);
    crate::add_rule(&mut schema, "self == oldSelf", "is immutable");
    schema
}

fn immutable_cidr_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = net::cidr_schema(generator);
    crate::add_rule(&mut schema, "self == oldSelf", "is immutable");
    schema
}

/// What the controller last did with a `Vpc`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VpcStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Programmed`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Name of the OVN logical router of the VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// Names of the `Subnet`s attached to the VPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
}
