//! `ycloud-ovsdb`: the OVSDB client shared by the controller (OVN_Northbound) and the CNI
//! (Open_vSwitch).
//!
//! It knows nothing of Kubernetes. Data flows: a byte stream (unix/tcp/ssl) → the JSON-RPC
//! 1.0 framer → one reader task that answers `echo`, routes replies by id and keeps
//! notifications in wire order → the monitor cache → snapshots and change events for
//! callers. Writes go the other way: op builders return operations, one `transact` sends
//! them atomically.
