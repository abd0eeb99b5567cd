//! The CNI specification's wire format (1.0.0 and 1.1.0): the environment a runtime sets,
//! the network configuration on stdin, results and errors. Pure code: parsing and
//! validation here never touch the kernel, so the plugin binary and the daemon agree on
//! one definition and the conformance rules test without root.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{CniError, code};

/// Versions whose ADD/DEL/CHECK semantics we implement. Older (0.x) results have a different
/// shape; a runtime that only speaks those gets error 1 rather than a result it misreads.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];
/// STATUS and GC exist only from 1.1.0 on.
pub const VERSION_1_1: &str = "1.1.0";
/// The plugin's `type` in a network configuration.
pub const PLUGIN_TYPE: &str = "ycloud-cni";
/// Where the daemon listens when the network configuration does not say.
pub const DEFAULT_DAEMON_SOCKET: &str = "/run/ycloud/cni.sock";

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                        "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                    ),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The CNI environment, validated for one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS` split into `KEY=VALUE` pairs.
    pub args: BTreeMap<String, String>,
    pub path: Option<String>,
}

impl CniEnv {
    /// Reads and validates the variables `command` needs, from `get` (the process
    /// environment in the binary, a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match non_empty("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_COMMAND is not set: this program is a CNI plugin, run by a container runtime",
                ));
            }
        };
        let env = CniEnv {
            command,
            container_id: non_empty("CNI_CONTAINERID"),
            netns: non_empty("CNI_NETNS"),
            ifname: non_empty("CNI_IFNAME"),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
            path: non_empty("CNI_PATH"),
        };
        let need = |v: &Option<String>, name: &str| match v {
            Some(_) => Ok(()),
            None => Err(CniError::new(
                code::INVALID_ENV,
                format!("{name} is required for {} but is not set", command.as_str()),
            )),
        };
        match command {
            Command::Add | Command::Check => {
                need(&env.container_id, "CNI_CONTAINERID")?;
                need(&env.netns, "CNI_NETNS")?;
                need(&env.ifname, "CNI_IFNAME")?;
            }
            // DEL must work after the namespace is gone: CNI_NETNS is optional.
            Command::Del => {
                need(&env.container_id, "CNI_CONTAINERID")?;
                need(&env.ifname, "CNI_IFNAME")?;
            }
            Command::Version | Command::Status | Command::Gc => {}
        }
        if let Some(id) = &env.container_id {
            validate_container_id(id)?;
        }
        if let Some(ifname) = &env.ifname {
            validate_ifname(ifname)?;
        }
        Ok(env)
    }

    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// `CNI_ARGS`: `K1=V1;K2=V2`.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {part:?} is not KEY=VALUE"),
            ));
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The spec: a container ID is non-empty, starts with an alphanumeric character and holds
/// only alphanumerics, `_`, `.` and `-`. It ends up in interface names and OVS keys.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_CONTAINERID {id:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
            ),
        ))
    }
}

/// The kernel's rules for a link name (`dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_IFNAME {name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
            ),
        ))
    } else {
        Ok(())
    }
}

/// A typed optional field of the configuration: name, check, what the check wants.
type FieldCheck = (&'static str, fn(&Json) -> bool, &'static str);

/// The network configuration the runtime passes on stdin. Unknown keys are kept in
/// `extra` (the runtime may add `runtimeConfig`, `args`, …) and forwarded untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_socket: Option<String>,
    /// Seconds the plugin waits for the daemon's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Json>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Json>,
}

impl NetConf {
    /// Parses stdin for `command`: decode errors are code 6, missing or wrong fields 7, an
    /// unsupported `cniVersion` 1.
    pub fn parse(bytes: &[u8], command: Command) -> Result<NetConf, CniError> {
        let json: Json = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("the network configuration on stdin is not JSON: {e}"),
            )
        })?;
        if !json.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration on stdin is not a JSON object",
            ));
        }
        for field in ["cniVersion", "name", "type"] {
            match json.get(field) {
                Some(Json::String(s)) if !s.is_empty() => {}
                Some(_) => {
                    return Err(CniError::new(
                        code::INVALID_NETWORK_CONFIG,
                        format!("network configuration: {field:?} must be a non-empty string"),
                    ));
                }
                None => {
                    return Err(CniError::new(
                        code::INVALID_NETWORK_CONFIG,
                        format!("network configuration: {field:?} is missing"),
                    ));
                }
            }
        }
        let typed: [FieldCheck; 3] = [
            (
                "daemonSocket",
                |v| v.as_str().is_some_and(|s| !s.is_empty()),
                "a non-empty string",
            ),
            (
                "timeoutSeconds",
                |v| v.as_u64().is_some_and(|n| n > 0),
                "a positive integer",
            ),
            ("prevResult", Json::is_object, "an object"),
        ];
        for (field, ok, what) in typed {
            if let Some(v) = json.get(field).filter(|v| !v.is_null())
                && !ok(v)
            {
                return Err(CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!("network configuration: {field:?} must be {what}, not {v}"),
                ));
            }
        }
        let conf: NetConf = serde_json::from_value(json).map_err(|e| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("network configuration: {e}"),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if matches!(command, Command::Status | Command::Gc) && conf.cni_version != VERSION_1_1 {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{} needs cniVersion {VERSION_1_1}, the configuration says {}",
                    command.as_str(),
                    conf.cni_version
                ),
            ));
        }
        if conf.type_ != PLUGIN_TYPE {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "network configuration: type is {:?}, this plugin is {PLUGIN_TYPE:?}",
                    conf.type_
                ),
            ));
        }
        if let Some(prev) = &conf.prev_result {
            serde_json::from_value::<CniResult>(prev.clone()).map_err(|e| {
                CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!("network configuration: prevResult is not a CNI result: {e}"),
                )
            })?;
        }
        Ok(conf)
    }

    pub fn daemon_socket(&self) -> &str {
        self.daemon_socket
            .as_deref()
            .unwrap_or(DEFAULT_DAEMON_SOCKET)
    }

    /// `cni.dev/valid-attachments` of a GC request.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        match self.extra.get("cni.dev/valid-attachments") {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!("network configuration: cni.dev/valid-attachments: {e}"),
                )
            }),
        }
    }
}

/// One element of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A successful ADD's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The VERSION command's answer.
pub fn version_result(cni_version: &str) -> Json {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
#[path = "spec/tests.rs"]
mod tests;
