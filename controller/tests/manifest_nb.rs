//! The controller binary in manifest-directory mode against a real OVN_Northbound
//! ovsdb-server: the examples reach NB; an edit changes rows; a delete removes them; an
//! invalid object gets `Ready=False` and leaves everything else working; a kill -9 in the
//! middle and a restart end with NB exactly as a clean run leaves it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ycloud_testsupport::ovsdb_server::{OvsdbCluster, OvsdbServer, SchemaFile};

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}, annotations: {ycloud.io/ip-address: 10.0.1.50}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: grpc, containerPort: 9091}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: storefront-1, namespace: partner, labels: {app: storefront}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: catalog-1, namespace: shop, labels: {app: catalog}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
";

/// The controller as a child process, killed (SIGKILL) and reaped on drop.
struct Controller {
    child: Option<Child>,
}

impl Controller {
    fn start(manifests: &Path, nb: &OvsdbServer) -> Controller {
        Controller::start_with(manifests, &nb.unix_remote())
    }

    fn start_with(manifests: &Path, nb_remotes: &str) -> Controller {
        Controller::start_args(manifests, nb_remotes, &[])
    }

    fn start_args(manifests: &Path, nb_remotes: &str, extra: &[&str]) -> Controller {
        // A previous run's "synced" must not be taken for this one's.
        let _ = std::fs::remove_file(manifests.join(".status/controller.yaml"));
        let child = Command::new(env!("CARGO_BIN_EXE_ycloud-controller"))
            .arg(format!("--source=dir:{}", manifests.display()))
            .arg(format!("--nb={nb_remotes}"))
            .args(["--poll-ms=100", "--svcgw-chassis=node-1:100"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ycloud-controller");
        Controller { child: Some(child) }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL by the child's pid: no chance to clean up, like a crash.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop must exit 0.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the controller did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn nbctl(nb: &OvsdbServer, args: &[&str]) -> String {
    nbctl_at(&nb.unix_remote(), args)
}

fn nbctl_at(remote: &str, args: &[&str]) -> String {
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={remote}"))
        .args(["--no-leader-only", "--timeout=10"])
        .args(args)
        .output()
        .expect("run ovn-nbctl");
    assert!(
        out.status.success(),
        "ovn-nbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every row of the tables the controller writes, without UUIDs, sorted: two databases
/// with the same content give the same dump, and a leaked or duplicated row shows.
fn dump(nb: &OvsdbServer) -> Vec<String> {
    dump_at(&nb.unix_remote())
}

fn dump_at(remote: &str) -> Vec<String> {
    let tables: &[(&str, &str)] = &[
        ("Logical_Router", "name,options,external_ids"),
        ("Logical_Router_Port", "name,mac,networks,external_ids"),
        ("Logical_Switch", "name,other_config,external_ids"),
        (
            "Logical_Switch_Port",
            "name,type,addresses,port_security,options",
        ),
        (
            "Load_Balancer",
            "name,protocol,vips,options,selection_fields",
        ),
        ("Load_Balancer_Group", "name"),
        ("Logical_Router_Static_Route", "ip_prefix,nexthop"),
        ("NAT", "type,external_ip,logical_ip"),
        ("Gateway_Chassis", "name,chassis_name,priority"),
    ];
    let mut out = Vec::new();
    for (t, cols) in tables {
        let text = nbctl_at(
            remote,
            &[
                "--format=csv",
                "--data=bare",
                "--no-headings",
                &format!("--columns={cols}"),
                "list",
                t,
            ],
        );
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push(format!("{t}: {line}"));
        }
    }
    out.sort();
    out
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn copy_examples(to: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for e in std::fs::read_dir(&examples).expect("examples") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(to.join("50-pods.yaml"), PODS).expect("pods");
}

fn status(dir: &Path, rel: &str) -> Option<serde_json::Value> {
    ycloud_controller::status::read(&dir.join(".status").join(rel))
}

fn ready(dir: &Path, rel: &str) -> Option<(String, String, String)> {
    let doc = status(dir, rel)?;
    let (s, reason, msg) = ycloud_controller::status::condition_in(&doc, "Ready")?;
    Some((format!("{s:?}"), reason, msg))
}

fn vips(nb: &OvsdbServer, lb: &str) -> String {
    nbctl(
        nb,
        &[
            "--bare",
            "--columns=vips",
            "find",
            "Load_Balancer",
            &format!("name=\"{lb}\""),
        ],
    )
}

/// Waits until NB stops changing (two equal dumps a poll interval apart, after the
/// controller says it is synced).
fn settled(nb: &OvsdbServer, dir: &Path) -> Vec<String> {
    wait_for(
        "the controller's first sync",
        Duration::from_secs(60),
        || status(dir, "controller.yaml").is_some_and(|c| c["synced"] == true),
    );
    let mut last = dump(nb);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = dump(nb);
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "NB never settled");
        last = now;
    }
}

#[test]
fn the_examples_reach_nb_and_edits_deletes_and_invalid_objects_are_followed() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir = tempfile::tempdir().expect("tmp");
    copy_examples(dir.path());
    let mut ctl = Controller::start(dir.path(), &nb);
    let rows = settled(&nb, dir.path());

    // Routers of every VPC and gateway.
    let routers = nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]);
    let mut routers: Vec<&str> = routers.lines().filter(|l| !l.is_empty()).collect();
    routers.sort();
    assert_eq!(
        routers,
        [
            "yc-eipgw-public",
            "yc-eipgw-public-2",
            "yc-svcgw",
            "yc-vpc-tenant-a",
            "yc-vpc-tenant-b",
            "yc-vpc-tenant-c",
            "yc-vpc-tenant-e",
        ]
    );
    // Pods got addresses (the fixed one honoured), LSPs and annotation files.
    let web2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".status/pods/shop/web-2.json"))
            .expect("web-2 file"),
    )
    .expect("json");
    assert_eq!(web2["ips"][0], "10.0.1.50/24");
    assert_eq!(web2["logicalSwitchPort"], "shop.web-2");
    assert_eq!(
        nbctl(
            &nb,
            &[
                "--bare",
                "--columns=addresses",
                "find",
                "Logical_Switch_Port",
                "name=shop.web-2"
            ]
        ),
        format!(
            "{} 10.0.1.50 {}",
            web2["mac"].as_str().expect("mac"),
            web2["ips"][1].as_str().expect("v6").trim_end_matches("/64")
        )
    );
    // The ClusterIP service balances to both pods on targetPort.
    let web_vips = vips(&nb, "ysvc:shop/web:tcp:cluster");
    assert!(web_vips.contains("10.96.0.100:80="), "{web_vips}");
    assert!(web_vips.contains("10.0.1.50:8080"), "{web_vips}");
    // Named targetPort: the pod's container port.
    assert!(vips(&nb, "ysvc:shop/api:tcp:cluster").contains(":9091"));
    // EIP on the VPC router; node port on the join switch.
    assert!(vips(&nb, "ysvc:partner/storefront:tcp:eip").contains("200.0.0.100:80"));
    assert!(
        !nbctl(
            &nb,
            &[
                "--bare",
                "--columns=name",
                "find",
                "Logical_Switch_Port",
                "name=\"yc-mgmt:tenant-a:node-1\""
            ]
        )
        .is_empty()
    );
    // Status files.
    assert_eq!(
        ready(dir.path(), "YusurService/shop/web.yaml").map(|r| r.0),
        Some("True".into())
    );
    assert_eq!(
        ready(dir.path(), "Vpc/tenant-a.yaml").map(|r| r.0),
        Some("True".into())
    );
    let web_status = status(dir.path(), "YusurService/shop/web.yaml").expect("status");
    assert_eq!(web_status["status"]["backends"]["total"], 2);

    let vpc_status = dir.path().join(".status/Vpc/tenant-a.yaml");
    let mtime = || {
        std::fs::metadata(&vpc_status)
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    let written = mtime();

    // Drift made by hand while it runs is repaired (the cache subscription wakes it).
    nbctl(&nb, &["lsp-del", "shop.web-1"]);
    nbctl(
        &nb,
        &[
            "set",
            "Load_Balancer",
            "ysvc:shop/web:tcp:cluster",
            "options:reject=false",
        ],
    );
    wait_for("the drift repaired", Duration::from_secs(20), || {
        dump(&nb) == rows
    });
    assert_eq!(
        mtime(),
        written,
        "an unchanged status is not rewritten by later passes"
    );

    // Edit one file: the service's targetPort moves.
    let f = dir.path().join("10-clusterip.yaml");
    let text = std::fs::read_to_string(&f).expect("read");
    std::fs::write(&f, text.replace("targetPort: 8080", "targetPort: 9000")).expect("write");
    wait_for("the edit in NB", Duration::from_secs(20), || {
        vips(&nb, "ysvc:shop/web:tcp:cluster").contains("10.0.1.50:9000")
    });

    // Delete one file: its service's rows go, the rest stay.
    std::fs::remove_file(dir.path().join("16-session-affinity.yaml")).expect("rm");
    wait_for("the delete in NB", Duration::from_secs(20), || {
        vips(&nb, "ysvc:shop/cart:tcp:cluster").is_empty()
    });
    wait_for("the status file removed", Duration::from_secs(20), || {
        status(dir.path(), "YusurService/shop/cart.yaml").is_none()
    });

    // An invalid object: Ready=False with the validator's message; nothing else moves.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/invalid/vip-used-by-another-service.yaml"),
        dir.path().join("60-bad.yaml"),
    )
    .expect("copy");
    wait_for(
        "the invalid object's status",
        Duration::from_secs(20),
        || ready(dir.path(), "YusurService/shop/web2.yaml").is_some(),
    );
    let (s, reason, msg) = ready(dir.path(), "YusurService/shop/web2.yaml").expect("status");
    assert_eq!((s.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(msg.contains("already used by service shop/web"), "{msg}");
    assert!(vips(&nb, "ysvc:shop/web2:tcp:cluster").is_empty());
    assert!(vips(&nb, "ysvc:shop/web:tcp:cluster").contains("10.0.1.50:9000"));

    // A valid service made invalid keeps its last good rows.
    let text = std::fs::read_to_string(&f).expect("read");
    std::fs::write(
        &f,
        text.replace("clusterIPs: [10.96.0.100]", "clusterIPs: [10.99.0.1]"),
    )
    .expect("write");
    wait_for("web turning invalid", Duration::from_secs(20), || {
        ready(dir.path(), "YusurService/shop/web.yaml").is_some_and(|r| r.0 == "False")
    });
    assert!(vips(&nb, "ysvc:shop/web:tcp:cluster").contains("10.96.0.100:80"));

    let after = dump(&nb);
    let gone: Vec<&String> = rows.iter().filter(|r| !after.contains(r)).collect();
    let new: Vec<&String> = after.iter().filter(|r| !rows.contains(r)).collect();
    assert!(
        gone.iter()
            .any(|r| r.contains("ysvc:shop/cart:tcp:cluster")),
        "the cart service's rows are gone: gone {gone:#?} new {new:#?}"
    );
    assert!(
        !after.iter().any(|r| r.contains("shop/web2")),
        "nothing of the invalid service: {new:#?}"
    );
    assert_eq!(ctl.terminate().code(), Some(0), "SIGTERM stops it cleanly");
}

#[test]
fn a_kill_9_mid_way_and_a_restart_end_with_nb_exactly_as_a_clean_run() {
    // The reference: a clean run on its own NB.
    let nb_ref = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir_ref = tempfile::tempdir().expect("tmp");
    copy_examples(dir_ref.path());
    let expected = {
        let _ctl = Controller::start(dir_ref.path(), &nb_ref);
        settled(&nb_ref, dir_ref.path())
    };
    assert!(expected.len() > 50, "{expected:?}");

    // The same, killed -9 as soon as it has begun writing, then restarted (twice).
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir = tempfile::tempdir().expect("tmp");
    copy_examples(dir.path());
    // Killed at a few points of its first pass (start-up takes some tens of ms, the pass
    // about a hundred), then once after the first rows are surely in.
    for delay_ms in [40, 80, 120, 160] {
        let mut ctl = Controller::start(dir.path(), &nb);
        std::thread::sleep(Duration::from_millis(delay_ms));
        ctl.kill9();
    }
    let mut ctl = Controller::start(dir.path(), &nb);
    wait_for("the first rows", Duration::from_secs(60), || {
        !nbctl(&nb, &["--bare", "--columns=name", "list", "Logical_Router"]).is_empty()
    });
    ctl.kill9();
    // Some hand-made damage while it is down: a row of ours deleted, a foreign row added.
    nbctl(&nb, &["--if-exists", "lsp-del", "shop.web-1"]);
    nbctl(&nb, &["ls-add", "not-ours"]);
    let _ctl = Controller::start(dir.path(), &nb);
    let mut got = settled(&nb, dir.path());
    got.retain(|l| !l.contains("not-ours"));
    assert_eq!(
        got, expected,
        "NB after kill -9 and restart differs from a clean run"
    );
    assert!(
        !nbctl(
            &nb,
            &[
                "--bare",
                "--columns=name",
                "find",
                "Logical_Switch",
                "name=not-ours"
            ]
        )
        .is_empty(),
        "a foreign row survives"
    );
    // No name appears twice.
    let names = nbctl(
        &nb,
        &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
    );
    let mut seen = std::collections::BTreeSet::new();
    for n in names.lines().filter(|l| !l.is_empty()) {
        assert!(seen.insert(n.to_owned()), "duplicate LSP {n}");
    }
}

#[test]
fn addresses_survive_a_restart_and_a_newcomer_never_gets_one_that_is_held() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir = tempfile::tempdir().expect("tmp");
    copy_examples(dir.path());
    let lsp_addr = |name: &str| {
        nbctl(
            &nb,
            &[
                "--bare",
                "--columns=addresses",
                "find",
                "Logical_Switch_Port",
                &format!("name={name}"),
            ],
        )
    };
    {
        let _ctl = Controller::start(dir.path(), &nb);
        settled(&nb, dir.path());
    }
    let api = lsp_addr("shop.api-1");
    let web = lsp_addr("shop.web-1");
    assert!(!api.is_empty() && !web.is_empty());
    // While it is down: a pod that sorts first appears (a fresh allocator would hand it
    // the lowest address, api-1's), and the status dir is lost.
    let pods = std::fs::read_to_string(dir.path().join("50-pods.yaml")).expect("pods");
    let newcomer = "apiVersion: v1\nkind: Pod\nmetadata: {name: aaa, namespace: shop}\nspec: {containers: [{name: c}]}\n---\n";
    std::fs::write(dir.path().join("50-pods.yaml"), format!("{newcomer}{pods}")).expect("write");
    std::fs::remove_dir_all(dir.path().join(".status")).expect("rm status");
    let _ctl = Controller::start(dir.path(), &nb);
    settled(&nb, dir.path());
    assert_eq!(lsp_addr("shop.api-1"), api, "api-1 kept its address");
    assert_eq!(lsp_addr("shop.web-1"), web, "web-1 kept its address");
    let aaa = lsp_addr("shop.aaa");
    assert!(!aaa.is_empty());
    // Every address on the a-web switch is used once.
    let all = nbctl(
        &nb,
        &[
            "--bare",
            "--columns=addresses",
            "list",
            "Logical_Switch_Port",
        ],
    );
    let mut seen = std::collections::BTreeSet::new();
    for word in all
        .split_whitespace()
        .filter(|w| w.parse::<std::net::IpAddr>().is_ok())
    {
        assert!(seen.insert(word.to_owned()), "{word} is on two ports");
    }
}

#[test]
fn a_raft_leader_killed_under_the_controller_and_it_converges_on_the_new_leader() {
    // The reference: the same history (all examples, then the session-affinity one
    // deleted: allocated VIPs stay where they were) on a standalone NB.
    let nb_ref = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir_ref = tempfile::tempdir().expect("tmp");
    copy_examples(dir_ref.path());
    let expected = {
        let _ctl = Controller::start(dir_ref.path(), &nb_ref);
        settled(&nb_ref, dir_ref.path());
        std::fs::remove_file(dir_ref.path().join("16-session-affinity.yaml")).expect("rm");
        wait_for("the delete", Duration::from_secs(20), || {
            vips(&nb_ref, "ysvc:shop/cart:tcp:cluster").is_empty()
        });
        settled(&nb_ref, dir_ref.path())
    };

    let mut cluster = OvsdbCluster::start(SchemaFile::Nb, 3).expect("3-member NB cluster");
    let dir = tempfile::tempdir().expect("tmp");
    copy_examples(dir.path());
    let _ctl = Controller::start_with(dir.path(), &cluster.remotes().join(","));
    wait_for(
        "the first sync on the cluster",
        Duration::from_secs(60),
        || status(dir.path(), "controller.yaml").is_some_and(|c| c["synced"] == true),
    );
    let old = cluster.leader();
    cluster.kill(old);
    // A change to reconcile while the cluster elects a new leader.
    std::fs::remove_file(dir.path().join("16-session-affinity.yaml")).expect("rm");
    let new = cluster.leader();
    assert_ne!(new, old);
    let remote = cluster.unix_remote(new);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = dump_at(&remote);
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NB on the new leader never converged: missing {:#?} extra {:#?}",
            expected
                .iter()
                .filter(|r| !got.contains(r))
                .collect::<Vec<_>>(),
            got.iter()
                .filter(|r| !expected.contains(r))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};

    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[test]
fn healthz_readyz_and_metrics_answer_over_http() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir = tempfile::tempdir().expect("tmp");
    copy_examples(dir.path());
    // An ephemeral port chosen now (not a fixed one): bind, read, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _ctl = Controller::start_args(
        dir.path(),
        &nb.unix_remote(),
        &[
            &format!("--metrics-addr=127.0.0.1:{port}"),
            "--log-format=json",
        ],
    );
    wait_for("/readyz 200", Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status.contains("200"))
    });
    let (status, _) = http_get(port, "/healthz").expect("healthz");
    assert!(status.contains("200"), "{status}");
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert!(value("ycloud_reconciles_total") >= 1.0);
    assert!(
        value("ycloud_nb_transaction_ops_total") >= 100.0,
        "{metrics}"
    );
    assert!(value("ycloud_nb_cache_rows") > 0.0);
    assert_eq!(value("ycloud_synced"), 1.0);
    assert_eq!(
        http_get(port, "/nope").expect("404").0,
        "HTTP/1.1 404 Not Found"
    );
}

#[test]
fn a_thousand_pods_and_fifty_services_sync_and_one_more_pod_changes_two_rows() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("NB");
    let dir = tempfile::tempdir().expect("tmp");
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n---\n\
         apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: big}\n\
         spec: {serviceCIDRs: [10.96.0.0/16], namespaces: [big]}\n---\n\
         apiVersion: ycloud.io/v1alpha1\nkind: Subnet\nmetadata: {name: big}\n\
         spec: {vpc: big, cidrBlocks: [10.8.0.0/20], namespaces: [big]}\n",
    );
    for s in 0..50 {
        m.push_str(&format!(
            "---\napiVersion: ycloud.io/v1alpha1\nkind: YusurService\nmetadata: {{name: s{s}, namespace: big}}\n\
             spec: {{scenarios: [ClusterIP], ports: [{{name: http, port: 80, targetPort: 8080}}], \
             backends: [{{type: Pod, selector: {{matchLabels: {{app: a{s}}}}}}}]}}\n"
        ));
    }
    for p in 0..1000 {
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{p}, namespace: big, labels: {{app: a{}}}}}\n\
             spec: {{containers: [{{name: c}}]}}\n",
            p % 50
        ));
    }
    std::fs::write(dir.path().join("big.yaml"), m).expect("write");
    let started = Instant::now();
    let _ctl = Controller::start(dir.path(), &nb);
    wait_for("the first sync", Duration::from_secs(120), || {
        status(dir.path(), "controller.yaml").is_some_and(|c| c["synced"] == true)
    });
    let first_sync = started.elapsed();
    let lsps = nbctl(
        &nb,
        &["--bare", "--columns=name", "list", "Logical_Switch_Port"],
    );
    assert_eq!(
        lsps.lines().filter(|l| l.starts_with("big.p")).count(),
        1000
    );
    let lb = vips(&nb, "ysvc:big/s7:tcp:cluster");
    assert_eq!(lb.matches(":8080").count(), 20, "{lb}");
    eprintln!("1000 pods, 50 services: first sync {first_sync:?}");
    // One pod more: one LSP and one backend, not a rewrite of everything.
    let before = dump(&nb);
    let f = dir.path().join("big.yaml");
    let mut text = std::fs::read_to_string(&f).expect("read");
    text.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: big, labels: {app: a7}}\nspec: {containers: [{name: c}]}\n");
    let edited = Instant::now();
    std::fs::write(&f, text).expect("write");
    wait_for("the extra backend", Duration::from_secs(30), || {
        vips(&nb, "ysvc:big/s7:tcp:cluster")
            .matches(":8080")
            .count()
            == 21
    });
    eprintln!("one pod added: in NB after {:?}", edited.elapsed());
    let after = dump(&nb);
    let changed = after.iter().filter(|r| !before.contains(r)).count();
    assert_eq!(changed, 2, "the new LSP and the one changed load balancer");
}
