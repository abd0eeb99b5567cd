//! The crate's one error type: a CNI error as the spec defines it (a numeric code, a
//! message, details). Every failure — in the plugin, on the socket, in the daemon's netlink
//! or OVSDB work — ends as one of these, because that is what the runtime gets to see.

use serde::{Deserialize, Serialize};

/// The spec's well-known codes (0-99) and ours (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// ycloud: the pod annotation did not appear in time (controller not done, or the pod
    /// has no network).
    pub const ANNOTATION: u32 = 100;
    /// ycloud: a netlink operation failed.
    pub const NETLINK: u32 = 101;
    /// ycloud: an OVSDB operation on the node's Open_vSwitch database failed.
    pub const OVS: u32 = 102;
    /// ycloud: ovn-controller did not set `ovn-installed` in time.
    pub const OVN_INSTALL_TIMEOUT: u32 = 103;
    /// ycloud: CHECK found the attachment different from what ADD made.
    pub const CHECK_FAILED: u32 = 104;
    /// ycloud: the daemon broke the protocol (a bug or a version skew).
    pub const PROTOCOL: u32 = 105;
    /// ycloud: the pod's network namespace could not be opened.
    pub const NETNS: u32 = 106;
}

/// A CNI error: printed on stdout by the plugin as `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }

    /// Whether a runtime may simply retry (the spec's code 11 and our timeouts).
    pub fn category(&self) -> &'static str {
        match self.code {
            code::TRY_AGAIN_LATER | code::ANNOTATION | code::OVN_INSTALL_TIMEOUT => "transient",
            code::NETLINK | code::OVS | code::IO | code::NETNS => "node",
            _ => "request",
        }
    }
}

/// Builds a `map_err` closure that wraps any error as `code` with a step description.
pub fn wrap<E: std::fmt::Display>(
    code: u32,
    step: impl Into<String>,
) -> impl FnOnce(E) -> CniError {
    let step = step.into();
    move |e| CniError::new(code, format!("{step}: {e}"))
}
