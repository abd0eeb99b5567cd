//! The semantic validator: what a schema cannot see.
//!
//! Pure functions over one object and a [`Snapshot`] of the others. Every error names the field
//! at fault with a path such as `spec.ports[1].name`, so it can go verbatim into a `Ready=False`
//! condition and a Warning event.
//!
//! Besides rules that need other objects (addresses inside their ranges, conflicts, overlaps,
//! references), it repeats the per-object rules the CRD schema checks with CEL: objects read
//! from a manifest directory never pass an API server, and the controller must not program
//! what the API server would have refused.
//!
//! Conflicts (two services asking for one VIP, two VNicIPs for one address) are settled the
//! same way from either side, so exactly one object loses: whoever holds the address in its
//! status keeps it; otherwise the older object (creation time, then namespace/name) wins.
//! (Two objects that both claim it in their status: the older one keeps it.)
//!
//! Who claims which address is looked up in an index the [`Snapshot`] builds once, at the
//! first conflict check: searching every other object for every address made validating n
//! services with fixed `clusterIPs` O(n²) (52 s of a 10,000-service pass).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::net::cidrs_overlap;
use crate::service::{HealthCheck, ProbeType, Scenario};
use crate::{AffinityType, EipGateway, IpFamily, NetworkProbe, Subnet, VNicIP, Vpc, YusurService};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `spec.ports[1].name`.
    pub path: String,
    /// What is wrong, e.g. `duplicate port name "http"`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one object (never empty when returned as an error).
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl FieldErrors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// The other objects a validation looks at. The object being validated may be in it too;
/// it is never compared with itself.
///
/// Build it with `..Default::default()` for [`Snapshot::claims`], and fill the lists before
/// the first validation: the index of claimed addresses is made from them then, once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot<'a> {
    pub vpcs: Vec<&'a Vpc>,
    pub subnets: Vec<&'a Subnet>,
    pub gateways: Vec<&'a EipGateway>,
    pub services: Vec<&'a YusurService>,
    pub vnic_ips: Vec<&'a VNicIP>,
    /// Namespaces and their labels, for `namespaceSelector`s.
    pub namespaces: Vec<(&'a str, &'a BTreeMap<String, String>)>,
    /// Who claims which address (in spec or status): cluster IPs per VPC, EIPs, VNicIP
    /// addresses per subnet. Built from the lists above at the first lookup.
    pub claims: Claims<'a>,
}

/// The addresses the objects of a [`Snapshot`] claim, indexed once (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Claims<'a>(OnceLock<ClaimIndex<'a>>);

/// Per address, the objects that claim it, in snapshot order (the first winner found is
/// the one an error names, as a linear search would find it).
#[derive(Clone, Debug, Default)]
struct ClaimIndex<'a> {
    /// (VPC, cluster IP) → services of that VPC with it in `spec.clusterIPs` or
    /// `status.clusterIPs`.
    cluster_ips: HashMap<(&'a str, IpAddr), Vec<&'a YusurService>>,
    /// EIP → services with it in `spec.eip.address` or `status.eip`.
    eips: HashMap<IpAddr, Vec<&'a YusurService>>,
    /// (subnet, address) → VNicIPs of that subnet with it in `spec.ips` or `status.ips`.
    vnic_ips: HashMap<(&'a str, IpAddr), Vec<&'a VNicIP>>,
    /// `namespace/name` → service, for references to a service.
    services: HashMap<(&'a str, &'a str), &'a YusurService>,
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

fn same_object(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    name(a) == name(b) && namespace(a) == namespace(b)
}

/// Whether `a` came first: older creation time, then namespace/name. An object without a
/// creation time (not yet stored) is newer than any stored one.
fn precedes(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let key = |m: &ObjectMeta| {
        (
            m.creation_timestamp.is_none(),
            m.creation_timestamp.clone(),
            namespace(m).to_owned(),
            name(m).to_owned(),
        )
    };
    key(a) < key(b)
}

/// Whether `other`, claiming an address that `this` asks for, keeps it against `this`: a
/// holder (the address in its status) beats an object that only asks for it; between two
/// objects that both hold it or both only ask, the older one wins. A total order, so of
/// two claimants exactly one wins, whichever is validated.
fn wins(other: &ObjectMeta, other_holds: bool, this: &ObjectMeta, this_holds: bool) -> bool {
    match (other_holds, this_holds) {
        (true, false) => true,
        (false, true) => false,
        _ => precedes(other, this),
    }
}

/// Whether the object being validated holds the address: by its own status, or by the
/// status of its version in the snapshot (the controller puts what it holds there, and
/// may validate the object as read, without a status).
fn holds_here<T>(
    this: &T,
    claimants: Option<&Vec<&T>>,
    meta: impl Fn(&T) -> &ObjectMeta,
    holds: impl Fn(&T) -> bool,
) -> bool {
    holds(this)
        || claimants
            .into_iter()
            .flatten()
            .any(|o| holds(o) && same_object(meta(o), meta(this)))
}

fn qualified(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", name(meta)),
        None => name(meta).to_owned(),
    }
}

fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

impl<'a> Snapshot<'a> {
    fn index(&self) -> &ClaimIndex<'a> {
        self.claims.0.get_or_init(|| {
            let mut ix = ClaimIndex::default();
            for &s in &self.services {
                ix.services
                    .entry((namespace(&s.metadata), name(&s.metadata)))
                    .or_insert(s);
                let status = s.status.as_ref();
                if let Some(vpc) = self.vpc_of_service(s) {
                    let vpc = name(&vpc.metadata);
                    let mut ips: Vec<IpAddr> = s.spec.cluster_ips.clone();
                    ips.extend(status.iter().flat_map(|st| st.cluster_ips.iter().copied()));
                    ips.sort();
                    ips.dedup();
                    for ip in ips {
                        ix.cluster_ips.entry((vpc, ip)).or_default().push(s);
                    }
                }
                let asked = s.spec.eip.as_ref().and_then(|e| e.address);
                let held = status.and_then(|st| st.eip);
                for ip in asked.into_iter().chain(held.filter(|h| Some(*h) != asked)) {
                    ix.eips.entry(ip).or_default().push(s);
                }
            }
            for &v in &self.vnic_ips {
                let mut ips: Vec<IpAddr> = v.spec.ips.clone();
                ips.extend(v.status.iter().flat_map(|st| st.ips.iter().copied()));
                ips.sort();
                ips.dedup();
                for ip in ips {
                    ix.vnic_ips
                        .entry((v.spec.subnet.as_str(), ip))
                        .or_default()
                        .push(v);
                }
            }
            ix
        })
    }

    /// The service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a YusurService> {
        self.index().services.get(&(namespace, name)).copied()
    }

    /// The VPC named `vpc`.
    pub fn vpc(&self, vpc: &str) -> Option<&'a Vpc> {
        self.vpcs.iter().copied().find(|v| name(&v.metadata) == vpc)
    }

    /// The subnet named `subnet`.
    pub fn subnet(&self, subnet: &str) -> Option<&'a Subnet> {
        self.subnets
            .iter()
            .copied()
            .find(|s| name(&s.metadata) == subnet)
    }

    /// The EIP gateway named `gateway`.
    pub fn gateway(&self, gateway: &str) -> Option<&'a EipGateway> {
        self.gateways
            .iter()
            .copied()
            .find(|g| name(&g.metadata) == gateway)
    }

    /// Subnets of `vpc`.
    pub fn subnets_of(&self, vpc: &str) -> impl Iterator<Item = &'a Subnet> + '_ {
        let vpc = vpc.to_owned();
        self.subnets
            .iter()
            .copied()
            .filter(move |s| s.spec.vpc == vpc)
    }

    /// The VPC a namespace belongs to: the VPC listing it (the first by name if several do,
    /// which the VPC validator reports), else the default VPC.
    pub fn vpc_of_namespace(&self, ns: &str) -> Option<&'a Vpc> {
        let mut listing: Vec<&Vpc> = self
            .vpcs
            .iter()
            .copied()
            .filter(|v| v.spec.namespaces.iter().any(|n| n == ns))
            .collect();
        listing.sort_by(|a, b| name(&a.metadata).cmp(name(&b.metadata)));
        listing
            .first()
            .copied()
            .or_else(|| self.vpcs.iter().copied().find(|v| v.spec.default))
    }

    /// The VPC a service is (or would be) placed in.
    pub fn vpc_of_service(&self, svc: &YusurService) -> Option<&'a Vpc> {
        match &svc.spec.vpc {
            Some(vpc) => self.vpc(vpc),
            None => self.vpc_of_namespace(namespace(&svc.metadata)),
        }
    }

    /// Namespaces a selector matches (labels as given in the snapshot).
    fn namespaces_matching(&self, selector: &LabelSelector) -> Vec<&'a str> {
        self.namespaces
            .iter()
            .filter(|(_, labels)| selector_matches(selector, labels))
            .map(|(ns, _)| *ns)
            .collect()
    }
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions, all ANDed).
/// An unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Checks that a CIDR has no host bits set.
fn check_network_address(errors: &mut FieldErrors, path: &str, net: &IpNet) {
    if net.trunc() != *net {
        errors.push(
            path,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        );
    }
}

/// Checks that a list holds at most one entry per family.
fn check_one_per_family<T>(
    errors: &mut FieldErrors,
    path: &str,
    items: &[T],
    ip: impl Fn(&T) -> IpAddr,
) {
    for (i, item) in items.iter().enumerate() {
        let fam = family(&ip(item));
        if items[..i].iter().any(|o| family(&ip(o)) == fam) {
            errors.push(
                format!("{path}[{i}]"),
                format!("a second {fam} entry; at most one per family"),
            );
        }
    }
}

/// Validates a VPC.
pub fn vpc(vpc: &Vpc, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let spec = &vpc.spec;
    for (i, cidr) in spec.service_cidrs.iter().enumerate() {
        check_network_address(&mut errors, &format!("spec.serviceCIDRs[{i}]"), cidr);
    }
    check_one_per_family(&mut errors, "spec.serviceCIDRs", &spec.service_cidrs, |c| {
        c.addr()
    });
    if let Some(join) = &spec.join_cidr {
        check_network_address(&mut errors, "spec.joinCIDR", join);
        if let Some(s) = spec.service_cidrs.iter().find(|s| cidrs_overlap(s, join)) {
            errors.push("spec.joinCIDR", format!("{join} overlaps service CIDR {s}"));
        }
    }
    for other in snap
        .vpcs
        .iter()
        .filter(|o| !same_object(&o.metadata, &vpc.metadata))
    {
        for (i, ns) in spec.namespaces.iter().enumerate() {
            if other.spec.namespaces.contains(ns) {
                errors.push(
                    format!("spec.namespaces[{i}]"),
                    format!(
                        "namespace {ns:?} is also bound to VPC {:?}",
                        name(&other.metadata)
                    ),
                );
            }
        }
        if spec.default && other.spec.default {
            errors.push(
                "spec.default",
                format!(
                    "VPC {:?} is the default VPC already; only one may be",
                    name(&other.metadata)
                ),
            );
        }
    }
    errors.into_result()
}

/// Validates a subnet.
pub fn subnet(subnet: &Subnet, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let spec = &subnet.spec;
    let vpc = snap.vpc(&spec.vpc);
    if vpc.is_none() {
        errors.push("spec.vpc", format!("VPC {:?} not found", spec.vpc));
    }
    for (i, block) in spec.cidr_blocks.iter().enumerate() {
        let path = format!("spec.cidrBlocks[{i}]");
        check_network_address(&mut errors, &path, block);
        if let Some(vpc) = vpc {
            for s in vpc.spec.service_cidrs.iter().chain(&vpc.spec.join_cidr) {
                if cidrs_overlap(block, s) {
                    errors.push(
                        &path,
                        format!(
                            "{block} overlaps {s}, a service or join CIDR of VPC {:?}",
                            spec.vpc
                        ),
                    );
                }
            }
        }
        for other in snap
            .subnets_of(&spec.vpc)
            .filter(|o| !same_object(&o.metadata, &subnet.metadata))
        {
            for o in other
                .spec
                .cidr_blocks
                .iter()
                .filter(|o| cidrs_overlap(block, o))
            {
                errors.push(
                    &path,
                    format!(
                        "{block} overlaps {o} of subnet {:?} in VPC {:?}",
                        name(&other.metadata),
                        spec.vpc
                    ),
                );
            }
        }
    }
    check_one_per_family(&mut errors, "spec.cidrBlocks", &spec.cidr_blocks, |c| {
        c.addr()
    });
    check_one_per_family(&mut errors, "spec.gateways", &spec.gateways, |g| *g);
    for (i, gw) in spec.gateways.iter().enumerate() {
        let path = format!("spec.gateways[{i}]");
        match spec.cidr_blocks.iter().find(|b| b.contains(gw)) {
            None => errors.push(
                path,
                format!(
                    "{gw} is outside the cidrBlocks ({})",
                    list(&spec.cidr_blocks)
                ),
            ),
            Some(b) if *gw == b.network() || (gw.is_ipv4() && *gw == b.broadcast()) => errors.push(
                path,
                format!("{gw} is the network or broadcast address of {b}"),
            ),
            Some(_) => {}
        }
    }
    for (i, range) in spec.exclude_ips.iter().enumerate() {
        if !spec.cidr_blocks.iter().any(|b| range.within(b)) {
            errors.push(
                format!("spec.excludeIPs[{i}]"),
                format!(
                    "{range} is outside the cidrBlocks ({})",
                    list(&spec.cidr_blocks)
                ),
            );
        }
    }
    for (i, ns) in spec.namespaces.iter().enumerate() {
        match snap.vpc_of_namespace(ns) {
            Some(v) if name(&v.metadata) == spec.vpc => {}
            Some(v) => errors.push(
                format!("spec.namespaces[{i}]"),
                format!(
                    "namespace {ns:?} belongs to VPC {:?}, not {:?}",
                    name(&v.metadata),
                    spec.vpc
                ),
            ),
            None => errors.push(
                format!("spec.namespaces[{i}]"),
                format!("namespace {ns:?} is bound to no VPC and there is no default VPC"),
            ),
        }
    }
    errors.into_result()
}

/// Validates an EIP gateway.
pub fn eip_gateway(gw: &EipGateway, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let spec = &gw.spec;
    let ext = &spec.external_network;
    check_network_address(&mut errors, "spec.externalNetwork.cidr", &ext.cidr);
    for (field, ip) in [("gateway", ext.gateway), ("address", ext.address)] {
        if !ext.cidr.contains(&ip) {
            errors.push(
                format!("spec.externalNetwork.{field}"),
                format!("{ip} is outside the external network {}", ext.cidr),
            );
        }
    }
    if ext.address == ext.gateway {
        errors.push(
            "spec.externalNetwork.address",
            "must differ from the gateway",
        );
    }
    for (i, range) in spec.pool.iter().enumerate() {
        let path = format!("spec.pool[{i}]");
        for (j, earlier) in spec.pool[..i].iter().enumerate() {
            if range.overlaps(earlier) {
                errors.push(&path, format!("{range} overlaps spec.pool[{j}] {earlier}"));
            }
        }
        for (what, ip) in [("address", ext.address), ("gateway", ext.gateway)] {
            if range.contains(ip) {
                errors.push(
                    &path,
                    format!("{range} contains the external network's {what} {ip}"),
                );
            }
        }
        for other in snap
            .gateways
            .iter()
            .filter(|o| !same_object(&o.metadata, &gw.metadata))
        {
            for o in other.spec.pool.iter().filter(|o| range.overlaps(o)) {
                errors.push(
                    &path,
                    format!(
                        "{range} overlaps {o} in the pool of EipGateway {:?}",
                        name(&other.metadata)
                    ),
                );
            }
        }
    }
    for (i, c) in spec.gateway_chassis.iter().enumerate() {
        let earlier = &spec.gateway_chassis[..i];
        if earlier.iter().any(|e| e.name == c.name) {
            errors.push(
                format!("spec.gatewayChassis[{i}].name"),
                format!("duplicate chassis {:?}", c.name),
            );
        }
        if earlier.iter().any(|e| e.priority == c.priority) {
            errors.push(
                format!("spec.gatewayChassis[{i}].priority"),
                format!("duplicate priority {}", c.priority),
            );
        }
    }
    for (i, v) in spec.allowed_vpcs.iter().enumerate() {
        if snap.vpc(v).is_none() {
            errors.push(
                format!("spec.allowedVPCs[{i}]"),
                format!("VPC {v:?} not found"),
            );
        }
    }
    errors.into_result()
}

/// Validates a VNicIP.
pub fn vnic_ip(vnic: &VNicIP, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let spec = &vnic.spec;
    check_one_per_family(&mut errors, "spec.ips", &spec.ips, |ip| *ip);
    let Some(subnet) = snap.subnet(&spec.subnet) else {
        errors.push("spec.subnet", format!("subnet {:?} not found", spec.subnet));
        return errors.into_result();
    };
    for (i, ip) in spec.ips.iter().enumerate() {
        let path = format!("spec.ips[{i}]");
        let Some(block) = subnet.spec.cidr_blocks.iter().find(|b| b.contains(ip)) else {
            errors.push(
                path,
                format!(
                    "{ip} is outside the cidrBlocks of subnet {:?} ({})",
                    spec.subnet,
                    list(&subnet.spec.cidr_blocks)
                ),
            );
            continue;
        };
        if *ip == block.network() || (ip.is_ipv4() && *ip == block.broadcast()) {
            errors.push(
                &path,
                format!("{ip} is the network or broadcast address of {block}"),
            );
        } else if subnet.spec.gateway_for(block) == Some(*ip) {
            errors.push(
                &path,
                format!("{ip} is the gateway of subnet {:?}", spec.subnet),
            );
        } else if let Some(r) = subnet.spec.exclude_ips.iter().find(|r| r.contains(*ip)) {
            errors.push(
                &path,
                format!("{ip} is excluded by subnet {:?} ({r})", spec.subnet),
            );
        }
        let holds = |v: &VNicIP| v.status.as_ref().is_some_and(|s| s.ips.contains(ip));
        let claimants = snap.index().vnic_ips.get(&(spec.subnet.as_str(), *ip));
        let this_holds = holds_here(vnic, claimants, |v| &v.metadata, holds);
        let holder = claimants.into_iter().flatten().find(|o| {
            !same_object(&o.metadata, &vnic.metadata)
                && wins(&o.metadata, holds(o), &vnic.metadata, this_holds)
        });
        if let Some(o) = holder {
            errors.push(
                &path,
                format!("{ip} is already used by VNicIP {}", qualified(&o.metadata)),
            );
        }
    }
    errors.into_result()
}

/// The per-object rules of a health check (the CEL rules of its schema).
fn check_health_check(errors: &mut FieldErrors, path: &str, hc: &HealthCheck) {
    if hc.interval_millis <= hc.timeout_millis {
        errors.push(
            format!("{path}.intervalMillis"),
            format!(
                "{} must be greater than timeoutMillis ({})",
                hc.interval_millis, hc.timeout_millis
            ),
        );
    }
    let http = matches!(hc.kind, ProbeType::HTTP | ProbeType::HTTPS);
    for (field, set) in [
        ("path", hc.path.is_some()),
        ("host", hc.host.is_some()),
        ("expectedStatus", hc.expected_status.is_some()),
    ] {
        if set && !http {
            errors.push(
                format!("{path}.{field}"),
                "only allowed with type HTTP or HTTPS",
            );
        }
    }
    if let Some(range) = hc.expected_status
        && range.min > range.max
    {
        errors.push(
            format!("{path}.expectedStatus"),
            "min must not be greater than max",
        );
    }
    if hc.kind == ProbeType::ICMP && hc.port.is_some() {
        errors.push(format!("{path}.port"), "not allowed with type ICMP");
    }
    if hc.native {
        if !matches!(hc.kind, ProbeType::TCP | ProbeType::UDP) {
            errors.push(
                format!("{path}.native"),
                "native (OVN) health checks exist only for TCP and UDP",
            );
        }
        if !hc.interval_millis.is_multiple_of(1000) || !hc.timeout_millis.is_multiple_of(1000) {
            errors.push(
                format!("{path}.native"),
                "native (OVN) health checks count in whole seconds: intervalMillis and timeoutMillis must be multiples of 1000",
            );
        }
    }
}

/// Validates a service.
pub fn service(svc: &YusurService, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let spec = &svc.spec;
    let ns = namespace(&svc.metadata);
    let has = |s: Scenario| spec.scenarios.contains(&s);

    // Per-object rules (also CEL rules of the schema).
    for (i, p) in spec.ports.iter().enumerate() {
        let earlier = &spec.ports[..i];
        if earlier.iter().any(|e| e.name == p.name) {
            errors.push(
                format!("spec.ports[{i}].name"),
                format!("duplicate port name {:?}", p.name),
            );
        }
        if earlier
            .iter()
            .any(|e| e.port == p.port && e.protocol == p.protocol)
        {
            errors.push(
                format!("spec.ports[{i}]"),
                format!("duplicate port {}/{:?}", p.port, p.protocol),
            );
        }
        if let Some(IntOrString::Int(t)) = p.target_port
            && !(1..=65535).contains(&t)
        {
            errors.push(
                format!("spec.ports[{i}].targetPort"),
                format!("{t} is not a port number 1..65535"),
            );
        }
        if let Some(IntOrString::String(t)) = &p.target_port
            && t.chars().all(|c| c.is_ascii_digit())
        {
            errors.push(
                format!("spec.ports[{i}].targetPort"),
                format!("{t:?} is a string; write a port number without quotes"),
            );
        } else if let Some(IntOrString::String(t)) = &p.target_port
            && !spec.static_backends.is_empty()
        {
            errors.push(
                format!("spec.ports[{i}].targetPort"),
                format!("named port {t:?} cannot be resolved for staticBackends; use a number"),
            );
        }
    }
    for (i, s) in spec.scenarios.iter().enumerate() {
        if spec.scenarios[..i].contains(s) {
            errors.push(
                format!("spec.scenarios[{i}]"),
                format!("duplicate scenario {s}"),
            );
        }
    }
    if spec.eip.is_some() && !has(Scenario::Eip) {
        errors.push("spec.eip", "eip is only allowed with the EIP scenario");
    }
    if spec.eip.is_none() && has(Scenario::Eip) {
        errors.push(
            "spec.eip",
            "the EIP scenario needs eip (at least eip.gateway)",
        );
    }
    if spec.cross_vpc.is_some() && !has(Scenario::CrossVpc) {
        errors.push(
            "spec.crossVpc",
            "crossVpc is only allowed with the CrossVPC scenario",
        );
    }
    if spec.cross_vpc.is_none() && has(Scenario::CrossVpc) {
        errors.push(
            "spec.crossVpc",
            "the CrossVPC scenario needs crossVpc.clients",
        );
    }
    check_one_per_family(&mut errors, "spec.clusterIPs", &spec.cluster_ips, |ip| *ip);
    if let Some(families) = &spec.ip_families {
        for (i, ip) in spec.cluster_ips.iter().enumerate() {
            if !families.contains(&IpFamily::of(ip)) {
                errors.push(
                    format!("spec.clusterIPs[{i}]"),
                    format!(
                        "{ip} is {} but ipFamilies is [{}]",
                        family(ip),
                        list(families.iter().map(|f| format!("{f:?}")))
                    ),
                );
            }
        }
    }
    if let Some(aff) = &spec.session_affinity
        && aff.kind == AffinityType::None
        && aff.timeout_seconds.is_some()
    {
        errors.push(
            "spec.sessionAffinity.timeoutSeconds",
            "only allowed with type ClientIP",
        );
    }
    // Kubernetes allows 86400 s; OVN's Load_Balancer options:affinity_timeout stops at 65535.
    if let Some(t) = spec
        .session_affinity
        .as_ref()
        .and_then(|a| a.timeout_seconds)
        .filter(|t| *t > 65_535)
    {
        errors.push(
            "spec.sessionAffinity.timeoutSeconds",
            format!("{t} is above 65535, the longest affinity OVN supports"),
        );
    }
    if let Some(hc) = &spec.health_check {
        check_health_check(&mut errors, "spec.healthCheck", hc);
    }

    // The VPC.
    let vpc = match &spec.vpc {
        Some(v) => {
            let found = snap.vpc(v);
            if found.is_none() {
                errors.push("spec.vpc", format!("VPC {v:?} not found"));
            }
            found
        }
        None => {
            let found = snap.vpc_of_namespace(ns);
            if found.is_none() {
                errors.push(
                    "spec.vpc",
                    format!("not set, and namespace {ns:?} is bound to no VPC and there is no default VPC"),
                );
            }
            found
        }
    };
    let Some(vpc) = vpc else {
        return errors.into_result();
    };
    let vpc_name = name(&vpc.metadata);

    // ClusterIPs.
    let cidrs = &vpc.spec.service_cidrs;
    if let Some(families) = &spec.ip_families {
        for (i, f) in families.iter().enumerate() {
            if !cidrs.iter().any(|c| IpFamily::of(&c.addr()) == *f) {
                errors.push(
                    format!("spec.ipFamilies[{i}]"),
                    format!(
                        "VPC {vpc_name:?} has no {f:?} service CIDR ({})",
                        list(cidrs)
                    ),
                );
            }
        }
    }
    for (i, ip) in spec.cluster_ips.iter().enumerate() {
        let path = format!("spec.clusterIPs[{i}]");
        match cidrs.iter().find(|c| c.contains(ip)) {
            None => errors.push(
                &path,
                format!(
                    "{ip} is outside the service CIDRs of VPC {vpc_name:?} ({})",
                    list(cidrs)
                ),
            ),
            Some(c) if *ip == c.network() || (ip.is_ipv4() && *ip == c.broadcast()) => errors.push(
                &path,
                format!("{ip} is the network or broadcast address of {c}"),
            ),
            Some(_) => {}
        }
        let holds = |s: &YusurService| {
            s.status
                .as_ref()
                .is_some_and(|st| st.cluster_ips.contains(ip))
        };
        // The index lists the claimants of this VPC only: the same address in another VPC
        // is another address.
        let claimants = snap.index().cluster_ips.get(&(vpc_name, *ip));
        let this_holds = holds_here(svc, claimants, |s| &s.metadata, holds);
        let holder = claimants.into_iter().flatten().find(|o| {
            !same_object(&o.metadata, &svc.metadata)
                && wins(&o.metadata, holds(o), &svc.metadata, this_holds)
        });
        if let Some(o) = holder {
            errors.push(
                &path,
                format!(
                    "{ip} is already used by service {} in VPC {vpc_name:?}",
                    qualified(&o.metadata)
                ),
            );
        }
    }

    // EIP.
    if let Some(eip) = &spec.eip {
        match snap.gateway(&eip.gateway) {
            None => errors.push(
                "spec.eip.gateway",
                format!("EipGateway {:?} not found", eip.gateway),
            ),
            Some(gw) => {
                if !gw.spec.allowed_vpcs.is_empty()
                    && !gw.spec.allowed_vpcs.iter().any(|v| v == vpc_name)
                {
                    errors.push(
                        "spec.eip.gateway",
                        format!(
                            "EipGateway {:?} does not allow VPC {vpc_name:?} (allowedVPCs: {})",
                            eip.gateway,
                            list(&gw.spec.allowed_vpcs)
                        ),
                    );
                }
                if let Some(addr) = eip.address {
                    if !gw.spec.pool.iter().any(|r| r.contains(addr)) {
                        errors.push(
                            "spec.eip.address",
                            format!(
                                "{addr} is outside the pool of EipGateway {:?} ({})",
                                eip.gateway,
                                list(&gw.spec.pool)
                            ),
                        );
                    }
                    let holds =
                        |s: &YusurService| s.status.as_ref().and_then(|st| st.eip) == Some(addr);
                    let claimants = snap.index().eips.get(&addr);
                    let this_holds = holds_here(svc, claimants, |s| &s.metadata, holds);
                    let holder = claimants.into_iter().flatten().find(|o| {
                        !same_object(&o.metadata, &svc.metadata)
                            && wins(&o.metadata, holds(o), &svc.metadata, this_holds)
                    });
                    if let Some(o) = holder {
                        errors.push(
                            "spec.eip.address",
                            format!(
                                "{addr} is already used by service {}",
                                qualified(&o.metadata)
                            ),
                        );
                    }
                }
            }
        }
    }

    // Backends outside the service's VPC, and the VPCs a cross-VPC service joins.
    let mut involved: Vec<(String, &str)> = vec![("spec.vpc".to_owned(), vpc_name)];
    for (i, b) in spec.backends.iter().enumerate() {
        // Without a namespaceSelector the backends are in the service's own namespace, which
        // may belong to another VPC than an explicit `spec.vpc`.
        let (path, namespaces) = match &b.namespace_selector {
            Some(sel) => (
                format!("spec.backends[{i}].namespaceSelector"),
                snap.namespaces_matching(sel),
            ),
            None => (format!("spec.backends[{i}]"), vec![ns]),
        };
        for other_ns in namespaces {
            let Some(v) = snap.vpc_of_namespace(other_ns) else {
                continue;
            };
            let v = name(&v.metadata);
            if v != vpc_name {
                if has(Scenario::CrossVpc) {
                    involved.push((path.clone(), v));
                } else {
                    errors.push(
                        &path,
                        format!(
                            "selects namespace {other_ns:?} of VPC {v:?}; backends outside VPC {vpc_name:?} need the CrossVPC scenario"
                        ),
                    );
                }
            }
        }
    }
    for (i, b) in spec.static_backends.iter().enumerate() {
        let path = format!("spec.staticBackends[{i}]");
        let v = b.vpc.as_deref().unwrap_or(vpc_name);
        if snap.vpc(v).is_none() {
            errors.push(format!("{path}.vpc"), format!("VPC {v:?} not found"));
            continue;
        }
        if v != vpc_name {
            if has(Scenario::CrossVpc) {
                involved.push((format!("{path}.vpc"), v));
            } else {
                errors.push(
                    format!("{path}.vpc"),
                    format!("VPC {v:?} is not the service's VPC {vpc_name:?}; backends outside it need the CrossVPC scenario"),
                );
            }
        }
        if !snap
            .subnets_of(v)
            .any(|s| s.spec.cidr_blocks.iter().any(|c| c.contains(&b.address)))
        {
            errors.push(
                format!("{path}.address"),
                format!("{} is in no subnet of VPC {v:?}", b.address),
            );
        }
    }
    if let Some(cross) = &spec.cross_vpc {
        for (i, client) in cross.clients.iter().enumerate() {
            let path = format!("spec.crossVpc.clients[{i}]");
            if client == vpc_name {
                errors.push(path, format!("{client:?} is the service's own VPC"));
            } else if snap.vpc(client).is_none() {
                errors.push(path, format!("VPC {client:?} not found"));
            } else {
                involved.push((path, client.as_str()));
            }
        }
        check_cross_vpc_overlaps(&mut errors, svc, &involved, snap);
    }
    errors.into_result()
}

/// The service gateway routes to every subnet of every VPC that takes part in any cross-VPC
/// service, so all those VPCs must be pairwise free of overlapping subnets.
fn check_cross_vpc_overlaps(
    errors: &mut FieldErrors,
    svc: &YusurService,
    involved: &[(String, &str)],
    snap: &Snapshot<'_>,
) {
    let overlap = |a: &str, b: &str| -> Option<String> {
        for sa in snap.subnets_of(a) {
            for sb in snap.subnets_of(b) {
                for ca in &sa.spec.cidr_blocks {
                    if let Some(cb) = sb.spec.cidr_blocks.iter().find(|cb| cidrs_overlap(ca, cb)) {
                        return Some(format!(
                            "subnet {:?} {ca} overlaps subnet {:?} {cb}",
                            name(&sa.metadata),
                            name(&sb.metadata)
                        ));
                    }
                }
            }
        }
        None
    };
    let mut reported = Vec::new();
    for (i, (path, a)) in involved.iter().enumerate() {
        for (_, b) in &involved[..i] {
            if a == b || reported.contains(&(*a, *b)) {
                continue;
            }
            if let Some(why) = overlap(a, b) {
                reported.push((*a, *b));
                errors.push(
                    path,
                    format!("VPC {a:?} overlaps VPC {b:?} ({why}); one service gateway cannot route to both"),
                );
            }
        }
    }
    for other in snap.services.iter().filter(|o| {
        !same_object(&o.metadata, &svc.metadata) && o.spec.scenarios.contains(&Scenario::CrossVpc)
    }) {
        let Some(other_vpc) = snap.vpc_of_service(other) else {
            continue;
        };
        let other_vpcs = std::iter::once(name(&other_vpc.metadata)).chain(
            other
                .spec
                .cross_vpc
                .iter()
                .flat_map(|c| c.clients.iter().map(String::as_str)),
        );
        for b in other_vpcs {
            for (path, a) in involved {
                if *a == b || reported.contains(&(*a, b)) {
                    continue;
                }
                if let Some(why) = overlap(a, b) {
                    reported.push((*a, b));
                    errors.push(
                        path,
                        format!(
                            "VPC {a:?} overlaps VPC {b:?} of cross-VPC service {} ({why}); one service gateway cannot route to both",
                            qualified(&other.metadata)
                        ),
                    );
                }
            }
        }
    }
}

/// Validates a network probe.
pub fn network_probe(probe: &NetworkProbe, snap: &Snapshot<'_>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let ns = namespace(&probe.metadata);
    if snap.service(ns, &probe.spec.service).is_none() {
        errors.push(
            "spec.service",
            format!("YusurService {ns}/{} not found", probe.spec.service),
        );
    }
    check_health_check(&mut errors, "spec.probe", &probe.spec.probe);
    if probe.spec.probe.kind == ProbeType::ICMP && probe.spec.backend.port.is_some() {
        errors.push("spec.backend.port", "not allowed with an ICMP probe");
    }
    errors.into_result()
}
