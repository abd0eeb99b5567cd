//! `ycloud-controller`: the control plane. The network compiler (objects → desired OVN
//! rows → a plan against the OVSDB cache → one transaction) and the controller that drives
//! it from the Kubernetes API or a manifest directory.

pub mod compiler;
pub mod offload;
