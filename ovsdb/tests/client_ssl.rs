//! `ssl:` remotes against a real `ovsdb-server` serving `pssl:`, with certificates made by
//! the `openssl` CLI in a temp dir for each test (a CA, a server certificate for IP
//! 127.0.0.2, a client certificate; ovsdb-server requires client certificates).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ycloud_ovsdb::transport::TlsConfig;
use ycloud_ovsdb::{Client, ClientConfig, Error};
use ycloud_testsupport::ovsdb_server::{OvsdbServer, SchemaFile};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `<ca>.pem`/`<ca>.key`.
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Makes `<name>.pem`/`<name>.key` signed by `<ca>`, with `san` and `eku`.
fn make_cert(dir: &Path, ca: &str, name: &str, san: &str, eku: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={eku}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca");
        make_cert(dir.path(), "ca", "server", "IP:127.0.0.2", "serverAuth");
        make_cert(dir.path(), "ca", "client", "DNS:client", "clientAuth");
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client_tls(&self, ca: &str) -> TlsConfig {
        TlsConfig {
            ca_cert: self.file(&format!("{ca}.pem")),
            certificate: Some(self.file("client.pem")),
            private_key: Some(self.file("client.key")),
        }
    }
}

fn ssl_server(pki: &Pki) -> OvsdbServer {
    let key = format!("--private-key={}", pki.file("server.key").display());
    let cert = format!("--certificate={}", pki.file("server.pem").display());
    let ca = format!("--ca-cert={}", pki.file("ca.pem").display());
    OvsdbServer::start_with_args(
        SchemaFile::Nb,
        &[
            "--remote=pssl:0:127.0.0.2",
            "--remote=pssl:0:127.0.0.3",
            &key,
            &cert,
            &ca,
        ],
    )
    .unwrap()
}

fn config(remote: String, tls: TlsConfig) -> ClientConfig {
    let mut c = ClientConfig::new(vec![remote], "OVN_Northbound");
    c.tls = Some(tls);
    c.request_timeout = Duration::from_secs(3);
    c
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

async fn wait_port(server: &OvsdbServer, addr: &str) -> u16 {
    for _ in 0..200 {
        if let Some(p) = server.listening_port(addr) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pssl port on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_certificate_from_the_servers_ca_transacts_over_ssl() {
    let pki = Pki::new();
    let server = ssl_server(&pki);
    let port = wait_port(&server, "127.0.0.2").await;
    let (c, _events) = Client::connect(config(
        format!("ssl:127.0.0.2:{port}"),
        pki.client_tls("ca"),
    ))
    .await
    .unwrap();
    assert!(
        c.list_dbs()
            .await
            .unwrap()
            .contains(&"OVN_Northbound".to_string())
    );
    let row = [("name".to_string(), "over-tls".into())].into();
    c.transact(&[ycloud_ovsdb::ops::insert("Logical_Switch", row, "ls")])
        .await
        .unwrap();
    let dump = server.dump_json();
    assert_eq!(
        dump["Logical_Switch"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["name"],
        "over-tls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_or_for_another_address_is_refused() {
    let pki = Pki::new();
    let server = ssl_server(&pki);
    let port2 = wait_port(&server, "127.0.0.2").await;
    let port3 = wait_port(&server, "127.0.0.3").await;

    // The transport alone shows why: the certificate check fails.
    let tls = pki.client_tls("other-ca").client_config().unwrap();
    let remote = format!("ssl:127.0.0.2:{port2}").parse().unwrap();
    let err = ycloud_ovsdb::transport::connect(&remote, Some(&tls), Duration::from_secs(3))
        .await
        .err()
        .unwrap();
    let text = chain(&err);
    assert!(
        matches!(err, Error::Connect { .. }) && text.contains("UnknownIssuer"),
        "{text}"
    );

    // The certificate names 127.0.0.2 only.
    let tls = pki.client_tls("ca").client_config().unwrap();
    let remote = format!("ssl:127.0.0.3:{port3}").parse().unwrap();
    let err = ycloud_ovsdb::transport::connect(&remote, Some(&tls), Duration::from_secs(3))
        .await
        .err()
        .unwrap();
    let text = chain(&err);
    assert!(text.contains("not valid for name \"127.0.0.3\""), "{text}");

    // And the client gives up with NotConnected after its request timeout.
    let err = Client::connect(config(
        format!("ssl:127.0.0.3:{port3}"),
        pki.client_tls("ca"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
}

#[tokio::test]
async fn an_ssl_remote_without_tls_files_is_a_configuration_error() {
    let remote = "ssl:127.0.0.2:6641".parse().unwrap();
    let err = ycloud_ovsdb::transport::connect(&remote, None, Duration::from_secs(1))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::TlsConfig { what, .. } if what.contains("ssl:127.0.0.2:6641")),
        "{err}"
    );
}
