//! Demoting a failed gateway chassis, so that its return is no second outage.
//!
//! OVN 23.03 has no non-preemptive gateway mode: a distributed gateway port lives on the
//! live chassis with the highest `Gateway_Chassis.priority`, so a failed top chassis that
//! comes back takes the port back at once, and the users of the gateway see one more
//! outage (measured 0.2–2.3 s, `docs/performance.md`). Lowering the failed chassis below
//! the one that took over, before it returns, makes its return a non-event (measured: 0
//! failed requests). This module decides that demotion from what SB says holds the
//! gateway's port; the controller (`crate::demotions`) feeds it and the resolver applies
//! the result ([`effective`]) to every port of the gateway, so they move together.
//!
//! The demotion is recorded on the gateway's router in NB ([`Demotion::external_ids`]):
//! a restarted controller reads it back and keeps the priorities where they are instead
//! of "repairing" them to the spec, which would be the very failback it avoids. It holds
//! for one *basis*, the spec's chassis priorities plus the gateway's
//! [`FAILBACK_ANNOTATION`]: an operator fails back by changing that annotation (or by
//! editing `gatewayChassis`), and the priorities are the spec's again.

use std::collections::BTreeMap;
use std::time::Duration;

/// Router `external_ids` key: the demoted chassis, comma-separated, in the order they
/// were demoted.
pub const DEMOTED_KEY: &str = "ycloud.io/demoted";
/// Router `external_ids` key: the basis the demotion holds for ([`basis`]).
pub const BASIS_KEY: &str = "ycloud.io/demoted-basis";
/// `EipGateway` annotation: a new value clears every demotion of the gateway (failback).
pub const FAILBACK_ANNOTATION: &str = "ycloud.io/failback";

/// The chassis demoted on one gateway, and the basis that demotion holds for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demotion {
    /// In the order they were demoted; never empty in a recorded demotion.
    pub demoted: Vec<String>,
    pub basis: String,
}

impl Demotion {
    /// The record on a router's `external_ids`; `None` without one.
    pub fn from_external_ids(ids: &BTreeMap<String, String>) -> Option<Demotion> {
        let demoted: Vec<String> = ids
            .get(DEMOTED_KEY)?
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if demoted.is_empty() {
            return None;
        }
        Some(Demotion {
            demoted,
            basis: ids.get(BASIS_KEY).cloned().unwrap_or_default(),
        })
    }

    /// The `external_ids` keys that record it.
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (DEMOTED_KEY.to_owned(), self.demoted.join(",")),
            (BASIS_KEY.to_owned(), self.basis.clone()),
        ])
    }
}

/// What a demotion holds for: the spec's priorities and the failback annotation's value.
/// Either changing is the operator's act that clears the demotion.
pub fn basis(spec: &BTreeMap<String, u16>, failback: Option<&str>) -> String {
    let prios: Vec<String> = spec.iter().map(|(c, p)| format!("{c}={p}")).collect();
    format!("{};failback={}", prios.join(","), failback.unwrap_or(""))
}

/// The priorities to program: the spec's, with every demoted chassis below every other
/// one (among themselves in spec order). The kept chassis keep their spec priorities when
/// there is room below them; else all are renumbered by rank (same order).
pub fn effective(spec: &BTreeMap<String, u16>, demoted: &[String]) -> BTreeMap<String, u16> {
    let by_rank = |down: bool| {
        let mut v: Vec<(&String, u16)> = spec
            .iter()
            .filter(|(c, _)| demoted.contains(c) == down)
            .map(|(c, p)| (c, *p))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    };
    let down = by_rank(true);
    let kept = by_rank(false);
    if down.is_empty() || kept.is_empty() {
        return spec.clone();
    }
    let n = down.len() as u16;
    let floor = kept.iter().map(|(_, p)| *p).min().unwrap_or(0);
    let mut out = BTreeMap::new();
    if floor > n {
        for (c, p) in &kept {
            out.insert((*c).clone(), *p);
        }
    } else {
        // No room below the lowest kept chassis: ranks, highest first, above the demoted.
        let top = n + kept.len() as u16;
        for (i, (c, _)) in kept.iter().enumerate() {
            out.insert((*c).clone(), top - i as u16);
        }
    }
    let floor = out.values().min().copied().unwrap_or(0);
    for (i, (c, _)) in down.iter().enumerate() {
        out.insert((*c).clone(), floor - 1 - i as u16);
    }
    out
}

/// The chassis with the highest priority (a tie: the first name), as in the planner.
pub fn top(prios: &BTreeMap<String, u16>) -> Option<&str> {
    prios
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| c.as_str())
}

/// What SB says about the gateway's port: who holds it, for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder<'a> {
    pub chassis: &'a str,
    /// Since the controller first saw this chassis hold the port (a start-up claim has
    /// held only since the watch began).
    pub held_for: Duration,
}

/// What to do about one gateway's demotion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to change.
    Keep,
    /// Record and program this demotion.
    Demote(Demotion),
    /// The basis changed (the operator's failback, or a new `gatewayChassis`): back to
    /// the spec's priorities.
    Clear,
    /// A holder other than the top chassis that has not held long enough yet: look again
    /// after this long.
    Wait(Duration),
}

/// Decides one gateway's demotion. `current`: the recorded demotion, if any; `holder`:
/// who SB says holds the gateway's port; `since_change`: how long ago the controller last
/// changed this gateway's priorities (or started). A holder that is not the top chassis
/// counts only once it has held the port for `settle` *and* the priorities have been as
/// they are for `settle`: a start-up claim by a standby (before its BFD sessions are up)
/// and the moment between a failback and OVN moving the port back are not failures.
/// The demotion then puts every chassis above the holder below it (and the holder, if it
/// was demoted itself, back on top): the next failure moves on from there.
pub fn decide(
    spec: &BTreeMap<String, u16>,
    basis: &str,
    current: Option<&Demotion>,
    holder: Option<Holder<'_>>,
    since_change: Duration,
    settle: Duration,
) -> Decision {
    let demoted: &[String] = match current {
        Some(d) if d.basis != basis => return Decision::Clear,
        Some(d) => &d.demoted,
        None => &[],
    };
    let Some(holder) = holder else {
        return Decision::Keep;
    };
    if !spec.contains_key(holder.chassis) {
        return Decision::Keep;
    }
    let eff = effective(spec, demoted);
    if top(&eff) == Some(holder.chassis) {
        return Decision::Keep;
    }
    let waited = holder.held_for.min(since_change);
    if waited < settle {
        return Decision::Wait(settle - waited);
    }
    let mine = eff[holder.chassis];
    let mut next: Vec<String> = demoted
        .iter()
        .filter(|c| c.as_str() != holder.chassis && spec.contains_key(*c))
        .cloned()
        .collect();
    let mut above: Vec<(&String, u16)> = eff
        .iter()
        .filter(|(c, p)| **p > mine && !next.contains(c))
        .map(|(c, p)| (c, *p))
        .collect();
    above.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    next.extend(above.into_iter().map(|(c, _)| c.clone()));
    Decision::Demote(Demotion {
        demoted: next,
        basis: basis.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(3);
    /// (demoted, the effective priorities).
    type EffectiveCase = (&'static [&'static str], &'static [(&'static str, u16)]);
    /// (what, the recorded demotion, the holder, since the last change, the decision).
    type DecideCase = (
        &'static str,
        Option<Demotion>,
        Option<Holder<'static>>,
        Duration,
        Decision,
    );
    const LONG: Duration = Duration::from_secs(60);

    fn spec(v: &[(&str, u16)]) -> BTreeMap<String, u16> {
        v.iter().map(|(c, p)| ((*c).to_owned(), *p)).collect()
    }

    fn held(chassis: &str, secs: u64) -> Option<Holder<'_>> {
        Some(Holder {
            chassis,
            held_for: Duration::from_secs(secs),
        })
    }

    fn demotion(demoted: &[&str], basis: &str) -> Demotion {
        Demotion {
            demoted: demoted.iter().map(|c| (*c).to_owned()).collect(),
            basis: basis.to_owned(),
        }
    }

    #[test]
    fn effective_priorities_put_the_demoted_below_the_kept_which_keep_theirs_when_there_is_room() {
        let s = spec(&[("node-1", 20), ("node-2", 10), ("node-3", 5)]);
        let cases: &[EffectiveCase] = &[
            (&[], &[("node-1", 20), ("node-2", 10), ("node-3", 5)]),
            (&["node-1"], &[("node-1", 4), ("node-2", 10), ("node-3", 5)]),
            (
                &["node-2", "node-1"],
                &[("node-1", 4), ("node-2", 3), ("node-3", 5)],
            ),
            (
                &["node-9"],
                &[("node-1", 20), ("node-2", 10), ("node-3", 5)],
            ),
        ];
        for (demoted, want) in cases {
            let d: Vec<String> = demoted.iter().map(|c| (*c).to_owned()).collect();
            assert_eq!(effective(&s, &d), spec(want), "demoted {demoted:?}");
        }
        // No room below the lowest kept chassis: renumbered by rank, the order kept.
        let tight = spec(&[("a", 2), ("b", 1), ("c", 1)]);
        assert_eq!(
            effective(&tight, &["a".to_owned(), "b".to_owned()]),
            spec(&[("c", 3), ("a", 2), ("b", 1)])
        );
        // Every chassis demoted (a stale record): the spec.
        assert_eq!(
            effective(&tight, &["a".into(), "b".into(), "c".into()]),
            tight
        );
    }

    #[test]
    fn a_settled_holder_below_the_top_demotes_every_chassis_above_it_and_nothing_else_moves() {
        let s = spec(&[("node-1", 20), ("node-2", 10), ("node-3", 5)]);
        let b = basis(&s, None);
        let cases: Vec<DecideCase> = vec![
            (
                "the top holds",
                None,
                held("node-1", 60),
                LONG,
                Decision::Keep,
            ),
            ("nobody holds", None, None, LONG, Decision::Keep),
            (
                "a stranger holds",
                None,
                held("node-9", 60),
                LONG,
                Decision::Keep,
            ),
            (
                "failover to node-2, settled",
                None,
                held("node-2", 3),
                LONG,
                Decision::Demote(demotion(&["node-1"], &b)),
            ),
            (
                "failover to node-3 (both above dead)",
                None,
                held("node-3", 5),
                LONG,
                Decision::Demote(demotion(&["node-1", "node-2"], &b)),
            ),
            (
                "a start-up claim, not settled",
                None,
                held("node-2", 1),
                LONG,
                Decision::Wait(Duration::from_secs(2)),
            ),
            (
                "priorities changed a moment ago (a failback in progress)",
                None,
                held("node-2", 60),
                Duration::from_millis(500),
                Decision::Wait(Duration::from_millis(2500)),
            ),
            (
                "demoted, the new top holds",
                Some(demotion(&["node-1"], &b)),
                held("node-2", 60),
                LONG,
                Decision::Keep,
            ),
            (
                "demoted node-1, node-2 dies too: node-3 holds",
                Some(demotion(&["node-1"], &b)),
                held("node-3", 4),
                LONG,
                Decision::Demote(demotion(&["node-1", "node-2"], &b)),
            ),
            (
                "demoted node-1, node-2 dies, node-1 is back and holds: node-1 on top again",
                Some(demotion(&["node-1"], &b)),
                held("node-1", 4),
                LONG,
                Decision::Demote(demotion(&["node-2", "node-3"], &b)),
            ),
            (
                "the operator failed back (a new annotation)",
                Some(demotion(&["node-1"], &basis(&s, Some("old")))),
                held("node-2", 60),
                LONG,
                Decision::Clear,
            ),
        ];
        for (what, current, holder, since_change, want) in cases {
            assert_eq!(
                decide(&s, &b, current.as_ref(), holder, since_change, SETTLE),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn the_record_reads_back_from_external_ids_and_an_empty_list_is_no_record() {
        let d = demotion(&["node-1", "node-2"], "node-1=20;failback=");
        assert_eq!(Demotion::from_external_ids(&d.external_ids()), Some(d));
        let empty = BTreeMap::from([(DEMOTED_KEY.to_owned(), String::new())]);
        assert_eq!(Demotion::from_external_ids(&empty), None);
        assert_eq!(Demotion::from_external_ids(&BTreeMap::new()), None);
    }

    #[test]
    fn the_basis_changes_with_a_priority_a_chassis_or_the_failback_annotation() {
        let s = spec(&[("node-1", 20), ("node-2", 10)]);
        let b = basis(&s, None);
        assert_eq!(b, "node-1=20,node-2=10;failback=");
        assert_ne!(b, basis(&s, Some("1")));
        assert_ne!(b, basis(&spec(&[("node-1", 20), ("node-2", 11)]), None));
        assert_ne!(b, basis(&spec(&[("node-1", 20)]), None));
    }
}
