//! `ycloud-probe`: the health probers of `NetworkProbe`s and the machinery that runs
//! thousands of them.
//!
//! Data flow: a `NetworkProbeSpec` becomes a [`Target`] (what to send where, the timeout)
//! and a [`Thresholds`]; the [`Scheduler`] runs each probe at its interval (random phase,
//! small jitter, bounded concurrency) through a [`Prober`], whose sockets are opened inside
//! the backend's network namespace ([`Namespace`], [`netns`]: one dedicated thread does
//! `setns` + `socket()`, the socket keeps its namespace and is then driven by tokio); each
//! [`Outcome`] feeds the probe's [`Health`] (consecutive successes/failures → healthy flips,
//! no flapping), and a [`StatusEmitter`] decides when a `NetworkProbeStatus` is worth
//! publishing (on a transition at once, otherwise at a bounded rate). The scheduler hands
//! those statuses out as [`Report`]s; [`files`] reads probes from and writes statuses to the
//! manifest-mode status directory.
//!
//! Used by the node daemon (`ycloud-cnid`, probes of its pods) and by the controller
//! (backends no node of ours hosts). See docs/probes.md.

pub mod error;
pub mod files;
pub mod health;
pub mod netns;
pub mod prober;
pub mod scheduler;
pub mod status;
pub mod target;

pub use error::ProbeError;
pub use health::{Health, Thresholds, Transition};
pub use netns::Namespace;
pub use prober::{Outcome, Prober};
pub use scheduler::{Job, Report, Scheduler, SchedulerConfig};
pub use status::StatusEmitter;
pub use target::{Check, Target};
