//! Which datapath flows belong to the service path.
//!
//! A service connection's packets cross several datapath flows: each conntrack pass ends in
//! `recirc(N)` and the packet comes back matching `recirc_id(N)`. The service path is found
//! from flows that are certainly about a service, then closed over those recirculation links:
//! - **seeds**: a flow that DNATs to a backend (`ct(…,nat(dst=…))`), that selects a bucket
//!   (`hash(…)` action or a `dp_hash` match), or that carries a backend's replies (matches
//!   `ipv4|ipv6(src=BACKEND)`, BACKEND from a DNAT action or a select group's buckets);
//! - **closure**: the flows a member recirculates into (`recirc_id` = its `recirc(N)`), and
//!   the flows that recirculate into a member's `recirc_id`, until nothing changes.
//!
//! Over-inclusion is the safe side (a flow of other traffic sharing a recirc id gets checked
//! too); `--all` checks every flow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use super::dpflow::{DpFlow, Term, mask_is_zero, mask_part, value_part};
use super::groups::Group;

/// Why a flow is on the service path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `hash(…)`: picks a dp_hash bucket.
    Select,
    /// matches `dp_hash`: one bucket's flow.
    Bucket,
    /// `ct(…,nat(dst=…))`: the DNAT to a backend.
    Dnat,
    /// matches a backend as the source: replies.
    Reply,
    /// reached through recirculation from or to one of the above.
    Recirc,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Select => "select",
            Role::Bucket => "bucket",
            Role::Dnat => "dnat",
            Role::Reply => "reply",
            Role::Recirc => "recirc",
        }
    }
}

/// `10.0.0.11:8080` → `10.0.0.11`; `[fd00::1]:80` → `fd00::1`; ranges are skipped.
pub fn backend_ip(target: &str) -> Option<String> {
    let ip = if let Some(rest) = target.strip_prefix('[') {
        rest.split_once(']')?.0
    } else if target.matches(':').count() == 1 {
        target.split_once(':')?.0
    } else {
        target
    };
    (!ip.contains('-') && !ip.is_empty()).then(|| ip.to_owned())
}

/// The role of every flow on the service path (`None`: not on it).
pub fn service_path(flows: &[DpFlow], groups: &[Group]) -> Vec<Option<Role>> {
    let mut backends: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| g.backends.iter())
        .filter_map(|b| backend_ip(b))
        .collect();
    for f in flows {
        backends.extend(f.dnat_targets().iter().filter_map(|t| backend_ip(t)));
    }

    let mut roles: Vec<Option<Role>> = flows.iter().map(|f| seed_role(f, &backends)).collect();

    let mut by_recirc_id: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut by_target: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate() {
        by_recirc_id.entry(f.recirc_id()).or_default().push(i);
        for t in f.recirc_targets() {
            by_target.entry(t).or_default().push(i);
        }
    }
    let mut queue: VecDeque<usize> = (0..flows.len()).filter(|&i| roles[i].is_some()).collect();
    while let Some(i) = queue.pop_front() {
        let mut next = Vec::new();
        for t in flows[i].recirc_targets() {
            next.extend(by_recirc_id.get(&t).into_iter().flatten().copied());
        }
        let id = flows[i].recirc_id();
        if id != 0 {
            next.extend(by_target.get(&id).into_iter().flatten().copied());
        }
        for j in next {
            if roles[j].is_none() {
                roles[j] = Some(Role::Recirc);
                queue.push_back(j);
            }
        }
    }
    roles
}

fn seed_role(f: &DpFlow, backends: &BTreeSet<String>) -> Option<Role> {
    let mut has_hash = false;
    super::dpflow::walk(&f.actions, &mut |t| has_hash |= t.name() == "hash");
    if has_hash {
        return Some(Role::Select);
    }
    let dp_hash_used = f
        .field("dp_hash")
        .and_then(|t| t.args().first())
        .is_some_and(|a| mask_part(a.name()).is_none_or(|m| !mask_is_zero(m)));
    if dp_hash_used {
        return Some(Role::Bucket);
    }
    if !f.dnat_targets().is_empty() {
        return Some(Role::Dnat);
    }
    let src_is_backend = ["ipv4", "ipv6"].iter().any(|name| {
        f.field(name)
            .and_then(|t: &Term| t.arg_value("src"))
            .is_some_and(|v| {
                mask_part(v).is_none_or(|m| !mask_is_zero(m)) && backends.contains(value_part(v))
            })
    });
    src_is_backend.then_some(Role::Reply)
}
