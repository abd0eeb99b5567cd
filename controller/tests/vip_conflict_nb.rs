//! A VIP conflict in manifest mode against a real OVN_Northbound ovsdb-server: the service
//! that holds the VIP stays Ready and its edits keep landing; the newcomer that asks for the
//! same VIP is refused with a condition naming the holder and owns no row; that survives a
//! controller restart (the holder is known from NB then); deleting the holder hands the VIP
//! to the newcomer.
//!
//! The newcomer's name ("thief") sorts before the holder's ("web") and neither has a
//! creation time (manifests never do): the older-by-name rule alone would hand the VIP to
//! the newcomer, so this only passes if holding it decides first.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

const TOPOLOGY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: ycloud.io/v1alpha1
kind: Vpc
metadata: {name: tenant-a}
spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [shop]}
---
apiVersion: ycloud.io/v1alpha1
kind: Subnet
metadata: {name: a-web}
spec: {vpc: tenant-a, cidrBlocks: [10.0.1.0/24]}
";

fn service(name: &str, backend: &str) -> String {
    format!(
        "
apiVersion: ycloud.io/v1alpha1
kind: YusurService
metadata: {{name: {name}, namespace: shop}}
spec:
  scenarios: [ClusterIP]
  clusterIPs: [10.96.0.100]
  ports: [{{name: http, port: 80, targetPort: 8080}}]
  staticBackends: [{{address: {backend}}}]
"
    )
}

/// The controller as a child process, killed and reaped on drop (also on panic).
struct Controller(Child);

impl Controller {
    fn start(dir: &Path, nb: &OvsdbServer) -> Controller {
        Controller(
            Command::new(env!("CARGO_BIN_EXE_ycloud-controller"))
                .arg(format!("--source=dir:{}", dir.display()))
                .arg(format!("--nb={}", nb.unix_remote()))
                .arg("--poll-ms=100")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn ycloud-controller"),
        )
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `vips` column of load balancer `lb` (empty when there is no such row).
fn vips(nb: &OvsdbServer, lb: &str) -> String {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", nb.unix_remote()))
        .args(["--timeout=10", "--bare", "--columns=vips", "find"])
        .arg("Load_Balancer")
        .arg(format!("name=\"{lb}\""))
        .output()
        .expect("run ovn-nbctl");
    assert!(
        out.status.success(),
        "ovn-nbctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Ready condition of service `shop/<name>`: (status, reason, message).
fn ready(dir: &Path, name: &str) -> Option<(String, String, String)> {
    let doc = ycloud_controller::status::read(
        &dir.join(format!(".status/YusurService/shop/{name}.yaml")),
    )?;
    let (s, reason, msg) = ycloud_controller::status::condition_in(&doc, "Ready")?;
    Some((format!("{s:?}"), reason, msg))
}

const WEB_LB: &str = "ysvc:shop/web:tcp:cluster";
const THIEF_LB: &str = "ysvc:shop/thief:tcp:cluster";

#[test]
fn the_holder_of_a_vip_keeps_it_and_its_edits_and_the_newcomer_gets_it_when_the_holder_goes() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::write(dir.join("00-topology.yaml"), TOPOLOGY).expect("write");
    std::fs::write(dir.join("10-web.yaml"), service("web", "10.0.1.10")).expect("write");
    let ctl = Controller::start(dir, &nb);
    wait_for("web's VIP in NB", || {
        vips(&nb, WEB_LB)
            .contains("10.96.0.100:80=10.0.1.10:8080")
            .then_some(())
    });
    wait_for("web Ready", || ready(dir, "web").filter(|r| r.0 == "True"));

    // The newcomer asks for web's VIP: refused, naming web; web stays Ready.
    std::fs::write(dir.join("20-thief.yaml"), service("thief", "10.0.1.20")).expect("write");
    let (_, reason, msg) = wait_for("thief refused", || {
        ready(dir, "thief").filter(|r| r.0 == "False")
    });
    assert_eq!(reason, "InvalidSpec");
    assert!(
        msg.contains("10.96.0.100 is already used by service shop/web"),
        "{msg}"
    );
    // Both statuses come from the pass that saw the newcomer.
    let web = ready(dir, "web").expect("web's status");
    assert_eq!(web.0, "True", "the holder stays Ready: {web:?}");
    assert!(vips(&nb, THIEF_LB).is_empty(), "the newcomer owns no row");

    // The holder's edits still land.
    std::fs::write(dir.join("10-web.yaml"), service("web", "10.0.1.11")).expect("write");
    wait_for("web's edit in NB", || {
        vips(&nb, WEB_LB)
            .contains("10.96.0.100:80=10.0.1.11:8080")
            .then_some(())
    });
    assert_eq!(ready(dir, "web").map(|r| r.0).as_deref(), Some("True"));

    // A restart: the holder is known from NB now (a fresh process has no memory of it).
    drop(ctl);
    std::fs::remove_dir_all(dir.join(".status")).expect("rm status");
    let _ctl = Controller::start(dir, &nb);
    let (_, _, msg) = wait_for("thief refused after a restart", || {
        ready(dir, "thief").filter(|r| r.0 == "False")
    });
    assert!(msg.contains("already used by service shop/web"), "{msg}");
    let web = ready(dir, "web").expect("web's status");
    assert_eq!(
        web.0, "True",
        "the holder stays Ready after a restart: {web:?}"
    );
    assert!(vips(&nb, WEB_LB).contains("10.96.0.100:80=10.0.1.11:8080"));
    assert!(vips(&nb, THIEF_LB).is_empty());

    // The holder goes: the newcomer gets the VIP.
    std::fs::remove_file(dir.join("10-web.yaml")).expect("rm");
    wait_for("thief's VIP in NB", || {
        vips(&nb, THIEF_LB)
            .contains("10.96.0.100:80=10.0.1.20:8080")
            .then_some(())
    });
    wait_for("thief Ready", || {
        ready(dir, "thief").filter(|r| r.0 == "True")
    });
    assert!(vips(&nb, WEB_LB).is_empty(), "web's rows are gone");
}
