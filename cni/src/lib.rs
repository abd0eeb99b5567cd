//! `ycloud-cni`: the per-node half of ycloud.
//!
//! Data flow: the runtime runs the plugin binary (`ycloud-cni`, [`plugin`]) with the CNI
//! environment and network configuration ([`spec`]); the plugin forwards the request over a
//! root-only unix socket ([`protocol`]) to the node daemon (`ycloud-cnid`, [`daemon`]),
//! which reads the pod's addressing from the controller's annotation ([`annotation`]),
//! plumbs the kernel side over rtnetlink on dedicated netns threads ([`netns`], [`link`])
//! and the OVS side through `ycloud-ovsdb` ([`ovs`]), and answers with a CNI result or a
//! CNI error ([`error`]). In smartnic mode an SR-IOV VF found through sysfs
//! ([`smartnic`]) replaces the veth; in the dpu-host and dpu modes the host moves the VF and
//! the DPU plugs its representor, meeting through the pod ([`dpu`]). Besides requests, the daemon keeps the node's
//! management ports (host access to ClusterIPs) in place ([`mgmt`]). In cluster mode
//! (feature `kube`) the annotations come from watches on the API server (`kube`) instead
//! of the controller's status directory.
//!
//! See docs/cni.md for modes, configuration, the flow of an ADD and the error codes.

pub mod annotation;
pub mod daemon;
pub mod dpu;
pub mod error;
#[cfg(feature = "kube")]
pub mod kube;
pub mod link;
pub mod mgmt;
pub mod netns;
pub mod ovs;
pub mod plugin;
/// The node's NetworkProbe runner (probes inside pod namespaces).
pub mod probes;
pub mod protocol;
pub mod smartnic;
pub mod spec;

pub use error::CniError;
