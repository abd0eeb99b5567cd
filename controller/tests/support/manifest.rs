//! What the tests that run the controller binary in manifest mode on a sandbox share: the
//! child-process guard, polling, plugging pods with the addresses the controller decided,
//! and reading which backends answered.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ycloud_testsupport::sandbox::{Pod, PodSpec, Sandbox};

/// One HTTP request's time limit.
pub const HTTP: Duration = Duration::from_secs(3);

/// The controller as a child process, killed and reaped on drop.
pub struct Controller(pub Child);

impl Controller {
    /// `ycloud-controller` in manifest mode on `manifests` against the NB at remote `nb`,
    /// polling every 100 ms, with `extra` flags; its log (info) on the test's stderr.
    pub fn start(manifests: &Path, nb: &str, extra: &[&str]) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_ycloud-controller"))
            .arg(format!("--source=dir:{}", manifests.display()))
            .arg(format!("--nb={nb}"))
            .arg("--poll-ms=100")
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ycloud-controller");
        Controller(child)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 100 ms until it gives a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Plugs pod `shop/<name>` the way the CNI does: with the addresses in the controller's
/// annotation file under `status`.
pub fn plug(sb: &Sandbox, status: &Path, name: &str) -> Pod {
    let file = status.join(format!("pods/shop/{name}.json"));
    let net: serde_json::Value = wait_for(
        &format!("{name}'s annotation"),
        Duration::from_secs(30),
        || serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok(),
    );
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_owned();
    sb.add_pod(&PodSpec {
        name: &s(&net["logicalSwitchPort"]),
        switch: &s(&net["logicalSwitch"]),
        mac: &s(&net["mac"]),
        address: &s(&net["ips"][0]),
        gateway: &s(&net["gateways"][0]),
        mtu: None,
    })
    .unwrap_or_else(|e| panic!("plugging {name}: {e}"))
}

/// The labels of the backends that answered `n` GETs of `url` from `from` (the backends
/// answer "<label> from=<source address>"); the first failed request is the error.
pub fn bodies(from: &Pod, url: &str, n: usize) -> Result<BTreeSet<String>, String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let body = from
            .http_get(url, HTTP)
            .map_err(|e| format!("GET {url}: {e}"))?;
        let label = body.split_whitespace().next().unwrap_or_default();
        seen.insert(label.to_owned());
    }
    Ok(seen)
}
