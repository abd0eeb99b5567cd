//! The compiler's input: ycloud's objects after validation and backend resolution, in a
//! neutral form with no Kubernetes types. The controller fills it from its stores (API
//! server or manifest directory); tests and benchmarks build it directly.

use std::net::IpAddr;

/// L4 protocol of a service port; one OVN `Load_Balancer` row carries one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The value of `Load_Balancer.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A field OVS hashes to pick a backend (`Load_Balancer.selection_fields`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashField {
    EthSrc,
    EthDst,
    IpSrc,
    IpDst,
    TpSrc,
    TpDst,
}

impl HashField {
    /// The value in `Load_Balancer.selection_fields`.
    pub fn as_str(self) -> &'static str {
        match self {
            HashField::EthSrc => "eth_src",
            HashField::EthDst => "eth_dst",
            HashField::IpSrc => "ip_src",
            HashField::IpDst => "ip_dst",
            HashField::TpSrc => "tp_src",
            HashField::TpDst => "tp_dst",
        }
    }

    /// What offload mode uses when a service names no fields: the connection's 4-tuple
    /// (the protocol is fixed per load balancer). It spreads connections like `dp_hash`
    /// does, at the cost of one datapath megaflow per connection; `ip_src` alone costs one
    /// per client but sends all of a client's connections to one backend.
    pub const OFFLOAD_DEFAULT: [HashField; 4] = [
        HashField::IpSrc,
        HashField::IpDst,
        HashField::TpSrc,
        HashField::TpDst,
    ];
}

/// How the data path is to be programmed, cluster-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatapathMode {
    /// OVN's defaults: bucket selection by `dp_hash` unless a service names hash fields.
    #[default]
    Default,
    /// Every load balancer gets `selection_fields`, so OVS chooses the backend at upcall
    /// time and no datapath flow carries `hash` + `recirc` (which tc/flower can't offload).
    Offload,
}

/// One backend address of one port, after targetPort resolution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    /// False when its NetworkProbe says it is down: it leaves the VIP map.
    pub healthy: bool,
}

/// One port of a service with its resolved backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub backends: Vec<Backend>,
}

/// Which access scenarios a service asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scenarios {
    /// ClusterIP inside the VPC (and from nodes, through the VPC's join switch).
    pub cluster_ip: bool,
    /// The EIP from outside, through the EIP gateway into the VPC router.
    pub eip: bool,
    /// Clients of other VPCs, through the service gateway.
    pub cross_vpc: bool,
}

/// A `YusurService`, validated, with addresses allocated and backends resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub vpc: String,
    pub scenarios: Scenarios,
    /// One per address family, at most.
    pub cluster_ips: Vec<IpAddr>,
    pub eip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// ClientIP affinity timeout in seconds, when asked for.
    pub affinity_timeout: Option<u32>,
    /// Explicit hash fields; empty means "the mode's default".
    pub hash_fields: Vec<HashField>,
}

impl Service {
    /// `namespace/name`, the value of the ownership key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A `Vpc`: one distributed router, its subnets, and the join network nodes attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vpc {
    pub name: String,
    pub subnets: Vec<Subnet>,
    /// The join switch's network: node management ports get addresses here, and the
    /// router's port on it is the nodes' gateway to ClusterIPs. `None`: no node access.
    pub join: Option<ipnet::IpNet>,
}

/// A `Subnet`: one logical switch behind the VPC router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub name: String,
    /// One CIDR per address family, at most.
    pub cidrs: Vec<ipnet::IpNet>,
    /// The router's address in each CIDR; a CIDR with none here gets its first host.
    pub gateways: Vec<IpAddr>,
}

/// What owns a logical switch port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortOwner {
    /// A pod, `namespace/name`.
    Pod(String),
    /// A `VNicIP`, `namespace/name`.
    VNicIp(String),
    /// A node's management port on its VPC's join switch.
    Node(String),
}

/// A logical switch port with its addresses, decided by IPAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// The LSP name; the CNI sets it as the OVS interface's `external_ids:iface-id`.
    pub name: String,
    pub vpc: String,
    /// The subnet's name, or `None` for the VPC's join switch (node ports).
    pub subnet: Option<String>,
    pub mac: String,
    pub ips: Vec<IpAddr>,
    pub owner: PortOwner,
}

/// An OVN-native health check (`healthCheck.native: true`), in OVN's units: a
/// `Load_Balancer_Health_Check` per VIP with these options. OVN counts in whole seconds,
/// so sub-second intervals and timeouts are rounded up to 1 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeCheck {
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub success_count: u32,
    pub failure_count: u32,
}

impl NativeCheck {
    /// From a service's `healthCheck` (milliseconds → seconds, rounded up, at least 1).
    pub fn from_millis(
        interval_millis: u32,
        timeout_millis: u32,
        success_count: u32,
        failure_count: u32,
    ) -> Self {
        let secs = |ms: u32| ms.div_ceil(1000).max(1);
        NativeCheck {
            interval_secs: secs(interval_millis),
            timeout_secs: secs(timeout_millis),
            success_count: success_count.max(1),
            failure_count: failure_count.max(1),
        }
    }
}

/// Where OVN's native check of one backend address comes from: `ovn-controller` on the
/// chassis that binds `lsp` sends the probe into the backend's switch from `source` (the
/// subnet's reserved monitor address) and `NB_Global options:svc_monitor_mac`. It is the
/// value of `Load_Balancer.ip_port_mappings`: `<backend ip>` → `<lsp>:<source>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorPort {
    pub lsp: String,
    pub source: IpAddr,
}

/// The address of a subnet reserved as the source of OVN-native health checks: the last
/// host of an IPv4 block (`10.0.1.254` in `10.0.1.0/24`). Fixed by the CIDR, so it needs no
/// state to survive a restart; IPAM never hands it out. `None` for IPv6 (OVN 23.03's service
/// monitor is IPv4 only) and for blocks too small to spare it (/31, /32).
pub fn monitor_source(cidr: ipnet::IpNet) -> Option<IpAddr> {
    match cidr {
        ipnet::IpNet::V4(n) if n.prefix_len() <= 29 => Some(IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(n.broadcast()) - 1,
        ))),
        _ => None,
    }
}
