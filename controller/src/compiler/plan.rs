//! The planner: desired rows against the OVSDB cache → the operations of one transaction.
//!
//! Pure: a [`Snapshot`] and desired rows in, `Vec<Operation>` out. It only looks at rows
//! whose `external_ids` carry our ownership keys (or that our owned rows reference), and
//! it writes only what differs: a map column changes by a mutate of the changed keys (one
//! backend added to a 1,000-backend VIP is one small mutate), an unchanged object writes
//! nothing, a missing attachment (drift) is put back, and an owned row nothing wants any
//! more is deleted.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;
use ycloud_ovsdb::cache::Snapshot;
use ycloud_ovsdb::ops::{self, Operation};
use ycloud_ovsdb::value::{Atom, Row, Value};

use super::lb::{DesiredLb, Placement};
use super::names::{self, OwnerKind};
use super::network::{
    DesiredAcl, DesiredLbGroup, DesiredRoute, DesiredRouter, DesiredRouterPort, DesiredSnat,
    DesiredSwitch, DesiredSwitchPort, DesiredVpc,
};

/// Why a plan can't be made now. Both are transient: the reconcile is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{owner}: {what} is not in NB yet (its owner has not been programmed)")]
    MissingAttachment { owner: String, what: String },
    #[error("{owner}: row {table} {uuid} has a column {column} of an unexpected type")]
    BadColumn {
        owner: String,
        table: &'static str,
        uuid: Uuid,
        column: &'static str,
    },
}

/// The operations of one owner's plan, with named UUIDs unique to the plan, so plans of
/// many owners can share one transaction and still be split and retried one by one.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    prefix: String,
    next: usize,
    pub ops: Vec<Operation>,
    /// Rows the plan wanted but found taken by someone else (a row of the same unique
    /// name that is not ours): left alone, and reported so the owner's status can say why
    /// it is not fully programmed.
    pub conflicts: Vec<String>,
}

impl Plan {
    /// A plan whose named UUIDs start with `prefix` (letters, digits, `_`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Plan {
            prefix: prefix.into(),
            next: 0,
            ops: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    fn named(&mut self) -> String {
        let n = format!("{}r{}", self.prefix, self.next);
        self.next += 1;
        n
    }

    /// True when the cache already matches the desired rows.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, op: Option<Operation>) {
        self.ops.extend(op);
    }
}

/// A reference to a row: one that exists, or one this transaction inserts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowRef {
    Existing(Uuid),
    New(String),
}

impl RowRef {
    fn atom(&self) -> Atom {
        match self {
            RowRef::Existing(u) => Atom::Uuid(*u),
            RowRef::New(n) => Atom::NamedUuid(n.clone()),
        }
    }
}

const LB: &str = "Load_Balancer";
const LBG: &str = "Load_Balancer_Group";
const LR: &str = "Logical_Router";
const LRP: &str = "Logical_Router_Port";
const LS: &str = "Logical_Switch";
const LSP: &str = "Logical_Switch_Port";
const LBHC: &str = "Load_Balancer_Health_Check";
const NB_GLOBAL: &str = "NB_Global";
const ACL: &str = "ACL";

fn str_map(m: &BTreeMap<String, String>) -> Value {
    Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn str_set<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::set(items)
}

fn uuid_of(row: &Row) -> Option<Uuid> {
    row.get("_uuid")?.as_atom()?.as_uuid()
}

fn ext(row: &Row, key: &str) -> Option<String> {
    row.get("external_ids")?
        .map_get(key)?
        .as_str()
        .map(str::to_owned)
}

/// Owned rows of `table` whose owner is (`kind`, `owner`).
fn owned_rows<'a>(
    snap: &'a Snapshot,
    table: &str,
    kind: OwnerKind,
    owner: &str,
) -> Vec<&'a Arc<Row>> {
    snap.find_by_external_id(table, names::NAME_KEY, owner)
        .into_iter()
        .filter(|r| {
            ext(r, names::OWNER_KEY).as_deref() == Some(names::OWNER_VALUE)
                && ext(r, names::KIND_KEY).as_deref() == Some(kind.as_str())
        })
        .collect()
}

/// The ops that make an existing row's columns equal `want` (only the columns in `want`;
/// map columns by a mutate of the changed keys, the rest by one update of changed columns).
fn converge(plan: &mut Plan, table: &str, uuid: Uuid, have: &Row, want: &Row) {
    let mut scalar = Row::new();
    for (col, value) in want {
        match (value, have.get(col)) {
            (Value::Map(new), Some(Value::Map(old))) => {
                plan.push(ops::map_update(table, uuid, col, old, new));
            }
            (Value::Map(new), _) if new.is_empty() => {
                // An empty map reads back as an empty set without a schema: nothing to do
                // unless the cache holds keys.
                if have.get(col).is_some_and(|v| !v.is_empty()) {
                    scalar.insert(col.clone(), value.clone());
                }
            }
            _ => {
                if !same(have.get(col), value) {
                    scalar.insert(col.clone(), value.clone());
                }
            }
        }
    }
    if !scalar.is_empty() {
        plan.ops.push(ops::update(table, uuid, scalar));
    }
}

/// Equality that treats a one-element set and its atom as the same, and an empty set
/// and an absent optional value as the same (the wire forms of one value).
fn same(have: Option<&Value>, want: &Value) -> bool {
    match (have, want) {
        (Some(h), w) if h == w => true,
        (Some(Value::Set(s)), Value::Atom(a)) | (Some(Value::Atom(a)), Value::Set(s)) => {
            s.len() == 1 && s.iter().next() == Some(a)
        }
        (None, w) => w.is_empty(),
        (Some(h), w) => h.is_empty() && w.is_empty(),
    }
}

/// Whether `row`'s set column holds `uuid`. A binary search of the sorted set: a VPC's
/// group holds every service's load balancer, and each of 10,000 services asking by a
/// scan (with a copy of the set, as `Value::atoms` makes) was O(n²) in the pass that
/// follows a cold start (the first pass's writes echoed back).
fn set_contains(row: &Row, column: &str, uuid: &RowRef) -> bool {
    match uuid {
        RowRef::New(_) => false,
        RowRef::Existing(u) => {
            let atom = Atom::Uuid(*u);
            match row.get(column) {
                Some(Value::Set(set)) => set.contains(&atom),
                Some(Value::Atom(a)) => *a == atom,
                Some(Value::Map(_)) | None => false,
            }
        }
    }
}

// ---------------------------------------------------------------- load balancers

fn lb_row(d: &DesiredLb) -> Row {
    Row::from([
        ("name".to_owned(), Value::from(d.name.as_str())),
        ("protocol".to_owned(), Value::set([d.protocol.as_str()])),
        ("vips".to_owned(), str_map(&d.vips)),
        (
            "selection_fields".to_owned(),
            str_set(d.selection_fields.iter().map(|f| f.as_str())),
        ),
        ("options".to_owned(), str_map(&d.options)),
        ("external_ids".to_owned(), str_map(&d.external_ids)),
        ("ip_port_mappings".to_owned(), str_map(&d.ip_port_mappings)),
    ])
}

/// The `Load_Balancer_Health_Check` rows of one load balancer, by VIP. They carry the load
/// balancer's ownership keys with role `health-check:<vip>`, and are owned through the load
/// balancer's `health_check` column (non-root rows: dropping the reference deletes them).
fn hc_rows(d: &DesiredLb) -> BTreeMap<String, Row> {
    d.health_checks
        .iter()
        .map(|(vip, options)| {
            let mut ids = d.external_ids.clone();
            ids.insert(names::ROLE_KEY.to_owned(), format!("health-check:{vip}"));
            let row = Row::from([
                ("vip".to_owned(), Value::from(vip.as_str())),
                ("options".to_owned(), str_map(options)),
                ("external_ids".to_owned(), str_map(&ids)),
            ]);
            (vip.clone(), row)
        })
        .collect()
}

/// The MAC OVN's service monitor sends native health checks from, when the operator has
/// not set one: `0a:58:` + `0.0.255.254`, an address no pod has (pod MACs are `0a:58:` +
/// their IPv4 address).
pub const SVC_MONITOR_MAC: &str = "0a:58:00:00:ff:fe";

/// `NB_Global options:svc_monitor_mac`, set only when absent: a value an operator chose is
/// never overwritten (the mutate `insert` leaves an existing key alone even if another
/// writer set it after our snapshot).
fn plan_svc_monitor_mac(snap: &Snapshot, plan: &mut Plan) {
    for (uuid, row) in snap.rows(NB_GLOBAL) {
        let has = row
            .get("options")
            .and_then(|o| o.map_get("svc_monitor_mac"))
            .is_some();
        let already = plan
            .ops
            .iter()
            .any(|op| matches!(op, Operation::Mutate { table, .. } if table == NB_GLOBAL));
        if !has && !already {
            plan.ops.push(Operation::Mutate {
                table: NB_GLOBAL.to_owned(),
                where_: vec![ops::Condition::uuid(*uuid)],
                mutations: vec![ops::Mutation::new(
                    "options",
                    ops::Mutator::Insert,
                    Value::map([("svc_monitor_mac", SVC_MONITOR_MAC)]),
                )],
            });
        }
    }
}

/// Where a placement's load balancers hang: (table, uuid, column).
fn lb_target(
    snap: &Snapshot,
    owner: &str,
    d: &DesiredLb,
) -> Result<(&'static str, Arc<Row>), PlanError> {
    let found = match d.placement {
        Placement::Cluster => snap
            .find_unique(LBG, &[("name", Value::from(names::vpc_lb_group(&d.vpc)))])
            .map(|r| (LBG, r.clone())),
        Placement::Eip => owned_rows(snap, LR, OwnerKind::Vpc, &d.vpc)
            .into_iter()
            .find(|r| ext(r, names::ROLE_KEY).as_deref() == Some("router"))
            .map(|r| (LR, r.clone())),
        // The gateway router itself (role `router`), not just any router of the service
        // gateway: with `--ovn-sb` its beacon is one too, and an LB attached there is
        // never reached (every cross-VPC packet dropped at the gateway: issue 12's flake).
        Placement::ServiceGateway => snap
            .find_by_external_id(LR, names::KIND_KEY, OwnerKind::ServiceGateway.as_str())
            .into_iter()
            .find(|r| {
                ext(r, names::OWNER_KEY).as_deref() == Some(names::OWNER_VALUE)
                    && ext(r, names::ROLE_KEY).as_deref() == Some("router")
            })
            .map(|r| (LR, r.clone())),
    };
    found.ok_or_else(|| PlanError::MissingAttachment {
        owner: owner.to_owned(),
        what: match d.placement {
            Placement::Cluster => format!("load-balancer group {}", names::vpc_lb_group(&d.vpc)),
            Placement::Eip => format!("router of VPC {}", d.vpc),
            Placement::ServiceGateway => "the service-gateway router".to_owned(),
        },
    })
}

/// Plan the load balancers of one service (`namespace/name`): create, converge, attach,
/// and delete the ones it no longer wants. `desired` empty: the service is gone.
pub fn plan_service(
    snap: &Snapshot,
    owner: &str,
    desired: &[DesiredLb],
    plan: &mut Plan,
) -> Result<(), PlanError> {
    let mut existing: BTreeMap<String, Vec<&Arc<Row>>> = BTreeMap::new();
    for row in owned_rows(snap, LB, OwnerKind::Service, owner) {
        let role = ext(row, names::ROLE_KEY).unwrap_or_default();
        existing.entry(role).or_default().push(row);
    }
    // Resolve every attachment first: a plan that can't finish changes nothing.
    let mut targets = Vec::new();
    for d in desired {
        targets.push(lb_target(snap, owner, d)?);
    }
    for (d, (table, target)) in desired.iter().zip(targets) {
        let role = &d.external_ids[names::ROLE_KEY];
        let want = lb_row(d);
        let mut lb_have = None;
        let lb_ref = match existing.remove(role).as_deref() {
            Some([keep, extra @ ..]) => {
                for row in extra {
                    // Two rows for one role were not made by us in one transaction: a
                    // hand-made copy. Keep one.
                    plan.push(uuid_of(row).map(|u| ops::delete(LB, u)));
                }
                let uuid = uuid_of(keep).ok_or_else(|| bad(owner, LB, "_uuid"))?;
                converge(plan, LB, uuid, keep, &want);
                lb_have = Some(&***keep);
                RowRef::Existing(uuid)
            }
            _ => {
                let name = plan.named();
                plan.ops.push(ops::insert(LB, want, name.clone()));
                RowRef::New(name)
            }
        };
        // Native health checks hang off the row; a check nothing wants (or a hand-made
        // one of ours) is dropped, a foreign one on the same VIP is reported and left.
        let hcs = hc_rows(d);
        let checks = !hcs.is_empty();
        if checks || lb_have.is_some() {
            let parent = Parent {
                table: LB,
                rref: lb_ref.clone(),
                have: lb_have,
            };
            plan_children(
                snap,
                plan,
                &parent,
                LBHC,
                "health_check",
                ChildKey::Columns(&["vip"]),
                hcs,
            );
        }
        if checks {
            plan_svc_monitor_mac(snap, plan);
        }
        let target_uuid = uuid_of(&target).ok_or_else(|| bad(owner, table, "_uuid"))?;
        if !set_contains(&target, "load_balancer", &lb_ref) {
            plan.ops.push(ops::set_insert(
                table,
                target_uuid,
                "load_balancer",
                [lb_ref.atom()],
            ));
        }
        if d.placement == Placement::ServiceGateway {
            // A controller before session 5 could hang it on the beacon (see `lb_target`):
            // taken off there, so an upgrade leaves no LB where no packet goes.
            for other in
                snap.find_by_external_id(LR, names::KIND_KEY, OwnerKind::ServiceGateway.as_str())
            {
                if let Some(u) = uuid_of(other)
                    && u != target_uuid
                    && set_contains(other, "load_balancer", &lb_ref)
                {
                    plan.ops
                        .push(ops::set_delete(LR, u, "load_balancer", [lb_ref.atom()]));
                }
            }
        }
    }
    for rows in existing.values() {
        for row in rows {
            // Load balancers are root rows referenced weakly: deleting one also removes it
            // from every group and router.
            plan.push(uuid_of(row).map(|u| ops::delete(LB, u)));
        }
    }
    Ok(())
}

/// The row a `mutate` with one `insert` of references targets: (table, row, column), when
/// `op` is exactly that (one `_uuid ==` condition, one `insert` of a set of UUIDs).
fn reference_insert(op: &Operation) -> Option<(&str, Uuid, &str)> {
    let Operation::Mutate {
        table,
        where_,
        mutations,
    } = op
    else {
        return None;
    };
    let ([cond], [m]) = (where_.as_slice(), mutations.as_slice()) else {
        return None;
    };
    let uuid = (cond.column == "_uuid" && cond.function == ops::Function::Eq)
        .then(|| cond.value.as_atom()?.as_uuid())??;
    let Value::Set(atoms) = &m.value else {
        return None;
    };
    let refs = atoms
        .iter()
        .all(|a| matches!(a, Atom::Uuid(_) | Atom::NamedUuid(_)));
    (m.mutator == ops::Mutator::Insert && refs).then_some((table.as_str(), uuid, m.column.as_str()))
}

/// The table and row an operation may touch: (table, `Some(row)` when its only condition
/// is `_uuid ==`, `None` when it may touch any row of the table).
fn touches(op: &Operation) -> Option<(&str, Option<Uuid>)> {
    let (table, where_) = match op {
        Operation::Update { table, where_, .. }
        | Operation::Select { table, where_, .. }
        | Operation::Mutate { table, where_, .. }
        | Operation::Delete { table, where_ }
        | Operation::Wait { table, where_, .. } => (table, where_),
        _ => return None,
    };
    let row = match where_.as_slice() {
        [c] if c.column == "_uuid" && c.function == ops::Function::Eq => {
            c.value.as_atom().and_then(Atom::as_uuid)
        }
        _ => None,
    };
    Some((table.as_str(), row))
}

/// Merges the reference inserts of many plans into one column of one row into a single
/// `mutate`, put where the last of them was (so after every `insert` they name).
///
/// At cold start every new service's plan adds its load balancer to the VPC's group with a
/// `mutate` of its own: 10,000 mutates of one row, each of which ovsdb-server applies to a
/// set that grows to 10,000 references (measured: 10,000 such inserts took 3.2 s against
/// 1.2–1.9 s for the same inserts with one mutate, on a loaded 2-core machine). Merging
/// keeps the transaction's result: inserting references into a set commutes and is
/// idempotent. An operation on the same row (or with a condition other than `_uuid ==` on
/// the same table) in between ends a merge, so no insert moves past something that could
/// see or undo it. Plans stay per owner; only the combined transaction is merged.
/// The operations are borrowed: only a merged `mutate` is a new one, so a transaction of
/// 8,000 new ports is not copied (and dropped) on its way to the wire.
pub fn merge_reference_inserts<'a>(
    ops: impl IntoIterator<Item = &'a Operation>,
) -> Vec<Cow<'a, Operation>> {
    type Key = (String, Uuid, String);
    // An open merge: the slot of its last member, its first member, every atom so far.
    struct Open<'a> {
        slot: usize,
        first: &'a Operation,
        atoms: Vec<Atom>,
        members: usize,
    }
    let mut out: Vec<Option<Cow<'a, Operation>>> = Vec::new();
    let mut open: BTreeMap<Key, Open<'a>> = BTreeMap::new();
    let close = |out: &mut Vec<Option<Cow<'a, Operation>>>, m: Open<'a>| {
        out[m.slot] = Some(if m.members == 1 {
            Cow::Borrowed(m.first)
        } else {
            let mut op = m.first.clone();
            if let Operation::Mutate { mutations, .. } = &mut op {
                mutations[0].value = Value::set(m.atoms);
            }
            Cow::Owned(op)
        });
    };
    for op in ops {
        if let Some((table, uuid, column)) = reference_insert(op) {
            let key = (table.to_owned(), uuid, column.to_owned());
            let mine = match op {
                Operation::Mutate { mutations, .. } => match &mutations[0].value {
                    Value::Set(s) => s.iter().cloned().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let slot = out.len();
            out.push(None);
            match open.get_mut(&key) {
                Some(m) => {
                    m.slot = slot;
                    m.atoms.extend(mine);
                    m.members += 1;
                }
                None => {
                    open.insert(
                        key,
                        Open {
                            slot,
                            first: op,
                            atoms: mine,
                            members: 1,
                        },
                    );
                }
            }
            continue;
        }
        if let Some((table, row)) = touches(op) {
            let ends: Vec<Key> = open
                .keys()
                .filter(|(t, u, _)| t == table && row.is_none_or(|r| r == *u))
                .cloned()
                .collect();
            for k in ends {
                if let Some(m) = open.remove(&k) {
                    close(&mut out, m);
                }
            }
        }
        out.push(Some(Cow::Borrowed(op)));
    }
    for (_, m) in std::mem::take(&mut open) {
        close(&mut out, m);
    }
    out.into_iter().flatten().collect()
}

fn bad(owner: &str, table: &'static str, column: &'static str) -> PlanError {
    PlanError::BadColumn {
        owner: owner.to_owned(),
        table,
        uuid: Uuid::nil(),
        column,
    }
}

// ---------------------------------------------------------------- topology (VPCs, gateways)

const ROUTE: &str = "Logical_Router_Static_Route";
const NAT: &str = "NAT";
const GWC: &str = "Gateway_Chassis";

fn lrp_row(p: &DesiredRouterPort) -> Row {
    Row::from([
        ("name".to_owned(), Value::from(p.name.as_str())),
        ("mac".to_owned(), Value::from(p.mac.as_str())),
        (
            "networks".to_owned(),
            str_set(p.networks.iter().map(String::as_str)),
        ),
        ("external_ids".to_owned(), str_map(&p.external_ids)),
    ])
}

fn lsp_row(p: &DesiredSwitchPort) -> Row {
    Row::from([
        ("name".to_owned(), Value::from(p.name.as_str())),
        ("type".to_owned(), Value::from(p.kind.as_str())),
        (
            "addresses".to_owned(),
            str_set(p.addresses.iter().map(String::as_str)),
        ),
        (
            "port_security".to_owned(),
            str_set(p.port_security.iter().map(String::as_str)),
        ),
        ("options".to_owned(), str_map(&p.options)),
        ("external_ids".to_owned(), str_map(&p.external_ids)),
    ])
}

fn gwc_name(lrp: &str, chassis: &str) -> String {
    format!("{lrp}-{chassis}")
}

fn gwc_row(lrp: &str, chassis: &str, priority: u16) -> Row {
    Row::from([
        ("name".to_owned(), Value::from(gwc_name(lrp, chassis))),
        ("chassis_name".to_owned(), Value::from(chassis)),
        ("priority".to_owned(), Value::from(i64::from(priority))),
        (
            "external_ids".to_owned(),
            Value::map([(names::OWNER_KEY, names::OWNER_VALUE)]),
        ),
    ])
}

fn route_row(r: &DesiredRoute, ids: &BTreeMap<String, String>) -> Row {
    Row::from([
        ("ip_prefix".to_owned(), Value::from(r.ip_prefix.as_str())),
        ("nexthop".to_owned(), Value::from(r.nexthop.as_str())),
        ("external_ids".to_owned(), str_map(ids)),
    ])
}

fn snat_row(n: &DesiredSnat, ids: &BTreeMap<String, String>) -> Row {
    Row::from([
        ("type".to_owned(), Value::from("snat")),
        (
            "external_ip".to_owned(),
            Value::from(n.external_ip.as_str()),
        ),
        ("logical_ip".to_owned(), Value::from(n.logical_ip.as_str())),
        ("external_ids".to_owned(), str_map(ids)),
    ])
}

/// An ACL row; owned through the `acls` column of each switch that carries it.
fn acl_row(a: &DesiredAcl) -> Row {
    Row::from([
        ("name".to_owned(), Value::set([a.name.as_str()])),
        ("direction".to_owned(), Value::from(a.direction.as_str())),
        ("priority".to_owned(), Value::from(a.priority)),
        ("match".to_owned(), Value::from(a.match_.as_str())),
        ("action".to_owned(), Value::from(a.action.as_str())),
        ("external_ids".to_owned(), str_map(&a.external_ids)),
    ])
}

fn col_str<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    row.get(col)?.as_atom()?.as_str()
}

/// How the children of one parent column are identified.
#[derive(Clone, Copy)]
enum ChildKey {
    /// By the child's unique `name` (LRP, LSP, Gateway_Chassis: indexed tables).
    Name,
    /// By the values of these columns among the children the parent holds (routes, NAT
    /// rules: no name, no index).
    Columns(&'static [&'static str]),
}

impl ChildKey {
    fn of(self, row: &Row) -> Option<String> {
        match self {
            ChildKey::Name => col_str(row, "name").map(str::to_owned),
            ChildKey::Columns(cols) => cols
                .iter()
                .map(|c| col_str(row, c).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join("|")),
        }
    }
}

/// A parent row in the plan: how to reference it, and its cached row when it exists.
struct Parent<'a> {
    table: &'static str,
    rref: RowRef,
    have: Option<&'a Row>,
}

/// Plan the children of one parent column (router ports, switch ports, routes, NAT
/// rules, gateway chassis): converge the ones that exist, insert the missing ones and
/// reference them from the parent, and drop from the parent the children we own that
/// nothing wants (non-root rows: the server deletes them with their last reference).
/// Returns the reference of each wanted child, by key.
fn plan_children(
    snap: &Snapshot,
    plan: &mut Plan,
    parent: &Parent<'_>,
    child_table: &'static str,
    column: &str,
    key: ChildKey,
    want: BTreeMap<String, Row>,
) -> BTreeMap<String, RowRef> {
    // The children the parent holds now, by key.
    let mut held: BTreeMap<String, (Uuid, &Arc<Row>)> = BTreeMap::new();
    let mut foreign_or_unkeyed = BTreeSet::new();
    if let Some(p) = parent.have {
        for atom in p.get(column).and_then(Value::atoms).unwrap_or_default() {
            let Some(u) = atom.as_uuid() else { continue };
            match snap.get(child_table, &u) {
                Some(child) => match key.of(child) {
                    Some(k) => {
                        held.insert(k, (u, child));
                    }
                    None => {
                        foreign_or_unkeyed.insert(u);
                    }
                },
                None => {
                    foreign_or_unkeyed.insert(u);
                }
            }
        }
    }
    let mut refs = BTreeMap::new();
    let mut add = Vec::new();
    for (k, row) in want {
        let existing = match key {
            ChildKey::Name => snap
                .find_unique(child_table, &[("name", Value::from(k.as_str()))])
                .and_then(|r| uuid_of(r).map(|u| (u, r))),
            ChildKey::Columns(_) => held.get(&k).map(|(u, r)| (*u, *r)),
        };
        if let Some((_, have)) = existing
            && ext(have, names::OWNER_KEY).as_deref() != Some(names::OWNER_VALUE)
        {
            // Same unique name, not ours: never adopt or rewrite it.
            plan.conflicts.push(format!(
                "{child_table} {k} exists and is not ycloud's (no {} key): left alone",
                names::OWNER_KEY
            ));
            continue;
        }
        match existing {
            Some((u, have)) => {
                converge(plan, child_table, u, have, &row);
                let r = RowRef::Existing(u);
                if !parent.have.is_some_and(|p| set_contains(p, column, &r)) {
                    add.push(r.atom());
                }
                refs.insert(k, r);
            }
            None => {
                let named = plan.named();
                plan.ops.push(ops::insert(child_table, row, named.clone()));
                let r = RowRef::New(named);
                add.push(r.atom());
                refs.insert(k, r);
            }
        }
    }
    let remove: Vec<Atom> = held
        .iter()
        .filter(|(k, (_, child))| {
            // Every wanted key is in `refs` but a conflict's, whose row is not ours.
            !refs.contains_key(*k)
                && ext(child, names::OWNER_KEY).as_deref() == Some(names::OWNER_VALUE)
        })
        .map(|(_, (u, _))| Atom::Uuid(*u))
        .collect();
    match &parent.rref {
        RowRef::Existing(u) => {
            if !add.is_empty() {
                plan.ops
                    .push(ops::set_insert(parent.table, *u, column, add));
            }
            if !remove.is_empty() {
                plan.ops
                    .push(ops::set_delete(parent.table, *u, column, remove));
            }
        }
        RowRef::New(n) => set_on_insert(plan, n, column, add),
    }
    refs
}

/// Sets a reference column on a row this plan inserts.
fn set_on_insert(plan: &mut Plan, named: &str, column: &str, atoms: Vec<Atom>) {
    if atoms.is_empty() {
        return;
    }
    let insert = plan
        .ops
        .iter_mut()
        .find(|op| matches!(op, Operation::Insert { uuid_name: Some(x), .. } if x == named));
    if let Some(Operation::Insert { row, .. }) = insert {
        let mut set = match row.remove(column) {
            Some(Value::Set(s)) => s,
            Some(Value::Atom(a)) => ycloud_ovsdb::value::AtomSet::from([a]),
            _ => ycloud_ovsdb::value::AtomSet::new(),
        };
        set.extend(atoms);
        row.insert(column.to_owned(), Value::Set(set));
    }
}

fn insert_or_converge(
    plan: &mut Plan,
    table: &'static str,
    have: Option<&Arc<Row>>,
    want: Row,
) -> RowRef {
    match have.and_then(|h| uuid_of(h).map(|u| (h, u))) {
        Some((h, u)) => {
            converge(plan, table, u, h, &want);
            RowRef::Existing(u)
        }
        None => {
            let named = plan.named();
            plan.ops.push(ops::insert(table, want, named.clone()));
            RowRef::New(named)
        }
    }
}

fn plan_router(snap: &Snapshot, plan: &mut Plan, r: &DesiredRouter, have: Option<&Arc<Row>>) {
    let row = Row::from([
        ("name".to_owned(), Value::from(r.name.as_str())),
        ("options".to_owned(), str_map(&r.options)),
        ("external_ids".to_owned(), str_map(&r.external_ids)),
    ]);
    let parent = Parent {
        table: LR,
        rref: insert_or_converge(plan, LR, have, row),
        have: have.map(|h| &**h),
    };
    let lrps: BTreeMap<String, Row> = r
        .ports
        .values()
        .map(|p| (p.name.clone(), lrp_row(p)))
        .collect();
    let lrp_refs = plan_children(snap, plan, &parent, LRP, "ports", ChildKey::Name, lrps);
    for p in r.ports.values() {
        let Some(rref) = lrp_refs.get(&p.name).cloned() else {
            continue; // a conflict, reported by plan_children
        };
        let have = match &rref {
            RowRef::Existing(u) => snap.get(LRP, u).map(|r| &**r),
            RowRef::New(_) => None,
        };
        let gwcs: BTreeMap<String, Row> = p
            .gateway_chassis
            .iter()
            .map(|(c, prio)| (gwc_name(&p.name, c), gwc_row(&p.name, c, *prio)))
            .collect();
        let port = Parent {
            table: LRP,
            rref,
            have,
        };
        plan_children(
            snap,
            plan,
            &port,
            GWC,
            "gateway_chassis",
            ChildKey::Name,
            gwcs,
        );
    }
    let ids = &r.external_ids;
    let routes: BTreeMap<String, Row> = r
        .routes
        .iter()
        .map(|rt| {
            (
                format!("{}|{}", rt.ip_prefix, rt.nexthop),
                route_row(rt, ids),
            )
        })
        .collect();
    plan_children(
        snap,
        plan,
        &parent,
        ROUTE,
        "static_routes",
        ChildKey::Columns(&["ip_prefix", "nexthop"]),
        routes,
    );
    let nats: BTreeMap<String, Row> = r
        .snat
        .iter()
        .map(|n| {
            (
                format!("snat|{}|{}", n.external_ip, n.logical_ip),
                snat_row(n, ids),
            )
        })
        .collect();
    plan_children(
        snap,
        plan,
        &parent,
        NAT,
        "nat",
        ChildKey::Columns(&["type", "external_ip", "logical_ip"]),
        nats,
    );
}

fn plan_switch(
    snap: &Snapshot,
    plan: &mut Plan,
    sw: &DesiredSwitch,
    have: Option<&Arc<Row>>,
    groups: &BTreeMap<String, RowRef>,
    acls: &BTreeMap<String, Row>,
) {
    let row = Row::from([
        ("name".to_owned(), Value::from(sw.name.as_str())),
        ("other_config".to_owned(), str_map(&sw.other_config)),
        ("external_ids".to_owned(), str_map(&sw.external_ids)),
    ]);
    let parent = Parent {
        table: LS,
        rref: insert_or_converge(plan, LS, have, row),
        have: have.map(|h| &**h),
    };
    let lsps: BTreeMap<String, Row> = sw
        .ports
        .values()
        .map(|p| (p.name.clone(), lsp_row(p)))
        .collect();
    plan_children(snap, plan, &parent, LSP, "ports", ChildKey::Name, lsps);
    // ACL names are not unique across switches: each switch holds its own copy, found
    // by name among the ACLs it references.
    plan_children(
        snap,
        plan,
        &parent,
        ACL,
        "acls",
        ChildKey::Columns(&["name"]),
        acls.clone(),
    );
    let missing: Vec<Atom> = sw
        .lb_groups
        .iter()
        .filter_map(|g| groups.get(g))
        .filter(|g| !have.is_some_and(|h| set_contains(h, "load_balancer_group", g)))
        .map(RowRef::atom)
        .collect();
    match &parent.rref {
        RowRef::Existing(u) if !missing.is_empty() => {
            plan.ops
                .push(ops::set_insert(LS, *u, "load_balancer_group", missing))
        }
        RowRef::Existing(_) => {}
        RowRef::New(n) => set_on_insert(plan, n, "load_balancer_group", missing),
    }
}

/// Everything one owner (a VPC, an EIP gateway, the service gateway) wants in NB.
#[derive(Debug, Clone, Copy)]
pub struct OwnedTopology<'a> {
    pub routers: &'a [&'a DesiredRouter],
    pub switches: &'a [&'a DesiredSwitch],
    pub lb_group: Option<&'a DesiredLbGroup>,
    /// ACLs every one of the owner's switches carries.
    pub acls: &'a [&'a DesiredAcl],
}

/// Plan one owner's routers (with ports, gateway chassis, routes, NAT), switches (with
/// ports and group attachments) and load-balancer group. `None`: the owner is gone,
/// delete everything it owns. Routers and switches are found by name among the rows the
/// owner owns, so a hand-made copy or a foreign row of the same name is never adopted.
pub fn plan_owned(
    snap: &Snapshot,
    kind: OwnerKind,
    owner: &str,
    group_name: Option<&str>,
    desired: Option<OwnedTopology<'_>>,
    plan: &mut Plan,
) {
    let routers = owned_rows(snap, LR, kind, owner);
    let switches = owned_rows(snap, LS, kind, owner);
    // Load_Balancer_Group has no external_ids: its unique name is its ownership mark.
    let group_have = group_name
        .and_then(|g| snap.find_unique(LBG, &[("name", Value::from(g))]))
        .cloned();
    let Some(d) = desired else {
        for (table, rows) in [(LR, &routers), (LS, &switches)] {
            for r in rows {
                plan.push(uuid_of(r).map(|u| ops::delete(table, u)));
            }
        }
        plan.push(
            group_have
                .as_ref()
                .and_then(|g| uuid_of(g))
                .map(|u| ops::delete(LBG, u)),
        );
        return;
    };

    let mut groups = BTreeMap::new();
    if let Some(g) = d.lb_group {
        let row = Row::from([("name".to_owned(), Value::from(g.name.as_str()))]);
        let r = insert_or_converge(plan, LBG, group_have.as_ref(), row);
        groups.insert(g.name.clone(), r);
    }
    let by_name = |rows: &[&'_ Arc<Row>]| -> BTreeMap<String, Vec<Arc<Row>>> {
        let mut m: BTreeMap<String, Vec<Arc<Row>>> = BTreeMap::new();
        for r in rows {
            m.entry(col_str(r, "name").unwrap_or_default().to_owned())
                .or_default()
                .push(Arc::clone(r));
        }
        m
    };
    let mut have_routers = by_name(&routers);
    for r in d.routers {
        let have = have_routers.remove(&r.name).unwrap_or_default();
        plan_router(snap, plan, r, have.first());
        for extra in have.iter().skip(1) {
            plan.push(uuid_of(extra).map(|u| ops::delete(LR, u)));
        }
    }
    let acls: BTreeMap<String, Row> = d
        .acls
        .iter()
        .map(|a| (a.name.clone(), acl_row(a)))
        .collect();
    let mut have_switches = by_name(&switches);
    for sw in d.switches {
        let have = have_switches.remove(&sw.name).unwrap_or_default();
        plan_switch(snap, plan, sw, have.first(), &groups, &acls);
        for extra in have.iter().skip(1) {
            plan.push(uuid_of(extra).map(|u| ops::delete(LS, u)));
        }
    }
    for (table, rest) in [(LR, have_routers), (LS, have_switches)] {
        for r in rest.values().flatten() {
            plan.push(uuid_of(r).map(|u| ops::delete(table, u)));
        }
    }
}

/// Plan one VPC (see [`plan_owned`]).
pub fn plan_vpc(snap: &Snapshot, vpc: &str, desired: Option<&DesiredVpc>, plan: &mut Plan) {
    let switches: Vec<&DesiredSwitch> = desired
        .map(|d| d.switches.values().collect())
        .unwrap_or_default();
    let routers: Vec<&DesiredRouter> = desired.map(|d| vec![&d.router]).unwrap_or_default();
    let acls: Vec<&DesiredAcl> = desired
        .map(|d| d.acls.values().collect())
        .unwrap_or_default();
    let topo = desired.map(|d| OwnedTopology {
        routers: &routers,
        switches: &switches,
        lb_group: Some(&d.lb_group),
        acls: &acls,
    });
    plan_owned(
        snap,
        OwnerKind::Vpc,
        vpc,
        Some(&names::vpc_lb_group(vpc)),
        topo,
        plan,
    );
}

/// Plan an EIP gateway or the service gateway (see [`plan_owned`]).
pub fn plan_gateway(
    snap: &Snapshot,
    kind: OwnerKind,
    owner: &str,
    desired: Option<&super::gateways::DesiredGateway>,
    plan: &mut Plan,
) {
    let routers: Vec<&DesiredRouter> = desired
        .map(|d| d.routers.values().collect())
        .unwrap_or_default();
    let switches: Vec<&DesiredSwitch> = desired
        .map(|d| d.switches.values().collect())
        .unwrap_or_default();
    let topo = desired.map(|_| OwnedTopology {
        routers: &routers,
        switches: &switches,
        lb_group: None,
        acls: &[],
    });
    plan_owned(snap, kind, owner, None, topo, plan);
}
