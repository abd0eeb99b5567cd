//! `ycloud-ovsdb`: the OVSDB client shared by the controller (OVN_Northbound) and the CNI
//! (Open_vSwitch).
//!
//! It knows nothing of Kubernetes. Data flows: a byte stream (unix/tcp/ssl) → the JSON-RPC
//! 1.0 framer → one reader task that answers `echo`, routes replies by id and keeps
//! notifications in wire order → the monitor cache → snapshots and change events for
//! callers. Writes go the other way: op builders return operations, one `transact` sends
//! them atomically.

// H3: data, schema, operations, cache, typed models.
pub mod cache;
pub mod model;
pub mod models;
pub mod ops;
pub mod schema;
pub mod value;

// H2: protocol, transport, client.
pub mod client;
pub mod codec;
pub mod error;
pub mod jsonrpc;
pub mod rpc;
pub mod transport;

pub use client::{Client, ClientConfig};
pub use error::Error;
