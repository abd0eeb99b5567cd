//! From probe results to a published `NetworkProbeStatus`, at a bounded rate.
//!
//! A status is published at once when the verdict changes (that is what the load balancer
//! waits for), when the probe's generation changed, and for the first result; otherwise at
//! most once per `min_interval` (10 s in the daemon), carrying the counters, the latency and
//! the last error. Thousands of probes every second must not turn into thousands of writes.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use ycloud_crds::{Condition, NetworkProbeStatus};

use crate::health::{Health, Transition};
use crate::prober::Outcome;

/// `Ready` reason while the probe runs.
pub const REASON_PROBING: &str = "Probing";
/// `Ready` reason when the probe cannot run (its spec is wrong).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Longest `lastError` (the CRD's bound).
pub const MAX_ERROR_LEN: usize = 1024;

/// The wall clock as a Kubernetes time.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The status of a probe that cannot run: `Ready=False`, no verdict (the controller keeps
/// the backend: a broken probe must not take a service down).
pub fn invalid(generation: Option<i64>, message: &str, now: Time) -> NetworkProbeStatus {
    NetworkProbeStatus {
        observed_generation: generation,
        conditions: vec![Condition::ready(
            false,
            REASON_INVALID_SPEC,
            truncate(message),
            generation,
            now,
        )],
        ..NetworkProbeStatus::default()
    }
}

/// One probe's status and when it was last published.
#[derive(Debug, Clone)]
pub struct StatusEmitter {
    min_interval: Duration,
    last_published: Option<Instant>,
    published_generation: Option<i64>,
    status: NetworkProbeStatus,
    /// Text of the `Ready` condition (e.g. where the probe runs from).
    ready_message: String,
    /// Delay added once, after the first publication, before the periodic ones start.
    spread: Duration,
}

impl StatusEmitter {
    pub fn new(min_interval: Duration, ready_message: impl Into<String>) -> StatusEmitter {
        StatusEmitter {
            min_interval,
            last_published: None,
            published_generation: None,
            status: NetworkProbeStatus::default(),
            ready_message: ready_message.into(),
            spread: Duration::ZERO,
        }
    }

    /// Delays the first periodic publication by `spread` (never earlier than
    /// `min_interval` after the first one). Probes started together would otherwise all
    /// publish in the same second every `min_interval`; a random spread per probe smooths
    /// the writes without ever publishing more often than allowed.
    pub fn with_spread(mut self, spread: Duration) -> StatusEmitter {
        self.spread = spread;
        self
    }

    /// The current status (published or not).
    pub fn status(&self) -> &NetworkProbeStatus {
        &self.status
    }

    /// Records one probe result (`health` already updated by it, `transition` what that
    /// caused) for `generation`; returns the status when it is to be published now.
    pub fn record(
        &mut self,
        generation: Option<i64>,
        health: &Health,
        transition: Option<Transition>,
        outcome: &Outcome,
        now: Instant,
        wall: Time,
    ) -> Option<NetworkProbeStatus> {
        let s = &mut self.status;
        if transition.is_some() || s.healthy != health.healthy {
            s.last_transition_time = Some(wall.clone());
        }
        s.observed_generation = generation;
        s.healthy = health.healthy;
        s.consecutive_successes = health.consecutive_successes;
        s.consecutive_failures = health.consecutive_failures;
        s.last_probe_time = Some(wall.clone());
        if outcome.success {
            if let Some(l) = outcome.latency {
                s.latency_millis = Some(u32::try_from(l.as_millis()).unwrap_or(u32::MAX));
            }
            s.last_error = None;
        } else {
            s.last_error = outcome.error.as_deref().map(truncate);
        }
        let ready = Condition::ready(
            true,
            REASON_PROBING,
            self.ready_message.clone(),
            generation,
            wall,
        );
        match s.conditions.first_mut() {
            // Keep lastTransitionTime: the condition did not change.
            Some(c) if c.same_state(&ready) => c.observed_generation = generation,
            _ => s.conditions = vec![ready],
        }
        let due = match self.last_published {
            None => true,
            // `at` may lie ahead (the spread): duration_since saturates to zero then.
            Some(at) => now.duration_since(at) >= self.min_interval,
        };
        if due || transition.is_some() || self.published_generation != generation {
            self.last_published = Some(match self.last_published {
                None => now + self.spread,
                Some(_) => now,
            });
            self.published_generation = generation;
            Some(self.status.clone())
        } else {
            None
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_LEN - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests;
