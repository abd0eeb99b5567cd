//! Running one probe: open the socket in the right namespace, check, time it, bound it.
//!
//! Every check runs under the target's timeout: a backend that answers after it is as
//! failed as one that never answers (a load balancer cannot wait for it either).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{Namespace, NetnsWorker};
use crate::target::{Check, Target};

mod http;
mod icmp;
mod tcp;
mod udp;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    /// How long the successful check took; `None` for failures and for a UDP success by
    /// silence (there was nothing to time).
    pub latency: Option<Duration>,
    /// Why it failed (`None` on success).
    pub error: Option<String>,
}

impl Outcome {
    pub fn success(latency: Option<Duration>) -> Outcome {
        Outcome {
            success: true,
            latency,
            error: None,
        }
    }

    pub fn failure(error: impl Into<String>) -> Outcome {
        Outcome {
            success: false,
            latency: None,
            error: Some(error.into()),
        }
    }
}

/// What a check returns: the latency to report, or why it failed.
type CheckResult = Result<Option<Duration>, String>;

/// Runs probes. Holds the netns thread (started on the first probe in another namespace,
/// restarted if it ever ends); share one per process.
#[derive(Debug, Default)]
pub struct Prober {
    worker: Mutex<Option<NetnsWorker>>,
}

impl Prober {
    pub fn new() -> Prober {
        Prober::default()
    }

    /// Probes `target` from namespace `ns`. Never fails as a call: a failed probe is an
    /// [`Outcome`] with the reason.
    pub async fn probe(&self, target: &Target, ns: &Namespace) -> Outcome {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + target.timeout);
        // UDP decides "no answer = success" itself at the deadline; the outer bound must not
        // beat it to it.
        let grace = match target.check {
            Check::Udp => Duration::from_millis(50),
            _ => Duration::ZERO,
        };
        let check = async {
            match &target.check {
                Check::Tcp => tcp::check(self, target, ns, start).await,
                Check::Udp => udp::check(self, target, ns, start, deadline).await,
                Check::Http { .. } => http::check(self, target, ns, start).await,
                Check::Icmp => icmp::check(self, target, ns, start).await,
            }
        };
        match tokio::time::timeout_at(deadline + grace, check).await {
            Ok(Ok(latency)) => Outcome::success(latency),
            Ok(Err(e)) => Outcome::failure(e),
            Err(_) => Outcome::failure(format!(
                "no answer within the timeout of {} ms",
                target.timeout.as_millis()
            )),
        }
    }

    /// A non-blocking socket in `ns`.
    pub(crate) async fn socket(
        &self,
        ns: &Namespace,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> Result<Socket, String> {
        let path = match ns {
            Namespace::Current => {
                let s = Socket::new(domain, ty, protocol).map_err(|e| format!("socket: {e}"))?;
                s.set_nonblocking(true)
                    .map_err(|e| format!("socket: {e}"))?;
                return Ok(s);
            }
            Namespace::Unavailable(why) => return Err(why.clone()),
            Namespace::Path(p) => p,
        };
        let worker = {
            let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
            match w.as_ref() {
                Some(worker) if worker.is_alive() => worker.clone(),
                _ => {
                    let worker = NetnsWorker::spawn().map_err(|e| e.to_string())?;
                    *w = Some(worker.clone());
                    worker
                }
            }
        };
        worker
            .socket(path, domain, ty, protocol)
            .await
            .map_err(|e| format!("socket in {}: {e}", path.display()))
    }
}

/// A millisecond count for messages.
pub(crate) fn ms(d: Duration) -> u128 {
    d.as_millis()
}

pub(crate) fn domain_of(addr: &SocketAddr) -> Domain {
    Domain::for_address(*addr)
}
