//! Deterministic row names and the ownership keys every row we create carries.
//!
//! OVN_Northbound has no unique index on `Load_Balancer.name` or `Logical_Switch.name`,
//! so `_uuid` can't be our identity across restarts and names alone can't prove
//! ownership: every row we write carries `ycloud.io/owner`, `ycloud.io/kind` and
//! `ycloud.io/name` in `external_ids`, and every lookup is scoped by them.

use std::collections::BTreeMap;

/// `external_ids` key: always [`OWNER_VALUE`] on rows ycloud owns.
pub const OWNER_KEY: &str = "ycloud.io/owner";
/// The value of [`OWNER_KEY`].
pub const OWNER_VALUE: &str = "ycloud";
/// `external_ids` key: what made this row (`service`, `vpc`, `subnet`, …).
pub const KIND_KEY: &str = "ycloud.io/kind";
/// `external_ids` key: the owning object, `namespace/name` or `name` when cluster-scoped.
pub const NAME_KEY: &str = "ycloud.io/name";
/// `external_ids` key: which of an owner's rows this is (e.g. `tcp/cluster`).
pub const ROLE_KEY: &str = "ycloud.io/role";

/// The kind of object that owns a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKind {
    Service,
    Vpc,
    Subnet,
    EipGateway,
    ServiceGateway,
}

impl OwnerKind {
    /// The value stored under [`KIND_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Service => "service",
            OwnerKind::Vpc => "vpc",
            OwnerKind::Subnet => "subnet",
            OwnerKind::EipGateway => "eip-gateway",
            OwnerKind::ServiceGateway => "service-gateway",
        }
    }
}

/// The ownership keys of one row.
pub fn owner_ids(kind: OwnerKind, owner: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (OWNER_KEY.to_owned(), OWNER_VALUE.to_owned()),
        (KIND_KEY.to_owned(), kind.as_str().to_owned()),
        (NAME_KEY.to_owned(), owner.to_owned()),
        (ROLE_KEY.to_owned(), role.to_owned()),
    ])
}

/// True when `external_ids` mark a row as ours.
pub fn is_owned(external_ids: &BTreeMap<String, String>) -> bool {
    external_ids.get(OWNER_KEY).map(String::as_str) == Some(OWNER_VALUE)
}

/// The name of a service's load balancer for one protocol and placement:
/// `ysvc:<namespace>/<name>:<protocol>:<placement>`. Readable in `ovn-nbctl lb-list`,
/// unique per (service, protocol, placement), stable across restarts.
pub fn service_lb(namespace: &str, name: &str, protocol: &str, placement: &str) -> String {
    format!("ysvc:{namespace}/{name}:{protocol}:{placement}")
}

/// The load-balancer group of a VPC: every switch of the VPC carries it.
pub fn vpc_lb_group(vpc: &str) -> String {
    format!("yc-lbg-{vpc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_carry_all_four_keys_and_are_recognised_as_owned() {
        let ids = owner_ids(OwnerKind::Service, "shop/web", "tcp:cluster");
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[KIND_KEY], "service");
        assert!(is_owned(&ids));
        assert!(!is_owned(&BTreeMap::from([(
            OWNER_KEY.to_owned(),
            "kube-ovn".to_owned()
        )])));
    }

    #[test]
    fn lb_names_are_stable_and_distinct_per_protocol_and_placement() {
        let a = service_lb("shop", "web", "tcp", "cluster");
        assert_eq!(a, "ysvc:shop/web:tcp:cluster");
        assert_ne!(a, service_lb("shop", "web", "udp", "cluster"));
        assert_ne!(a, service_lb("shop", "web", "tcp", "eip"));
    }
}
