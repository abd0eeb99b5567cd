//! Address management: an address per family and a MAC for every pod, VNicIP and node
//! management port, out of the pool (a `Subnet`, or a VPC's join network) it belongs to.
//!
//! The state is rebuilt after a restart from what was handed out before (the LSP rows in
//! NB and fixed addresses in annotations), through [`Ipam::restore`], before anything new
//! is allocated: an address is never handed out twice. It is owned by the one reconcile
//! loop, so it needs no locking.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ycloud_crds::IpRange;

use crate::compiler::network::{gateway, mac_for};

/// Why an address or MAC can't be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("pool {pool} does not exist")]
    UnknownPool { pool: String },
    #[error("pool {pool}: no free {family} address in {cidr}")]
    Exhausted {
        pool: String,
        family: &'static str,
        cidr: IpNet,
    },
    #[error("pool {pool}: {ip} is outside {cidrs}")]
    OutsidePool {
        pool: String,
        ip: IpAddr,
        cidrs: String,
    },
    #[error("pool {pool}: {ip} is reserved (a gateway, the network address or in excludeIPs)")]
    Reserved { pool: String, ip: IpAddr },
    #[error("{ip} is already used by {holder}")]
    AddressTaken { ip: IpAddr, holder: String },
    #[error("MAC {mac} is already used by {holder}")]
    MacTaken { mac: String, holder: String },
    #[error("{mac:?} is not a MAC address (xx:xx:xx:xx:xx:xx)")]
    BadMac { mac: String },
    #[error("pool {pool}: two fixed {family} addresses asked for")]
    TwoOfOneFamily { pool: String, family: &'static str },
}

/// One pool: its CIDRs (one per family) and the addresses nobody may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub cidrs: Vec<IpNet>,
    /// Gateways and anything else held back.
    pub reserved: BTreeSet<IpAddr>,
    /// `excludeIPs`.
    pub excluded: Vec<IpRange>,
}

impl PoolSpec {
    /// A pool whose gateway is the first host of each CIDR (what the compiler programs on
    /// the router) plus `extra_gateways` (a Subnet's own `gateways`, held back as well).
    pub fn with_gateways(
        cidrs: Vec<IpNet>,
        extra_gateways: &[IpAddr],
        excluded: Vec<IpRange>,
    ) -> Self {
        let mut reserved: BTreeSet<IpAddr> = cidrs.iter().filter_map(|c| gateway(*c)).collect();
        reserved.extend(extra_gateways.iter().copied());
        PoolSpec {
            cidrs,
            reserved,
            excluded,
        }
    }

    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reserved.contains(&ip)
            || self.excluded.iter().any(|r| r.contains(ip))
            || self.cidrs.iter().any(|c| c.network() == ip)
            || self
                .cidrs
                .iter()
                .any(|c| matches!(c, IpNet::V4(_)) && c.broadcast() == ip)
    }

    /// How many addresses of the pool can be handed out at most (saturating; IPv6 counts
    /// as `u64::MAX`).
    pub fn capacity(&self) -> u64 {
        let mut n: u64 = 0;
        for c in &self.cidrs {
            let host_bits = u32::from(c.max_prefix_len() - c.prefix_len());
            let size = if host_bits >= 63 {
                u64::MAX
            } else {
                1u64 << host_bits
            };
            let taken =
                self.reserved
                    .iter()
                    .filter(|ip| c.contains(*ip))
                    .count()
                    .saturating_add(if c.addr().is_ipv4() { 2 } else { 1 }) as u64;
            n = n.saturating_add(size.saturating_sub(taken));
        }
        n
    }
}

/// What an owner holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pool: String,
    /// One per family of the pool, IPv4 first.
    pub ips: Vec<IpAddr>,
    pub mac: String,
}

/// What an owner asks for: nothing fixed, or fixed addresses and/or MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub ips: Vec<IpAddr>,
    pub mac: Option<String>,
}

/// The allocator.
#[derive(Debug, Default, Clone)]
pub struct Ipam {
    pools: BTreeMap<String, PoolSpec>,
    /// Owner → what it holds.
    owners: BTreeMap<String, Allocation>,
    /// Address → owner.
    ips: BTreeMap<IpAddr, String>,
    /// MAC (lower case) → owner.
    macs: BTreeMap<String, String>,
    /// Per pool and CIDR: every host below this address is reserved or held, so the search
    /// for the lowest free host starts here. Without it each allocation scanned from the
    /// CIDR's first host: a cold start of 8,000 pods in one subnet took 2.2 s in IPAM alone
    /// (32 million lookups), 80,000 would take minutes. A release lowers it, a changed
    /// pool drops it; the address handed out is the same as the scan's.
    floors: BTreeMap<(String, IpNet), IpAddr>,
}

/// The hosts of `cidr` from `from` on; all of them when `from` is `None` or outside it.
pub(crate) fn hosts_from(cidr: &IpNet, from: Option<IpAddr>) -> ipnet::IpAddrRange {
    let all = cidr.hosts();
    match (from, all.clone().next_back()) {
        (Some(IpAddr::V4(f)), Some(IpAddr::V4(l))) if cidr.contains(&IpAddr::V4(f)) => {
            ipnet::Ipv4AddrRange::new(f, l).into()
        }
        (Some(IpAddr::V6(f)), Some(IpAddr::V6(l))) if cidr.contains(&IpAddr::V6(f)) => {
            ipnet::Ipv6AddrRange::new(f, l).into()
        }
        _ => all,
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Parses and normalises a MAC (`0A-58-…` and `0a:58:…` both give `0a:58:…`).
pub fn parse_mac(mac: &str) -> Result<String, IpamError> {
    let bad = || IpamError::BadMac {
        mac: mac.to_owned(),
    };
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(6);
    for p in parts {
        if p.len() != 2 {
            return Err(bad());
        }
        let b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        out.push(format!("{b:02x}"));
    }
    Ok(out.join(":"))
}

impl Ipam {
    pub fn new() -> Self {
        Self::default()
    }

    /// Defines or redefines a pool. Allocations already made in it are kept even if they
    /// are no longer inside it (they are the owner's until released).
    pub fn set_pool(&mut self, name: &str, spec: PoolSpec) {
        if self.pools.get(name) != Some(&spec) {
            // Fewer reserved addresses or other CIDRs: hosts below a floor may be free now.
            self.floors.retain(|(pool, _), _| pool != name);
        }
        self.pools.insert(name.to_owned(), spec);
    }

    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.get(name)
    }

    /// Removes pools not in `keep`.
    pub fn retain_pools(&mut self, keep: &BTreeSet<String>) {
        self.pools.retain(|p, _| keep.contains(p));
        self.floors.retain(|(p, _), _| keep.contains(p));
    }

    /// What `owner` holds.
    pub fn get(&self, owner: &str) -> Option<&Allocation> {
        self.owners.get(owner)
    }

    /// Every owner holding something.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.owners.keys().map(String::as_str)
    }

    /// Addresses used in `pool`.
    pub fn used(&self, pool: &str) -> u64 {
        self.owners
            .values()
            .filter(|a| a.pool == pool)
            .map(|a| a.ips.len() as u64)
            .sum()
    }

    /// Records an allocation made before (read back from NB or an annotation), without the
    /// pool checks: it exists, so nobody else may get it. Refused when another owner holds
    /// one of its addresses or its MAC.
    pub fn restore(&mut self, owner: &str, alloc: Allocation) -> Result<(), IpamError> {
        for ip in &alloc.ips {
            if let Some(h) = self.ips.get(ip).filter(|h| *h != owner) {
                return Err(IpamError::AddressTaken {
                    ip: *ip,
                    holder: h.clone(),
                });
            }
        }
        let mac = parse_mac(&alloc.mac)?;
        if let Some(h) = self.macs.get(&mac).filter(|h| *h != owner) {
            return Err(IpamError::MacTaken {
                mac,
                holder: h.clone(),
            });
        }
        self.release(owner);
        for ip in &alloc.ips {
            self.ips.insert(*ip, owner.to_owned());
        }
        self.macs.insert(mac.clone(), owner.to_owned());
        self.owners
            .insert(owner.to_owned(), Allocation { mac, ..alloc });
        Ok(())
    }

    /// Frees what `owner` holds.
    pub fn release(&mut self, owner: &str) -> Option<Allocation> {
        let a = self.owners.remove(owner)?;
        for ip in &a.ips {
            if self.ips.get(ip).is_some_and(|h| h == owner) {
                self.ips.remove(ip);
                // Free again for every pool whose CIDR holds it (pools of different VPCs
                // may overlap).
                for ((_, cidr), floor) in self.floors.iter_mut() {
                    if cidr.contains(ip) && *ip < *floor {
                        *floor = *ip;
                    }
                }
            }
        }
        if self.macs.get(&a.mac).is_some_and(|h| h == owner) {
            self.macs.remove(&a.mac);
        }
        Some(a)
    }

    /// An address per family of `pool` and a MAC for `owner`. What the owner already holds
    /// is kept when it still satisfies the request; otherwise it is released and a new
    /// allocation made (fixed addresses first, then the lowest free host per family). On
    /// error the owner keeps what it had.
    pub fn allocate(
        &mut self,
        owner: &str,
        pool: &str,
        req: &Request,
    ) -> Result<Allocation, IpamError> {
        let spec = self
            .pools
            .get(pool)
            .ok_or_else(|| IpamError::UnknownPool {
                pool: pool.to_owned(),
            })?
            .clone();
        let want_mac = req.mac.as_deref().map(parse_mac).transpose()?;
        if let Some(have) = self.owners.get(owner)
            && have.pool == pool
            && (req.ips.is_empty() || same_set(&have.ips, &req.ips))
            && want_mac.as_ref().is_none_or(|m| *m == have.mac)
            && have.ips.len() == spec.cidrs.len()
            && have
                .ips
                .iter()
                .all(|ip| spec.cidrs.iter().any(|c| c.contains(ip)))
        {
            return Ok(have.clone());
        }
        let holder = |ip: &IpAddr| self.ips.get(ip).filter(|h| *h != owner).cloned();
        let mut ips = Vec::new();
        // The CIDRs whose lowest free host this allocation searched for, and that host.
        let mut found = Vec::new();
        for (i, ip) in req.ips.iter().enumerate() {
            if req.ips[..i].iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                return Err(IpamError::TwoOfOneFamily {
                    pool: pool.to_owned(),
                    family: family(ip),
                });
            }
        }
        let mut cidrs = spec.cidrs.clone();
        // IPv4 first, as the annotation lists them.
        cidrs.sort_by_key(|c| !c.addr().is_ipv4());
        for ip in &req.ips {
            if !cidrs.iter().any(|c| c.contains(ip)) {
                return Err(IpamError::OutsidePool {
                    pool: pool.to_owned(),
                    ip: *ip,
                    cidrs: cidrs
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        for cidr in &cidrs {
            if let Some(ip) = req.ips.iter().find(|ip| cidr.contains(*ip)) {
                if spec.is_reserved(*ip) {
                    return Err(IpamError::Reserved {
                        pool: pool.to_owned(),
                        ip: *ip,
                    });
                }
                if let Some(h) = holder(ip) {
                    return Err(IpamError::AddressTaken { ip: *ip, holder: h });
                }
                ips.push(*ip);
                continue;
            }
            // Keep the address the owner has in this family when it is still valid.
            let kept = self.owners.get(owner).and_then(|a| {
                a.ips
                    .iter()
                    .find(|ip| cidr.contains(*ip) && !spec.is_reserved(**ip))
                    .copied()
            });
            let ip = match kept {
                Some(ip) => ip,
                None => {
                    let floor = self.floors.get(&(pool.to_owned(), *cidr)).copied();
                    let ip = hosts_from(cidr, floor)
                        .find(|h| !spec.is_reserved(*h) && holder(h).is_none())
                        .ok_or_else(|| IpamError::Exhausted {
                            pool: pool.to_owned(),
                            family: family(&cidr.addr()),
                            cidr: *cidr,
                        })?;
                    found.push((*cidr, ip));
                    ip
                }
            };
            ips.push(ip);
        }
        let mac = match want_mac {
            Some(m) => m,
            None => {
                // The MAC follows the address (as OVN-Kubernetes does), so it is unique when
                // the address is; a fixed MAC elsewhere that collides is the rare exception.
                let derived = ips.first().map(|ip| mac_for(*ip)).unwrap_or_default();
                match self.owners.get(owner) {
                    Some(a) if a.pool == pool && a.ips == ips => a.mac.clone(),
                    _ => derived,
                }
            }
        };
        if let Some(h) = self.macs.get(&mac).filter(|h| *h != owner) {
            return Err(IpamError::MacTaken {
                mac,
                holder: h.clone(),
            });
        }
        let alloc = Allocation {
            pool: pool.to_owned(),
            ips,
            mac,
        };
        self.release(owner);
        for ip in &alloc.ips {
            self.ips.insert(*ip, owner.to_owned());
        }
        // Every host below a found one was reserved or held by another owner (the owner's
        // own, released above, lowered the floor again when below it).
        for (cidr, ip) in found {
            let floor = self.floors.entry((pool.to_owned(), cidr)).or_insert(ip);
            *floor = (*floor).max(ip);
        }
        self.macs.insert(alloc.mac.clone(), owner.to_owned());
        self.owners.insert(owner.to_owned(), alloc.clone());
        Ok(alloc)
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let a: BTreeSet<_> = a.iter().collect();
    let b: BTreeSet<_> = b.iter().collect();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// A request for one fixed address.
    fn at(addr: &str) -> Request {
        Request {
            ips: vec![ip(addr)],
            mac: None,
        }
    }

    fn pool_29() -> PoolSpec {
        // 10.0.0.0/29: hosts .1-.6; .1 is the gateway.
        PoolSpec::with_gateways(vec!["10.0.0.0/29".parse().expect("cidr")], &[], vec![])
    }

    fn ipam() -> Ipam {
        let mut i = Ipam::new();
        i.set_pool("p", pool_29());
        i.set_pool(
            "dual",
            PoolSpec::with_gateways(
                vec![
                    "fd00:1::/64".parse().expect("cidr"),
                    "10.1.0.0/24".parse().expect("cidr"),
                ],
                &[ip("10.1.0.254")],
                vec!["10.1.0.2..10.1.0.9".parse().expect("range")],
            ),
        );
        i
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_skipping_the_gateway() {
        let mut i = ipam();
        let a = i.allocate("pod:a", "p", &Request::default()).expect("a");
        let b = i.allocate("pod:b", "p", &Request::default()).expect("b");
        assert_eq!(a.ips, vec![ip("10.0.0.2")]);
        assert_eq!(b.ips, vec![ip("10.0.0.3")]);
        assert_eq!(a.mac, "0a:58:0a:00:00:02");
    }

    /// The search starts at a floor (`Ipam::floors`), and hands out what a scan from the
    /// first host would: a released address below it, an address a changed pool frees, an
    /// address an overlapping pool's owner gives back.
    #[test]
    fn the_lowest_free_host_is_handed_out_after_releases_changed_pools_and_overlaps() {
        let net: IpNet = "10.2.0.0/24".parse().expect("cidr");
        let mut i = Ipam::new();
        i.set_pool("a", PoolSpec::with_gateways(vec![net], &[], vec![]));
        let got = |i: &mut Ipam, owner: &str, pool: &str| {
            i.allocate(owner, pool, &Request::default())
                .expect("room")
                .ips[0]
        };
        for n in 2..=9 {
            assert_eq!(
                got(&mut i, &format!("pod:{n}"), "a"),
                ip(&format!("10.2.0.{n}"))
            );
        }
        i.release("pod:5");
        i.release("pod:3");
        assert_eq!(got(&mut i, "pod:x", "a"), ip("10.2.0.3"));
        assert_eq!(got(&mut i, "pod:y", "a"), ip("10.2.0.5"));
        assert_eq!(got(&mut i, "pod:z", "a"), ip("10.2.0.10"));
        // Excluded 11-20 (a changed pool), then not any more.
        let excluded = vec!["10.2.0.11..10.2.0.20".parse().expect("range")];
        i.set_pool("a", PoolSpec::with_gateways(vec![net], &[], excluded));
        assert_eq!(got(&mut i, "pod:w", "a"), ip("10.2.0.21"));
        i.set_pool("a", PoolSpec::with_gateways(vec![net], &[], vec![]));
        assert_eq!(got(&mut i, "pod:v", "a"), ip("10.2.0.11"));
        // Another VPC's pool over the same CIDR: its owner's release frees the address here.
        i.set_pool("b", PoolSpec::with_gateways(vec![net], &[], vec![]));
        assert_eq!(got(&mut i, "vnic:b", "b"), ip("10.2.0.12"));
        assert_eq!(got(&mut i, "pod:u", "a"), ip("10.2.0.13"));
        i.release("vnic:b");
        assert_eq!(got(&mut i, "pod:t", "a"), ip("10.2.0.12"));
        // An owner that moves gives its address back to the search at once.
        let moved = i.allocate("pod:4", "a", &at("10.2.0.200")).expect("fixed");
        assert_eq!(moved.ips, vec![ip("10.2.0.200")]);
        assert_eq!(got(&mut i, "pod:s", "a"), ip("10.2.0.4"));
    }

    /// Many allocations in one big pool are consecutive: each search starts where the last
    /// one ended (before the floor, 8,000 pods in a /12 cost 32 million lookups).
    #[test]
    fn a_big_pool_hands_out_consecutive_hosts() {
        let mut i = Ipam::new();
        i.set_pool(
            "big",
            PoolSpec::with_gateways(vec!["10.64.0.0/12".parse().expect("cidr")], &[], vec![]),
        );
        let mut last = None;
        for n in 0..20_000u32 {
            let a = i
                .allocate(&format!("pod:{n}"), "big", &Request::default())
                .expect("room");
            let IpAddr::V4(v4) = a.ips[0] else {
                panic!("IPv4")
            };
            let v = u32::from(v4);
            if let Some(l) = last {
                assert_eq!(v, l + 1, "pod:{n}");
            }
            last = Some(v);
        }
        assert_eq!(i.used("big"), 20_000);
    }

    #[test]
    fn a_second_allocation_for_the_same_owner_returns_what_it_holds() {
        let mut i = ipam();
        let a = i.allocate("pod:a", "p", &Request::default()).expect("a");
        let again = i.allocate("pod:a", "p", &Request::default()).expect("a");
        assert_eq!(a, again);
        assert_eq!(i.used("p"), 1);
    }

    #[test]
    fn dual_stack_pools_give_one_address_per_family_ipv4_first_and_honour_exclusions() {
        let mut i = ipam();
        let a = i.allocate("pod:a", "dual", &Request::default()).expect("a");
        assert_eq!(a.ips, vec![ip("10.1.0.10"), ip("fd00:1::2")]);
    }

    #[test]
    fn an_exhausted_pool_is_a_clear_error_and_a_release_makes_room() {
        let mut i = ipam();
        for n in 0..5 {
            i.allocate(&format!("pod:{n}"), "p", &Request::default())
                .expect("room");
        }
        let err = i
            .allocate("pod:late", "p", &Request::default())
            .expect_err("full");
        assert_eq!(
            err.to_string(),
            "pool p: no free IPv4 address in 10.0.0.0/29"
        );
        let freed = i.release("pod:2").expect("held");
        let late = i
            .allocate("pod:late", "p", &Request::default())
            .expect("room again");
        assert_eq!(late.ips, freed.ips);
    }

    #[test]
    fn fixed_addresses_are_honoured_and_conflicts_name_the_holder() {
        let mut i = ipam();
        let want = Request {
            ips: vec![ip("10.0.0.5")],
            mac: Some("0A:00:00:00:00:05".into()),
        };
        let a = i.allocate("pod:a", "p", &want).expect("fixed");
        assert_eq!(a.ips, vec![ip("10.0.0.5")]);
        assert_eq!(a.mac, "0a:00:00:00:00:05");
        let err = i.allocate("pod:b", "p", &want).expect_err("taken");
        assert_eq!(err.to_string(), "10.0.0.5 is already used by pod:a");
        let err = i
            .allocate(
                "pod:b",
                "p",
                &Request {
                    ips: vec![],
                    mac: Some("0a:00:00:00:00:05".into()),
                },
            )
            .expect_err("mac taken");
        assert!(err.to_string().contains("MAC 0a:00:00:00:00:05"), "{err}");
        // The dynamic allocator steps around the fixed address.
        for n in 0..4 {
            let got = i
                .allocate(&format!("pod:{n}"), "p", &Request::default())
                .expect("room");
            assert_ne!(got.ips, vec![ip("10.0.0.5")]);
        }
    }

    #[test]
    fn fixed_addresses_outside_the_pool_or_reserved_are_refused() {
        let mut i = ipam();
        let outside = Request {
            ips: vec![ip("10.9.0.5")],
            mac: None,
        };
        assert!(matches!(
            i.allocate("pod:a", "p", &outside),
            Err(IpamError::OutsidePool { .. })
        ));
        for reserved in ["10.0.0.1", "10.0.0.0", "10.0.0.7"] {
            let r = Request {
                ips: vec![ip(reserved)],
                mac: None,
            };
            assert!(
                matches!(
                    i.allocate("pod:a", "p", &r),
                    Err(IpamError::Reserved { .. })
                ),
                "{reserved}"
            );
        }
        let excluded = Request {
            ips: vec![ip("10.1.0.3")],
            mac: None,
        };
        assert!(matches!(
            i.allocate("pod:a", "dual", &excluded),
            Err(IpamError::Reserved { .. })
        ));
        assert!(i.get("pod:a").is_none(), "a failed request holds nothing");
    }

    #[test]
    fn restored_allocations_are_never_handed_out_again() {
        // A restart: what NB holds is restored before anything new is allocated.
        let mut i = ipam();
        i.restore(
            "pod:old",
            Allocation {
                pool: "p".into(),
                ips: vec![ip("10.0.0.2")],
                mac: "0a:58:0a:00:00:02".into(),
            },
        )
        .expect("restore");
        let new = i
            .allocate("pod:new", "p", &Request::default())
            .expect("new");
        assert_eq!(new.ips, vec![ip("10.0.0.3")]);
        let old = i
            .allocate("pod:old", "p", &Request::default())
            .expect("old");
        assert_eq!(
            old.ips,
            vec![ip("10.0.0.2")],
            "the old owner keeps its address"
        );
        let clash = i.restore(
            "pod:other",
            Allocation {
                pool: "p".into(),
                ips: vec![ip("10.0.0.3")],
                mac: "0a:00:00:00:00:99".into(),
            },
        );
        assert!(matches!(clash, Err(IpamError::AddressTaken { .. })));
    }

    #[test]
    fn a_changed_fixed_address_moves_the_owner_and_frees_the_old_one() {
        let mut i = ipam();
        i.allocate("pod:a", "p", &Request::default()).expect("a");
        let moved = i.allocate("pod:a", "p", &at("10.0.0.6")).expect("moved");
        assert_eq!(moved.ips, vec![ip("10.0.0.6")]);
        let b = i.allocate("pod:b", "p", &Request::default()).expect("b");
        assert_eq!(b.ips, vec![ip("10.0.0.2")], "the old address is free again");
    }

    #[test]
    fn an_owner_whose_pool_changed_under_it_moves_into_the_new_range() {
        let mut i = ipam();
        let old = i.allocate("pod:a", "p", &Request::default()).expect("a");
        assert_eq!(old.ips, vec![ip("10.0.0.2")]);
        i.set_pool(
            "p",
            PoolSpec::with_gateways(vec!["10.0.9.0/29".parse().expect("cidr")], &[], vec![]),
        );
        let moved = i.allocate("pod:a", "p", &Request::default()).expect("a");
        assert_eq!(moved.ips, vec![ip("10.0.9.2")]);
    }

    #[test]
    fn macs_are_normalised_and_garbage_is_refused() {
        assert_eq!(
            parse_mac("0A-58-0A-00-00-01").expect("ok"),
            "0a:58:0a:00:00:01"
        );
        for bad in ["0a:58", "zz:58:0a:00:00:01", "0a:58:0a:00:00:001"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capacity_counts_hosts_minus_gateways_and_network_addresses() {
        assert_eq!(pool_29().capacity(), 5);
    }
}
