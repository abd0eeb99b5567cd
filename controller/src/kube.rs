//! The controller's Kubernetes side (feature `kube`): the reflectors that fill the
//! [`crate::store::Store`] ([`source`]), the status sink that writes to the API server
//! ([`sink`], on [`crate::kube_status`]), leader election on a Lease ([`lease`]) and the
//! list of every API call made ([`api_calls`], the code's side of the chart's RBAC).
//!
//! The reconcile loop ([`crate::reconcile::Controller`]) is the same as in manifest
//! mode: only the source and the sink differ.

pub mod api_calls;
pub mod lease;
pub mod probes;
pub mod sink;
pub mod source;

use std::time::Duration;

/// What cluster mode needs beyond [`crate::reconcile::Options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// `None`: no leader election (one replica only).
    pub lease: Option<lease::LeaseConfig>,
    /// This replica's name (events' reporting instance, the lease holder).
    pub identity: String,
    /// How often to look for KubeVirt's CRD until it is found.
    pub crd_check: Duration,
}
