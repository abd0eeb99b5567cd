//! The network compiler: from ycloud's objects to the rows of OVN_Northbound.
//!
//! Everything here is pure: plain data in, plain data out, no client, no clock, no async.
//! The pipeline is `topology` (the objects, already validated, in a neutral form that the
//! API-server watch, the manifest directory, tests and benchmarks all fill alike) →
//! `lb` and friends (the desired rows) → the planner (a diff against the OVSDB cache) →
//! one transaction.

pub mod alloc;
pub mod demotion;
pub mod gateways;
pub mod lb;
pub mod names;
pub mod nb;
pub mod network;
pub mod plan;
pub mod topology;
