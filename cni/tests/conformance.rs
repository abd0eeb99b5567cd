//! The plugin binary against the CNI spec's stdin/stdout/env rules: every malformed request
//! is a spec error object on stdout with the right code and a non-zero exit, never a panic.
//! None of these need a daemon (except the last ones, which need one to be absent or
//! broken) or root.

#[path = "support/harness.rs"]
mod harness;

use std::os::unix::net::UnixListener;

use harness::plugin;
use serde_json::json;

fn conf(version: &str, socket: &str) -> Vec<u8> {
    json!({"cniVersion": version, "name": "net", "type": "ycloud-cni", "daemonSocket": socket})
        .to_string()
        .into_bytes()
}

const NO_DAEMON: &str = "/nonexistent-ycloud-test/cni.sock";

fn add_env<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn with<'a>(
    mut env: Vec<(&'a str, &'a str)>,
    k: &'a str,
    v: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    env.retain(|(key, _)| *key != k);
    if let Some(v) = v {
        env.push((k, v));
    }
    env
}

#[test]
fn version_answers_the_supported_versions_without_a_daemon() {
    let r = plugin(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    r.ok();
    let j = r.json();
    assert_eq!(j["cniVersion"], "1.0.0");
    assert_eq!(j["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    // Empty stdin is accepted too; the answer is in the newest version.
    let r = plugin(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(r.ok().json()["cniVersion"], "1.1.0");
}

#[test]
fn a_missing_or_unknown_cni_command_is_error_4() {
    let r = plugin(&[], &conf("1.1.0", NO_DAEMON));
    assert_eq!(r.error_code(), 4);
    assert!(r.stdout.contains("CNI_COMMAND"), "{r:?}");
    let r = plugin(&[("CNI_COMMAND", "FROB")], &conf("1.1.0", NO_DAEMON));
    assert_eq!(r.error_code(), 4);
    assert!(r.stdout.contains("FROB"), "{r:?}");
}

#[test]
fn add_without_cni_netns_containerid_or_ifname_is_error_4_naming_the_variable() {
    for var in ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME"] {
        let r = plugin(&with(add_env(), var, None), &conf("1.1.0", NO_DAEMON));
        assert_eq!(r.error_code(), 4, "{var}: {r:?}");
        assert!(r.stdout.contains(var), "{var}: {r:?}");
    }
    // CHECK needs the netns too; DEL does not (it must work after the netns is gone).
    let r = plugin(
        &with(
            with(add_env(), "CNI_COMMAND", Some("CHECK")),
            "CNI_NETNS",
            None,
        ),
        &conf("1.1.0", NO_DAEMON),
    );
    assert_eq!(r.error_code(), 4);
    let r = plugin(
        &with(
            with(add_env(), "CNI_COMMAND", Some("DEL")),
            "CNI_NETNS",
            None,
        ),
        &conf("1.1.0", NO_DAEMON),
    );
    assert_eq!(
        r.error_code(),
        11,
        "DEL without netns gets as far as the daemon: {r:?}"
    );
}

#[test]
fn invalid_container_ids_ifnames_and_cni_args_are_error_4() {
    for (k, v) in [
        ("CNI_CONTAINERID", "../etc"),
        ("CNI_CONTAINERID", "-leading-dash"),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "sixteen-chars-xx"),
        ("CNI_IFNAME", ".."),
        ("CNI_ARGS", "K8S_POD_NAME"),
    ] {
        let r = plugin(&with(add_env(), k, Some(v)), &conf("1.1.0", NO_DAEMON));
        assert_eq!(r.error_code(), 4, "{k}={v}: {r:?}");
    }
}

#[test]
fn stdin_that_is_not_json_is_error_6_and_a_config_without_required_fields_is_error_7() {
    for bad in [&b"{not json"[..], b"", b"[1,2]", b"\xff\xfe"] {
        let r = plugin(&add_env(), bad);
        assert_eq!(r.error_code(), 6, "{bad:?}: {r:?}");
    }
    for (conf, what) in [
        (json!({"name": "n", "type": "ycloud-cni"}), "cniVersion"),
        (json!({"cniVersion": "1.1.0", "type": "ycloud-cni"}), "name"),
        (json!({"cniVersion": "1.1.0", "name": "n"}), "type"),
        (
            json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge"}),
            "type",
        ),
        (
            json!({"cniVersion": "1.1.0", "name": 5, "type": "ycloud-cni"}),
            "name",
        ),
        (
            json!({"cniVersion": "1.1.0", "name": "n", "type": "ycloud-cni", "prevResult": {"ips": "nope"}}),
            "prevResult",
        ),
        (
            json!({"cniVersion": "1.1.0", "name": "n", "type": "ycloud-cni", "timeoutSeconds": "x"}),
            "timeoutSeconds",
        ),
    ] {
        let r = plugin(&add_env(), conf.to_string().as_bytes());
        assert_eq!(r.error_code(), 7, "{conf}: {r:?}");
        assert!(r.stdout.contains(what), "{what}: {r:?}");
    }
}

#[test]
fn an_unsupported_cni_version_is_error_1_and_status_or_gc_need_1_1_0() {
    for v in ["0.4.0", "0.3.1", "2.0.0", "banana"] {
        let r = plugin(&add_env(), &conf(v, NO_DAEMON));
        assert_eq!(r.error_code(), 1, "{v}: {r:?}");
        assert!(r.stdout.contains("1.0.0, 1.1.0"), "{r:?}");
    }
    for cmd in ["STATUS", "GC"] {
        let r = plugin(&[("CNI_COMMAND", cmd)], &conf("1.0.0", NO_DAEMON));
        assert_eq!(r.error_code(), 1, "{cmd}: {r:?}");
    }
    // The error object is in the configuration's version when that one is supported.
    let r = plugin(
        &with(add_env(), "CNI_NETNS", None),
        &conf("1.0.0", NO_DAEMON),
    );
    assert_eq!(r.json()["cniVersion"], "1.0.0");
}

#[test]
fn a_malformed_valid_attachments_list_in_gc_is_error_7() {
    let c = json!({"cniVersion": "1.1.0", "name": "n", "type": "ycloud-cni", "daemonSocket": NO_DAEMON,
                   "cni.dev/valid-attachments": [{"containerID": 3}]});
    let r = plugin(&[("CNI_COMMAND", "GC")], c.to_string().as_bytes());
    assert_eq!(r.error_code(), 7, "{r:?}");
}

#[test]
fn without_a_daemon_add_is_error_11_and_status_is_error_50_naming_the_socket() {
    let r = plugin(&add_env(), &conf("1.1.0", NO_DAEMON));
    assert_eq!(r.error_code(), 11);
    assert!(
        r.stdout.contains(NO_DAEMON) && r.stdout.contains("ycloud-cnid"),
        "{r:?}"
    );
    let r = plugin(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", NO_DAEMON));
    assert_eq!(r.error_code(), 50);
}

#[test]
fn a_daemon_that_closes_without_answering_or_answers_garbage_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("d.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let sock_s = sock.display().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        // First connection: read the request, close without a word (a crash).
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("read");
        drop(c);
        // Second: answer something that is not the protocol.
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf2 = Vec::new();
        c.read_to_end(&mut buf2).expect("read");
        c.write_all(b"<html>").expect("write");
        buf
    });
    let r = plugin(&add_env(), &conf("1.1.0", &sock_s));
    assert_eq!(r.error_code(), 11, "{r:?}");
    let r2 = plugin(&add_env(), &conf("1.1.0", &sock_s));
    assert_eq!(r2.error_code(), 105, "{r2:?}");
    // What the plugin sent is the request the daemon expects: env and config.
    let req: serde_json::Value =
        serde_json::from_slice(&server.join().expect("server")).expect("request JSON");
    assert_eq!(req["env"]["command"], "ADD");
    assert_eq!(req["env"]["containerId"], "abc123");
    assert_eq!(req["config"]["daemonSocket"], sock_s);
}
