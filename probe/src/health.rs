//! The threshold state machine: consecutive successes and failures decide `healthy`.
//!
//! A healthy backend turns unhealthy only after `failure` failures in a row, an unhealthy
//! one healthy only after `success` successes in a row; one odd result in between resets
//! the run, so a backend answering every other probe never flaps. Before any verdict
//! (`healthy: None`) whichever threshold is reached first decides.

use ycloud_crds::HealthCheck;

/// Consecutive results needed to change the verdict (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub success: u32,
    pub failure: u32,
}

impl Thresholds {
    pub fn of(hc: &HealthCheck) -> Thresholds {
        Thresholds {
            success: hc.success_threshold.max(1),
            failure: hc.failure_threshold.max(1),
        }
    }
}

/// A change of the verdict (including the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
}

/// A probe's verdict and its current run of results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// `None` until a threshold is reached for the first time.
    pub healthy: Option<bool>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

impl Health {
    /// Counts one result; returns the transition it caused, if any.
    pub fn observe(&mut self, success: bool, t: Thresholds) -> Option<Transition> {
        if success {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            if self.healthy != Some(true) && self.consecutive_successes >= t.success {
                self.healthy = Some(true);
                return Some(Transition::BecameHealthy);
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            if self.healthy != Some(false) && self.consecutive_failures >= t.failure {
                self.healthy = Some(false);
                return Some(Transition::BecameUnhealthy);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        success: 2,
        failure: 3,
    };

    fn run(h: &mut Health, results: &str) -> Vec<Option<Transition>> {
        results.chars().map(|c| h.observe(c == 'o', T)).collect()
    }

    #[test]
    fn a_healthy_backend_goes_down_only_after_k_failures_in_a_row() {
        let mut h = Health::default();
        run(&mut h, "oo");
        assert_eq!(h.healthy, Some(true));
        let t = run(&mut h, "xxx");
        assert_eq!(t, [None, None, Some(Transition::BecameUnhealthy)]);
        assert_eq!((h.consecutive_failures, h.consecutive_successes), (3, 0));
    }

    #[test]
    fn an_unhealthy_backend_comes_back_only_after_m_successes_in_a_row() {
        let mut h = Health::default();
        run(&mut h, "xxx");
        assert_eq!(h.healthy, Some(false));
        assert_eq!(run(&mut h, "oxo"), [None, None, None]);
        assert_eq!(run(&mut h, "o"), [Some(Transition::BecameHealthy)]);
    }

    #[test]
    fn alternating_results_never_flip_the_verdict() {
        let mut h = Health::default();
        run(&mut h, "oo");
        assert!(run(&mut h, "xoxxoxxoxoxxo").iter().all(Option::is_none));
        assert_eq!(h.healthy, Some(true));
    }

    #[test]
    fn no_verdict_until_a_threshold_is_reached_and_repeats_do_not_transition_again() {
        let mut h = Health::default();
        assert_eq!(run(&mut h, "o"), [None]);
        assert_eq!(h.healthy, None);
        assert_eq!(
            run(&mut h, "ooo"),
            [Some(Transition::BecameHealthy), None, None]
        );
    }

    #[test]
    fn thresholds_below_one_count_as_one() {
        let hc: HealthCheck = serde_json::from_value(serde_json::json!(
            {"type": "TCP", "failureThreshold": 0, "successThreshold": 0}
        ))
        .unwrap();
        assert_eq!(
            Thresholds::of(&hc),
            Thresholds {
                success: 1,
                failure: 1
            }
        );
    }
}
