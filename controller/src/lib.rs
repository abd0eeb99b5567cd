//! `ycloud-controller`: the control plane. The network compiler (objects → desired OVN
//! rows → a plan against the OVSDB cache → one transaction) and the controller that drives
//! it from the Kubernetes API or a manifest directory.

pub mod compiler;
pub mod config;
pub mod ctl;
pub mod demotions;
pub mod dirwatch;
pub mod error;
pub mod http;
pub mod incremental;
pub mod index;
pub mod ipam;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "kube")]
pub mod kube_status;
pub mod offload;
pub mod par;
pub mod probes;
pub mod reconcile;
pub mod resolve;
pub mod sbwatch;
pub mod source;
pub mod status;
pub mod store;
