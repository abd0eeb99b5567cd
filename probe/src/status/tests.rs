use super::*;
use crate::health::Thresholds;

const T: Thresholds = Thresholds {
    success: 1,
    failure: 2,
};

fn wall(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap())
}

/// Feeds results one second apart; returns which seconds published.
fn feed(e: &mut StatusEmitter, h: &mut Health, t0: Instant, from: u64, results: &str) -> Vec<u64> {
    let mut published = vec![];
    for (i, c) in results.chars().enumerate() {
        let sec = from + i as u64;
        let ok = c == 'o';
        let tr = h.observe(ok, T);
        let out = if ok {
            Outcome::success(Some(Duration::from_millis(3)))
        } else {
            Outcome::failure("refused")
        };
        if e.record(
            Some(1),
            h,
            tr,
            &out,
            t0 + Duration::from_secs(sec),
            wall(sec as i64),
        )
        .is_some()
        {
            published.push(sec);
        }
    }
    published
}

#[test]
fn transitions_publish_at_once_and_the_rest_at_most_every_ten_seconds() {
    let (mut e, mut h, t0) = (
        StatusEmitter::new(Duration::from_secs(10), "m"),
        Health::default(),
        Instant::now(),
    );
    // 0: first result (and the first verdict); 1..=9 quiet; 10 due; 11..=14 quiet;
    // 15: first failure (below the threshold) quiet; 16: second failure flips it.
    let p = feed(&mut e, &mut h, t0, 0, "ooooooooooooooox");
    assert_eq!(p, [0, 10]);
    let p = feed(&mut e, &mut h, t0, 16, "x");
    assert_eq!(p, [16]);
    assert_eq!(e.status().healthy, Some(false));
    assert_eq!(e.status().last_error.as_deref(), Some("refused"));
    assert_eq!(e.status().last_transition_time, Some(wall(16)));
    // back up at 17 (success threshold 1): at once, error cleared, latency kept.
    assert_eq!(feed(&mut e, &mut h, t0, 17, "o"), [17]);
    let s = e.status();
    assert_eq!(
        (s.healthy, s.last_error.clone(), s.latency_millis),
        (Some(true), None, Some(3))
    );
    assert_eq!(s.consecutive_successes, 1);
}

#[test]
fn a_new_generation_publishes_at_once() {
    let (mut e, mut h, t0) = (
        StatusEmitter::new(Duration::from_secs(10), "m"),
        Health::default(),
        Instant::now(),
    );
    feed(&mut e, &mut h, t0, 0, "oo");
    let tr = h.observe(true, T);
    let s = e.record(
        Some(2),
        &h,
        tr,
        &Outcome::success(None),
        t0 + Duration::from_secs(2),
        wall(2),
    );
    assert_eq!(s.expect("published").observed_generation, Some(2));
}

#[test]
fn a_long_error_is_cut_to_the_crd_bound() {
    let s = invalid(Some(3), &"é".repeat(2000), wall(0));
    let c = &s.conditions[0];
    assert!(c.message.len() <= MAX_ERROR_LEN && c.message.ends_with("..."));
    assert_eq!((s.healthy, s.observed_generation), (None, Some(3)));
}

#[test]
fn a_spread_delays_only_the_first_periodic_publication() {
    let (mut e, mut h, t0) = (
        StatusEmitter::new(Duration::from_secs(10), "m").with_spread(Duration::from_secs(4)),
        Health::default(),
        Instant::now(),
    );
    // 0 (first), then due at 14 instead of 10, then every 10 s: 24.
    let p = feed(&mut e, &mut h, t0, 0, &"o".repeat(30));
    assert_eq!(p, [0, 14, 24]);
}
