//! Every prober against real servers in real network namespaces: success, failure, a slow
//! backend, and an address that exists in two namespaces at once (overlapping VPCs).
//! Needs root (CI runs as root).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ycloud_crds::{HealthCheck, ProbeType, StatusRange};
use ycloud_probe::{Namespace, Prober, Target};
use ycloud_testsupport::netns::{Background, Netns, VethSpec, run};

/// A namespace private to this test process (nextest runs one process per test).
fn netns(tag: &str) -> Netns {
    Netns::create(&format!("yp{}{tag}", std::process::id())).expect("creating a namespace")
}

fn ns_path(ns: &Netns) -> Namespace {
    Namespace::Path(PathBuf::from("/run/netns").join(ns.name()))
}

fn hc(kind: ProbeType, timeout_ms: u32) -> HealthCheck {
    let mut h: HealthCheck =
        serde_json::from_value(serde_json::json!({"type": kind})).expect("a health check");
    h.timeout_millis = timeout_ms;
    h
}

fn target(kind: ProbeType, addr: &str, port: Option<u16>, timeout_ms: u32) -> Target {
    Target::new(
        "test",
        &hc(kind, timeout_ms),
        addr.parse::<IpAddr>().unwrap(),
        port,
    )
    .expect("a valid target")
}

/// Runs a python server in `ns` and waits until something listens on `port` (TCP) or is
/// bound to it (UDP).
fn python(ns: &Netns, what: &str, code: &str, args: &[&str], port: u16, udp: bool) -> Background {
    let mut argv = vec!["python3", "-c", code];
    argv.extend_from_slice(args);
    let server = ns.spawn(what, &argv).expect("starting a server");
    let filter = format!("sport = :{port}");
    let flags = if udp { "-Hlun" } else { "-Hltn" };
    for _ in 0..300 {
        if !ns
            .exec(&["ss", flags, &filter])
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} does not listen on {port}");
}

const HTTP_STATUS_PY: &str = r#"
import http.server, sys, time
code, delay, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(s):
        time.sleep(delay)
        s.send_response(code)
        s.send_header("Content-Length", "0")
        s.end_headers()
    def log_message(s, *a):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), H)
if len(sys.argv) > 4:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

const UDP_PY: &str = r#"
import socket, sys
port, answer = int(sys.argv[1]), sys.argv[2] == "echo"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
while True:
    data, peer = s.recvfrom(2048)
    if answer:
        s.sendto(data, peer)
"#;

#[tokio::test]
async fn tcp_succeeds_on_a_listener_and_fails_when_nothing_listens() {
    let ns = netns("tcp");
    let _srv = ns.tcp_echo_server(7000).unwrap();
    let p = Prober::new();
    let ok = p
        .probe(
            &target(ProbeType::TCP, "127.0.0.1", Some(7000), 1000),
            &ns_path(&ns),
        )
        .await;
    assert!(ok.success, "{ok:?}");
    assert!(ok.latency.is_some());
    let bad = p
        .probe(
            &target(ProbeType::TCP, "127.0.0.1", Some(7001), 1000),
            &ns_path(&ns),
        )
        .await;
    assert!(!bad.success);
    assert!(bad.error.unwrap().contains("refused"));
}

#[tokio::test]
async fn http_succeeds_in_the_expected_range_and_fails_outside_it() {
    let ns = netns("http");
    let _ok = python(
        &ns,
        "HTTP 200",
        HTTP_STATUS_PY,
        &["200", "0", "8080"],
        8080,
        false,
    );
    let _err = python(
        &ns,
        "HTTP 503",
        HTTP_STATUS_PY,
        &["503", "0", "8081"],
        8081,
        false,
    );
    let p = Prober::new();
    let good = p
        .probe(
            &target(ProbeType::HTTP, "127.0.0.1", Some(8080), 1000),
            &ns_path(&ns),
        )
        .await;
    assert!(good.success, "{good:?}");
    let bad = p
        .probe(
            &target(ProbeType::HTTP, "127.0.0.1", Some(8081), 1000),
            &ns_path(&ns),
        )
        .await;
    assert!(!bad.success);
    assert!(
        bad.error.as_deref().unwrap().contains("status 503"),
        "{bad:?}"
    );
    // The same 503 is a success when the spec expects it.
    let mut h = hc(ProbeType::HTTP, 1000);
    h.expected_status = Some(StatusRange { min: 500, max: 503 });
    let t = Target::new("t", &h, "127.0.0.1".parse().unwrap(), Some(8081)).unwrap();
    assert!(p.probe(&t, &ns_path(&ns)).await.success);
    // Nothing on the port.
    let none = p
        .probe(
            &target(ProbeType::HTTP, "127.0.0.1", Some(8082), 1000),
            &ns_path(&ns),
        )
        .await;
    assert!(!none.success);
}

#[tokio::test]
async fn a_backend_answering_after_the_timeout_is_a_failure() {
    let ns = netns("slow");
    let _slow = python(
        &ns,
        "slow HTTP",
        HTTP_STATUS_PY,
        &["200", "1.5", "8080"],
        8080,
        false,
    );
    let p = Prober::new();
    let started = std::time::Instant::now();
    let o = p
        .probe(
            &target(ProbeType::HTTP, "127.0.0.1", Some(8080), 300),
            &ns_path(&ns),
        )
        .await;
    let took = started.elapsed();
    assert!(!o.success, "{o:?}");
    assert!(o.error.unwrap().contains("timeout of 300 ms"));
    assert!(
        took < Duration::from_millis(1000),
        "the probe waited {took:?}"
    );
    // With a timeout above the delay the same backend passes.
    let o = p
        .probe(
            &target(ProbeType::HTTP, "127.0.0.1", Some(8080), 3000),
            &ns_path(&ns),
        )
        .await;
    assert!(o.success, "{o:?}");
    assert!(o.latency.unwrap() >= Duration::from_millis(1400));
}

#[tokio::test]
async fn https_accepts_a_self_signed_certificate_and_checks_the_status() {
    let ns = netns("https");
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    run(
        &[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=backend.invalid",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    )
    .expect("openssl makes a self-signed certificate");
    let (k, c) = (key.to_str().unwrap(), cert.to_str().unwrap());
    let _ok = python(
        &ns,
        "HTTPS 200",
        HTTP_STATUS_PY,
        &["200", "0", "8443", c, k],
        8443,
        false,
    );
    let _bad = python(
        &ns,
        "HTTPS 404",
        HTTP_STATUS_PY,
        &["404", "0", "8444", c, k],
        8444,
        false,
    );
    let _plain = python(
        &ns,
        "HTTP 200",
        HTTP_STATUS_PY,
        &["200", "0", "8080"],
        8080,
        false,
    );
    let p = Prober::new();
    let ok = p
        .probe(
            &target(ProbeType::HTTPS, "127.0.0.1", Some(8443), 2000),
            &ns_path(&ns),
        )
        .await;
    assert!(ok.success, "{ok:?}");
    let bad = p
        .probe(
            &target(ProbeType::HTTPS, "127.0.0.1", Some(8444), 2000),
            &ns_path(&ns),
        )
        .await;
    assert!(
        bad.error
            .as_deref()
            .unwrap_or_default()
            .contains("status 404"),
        "{bad:?}"
    );
    // A plain HTTP server does not speak TLS: a failure, not a hang.
    let plain = p
        .probe(
            &target(ProbeType::HTTPS, "127.0.0.1", Some(8080), 2000),
            &ns_path(&ns),
        )
        .await;
    assert!(!plain.success);
    assert!(
        plain.error.as_deref().unwrap_or_default().contains("TLS"),
        "{plain:?}"
    );
}

#[tokio::test]
async fn udp_succeeds_on_a_reply_or_silence_and_fails_on_port_unreachable() {
    let ns = netns("udp");
    let _echo = python(&ns, "UDP echo", UDP_PY, &["5353", "echo"], 5353, true);
    let _mute = python(&ns, "UDP sink", UDP_PY, &["5354", "mute"], 5354, true);
    let p = Prober::new();
    let echo = p
        .probe(
            &target(ProbeType::UDP, "127.0.0.1", Some(5353), 500),
            &ns_path(&ns),
        )
        .await;
    assert!(echo.success && echo.latency.is_some(), "{echo:?}");
    let mute = p
        .probe(
            &target(ProbeType::UDP, "127.0.0.1", Some(5354), 300),
            &ns_path(&ns),
        )
        .await;
    assert!(
        mute.success && mute.latency.is_none(),
        "silence is a success: {mute:?}"
    );
    let closed = p
        .probe(
            &target(ProbeType::UDP, "127.0.0.1", Some(5355), 500),
            &ns_path(&ns),
        )
        .await;
    assert!(!closed.success);
    assert!(closed.error.unwrap().contains("port unreachable"));
}

#[tokio::test]
async fn icmp_succeeds_on_an_echo_reply_and_fails_when_the_host_is_absent() {
    let pid = std::process::id();
    let a = netns("ia");
    let _b = Netns::create_with_veth(
        &format!("yp{pid}ib"),
        &VethSpec {
            ifname: "eth0".into(),
            peer_name: "eth0".into(),
            peer_netns: Some(a.name().to_string()),
            mac: None,
            address: Some("10.77.0.2/24".into()),
            gateway: None,
            mtu: None,
        },
    )
    .unwrap();
    a.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "eth0"])
        .unwrap();
    let p = Prober::new();
    let ok = p
        .probe(
            &target(ProbeType::ICMP, "10.77.0.2", None, 1000),
            &ns_path(&a),
        )
        .await;
    assert!(ok.success, "{ok:?}");
    let gone = p
        .probe(
            &target(ProbeType::ICMP, "10.77.0.3", None, 400),
            &ns_path(&a),
        )
        .await;
    assert!(!gone.success, "{gone:?}");
}

#[tokio::test]
async fn the_same_address_in_two_namespaces_is_probed_in_the_right_one() {
    // Two isolated "VPCs" with the same backend address; only the first runs the service.
    let (a, b) = (netns("ova"), netns("ovb"));
    for ns in [&a, &b] {
        // (No dummy driver on every kernel: lo carries the address just as well.)
        ns.exec(&["ip", "addr", "add", "10.96.5.5/32", "dev", "lo"])
            .unwrap();
    }
    let _srv = python(
        &a,
        "HTTP 200",
        HTTP_STATUS_PY,
        &["200", "0", "8080"],
        8080,
        false,
    );
    let p = Prober::new();
    let t = target(ProbeType::HTTP, "10.96.5.5", Some(8080), 500);
    assert!(p.probe(&t, &ns_path(&a)).await.success);
    assert!(!p.probe(&t, &ns_path(&b)).await.success);
    // The test's own namespace has no such address at all.
    assert!(!p.probe(&t, &Namespace::Current).await.success);
    // ICMP too: the address answers in both, but not here.
    let icmp = target(ProbeType::ICMP, "10.96.5.5", None, 300);
    assert!(p.probe(&icmp, &ns_path(&b)).await.success);
}

#[tokio::test]
async fn a_namespace_that_does_not_exist_is_a_failure_that_says_so() {
    let p = Prober::new();
    let ns = Namespace::Path(PathBuf::from(format!(
        "/run/netns/yp{}-missing",
        std::process::id()
    )));
    let o = p
        .probe(&target(ProbeType::TCP, "127.0.0.1", Some(80), 500), &ns)
        .await;
    assert!(!o.success);
    assert!(o.error.unwrap().contains("opening network namespace"));
    let o = p
        .probe(
            &target(ProbeType::TCP, "127.0.0.1", Some(80), 500),
            &Namespace::Unavailable("no CNI ADD seen for pod a/b".into()),
        )
        .await;
    assert_eq!(o.error.as_deref(), Some("no CNI ADD seen for pod a/b"));
}
