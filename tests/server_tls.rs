//! HTTPS: the built `silt serve` with cc-metric-store's `https-cert-file`/`https-key-file` (a fresh
//! self-signed certificate) answers over TLS, refuses plain HTTP on that port, and refuses to start when
//! the files are missing or do not hold what they should, naming the file.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;

use common::{signal, spawn_silt};
use tokio_rustls::rustls;

const T: i64 = 1_700_000_000;

fn config(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("config.json");
    let text = format!(
        r#"{{
  "main": {{ "addr": "127.0.0.1:0", "https-cert-file": "{}", "https-key-file": "{}" }},
  "metrics": {{ "load": {{ "frequency": 10, "aggregation": "avg" }} }},
  "metric-store": {{ "retention-in-memory": "48h", "memory-cap": 0, "checkpoints": {{ "directory": "{}" }} }}
}}"#,
        cert.display(),
        key.display(),
        dir.join("data").display()
    );
    std::fs::write(&cfg, text).expect("config");
    cfg
}

fn https(addr: SocketAddr, roots: &rustls::RootCertStore, method: &str, path: &str, body: &str) -> (u16, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).expect("send");
    let mut resp = Vec::new();
    // The server may close without close_notify after answering; what was read counts.
    let _ = tls.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A fresh self-signed certificate for `localhost` and its key, written as PEM into `dir`.
fn self_signed(dir: &std::path::Path) -> (rcgen::Certificate, std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params").self_signed(&key).expect("cert");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    (cert, cert_path, key_path)
}

#[test]
fn serves_https_with_the_configured_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, cert_path, key_path) = self_signed(tmp.path());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");

    let cfg = config(tmp.path(), &cert_path, &key_path);
    let mut silt = spawn_silt(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let (s, b) = https(silt.addr, &roots, "POST", "/api/write?cluster=c", &format!("load,hostname=h value=5 {T}\n"));
    assert_eq!(s, 200, "{b}");
    let q = format!(r#"{{"cluster":"c","from":{T},"to":{},"queries":[{{"metric":"load","host":"h"}}]}}"#, T + 10);
    let (s, b) = https(silt.addr, &roots, "GET", "/api/query", &q);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("[5.000]"), "{b}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(silt.addr).expect("connect");
    plain.set_read_timeout(Some(std::time::Duration::from_secs(15))).expect("timeout");
    plain.write_all(b"GET /api/healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut resp = Vec::new();
    let _ = plain.read_to_end(&mut resp);
    assert!(!resp.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&resp));

    signal(&silt.child, "TERM");
    assert!(silt.child.wait().expect("wait").success());
}

#[test]
fn refuses_to_start_with_bad_tls_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.pem");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM").expect("write");
    let (_, cert_path, key_path) = self_signed(tmp.path());
    let cases = [
        (&missing, &key_path, &missing),
        (&garbage, &key_path, &garbage),
        (&cert_path, &garbage, &garbage),
        (&key_path, &key_path, &key_path),
    ];
    for (cert, key, named) in cases {
        let cfg = config(tmp.path(), cert, key);
        let out = Command::new(env!("CARGO_BIN_EXE_silt")).args(["serve", "--config"]).arg(&cfg).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&named.display().to_string()), "{err}");
    }
}
