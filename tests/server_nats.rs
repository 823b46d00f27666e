//! NATS ingest against a real `nats-server` (Debian package `nats-server`, installed by `.ci/run`): the
//! built `silt serve` reads cc-metric-store's `nats` and `nats-subscriptions` from its config.json,
//! subscribes, stores what is published (with the subscription's `cluster-tag` as the default cluster),
//! counts bad messages, and picks up again after the NATS server is killed and restarted.
//!
//! Without `nats-server` on the machine the test says so and passes, unless `SILT_REQUIRE_NATS=1` (set by
//! `.ci/run`), where it fails.

mod common;

use common::{eventually, http, nats_or_skip, nats_publish, nats_server_binary, signal, spawn_silt, start_nats};

const T: i64 = 1_700_000_000;

fn query(addr: std::net::SocketAddr) -> String {
    let body = format!(
        r#"{{"cluster":"natscluster","from":{T},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#,
        T + 30
    );
    http(addr, "GET", "/api/query", &body).1
}

const CONFIG: &str = r#"{
  "main": { "addr": "127.0.0.1:0" },
  "metrics": { "load": { "frequency": 10, "aggregation": "avg" } },
  "metric-store": {
    "checkpoints": { "directory": "DATA" },
    "retention-in-memory": "48h",
    "memory-cap": 0,
    "nats-subscriptions": [ { "subscribe-to": "silt-test", "cluster-tag": "natscluster" } ]
  },
  "nats": { "address": "nats://127.0.0.1:PORT" }
}"#;

#[test]
fn nats_ingest_survives_a_nats_restart() {
    let Some((mut nats, port)) = nats_or_skip() else { return };

    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("config.json");
    let data = tmp.path().join("data");
    let text = CONFIG.replace("DATA", &data.display().to_string()).replace("PORT", &port.to_string());
    std::fs::write(&cfg, text).expect("config");
    let mut silt = spawn_silt(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);

    // NATS core delivers only to subscriptions that exist: publish until silt has subscribed and stored.
    // The samples are idempotent (same slots), so repeats do not change the answer.
    let first = format!("load,hostname=n1 value=1 {T}\nload,hostname=n1 value=2 {}", T + 10);
    let seen = eventually(30, || {
        nats_publish(port, "silt-test", std::slice::from_ref(&first)) && query(silt.addr).contains("[1.000,2.000]")
    });
    assert!(seen, "first samples never arrived over NATS: {}", query(silt.addr));

    // A bad message: the good line before it is stored, the message is counted as an error.
    let bad = format!("load,hostname=n1 value=3 {}\nthis is not line protocol", T + 20);
    assert!(nats_publish(port, "silt-test", std::slice::from_ref(&bad)));
    assert!(
        eventually(10, || http(silt.addr, "GET", "/metrics", "")
            .1
            .contains("silt_nats_messages_total{result=\"error\"} 1")),
        "bad message not counted: {}",
        http(silt.addr, "GET", "/metrics", "").1
    );
    assert!(query(silt.addr).contains("[1.000,2.000,3.000]"), "{}", query(silt.addr));

    // Kill the NATS server and start it again on the same port: silt reconnects and resubscribes.
    nats.kill().expect("kill nats");
    nats.wait().expect("wait nats");
    let mut nats = start_nats(&nats_server_binary().expect("nats-server"), port);
    let again = format!("load,hostname=n1 value=7 {}", T + 20);
    let seen = eventually(30, || {
        nats_publish(port, "silt-test", std::slice::from_ref(&again))
            && query(silt.addr).contains("[1.000,2.000,7.000]")
    });
    assert!(seen, "no samples after the NATS restart: {}", query(silt.addr));

    signal(&silt.child, "TERM");
    assert!(silt.child.wait().expect("wait silt").success(), "silt did not exit cleanly");
    nats.kill().expect("kill nats");
    let _ = nats.wait();
}
