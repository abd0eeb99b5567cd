//! Leader election on a `coordination.k8s.io/v1` Lease, written on `Api<Lease>` (the
//! algorithm of client-go's `leaderelection`, in ~150 lines: no crate for it is kept up to
//! date with kube 5).
//!
//! Safety rests on two clocks never being compared across machines: a candidate takes over
//! only `leaseDuration` after it *saw* the record last change (its own clock), and a
//! leader treats itself as leader only until `renewDeadline` after it *started* its last
//! successful renewal (its own clock). With `renewDeadline < leaseDuration`, the old leader
//! has stopped writing before anyone may start. [`Leadership::is_leading`] reads that
//! deadline, so a leader whose renewals fail or hang stops writing at the deadline even
//! if its election task is stuck.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// The Lease's default name.
pub const LEASE_NAME: &str = "ycloud-controller";

/// Why one round of the election failed (the next round retries).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a lease holds without renewal before another replica may take it.
    pub lease_duration: Duration,
    /// How long a leader keeps writing after the start of its last successful renewal;
    /// shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the lease is renewed or its takeover tried.
    pub retry_period: Duration,
}

/// Whether this replica may write now. Cheap to clone and to check.
#[derive(Debug, Clone, Default)]
pub struct Leadership(Arc<Mutex<Option<Instant>>>);

impl Leadership {
    /// True until the deadline of the last successful renewal.
    pub fn is_leading(&self) -> bool {
        self.0
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn set(&self, until: Option<Instant>) {
        if let Ok(mut g) = self.0.lock() {
            *g = until;
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leadership: Leadership,
    /// The record last seen (holder, renewTime) and when it was first seen so.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("cfg", &self.cfg)
            .field("leading", &self.leadership.is_leading())
            .finish()
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            leadership: Leadership::default(),
            observed: None,
        }
    }

    /// The handle the writers check.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    fn write_err(&self, source: kube::Error) -> LeaseError {
        LeaseError::Write {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    fn ours(&self, start: Instant) {
        self.leadership.set(Some(start + self.cfg.renew_deadline));
    }

    /// One round: create, renew or take over the lease when allowed. Returns whether this
    /// replica leads afterwards. On an error the leadership is left to lapse at its
    /// deadline (a renewal may fail once and succeed on the next round).
    pub async fn step(&mut self) -> Result<bool, LeaseError> {
        let start = Instant::now();
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|source| LeaseError::Get {
                namespace: self.cfg.namespace.clone(),
                name: self.cfg.name.clone(),
                source,
            })?;
        let Some(mut lease) = current else {
            let t = now();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs(self.cfg.lease_duration)),
                    acquire_time: Some(t.clone()),
                    renew_time: Some(t),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.ours(start);
                    tracing::info!(identity = %self.cfg.identity, "leader: created the lease");
                    Ok(true)
                }
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.write_err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let seen = (holder.clone(), spec.renew_time.clone());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| (h, r) != (&seen.0, &seen.1));
        if changed {
            self.observed = Some((seen.0, seen.1, start));
        }
        let observed_at = self.observed.as_ref().map_or(start, |o| o.2);
        let duration = spec
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map_or(self.cfg.lease_duration, |s| Duration::from_secs(s as u64));
        let mine = holder.as_deref() == Some(self.cfg.identity.as_str());
        let expired = holder.is_none() || start >= observed_at + duration;
        if !mine && !expired {
            self.leadership.set(None);
            return Ok(false);
        }
        let t = now();
        let mut new = spec;
        if !mine {
            new.acquire_time = Some(t.clone());
            new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
        }
        new.holder_identity = Some(self.cfg.identity.clone());
        new.lease_duration_seconds = Some(secs(self.cfg.lease_duration));
        new.renew_time = Some(t);
        lease.spec = Some(new);
        // The replace carries the resourceVersion just read: a concurrent writer makes it
        // fail with a conflict instead of both believing they won.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !mine {
                    tracing::info!(identity = %self.cfg.identity, previous = ?holder, "leader: took over the lease");
                }
                self.ours(start);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.leadership.set(None);
                Ok(false)
            }
            Err(e) => Err(self.write_err(e)),
        }
    }

    /// Gives the lease up (stops writing first), so a standby takes over at its next round
    /// instead of after the lease time. Does nothing when another replica holds it.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        self.leadership.set(None);
        let Some(mut lease) =
            self.api
                .get_opt(&self.cfg.name)
                .await
                .map_err(|source| LeaseError::Get {
                    namespace: self.cfg.namespace.clone(),
                    name: self.cfg.name.clone(),
                    source,
                })?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.write_err(e))?;
        tracing::info!(identity = %self.cfg.identity, "released the lease");
        Ok(())
    }

    /// Runs rounds every `retry_period` until `shutdown`, then releases the lease.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut was = false;
        loop {
            let round = tokio::time::timeout(self.cfg.renew_deadline, self.step());
            let leading = tokio::select! {
                () = &mut shutdown => break,
                r = round => match r {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader election round failed");
                        self.leadership.is_leading()
                    }
                    Err(_) => {
                        tracing::warn!("leader election round timed out");
                        self.leadership.is_leading()
                    }
                },
            };
            if leading != was {
                tracing::info!(identity = %self.cfg.identity, leading, "leadership changed");
                was = leading;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease");
        }
    }
}
