//! The controller's side of the demotion of failed EIP-gateway chassis
//! (`compiler::demotion` decides; this keeps its inputs and its results).
//!
//! Inputs: who SB says holds each gateway's external `cr-` port (`sbwatch::spawn_holders`,
//! only with `--ovn-sb`), the `EipGateway`s (spec priorities, failback annotation) and
//! the demotions recorded in NB. Result: the demotion per gateway, which the resolver
//! applies to the priorities of every port of the gateway and records on its router.
//! NB is where a demotion lives: a controller that starts, or becomes the leader, reads
//! it back from there and keeps it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use ycloud_ovsdb::cache::Snapshot;

use crate::compiler::demotion::{self, BASIS_KEY, DEMOTED_KEY, Decision, Demotion, Holder};
use crate::compiler::gateways::eip_router_name;
use crate::sbwatch::{Held, SETTLE};
use crate::store::Store;

/// SB's name of an EIP gateway's external port as elected (the port whose holder the
/// decision follows; the VPC uplinks have the same priorities and live with it).
pub fn eip_cr_port(gw: &str) -> String {
    format!("cr-{}-ext", eip_router_name(gw))
}

/// The demotion recorded on `gw`'s router in NB, if any.
pub fn recorded(snap: &Snapshot, gw: &str) -> Option<Demotion> {
    // Read once per gateway (then kept in `Demotions`): a scan of the routers is fine.
    let name = eip_router_name(gw);
    let (_, router) = snap.rows("Logical_Router").find(|(_, r)| {
        r.get("name")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
            == Some(name.as_str())
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

/// The demotions and what they are decided from.
#[derive(Debug)]
pub struct Demotions {
    holders: watch::Receiver<BTreeMap<String, Held>>,
    /// Per gateway, once read from NB (or decided): `None` = no demotion.
    current: BTreeMap<String, Option<Demotion>>,
    /// When the controller last changed a gateway's priorities (or first saw it).
    changed_at: BTreeMap<String, Instant>,
    /// When a holder that is not the top chassis will have settled.
    recheck_at: Option<Instant>,
}

impl Demotions {
    /// Starts the SB holder watch (`--ovn-sb`).
    pub fn spawn(remotes: Vec<String>, tls: Option<ycloud_ovsdb::transport::TlsConfig>) -> Self {
        Demotions {
            holders: crate::sbwatch::spawn_holders(remotes, tls),
            current: BTreeMap::new(),
            changed_at: BTreeMap::new(),
            recheck_at: None,
        }
    }

    /// Forgets what was read from NB: a new leader reads the demotions again (the old
    /// leader may have recorded some since).
    pub fn reload(&mut self) {
        self.current.clear();
        self.changed_at.clear();
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
        self.current.retain(|gw, _| store.gateways.contains_key(gw));
        self.changed_at
            .retain(|gw, _| store.gateways.contains_key(gw));
        for (name, gw) in &store.gateways {
            let current = self
                .current
                .entry(name.clone())
                .or_insert_with(|| recorded(snap, name))
                .clone();
            let since = *self.changed_at.entry(name.clone()).or_insert(now);
            let spec: BTreeMap<String, u16> = gw
                .spec
                .gateway_chassis
                .iter()
                .map(|c| (c.name.clone(), c.priority))
                .collect();
            let held = holders.get(&eip_cr_port(name));
            let holder = held.map(|h| Holder {
                chassis: &h.chassis,
                held_for: now.saturating_duration_since(h.since),
            });
            let basis = basis_of(gw);
            let next = match demotion::decide(
                &spec,
                &basis,
                current.as_ref(),
                holder,
                now.saturating_duration_since(since),
                SETTLE,
            ) {
                Decision::Keep => continue,
                Decision::Wait(d) => {
                    let at = now + d.max(Duration::from_millis(10));
                    recheck = Some(recheck.map_or(at, |r| r.min(at)));
                    continue;
                }
                Decision::Clear => {
                    tracing::info!(gateway = %name, was = ?current.as_ref().map(|d| &d.demoted), "EIP gateway: failback by the operator; the spec's priorities again");
                    None
                }
                Decision::Demote(d) => {
                    tracing::info!(gateway = %name, holder = ?held.map(|h| &h.chassis), demoted = ?d.demoted, "EIP gateway: demoting the failed chassis below the one that took over");
                    Some(d)
                }
            };
            self.current.insert(name.clone(), next);
            self.changed_at.insert(name.clone(), now);
            changed = true;
            // Look again once the new priorities have settled: if OVN did not move the
            // port to the new top chassis by then (a failback to a chassis that is still
            // dead), that chassis is demoted again.
            let at = now + SETTLE;
            recheck = Some(recheck.map_or(at, |r| r.min(at)));
        }
        self.recheck_at = recheck;
        changed
    }

    /// The demotions in force, by gateway.
    pub fn current(&self) -> BTreeMap<String, Demotion> {
        self.current
            .iter()
            .filter_map(|(gw, d)| Some((gw.clone(), d.clone()?)))
            .collect()
    }
}
