//! `ycloud-crds`: the `ycloud.io/v1alpha1` API types and their validation.
//!
//! It knows nothing of OVSDB. The controller reads these objects (from the API server or
//! a manifest directory), validates them with the pure semantic validator here, and turns
//! them into OVN rows elsewhere.
