//! Runs many probes at their intervals and hands out the statuses worth publishing.
//!
//! One tokio task per probe: it sleeps until its next tick, takes a permit of the shared
//! semaphore (bounded concurrency: at most `max_concurrency` probes in flight, so a burst
//! cannot open thousands of sockets at once), probes, updates its [`Health`] and its
//! [`StatusEmitter`], and sends a [`Report`] when a status is due. The first tick of each
//! probe is at a random point of its interval, and every interval is stretched or shrunk by
//! up to 5 %: probes added together (a daemon restart, a big service) spread out instead of
//! firing in lockstep. A tick missed because the node was busy is skipped, not caught up.
//!
//! Changing only a probe's generation keeps its task; any other change restarts it, keeping
//! its verdict and counters (the backend did not change health because its spec did).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use ycloud_crds::{NetworkProbeSpec, NetworkProbeStatus};

use crate::error::ProbeError;
use crate::health::{Health, Thresholds, Transition};
use crate::netns::Namespace;
use crate::prober::{Outcome, Prober};
use crate::status::{self, StatusEmitter};
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Probes in flight at once, all probes together.
    pub max_concurrency: usize,
    /// Minimum time between two published statuses of one probe without a transition.
    pub status_interval: Duration,
    /// Reports buffered before probe tasks wait for the consumer.
    pub channel_capacity: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrency: 512,
            status_interval: Duration::from_secs(10),
            channel_capacity: 4096,
        }
    }
}

/// One probe to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub target: Target,
    pub namespace: Namespace,
    pub interval: Duration,
    pub thresholds: Thresholds,
    /// The probe object's `metadata.generation`, echoed as `observedGeneration`.
    pub generation: Option<i64>,
}

impl Job {
    /// The job of a `NetworkProbe` spec, run from `namespace`; `what` names it in errors.
    pub fn from_spec(
        what: &str,
        spec: &NetworkProbeSpec,
        namespace: Namespace,
        generation: Option<i64>,
    ) -> Result<Job, ProbeError> {
        Ok(Job {
            target: Target::from_spec(what, spec)?,
            namespace,
            interval: Duration::from_millis(u64::from(spec.probe.interval_millis.max(10))),
            thresholds: Thresholds::of(&spec.probe),
            generation,
        })
    }

    fn same_except_generation(&self, other: &Job) -> bool {
        let Job {
            target,
            namespace,
            interval,
            thresholds,
            generation: _,
        } = self;
        *target == other.target
            && *namespace == other.namespace
            && *interval == other.interval
            && *thresholds == other.thresholds
    }
}

/// A status to publish.
#[derive(Debug, Clone)]
pub struct Report {
    /// The key the job was added under.
    pub key: String,
    pub status: NetworkProbeStatus,
    /// The verdict change that caused this report, if one did.
    pub transition: Option<Transition>,
    /// The probe result that caused it.
    pub outcome: Outcome,
}

struct Running {
    job: Job,
    generation: watch::Sender<Option<i64>>,
    health: Arc<Mutex<Health>>,
    task: JoinHandle<()>,
}

/// The set of running probes. Dropping it stops them all.
pub struct Scheduler {
    cfg: SchedulerConfig,
    prober: Arc<Prober>,
    permits: Arc<Semaphore>,
    jobs: HashMap<String, Running>,
    tx: mpsc::Sender<Report>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("cfg", &self.cfg)
            .field("jobs", &self.jobs.len())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler and the receiving end of its reports. Must be created inside a tokio
    /// runtime (it spawns tasks there).
    pub fn new(cfg: SchedulerConfig) -> (Scheduler, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let s = Scheduler {
            permits: Arc::new(Semaphore::new(cfg.max_concurrency.max(1))),
            prober: Arc::new(Prober::new()),
            cfg,
            jobs: HashMap::new(),
            tx,
        };
        (s, rx)
    }

    /// Starts `job` under `key`, or updates the job running there (see the module doc).
    pub fn upsert(&mut self, key: &str, job: Job) {
        if let Some(r) = self.jobs.get_mut(key)
            && r.job.same_except_generation(&job)
        {
            if r.job.generation != job.generation {
                r.job.generation = job.generation;
                r.generation.send_replace(job.generation);
            }
            return;
        }
        let health = match self.jobs.remove(key) {
            Some(old) => {
                old.task.abort();
                old.health
            }
            None => Arc::new(Mutex::new(Health::default())),
        };
        let (gen_tx, gen_rx) = watch::channel(job.generation);
        let task = tokio::spawn(run(
            key.to_string(),
            job.clone(),
            gen_rx,
            health.clone(),
            self.prober.clone(),
            self.permits.clone(),
            self.tx.clone(),
            self.cfg.status_interval,
        ));
        self.jobs.insert(
            key.to_string(),
            Running {
                job,
                generation: gen_tx,
                health,
                task,
            },
        );
    }

    /// Stops the probe under `key`; whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.jobs.remove(key) {
            Some(r) => {
                r.task.abort();
                true
            }
            None => false,
        }
    }

    /// Stops every probe whose key `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.jobs.retain(|k, r| {
            let kept = keep(k);
            if !kept {
                r.task.abort();
            }
            kept
        });
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.jobs.keys().map(String::as_str)
    }

    pub fn job(&self, key: &str) -> Option<&Job> {
        self.jobs.get(key).map(|r| &r.job)
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The current verdict and counters of the probe under `key`.
    pub fn health(&self, key: &str) -> Option<Health> {
        self.jobs
            .get(key)
            .map(|r| *r.health.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for r in self.jobs.values() {
            r.task.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    key: String,
    job: Job,
    mut generation: watch::Receiver<Option<i64>>,
    health: Arc<Mutex<Health>>,
    prober: Arc<Prober>,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Report>,
    status_interval: Duration,
) {
    let mut rng = Rng::new(&key);
    let interval = job.interval;
    let mut next = Instant::now() + interval.mul_f64(rng.unit());
    let mut emitter = StatusEmitter::new(
        status_interval,
        format!(
            "probed every {} ms from {}",
            interval.as_millis(),
            job.namespace
        ),
    )
    .with_spread(status_interval.mul_f64(rng.unit()));
    loop {
        tokio::time::sleep_until(next).await;
        let outcome = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            prober.probe(&job.target, &job.namespace).await
        };
        let (h, transition) = {
            let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
            let t = h.observe(outcome.success, job.thresholds);
            (*h, t)
        };
        let gen_now = *generation.borrow_and_update();
        let published = emitter.record(
            gen_now,
            &h,
            transition,
            &outcome,
            std::time::Instant::now(),
            status::now(),
        );
        if let Some(status) = published {
            let report = Report {
                key: key.clone(),
                status,
                transition,
                outcome,
            };
            if tx.send(report).await.is_err() {
                return; // nobody listens: the scheduler is gone
            }
        }
        // ±5 % jitter; skip ticks already missed instead of bursting to catch up.
        next += interval.mul_f64(0.95 + 0.1 * rng.unit());
        let now = Instant::now();
        if next < now {
            next = now + interval.mul_f64(0.1 * rng.unit());
        }
    }
}

/// splitmix64, seeded by the probe's key and the clock: jitter needs spread, not secrecy,
/// and a PRNG crate for five lines is not worth it.
struct Rng(u64);

impl Rng {
    fn new(key: &str) -> Rng {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        Rng(h.finish())
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
