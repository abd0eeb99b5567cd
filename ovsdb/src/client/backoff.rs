//! Reconnect delays.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Reconnect delays: the n-th consecutive failure waits a random time in
/// `[d/2, d]` with `d = min(max, initial * 2^n)` ("equal jitter"), so a fleet of clients
/// restarted together does not hammer a recovering server in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(8),
        }
    }
}

impl Backoff {
    /// Delay before attempt `failures + 1`.
    pub fn delay(&self, failures: u32) -> Duration {
        let d = self
            .initial
            .saturating_mul(1u32 << failures.min(20))
            .min(self.max);
        let half = d / 2;
        let jitter_ns = random_u64() % (half.as_nanos() as u64 + 1);
        half + Duration::from_nanos(jitter_ns)
    }
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = b.delay(3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            let d30 = b.delay(30);
            assert!(
                d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1),
                "{d30:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = (0..20).map(|_| b.delay(5)).collect();
        assert!(distinct.len() > 1, "jitter must vary the delay");
    }
}
