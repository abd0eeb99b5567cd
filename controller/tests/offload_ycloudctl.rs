//! `ycloudctl nb-rows` (the binary) against a real `ovsdb-server` with the real OVN
//! Northbound schema: it lists exactly the rows a service owns by its ownership keys.

use std::process::{Command, Output};

use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

fn ycloudctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ycloudctl"))
        .args(args)
        .env_remove("OVN_NB_DB")
        .output()
        .expect("run ycloudctl")
}

fn lb(name: &str, kind: &str, owner: &str, role: &str) -> String {
    format!(
        r#"{{"op":"insert","table":"Load_Balancer","row":{{"name":"{name}","protocol":"tcp","vips":["map",[["10.96.0.100:80","10.0.1.11:8080,10.0.1.12:8080"]]],"external_ids":["map",[["ycloud.io/owner","ycloud"],["ycloud.io/kind","{kind}"],["ycloud.io/name","{owner}"],["ycloud.io/role","{role}"]]]}}}}"#
    )
}

#[test]
fn nb_rows_lists_exactly_the_rows_a_service_owns() {
    let nb = OvsdbServer::start(SchemaFile::Nb).expect("ovsdb-server");
    let txn = format!(
        r#"["OVN_Northbound",{},{},{},{}]"#,
        lb(
            "ysvc:demo/web:tcp:cluster",
            "service",
            "demo/web",
            "tcp:cluster"
        ),
        lb("ysvc:demo/web:tcp:eip", "service", "demo/web", "tcp:eip"),
        lb(
            "ysvc:demo/other:tcp:cluster",
            "service",
            "demo/other",
            "tcp:cluster"
        ),
        // same name value, other kind: not the service's
        lb("not-a-service", "vpc", "demo/web", "router"),
    );
    nb.ovsdb_client(&["transact", &txn]).expect("insert rows");
    let remote = nb.unix_remote();

    let out = ycloudctl(&["nb-rows", "--nb", &remote, "demo/web"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Load_Balancer ")
            && stdout.contains("name=ysvc:demo/web:tcp:cluster role=tcp:cluster"),
        "{stdout}"
    );
    assert!(
        stdout.contains("name=ysvc:demo/web:tcp:eip role=tcp:eip"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vips: {10.96.0.100:80=10.0.1.11:8080,10.0.1.12:8080}"),
        "{stdout}"
    );
    assert!(!stdout.contains("demo/other:"), "{stdout}");
    assert!(!stdout.contains("not-a-service"), "{stdout}");
    assert!(
        stdout.contains("2 NB row(s) owned by service demo/web"),
        "{stdout}"
    );

    let out = ycloudctl(&["nb-rows", "--nb", &remote, "--json", "demo/web"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["table"] == "Load_Balancer"));

    let out = ycloudctl(&["nb-rows", "--nb", &remote, "demo/absent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 NB row(s)"));
}

#[test]
fn nb_rows_refuses_a_bad_service_name_and_an_unreachable_nb_with_exit_2() {
    let out = ycloudctl(&["nb-rows", "--nb", "unix:/nonexistent/nb.sock", "web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected NAMESPACE/NAME"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}/nb.sock", dir.path().display());
    let out = ycloudctl(&["nb-rows", "--nb", &sock, "--timeout", "2", "demo/web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&sock), "{stderr}");
}
