//! `EipGateway`: the external network and the elastic IPs allocated from it.

use std::net::IpAddr;

use ipnet::IpNet;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::net::{self, IpRange};

/// An external network and the EIP pool routed to it: one OVN router whose external port sits
/// on a localnet switch and is bound to gateway chassis with priorities, so it fails over.
/// It routes each EIP to the VPC (or the service gateway) of the service holding it.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "ycloud.io",
    version = "v1alpha1",
    kind = "EipGateway",
    plural = "eipgateways",
    status = "EipGatewayStatus",
    shortname = "eipgw",
    category = "ycloud",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "An external network and the elastic IP pool routed to it.",
    printcolumn(
        name = "External-CIDR",
        type_ = "string",
        json_path = ".spec.externalNetwork.cidr"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".spec.externalNetwork.address"
    ),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Allocated", type_ = "integer", json_path = ".status.allocated"),
    printcolumn(
        name = "Active-Chassis",
        type_ = "string",
        json_path = ".status.activeChassis",
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
pub struct EipGatewaySpec {
    /// The network the gateway's external port is on.
    pub external_network: ExternalNetwork,

    /// EIPs handed out from this gateway: addresses, ranges `first..last` or CIDRs. The
    /// upstream network must route them to `externalNetwork.address`.
    #[schemars(length(min = 1, max = 64))]
    pub pool: Vec<IpRange>,

    /// Chassis that may host the external port, highest priority active. Two or more give
    /// fail-over.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(c, self.exists_one(d, d.name == c.name))", "message": "chassis names must be unique"},
        {"rule": "self.all(c, self.exists_one(d, d.priority == c.priority))", "message": "chassis priorities must be unique"}
    ]))]
    pub gateway_chassis: Vec<GatewayChassis>,

    /// VPCs whose services may take EIPs from this gateway; empty: every VPC.
    #[serde(default, rename = "allowedVPCs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::name_list_schema")]
    pub allowed_vpcs: Vec<String>,
}

/// The external (provider) network.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!isCIDR(self.cidr) || !isIP(self.gateway) || cidr(self.cidr).containsIP(self.gateway)",
     "message": "gateway must lie inside cidr", "fieldPath": ".gateway"},
    {"rule": "!isCIDR(self.cidr) || !isIP(self.address) || cidr(self.cidr).containsIP(self.address)",
     "message": "address must lie inside cidr", "fieldPath": ".address"},
    {"rule": "self.address != self.gateway", "message": "address must differ from gateway", "fieldPath": ".address"}
]))]
pub struct ExternalNetwork {
    /// CIDR of the external network, e.g. `172.31.0.0/24`.
    #[schemars(schema_with = "net::cidr_schema")]
    pub cidr: IpNet,
    /// The upstream router on the external network: the gateway's default route.
    #[schemars(schema_with = "net::ip_schema")]
    pub gateway: IpAddr,
    /// The gateway router's own address on the external network; the upstream routes the EIP
    /// pool to it.
    #[schemars(schema_with = "net::ip_schema")]
    pub address: IpAddr,
    /// Name of the OVN localnet network (`options:network_name` of the localnet port); each
    /// gateway chassis maps it to a provider bridge in `ovn-bridge-mappings`.
    #[schemars(schema_with = "crate::name_schema")]
    pub localnet: String,
    /// VLAN tag of the external network on the provider bridge; absent: untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
}

impl ExternalNetwork {
    /// The gateway router's external address with the network's prefix length
    /// (`200.0.0.2/24`): what its external router port is configured with.
    pub fn address_with_prefix(&self) -> IpNet {
        // The prefix length comes from a parsed IpNet of the same family (checked by CEL and
        // the semantic validator), so it is always valid for the address; fall back to a host
        // route rather than panic if a caller built a mixed-family value by hand.
        IpNet::new(self.address, self.cidr.prefix_len())
            .unwrap_or_else(|_| IpNet::from(self.address))
    }
}

/// A chassis that may host the gateway's external port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayChassis {
    /// The chassis name (`system-id` of its Open_vSwitch row, usually the node name).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Higher wins; OVN accepts 0..32767.
    #[schemars(range(min = 0, max = 32767))]
    pub priority: u16,
}

/// What the controller last did with an `EipGateway`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EipGatewayStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Programmed`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Name of the OVN gateway router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// EIPs held by services.
    #[serde(default)]
    pub allocated: u64,
    /// EIPs still free in the pool.
    #[serde(default)]
    pub available: u64,
    /// The chassis that currently hosts the external port (from the Southbound Port_Binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_chassis: Option<String>,
    /// Chassis the controller demoted below the one that took over after they failed
    /// (with `--ovn-sb`), so that their return takes nothing back. A new value of the
    /// annotation `ycloud.io/failback` (or a changed `gatewayChassis`) restores the
    /// spec's priorities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demoted_chassis: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_external_port_address_carries_the_network_prefix() {
        let ext = ExternalNetwork {
            cidr: "200.0.0.0/24".parse().expect("cidr"),
            gateway: "200.0.0.1".parse().expect("ip"),
            address: "200.0.0.2".parse().expect("ip"),
            localnet: "physnet1".into(),
            vlan: None,
        };
        assert_eq!(ext.address_with_prefix().to_string(), "200.0.0.2/24");
    }
}
