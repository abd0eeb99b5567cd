//! Test support: start a real OVN sandbox or a bare NB `ovsdb-server` per test in a temp
//! dir, and stop exactly what was started, even when the test panics.
//!
//! - [`ovsdb_server`]: a bare `ovsdb-server` (standalone or a 3-member RAFT cluster) with
//!   any of the OVN/OVS schemas, on a unix socket and a loopback TCP port.
//! - [`sandbox`]: a whole OVN chassis (NB, SB, northd, OVS, ovn-controller) through
//!   `hack/ovn-sandbox.sh`, plus "pods" in network namespaces.

pub mod fixtures;
pub mod netns;
pub mod ovsdb_server;
pub mod sandbox;
