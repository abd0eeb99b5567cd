//! The controller's side of the demotion of failed gateway chassis (`compiler::demotion`
//! decides; this keeps its inputs and its results).
//!
//! Inputs: who SB says holds each gateway's port (`sbwatch::spawn_holders`, only with
//! `--ovn-sb`): an EIP gateway's external `cr-` port, the service gateway's beacon; the
//! configured priorities (`EipGateway.spec.gatewayChassis` and its failback annotation,
//! `--svcgw-chassis`) and the demotions recorded in NB. Result: the demotion per gateway,
//! which the resolver applies to the priorities of every port of the gateway and records
//! on its router. NB is where a demotion lives: a controller that starts, or becomes the
//! leader, reads it back from there and keeps it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use ycloud_ovsdb::cache::Snapshot;

use crate::compiler::demotion::{self, BASIS_KEY, DEMOTED_KEY, Decision, Demotion, Holder};
use crate::compiler::gateways::{SVCGW_BEACON_ROUTER, eip_router_name, svcgw_beacon_cr_port};
use crate::sbwatch::{Held, SETTLE};
use crate::store::Store;

/// SB's name of an EIP gateway's external port as elected (the port whose holder the
/// decision follows; the VPC uplinks have the same priorities and live with it).
pub fn eip_cr_port(gw: &str) -> String {
    format!("cr-{}-ext", eip_router_name(gw))
}

/// The demotion recorded on router `name` in NB, if any.
pub fn recorded(snap: &Snapshot, name: &str) -> Option<Demotion> {
    // Read once per gateway (then kept in `Demotions`): a scan of the routers is fine.
    let (_, router) = snap.rows("Logical_Router").find(|(_, r)| {
        r.get("name")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
            == Some(name)
    })?;
    let ids = router.get("external_ids")?;
    let key = |k: &str| ids.map_get(k)?.as_str().map(str::to_owned);
    let map: BTreeMap<String, String> = [DEMOTED_KEY, BASIS_KEY]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), key(k)?)))
        .collect();
    Demotion::from_external_ids(&map)
}

/// The basis of `gw`'s demotions now: its spec priorities and failback annotation.
pub fn basis_of(gw: &ycloud_crds::EipGateway) -> String {
    let spec: BTreeMap<String, u16> = gw
        .spec
        .gateway_chassis
        .iter()
        .map(|c| (c.name.clone(), c.priority))
        .collect();
    let failback = gw
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(demotion::FAILBACK_ANNOTATION))
        .map(String::as_str);
    demotion::basis(&spec, failback)
}

/// The basis of the service gateway's demotions: its `--svcgw-chassis` priorities (it has
/// no object to annotate; changing a priority is the operator's failback).
pub fn svcgw_basis(chassis: &BTreeMap<String, u16>) -> String {
    demotion::basis(chassis, None)
}

/// One gateway's demotion as decided, and when its priorities last changed.
#[derive(Debug, Clone)]
struct Track {
    /// `None`: no demotion.
    current: Option<Demotion>,
    /// When the controller last changed the priorities (or first saw the gateway).
    changed_at: Instant,
}

/// One gateway to decide: what SB says, what the spec says.
struct Target<'a> {
    what: &'a str,
    spec: BTreeMap<String, u16>,
    basis: String,
    held: Option<&'a Held>,
}

/// The demotions and what they are decided from.
#[derive(Debug)]
pub struct Demotions {
    holders: watch::Receiver<BTreeMap<String, Held>>,
    /// Per EIP gateway, once read from NB (or decided).
    eip: BTreeMap<String, Track>,
    /// The service gateway's beacon (only when it fails over: `--svcgw-chassis`).
    svcgw: Option<Track>,
    svcgw_chassis: BTreeMap<String, u16>,
    /// When a holder that is not the top chassis will have settled.
    recheck_at: Option<Instant>,
}

impl Demotions {
    /// Starts the SB holder watch (`--ovn-sb`); `svcgw_chassis`: the service gateway's
    /// (`--svcgw-chassis`, empty: none).
    pub fn spawn(
        remotes: Vec<String>,
        tls: Option<ycloud_ovsdb::transport::TlsConfig>,
        svcgw_chassis: BTreeMap<String, u16>,
    ) -> Self {
        Demotions {
            holders: crate::sbwatch::spawn_holders(remotes, tls),
            eip: BTreeMap::new(),
            svcgw: None,
            svcgw_chassis,
            recheck_at: None,
        }
    }

    /// Forgets what was read from NB: a new leader reads the demotions again (the old
    /// leader may have recorded some since).
    pub fn reload(&mut self) {
        self.eip.clear();
        self.svcgw = None;
    }

    /// Resolves when SB's holders changed or a pending decision is due.
    pub async fn changed(&mut self) {
        let due = self.recheck_at;
        tokio::select! {
            r = self.holders.changed() => {
                if r.is_err() {
                    // The watch ended (bad remote): only the timer is left.
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                }
            }
            () = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                self.recheck_at = None;
            }
        }
    }

    /// Decides every gateway's demotion now; true when one changed (a full pass is due).
    pub fn update(&mut self, store: &Store, snap: &Snapshot) -> bool {
        let now = Instant::now();
        let holders = self.holders.borrow_and_update().clone();
        let mut changed = false;
        let mut recheck: Option<Instant> = None;
        self.eip.retain(|gw, _| store.gateways.contains_key(gw));
        for (name, gw) in &store.gateways {
            let track = self.eip.entry(name.clone()).or_insert_with(|| Track {
                current: recorded(snap, &eip_router_name(name)),
                changed_at: now,
            });
            let cr = eip_cr_port(name);
            let target = Target {
                what: name,
                spec: gw
                    .spec
                    .gateway_chassis
                    .iter()
                    .map(|c| (c.name.clone(), c.priority))
                    .collect(),
                basis: basis_of(gw),
                held: holders.get(&cr),
            };
            changed |= step(track, &target, now, &mut recheck);
        }
        if !self.svcgw_chassis.is_empty() {
            let track = self.svcgw.get_or_insert_with(|| Track {
                current: recorded(snap, SVCGW_BEACON_ROUTER),
                changed_at: now,
            });
            let cr = svcgw_beacon_cr_port();
            let target = Target {
                what: "service gateway",
                spec: self.svcgw_chassis.clone(),
                basis: svcgw_basis(&self.svcgw_chassis),
                held: holders.get(&cr),
            };
            changed |= step(track, &target, now, &mut recheck);
        }
        self.recheck_at = recheck;
        changed
    }

    /// The EIP gateways' demotions in force, by gateway.
    pub fn eip(&self) -> BTreeMap<String, Demotion> {
        self.eip
            .iter()
            .filter_map(|(gw, t)| Some((gw.clone(), t.current.clone()?)))
            .collect()
    }

    /// The service gateway's demotion in force.
    pub fn svcgw(&self) -> Option<Demotion> {
        self.svcgw.as_ref()?.current.clone()
    }
}

/// Decides one gateway's demotion into `track`; true when it changed. `recheck`: the
/// earliest time a decision is due again.
fn step(track: &mut Track, t: &Target<'_>, now: Instant, recheck: &mut Option<Instant>) -> bool {
    let mut due = |at: Instant| *recheck = Some(recheck.map_or(at, |r| r.min(at)));
    let holder = t.held.map(|h| Holder {
        chassis: &h.chassis,
        held_for: now.saturating_duration_since(h.since),
    });
    let next = match demotion::decide(
        &t.spec,
        &t.basis,
        track.current.as_ref(),
        holder,
        now.saturating_duration_since(track.changed_at),
        SETTLE,
    ) {
        Decision::Keep => return false,
        Decision::Wait(d) => {
            due(now + d.max(Duration::from_millis(10)));
            return false;
        }
        Decision::Clear => {
            tracing::info!(gateway = %t.what, was = ?track.current.as_ref().map(|d| &d.demoted), "gateway failback by the operator: the configured priorities again");
            None
        }
        Decision::Demote(d) => {
            tracing::info!(gateway = %t.what, holder = ?t.held.map(|h| &h.chassis), demoted = ?d.demoted, "gateway: demoting the failed chassis below the one that took over");
            Some(d)
        }
    };
    track.current = next;
    track.changed_at = now;
    // Look again once the new priorities have settled: if OVN did not move the port to the
    // new top chassis by then (a failback to a chassis that is still dead), that chassis is
    // demoted again.
    due(now + SETTLE);
    true
}
