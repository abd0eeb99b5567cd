//! `Subnet`: an address range of a VPC, one OVN logical switch attached to the VPC router.

use std::net::IpAddr;

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::net::{self, IpRange};

/// An address range (IPv4 and/or IPv6) of a VPC: one OVN logical switch and its router port.
/// Pods of the subnet's namespaces get their addresses from it.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "Subnet",
    plural = "subnets",
    status = "SubnetStatus",
    shortname = "ysubnet",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An address range of a VPC (one OVN logical switch).",
    printcolumn(name = "VPC", type_ = "string", json_path = ".spec.vpc"),
    printcolumn(name = "CIDRs", type_ = "string", json_path = ".spec.cidrBlocks"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usedIPs"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableIPs"
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
pub struct SubnetSpec {
    /// The VPC the subnet belongs to. Immutable: moving a switch between routers would
    /// renumber every port on it.
    #[schemars(schema_with = "crate::immutable_name_schema")]
    pub vpc: String,

    /// The subnet's CIDRs: at most one IPv4 and one IPv6. Immutable, because addresses already
    /// handed out would fall outside changed blocks.
    #[schemars(schema_with = "immutable_cidr_blocks_schema")]
    pub cidr_blocks: Vec<IpNet>,

    /// Gateway (router port) address per family; default: the first host address of each
    /// block (e.g. `10.0.1.1` for `10.0.1.0/24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "net::dual_stack_ips_schema")]
    pub gateways: Vec<IpAddr>,

    /// Addresses never handed out: single addresses, ranges `first..last` or CIDRs.
    #[serde(default, rename = "excludeIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude_ips: Vec<IpRange>,

    /// Namespaces whose pods get addresses from this subnet; each must be bound to the
    /// subnet's VPC (or, for the default VPC, to no VPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::namespace_list_schema")]
    pub namespaces: Vec<String>,

    /// MTU of pod interfaces on this subnet; default: the controller's (the underlay MTU minus
    /// the Geneve overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: Option<u32>,
}

fn immutable_cidr_blocks_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = net::dual_stack_cidrs_schema(generator);
    crate::add_rule(&mut schema, "self == oldSelf", "is immutable");
    schema
}

impl SubnetSpec {
    /// The gateway of `block`: the one given for its family, else its first host address.
    pub fn gateway_for(&self, block: &IpNet) -> Option<IpAddr> {
        self.gateways
            .iter()
            .copied()
            .find(|g| g.is_ipv4() == block.addr().is_ipv4())
            .or_else(|| net::first_host(block))
    }
}

/// What the controller last did with a `Subnet`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Programmed`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Name of the OVN logical switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_switch: Option<String>,
    /// Addresses handed out (pods, VNicIPs, gateways), over all blocks.
    #[serde(default, rename = "usedIPs")]
    pub used_ips: u64,
    /// Addresses still free, over all blocks (capped at 2^63 for IPv6).
    #[serde(default, rename = "availableIPs")]
    pub available_ips: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_gateway_defaults_to_the_first_host_of_each_block() {
        let spec = SubnetSpec {
            vpc: "v".into(),
            cidr_blocks: vec![
                "10.0.2.0/24".parse().expect("v4"),
                "fd00:a::/64".parse().expect("v6"),
            ],
            gateways: vec!["10.0.2.254".parse().expect("gw")],
            exclude_ips: vec![],
            namespaces: vec![],
            mtu: None,
        };
        let gw = |b: &str| {
            spec.gateway_for(&b.parse().expect("block"))
                .map(|g| g.to_string())
        };
        assert_eq!(
            gw("10.0.2.0/24").as_deref(),
            Some("10.0.2.254"),
            "the given gateway wins"
        );
        assert_eq!(
            gw("fd00:a::/64").as_deref(),
            Some("fd00:a::1"),
            "else the first host"
        );
    }
}
