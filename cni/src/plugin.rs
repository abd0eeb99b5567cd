//! The plugin binary's logic, kept out of `main` so it runs in unit tests: validate the
//! environment and stdin, answer VERSION itself, forward everything else to the daemon.

use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;

use crate::error::{CniError, code};
use crate::protocol::{self, Request};
use crate::spec::{CniEnv, Command, NetConf, SUPPORTED_VERSIONS, VERSION_1_1, version_result};

/// How long the plugin waits for the daemon unless the configuration says otherwise: more
/// than the daemon's own annotation and ovn-installed timeouts, so the daemon's precise
/// error wins over a bare timeout here.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: Option<Json>,
    pub exit_code: i32,
}

impl Outcome {
    fn error(e: &CniError, cni_version: &str) -> Outcome {
        Outcome {
            stdout: Some(e.to_json(cni_version)),
            exit_code: 1,
        }
    }
}

/// Runs one plugin invocation.
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Errors are reported in the configuration's version when it names a supported one.
    let env = match CniEnv::from_vars(&get_env) {
        Ok(env) => env,
        Err(e) => return Outcome::error(&e, &claimed_version(stdin)),
    };
    if env.command == Command::Version {
        return version(stdin);
    }
    let config = match NetConf::parse(stdin, env.command) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, &claimed_version(stdin)),
    };
    let version = config.cni_version.clone();
    if let Err(e) = config.valid_attachments() {
        return Outcome::error(&e, &version);
    }
    let timeout = config
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let socket = config.daemon_socket().to_string();
    let command = env.command;
    match protocol::call(Path::new(&socket), &Request { env, config }, timeout) {
        Ok(result) => Outcome {
            // Only ADD prints a result; the others print nothing on success.
            stdout: (command == Command::Add).then_some(result),
            exit_code: 0,
        },
        Err(e) => Outcome::error(&e, &version),
    }
}

/// VERSION: stdin holds at least `{"cniVersion": …}`; the answer lists what we support.
fn version(stdin: &[u8]) -> Outcome {
    let claimed = match serde_json::from_slice::<Json>(stdin) {
        Ok(j) => j
            .get("cniVersion")
            .and_then(Json::as_str)
            .map(str::to_string),
        // Some runtimes send an empty stdin for VERSION.
        Err(_) if stdin.iter().all(u8::is_ascii_whitespace) => None,
        Err(e) => {
            let err = CniError::new(code::DECODE, format!("VERSION: stdin is not JSON: {e}"));
            return Outcome::error(&err, VERSION_1_1);
        }
    };
    let answer_version = match claimed {
        Some(v) if SUPPORTED_VERSIONS.contains(&v.as_str()) => v,
        _ => VERSION_1_1.to_string(),
    };
    Outcome {
        stdout: Some(version_result(&answer_version)),
        exit_code: 0,
    }
}

/// The `cniVersion` stdin claims, if readable and supported: the version to report an error in.
fn claimed_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Json>(stdin)
        .ok()
        .and_then(|j| {
            j.get("cniVersion")
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| VERSION_1_1.to_string())
}
