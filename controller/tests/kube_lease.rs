//! Leader election against one Lease held by a mock API server (tower-test): two
//! electors, only one writes; the leader that can no longer renew stops writing at its
//! deadline, before the standby takes over; a released lease is taken at once.
#![cfg(feature = "kube")]

#[path = "support/kube_mock.rs"]
mod kube_mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_mock::MockApi;
use ycloud_controller::kube::lease::{Elector, Leadership, LeaseConfig};

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "ycloud".into(),
        name: "ycloud-controller".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(200),
    }
}

/// A writer that writes only through its gate, into a shared log of (who, when).
fn writer(
    who: &'static str,
    leadership: Leadership,
    log: Arc<std::sync::Mutex<Vec<(&'static str, Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if leadership.is_leading() {
                log.lock().expect("log").push((who, Instant::now()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test]
async fn two_electors_on_one_lease_never_write_at_the_same_time_and_the_standby_takes_over() {
    let api = MockApi::default();
    // Each replica has its own connection to the one API server; `a_down` cuts A's.
    let a_down = Arc::new(AtomicBool::new(false));
    let a = Elector::new(api.client_with_outage(a_down.clone()), config("ctl-a"));
    let b = Elector::new(api.client(), config("ctl-b"));
    let (la, lb) = (a.leadership(), b.leadership());
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let wa = writer("a", la.clone(), log.clone());
    let wb = writer("b", lb.clone(), log.clone());
    let (stop_a, stop_a_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stop_b_rx) = tokio::sync::oneshot::channel::<()>();
    let ta = tokio::spawn(a.run(async move {
        let _ = stop_a_rx.await;
    }));
    // B starts a little later: A creates the lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tb = tokio::spawn(b.run(async move {
        let _ = stop_b_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(la.is_leading(), "A created the lease and renews it");
    assert!(!lb.is_leading(), "B waits");
    assert_eq!(
        api.lease_holder("ycloud", "ycloud-controller").as_deref(),
        Some("ctl-a")
    );

    // A loses the API server: its renewals fail. It must stop writing by its renew
    // deadline (1.2 s after its last successful renewal began), and B may only start
    // after the lease duration (2 s after it last saw the lease change).
    let cut = Instant::now();
    a_down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(!la.is_leading(), "A stopped writing at its renew deadline");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lb.is_leading() {
        assert!(Instant::now() < deadline, "B did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took_over = cut.elapsed();
    assert!(
        took_over < Duration::from_millis(2000 + 1200 + 500),
        "B took over within the lease time (after {took_over:?})"
    );
    assert_eq!(
        api.lease_holder("ycloud", "ycloud-controller").as_deref(),
        Some("ctl-b")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Never both: A's last write is before B's first.
    let entries = log.lock().expect("log").clone();
    let last_a = entries
        .iter()
        .filter(|(w, _)| *w == "a")
        .map(|(_, t)| *t)
        .max()
        .expect("A wrote");
    let first_b = entries
        .iter()
        .filter(|(w, _)| *w == "b")
        .map(|(_, t)| *t)
        .min()
        .expect("B wrote");
    assert!(
        last_a < first_b,
        "A wrote until {:?} after the cut, B from {:?}",
        last_a - cut,
        first_b - cut
    );
    eprintln!(
        "measured: takeover {took_over:?} after the cut; A's last write {:?} after the cut; gap to B's first {:?}",
        last_a - cut,
        first_b - last_a
    );
    assert!(
        first_b - last_a > Duration::from_millis(500),
        "a gap, not a handover on the edge: {:?}",
        first_b - last_a
    );

    // A comes back: it sees B renewing and stays a standby.
    a_down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!la.is_leading() && lb.is_leading());

    // B shuts down gracefully: it releases the lease and A takes it at its next round,
    // without waiting for the lease to expire.
    let _ = stop_b.send(());
    tb.await.expect("B's elector");
    assert!(!lb.is_leading());
    let released = Instant::now();
    while !la.is_leading() {
        assert!(
            released.elapsed() < Duration::from_millis(1500),
            "A did not take the released lease promptly"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_a.send(());
    ta.await.expect("A's elector");
    wa.abort();
    wb.abort();
    // Every call was a get/create/update of the one lease.
    for (method, path, _query) in api.requests() {
        assert_eq!(
            path.trim_end_matches("/ycloud-controller"),
            "/apis/coordination.k8s.io/v1/namespaces/ycloud/leases",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_conflicting_takeover_loses_and_the_winner_keeps_the_lease() {
    let api = MockApi::default();
    let mut a = Elector::new(api.client(), config("ctl-a"));
    let mut b = Elector::new(api.client(), config("ctl-b"));
    assert!(a.step().await.expect("create"));
    // B's create races A's: the lease exists, B sees a live holder.
    assert!(!b.step().await.expect("observe"));
    // A renews; B, still within the lease time, stays out.
    assert!(a.step().await.expect("renew"));
    assert!(!b.step().await.expect("still held"));
    assert!(a.leadership().is_leading() && !b.leadership().is_leading());
    // Someone else holds the lease now (a takeover A missed): A's next round sees it and
    // A stops writing at once, without waiting for its deadline.
    api.set_lease_holder("ycloud", "ycloud-controller", "ctl-c");
    assert!(!a.step().await.expect("round"));
    assert!(!a.leadership().is_leading());
    // A renewal that loses a race (409 Conflict) is not leadership either.
    let mut c = Elector::new(api.client(), config("ctl-c"));
    api.fail("PUT", "/leases/", 409, 1);
    assert!(
        !c.step()
            .await
            .expect("a conflict is a lost round, not an error")
    );
    assert!(!c.leadership().is_leading());
    assert!(c.step().await.expect("renew"));
    assert!(c.leadership().is_leading());
}
