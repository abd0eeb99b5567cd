//! Parser for `ovs-ofctl -O OpenFlow15 dump-groups BRIDGE` and what each select group does
//! to the datapath.
//!
//! OVN turns a load balancer VIP with several backends (and an ECMP route) into an OpenFlow
//! `select` group. How OVS picks the bucket decides what the datapath flows look like:
//! - `selection_method=dp_hash` (OVN's default; also OVS's default from 2.10 when no method is
//!   given, see `ovs-ofctl(8)`, "selection_method"): the datapath computes `hash(l4(0))`,
//!   recirculates and matches `dp_hash(…/0xf)` per bucket. tc/flower offloads neither
//!   (reference/ovs-tc-offload.md §1 "HASH (8) … never", §2 "dp_hash … 3.1:1646-1649").
//! - `selection_method=hash,fields(…)` (OVN with `Load_Balancer.selection_fields` set): the
//!   bucket is chosen at upcall time and each megaflow carries one fixed `ct(nat(dst=…))`.

use serde::Serialize;

use super::OffloadError;

/// One OpenFlow group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub group_id: u32,
    /// `select`, `all`, `indirect`, `ff`.
    pub group_type: String,
    /// As printed: `dp_hash`, `hash`, or `None` when the dump shows none (OVS default).
    pub selection_method: Option<String>,
    /// `fields(…)` of a `hash` group, e.g. `["ip_src", "ip_dst", "tcp_src", "tcp_dst"]`.
    pub fields: Vec<String>,
    /// Backends of the buckets (`nat(dst=…)` in each bucket's actions), in bucket order.
    pub backends: Vec<String>,
    pub buckets: usize,
}

impl Group {
    /// Whether the datapath will select this group's buckets with `hash` + `dp_hash`.
    pub fn forces_dp_hash(&self) -> bool {
        self.group_type == "select"
            && match self.selection_method.as_deref() {
                Some(m) => m == "dp_hash",
                // ovs-ofctl(8): "From 2.10 onwards Open vSwitch defaults to the dp_hash method"
                None => true,
            }
    }
}

/// Parses a `dump-groups` reply. `source` names it in errors.
pub fn parse_groups(text: &str, source: &str) -> Result<Vec<Group>, OffloadError> {
    let mut groups = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("OFPST_GROUP") || line.starts_with("NXST_GROUP") {
            continue;
        }
        let err = |reason: String| OffloadError::Parse {
            source_name: source.to_owned(),
            line: i + 1,
            reason,
            text: line.chars().take(300).collect(),
        };
        let group = parse_group(line).map_err(err)?;
        groups.push(group);
    }
    Ok(groups)
}

fn parse_group(line: &str) -> Result<Group, String> {
    // Buckets come last and hold commas of their own: cut them off first.
    let (head, buckets_text) = match line.find(",bucket=") {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, ""),
    };
    let mut group_id = None;
    let mut group_type = None;
    let mut selection_method = None;
    let mut fields = Vec::new();
    for item in head.split(',') {
        if let Some(v) = item.strip_prefix("group_id=") {
            group_id = Some(
                v.parse::<u32>()
                    .map_err(|_| format!("group_id `{v}` is not a number"))?,
            );
        } else if let Some(v) = item.strip_prefix("type=") {
            group_type = Some(v.to_owned());
        } else if let Some(v) = item.strip_prefix("selection_method=") {
            selection_method = Some(v.to_owned());
        }
    }
    // `fields(a,b)` has inner commas: read it from the head as a whole.
    if let Some(start) = head.find("fields(") {
        let rest = &head[start + "fields(".len()..];
        let end = rest
            .find(')')
            .ok_or_else(|| "`fields(` is not closed".to_owned())?;
        fields = rest[..end]
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let buckets: Vec<&str> = buckets_text
        .split("bucket=")
        .filter(|b| !b.trim().is_empty())
        .collect();
    let backends = buckets
        .iter()
        .filter_map(|b| {
            let start = b.find("nat(dst=")? + "nat(dst=".len();
            let end = b[start..].find(')')? + start;
            Some(b[start..end].to_owned())
        })
        .collect();
    Ok(Group {
        group_id: group_id.ok_or("no group_id=")?,
        group_type: group_type.ok_or("no type=")?,
        selection_method,
        fields,
        backends,
        buckets: buckets.len(),
    })
}
