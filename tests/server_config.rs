//! `silt serve --config`: cc-metric-store's `config.json` (issue 5).
//!
//! `CONFIG_JSON` and `CONFIG_NATS_JSON` are cc-metric-store's `configs/config.json` and
//! `configs/config-nats.json` (the latter in the pre-1.5 layout), verbatim.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use silt::server::config::{
    parse_duration, CheckpointFormat, CleanupMode, Config, ConfigError, ConfigLayout, NatsSubscription,
    DEFAULT_DATA_DIR,
};
use silt::Aggregation;

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn sub(subject: &str, cluster: &str) -> NatsSubscription {
    NatsSubscription { subscribe_to: subject.into(), cluster_tag: Some(cluster.into()) }
}

/// A small valid configuration in the current layout, touching every object that can hold keys.
fn minimal() -> Value {
    json!({
        "main": { "addr": "127.0.0.1:8082", "debug": { "gops": false } },
        "metrics": { "cpu_load": { "frequency": 60, "aggregation": null } },
        "metric-store": {
            "retention-in-memory": "48h",
            "memory-cap": 10,
            "checkpoints": { "directory": "./data" },
            "cleanup": { "mode": "delete" },
            "debug": { "gops": false },
            "nats-subscriptions": [ { "subscribe-to": "hpc-nats" } ]
        },
        "nats": { "address": "nats://localhost:4222" }
    })
}

/// A small valid configuration in the legacy layout.
fn minimal_legacy() -> Value {
    json!({
        "metrics": { "cpu_load": { "frequency": 60, "aggregation": null } },
        "http-api": { "address": "localhost:8082" },
        "checkpoints": { "interval": "12h", "directory": "./var/checkpoints", "restore": "48h" },
        "archive": { "interval": "50h", "directory": "./var/archive" },
        "debug": { "gops": false },
        "retention-in-memory": "48h",
        "nats": [ { "address": "nats://localhost:4222", "subscriptions": [ { "subscribe-to": "s" } ] } ]
    })
}

fn parse(v: &Value) -> Result<Config, ConfigError> {
    Config::from_json(&v.to_string())
}

/// `v` with `pointer` (a JSON pointer) set to `value`, creating the last key if needed.
fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let slot = v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    slot.as_object_mut().unwrap().insert(key.to_owned(), value);
    v
}

/// `v` without the key at `pointer`.
fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    v.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key).unwrap();
    v
}

/// The error's message, checking that it is an `Invalid` naming `field`.
fn invalid_at(v: &Value, field: &str) -> String {
    match parse(v) {
        Err(e @ ConfigError::Invalid { .. }) => {
            let ConfigError::Invalid { field: f, .. } = &e else { unreachable!() };
            assert_eq!(f, field, "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{field}: ")), "{msg}");
            msg
        }
        other => panic!("expected Invalid at {field}, got {other:?}"),
    }
}

#[test]
fn shipped_config_parses() {
    let c = Config::from_json(CONFIG_JSON).unwrap();
    assert_eq!(c.layout, ConfigLayout::Current);
    assert_eq!(c.main.addr, "0.0.0.0:8082");
    assert_eq!(c.main.https_cert_file, None);
    assert_eq!(c.main.https_key_file, None);
    assert_eq!(c.main.tls_files(), None);
    assert_eq!(c.main.jwt_public_key.as_deref(), Some("kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="));
    assert_eq!(c.main.user, None);
    assert!(!c.main.debug.gops);

    assert_eq!(c.metrics.len(), 41);
    assert_eq!(c.metrics["cpu_load"].aggregation, Aggregation::None);
    assert_eq!(c.metrics["flops_any"].aggregation, Aggregation::Sum);
    assert_eq!(c.metrics["clock"].aggregation, Aggregation::Avg);
    assert!(c.metrics.values().all(|m| m.frequency == 60));
    assert_eq!(c.metrics.values().filter(|m| m.aggregation == Aggregation::None).count(), 15);
    assert_eq!(c.metrics.values().filter(|m| m.aggregation == Aggregation::Sum).count(), 13);

    let ms = &c.metric_store;
    assert_eq!(ms.retention_in_memory, hours(48));
    assert_eq!(ms.checkpoint_interval, Some(hours(12)));
    assert_eq!(ms.memory_cap, 100);
    assert_eq!(ms.memory_cap_bytes(), 100_000_000_000);
    assert_eq!(ms.num_workers, 0);
    assert_eq!(ms.checkpoints.file_format, CheckpointFormat::Wal);
    assert_eq!(ms.checkpoints.directory.as_deref(), Some(Path::new("./var/checkpoints")));
    let cleanup = ms.cleanup.as_ref().unwrap();
    assert_eq!(cleanup.mode, CleanupMode::Archive);
    assert_eq!(cleanup.directory.as_deref(), Some(Path::new("./var/archive")));
    assert_eq!(ms.nats_subscriptions, vec![sub("hpc-nats", "fritz"), sub("hpc-nats", "alex")]);
    assert_eq!(ms.block_retention, None);

    let nats = c.nats.as_ref().unwrap();
    assert_eq!(nats.address, "nats://0.0.0.0:4222");
    assert_eq!(nats.username.as_deref(), Some("root"));
    assert_eq!(nats.password.as_deref(), Some("root"));
    assert_eq!(nats.creds_file_path, None);

    assert_eq!(c.data_dir(), PathBuf::from("./var/checkpoints"));
}

#[test]
fn shipped_legacy_nats_config_parses() {
    let c = Config::from_json(CONFIG_NATS_JSON).unwrap();
    assert_eq!(c.layout, ConfigLayout::Legacy);
    assert_eq!(c.main.addr, "localhost:8082");
    assert_eq!(c.main.tls_files(), None);
    assert_eq!(c.main.jwt_public_key.as_deref(), Some("kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="));
    assert_eq!(c.metrics.len(), 41);
    assert_eq!(c.metrics["cpu_load"].aggregation, Aggregation::None);
    assert_eq!(c.metrics["flops_any"].aggregation, Aggregation::Sum);
    let ms = &c.metric_store;
    assert_eq!(ms.retention_in_memory, hours(48));
    assert_eq!(ms.checkpoint_interval, Some(hours(12)));
    assert_eq!(ms.memory_cap, 0);
    assert_eq!(ms.checkpoints.directory.as_deref(), Some(Path::new("./var/checkpoints")));
    let cleanup = ms.cleanup.as_ref().unwrap();
    assert_eq!(cleanup.mode, CleanupMode::Archive);
    assert_eq!(cleanup.directory.as_deref(), Some(Path::new("./var/archive")));
    assert_eq!(ms.nats_subscriptions, vec![sub("ee-hpc-nats", "fritz2")]);
    assert_eq!(ms.block_retention, Some(hours(50)), "archive.interval");
    let nats = c.nats.as_ref().unwrap();
    assert_eq!(nats.address, "nats://localhost:4222");
    assert_eq!(nats.creds_file_path.as_deref(), Some(Path::new("test.creds")));
    assert_eq!(nats.username, None);
}

#[test]
fn minimal_configs_parse() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.layout, ConfigLayout::Current);
    assert_eq!(c.metric_store.checkpoint_interval, None);
    assert_eq!(c.metric_store.cleanup.as_ref().unwrap().mode, CleanupMode::Delete);
    assert_eq!(
        c.metric_store.nats_subscriptions,
        vec![NatsSubscription { subscribe_to: "hpc-nats".into(), cluster_tag: None }]
    );
    let l = parse(&minimal_legacy()).unwrap();
    assert_eq!(l.layout, ConfigLayout::Legacy);
    assert_eq!(l.metric_store.nats_subscriptions.len(), 1);
}

#[test]
fn unknown_keys_are_named_by_dotted_path() {
    let cases: &[(Value, &str, &str)] = &[
        (minimal(), "/bogus", "bogus"),
        (minimal(), "/main/adr", "main.adr"),
        (minimal(), "/main/debug/gopz", "main.debug.gopz"),
        (minimal(), "/metrics/cpu_load/unit", "metrics.cpu_load.unit"),
        (minimal(), "/metric-store/retention", "metric-store.retention"),
        (minimal(), "/metric-store/checkpoints/dirctory", "metric-store.checkpoints.dirctory"),
        (minimal(), "/metric-store/checkpoints/interval", "metric-store.checkpoints.interval"),
        (minimal(), "/metric-store/cleanup/interval", "metric-store.cleanup.interval"),
        (minimal(), "/metric-store/debug/verbose", "metric-store.debug.verbose"),
        (minimal(), "/metric-store/nats-subscriptions/0/cluster", "metric-store.nats-subscriptions[0].cluster"),
        (minimal(), "/nats/subscriptions", "nats.subscriptions"),
        (minimal(), "/metric-store-file", "metric-store-file"),
        (minimal_legacy(), "/bogus", "bogus"),
        (minimal_legacy(), "/http-api/addr", "http-api.addr"),
        (minimal_legacy(), "/checkpoints/file", "checkpoints.file"),
        (minimal_legacy(), "/archive/mode", "archive.mode"),
        (minimal_legacy(), "/debug/x", "debug.x"),
        (minimal_legacy(), "/metrics/cpu_load/scope", "metrics.cpu_load.scope"),
        (minimal_legacy(), "/nats/0/user", "nats[0].user"),
        (minimal_legacy(), "/nats/0/subscriptions/0/tag", "nats[0].subscriptions[0].tag"),
    ];
    for (base, pointer, dotted) in cases {
        let v = if let Some(rest) = pointer.strip_prefix("/metric-store/nats-subscriptions/0/") {
            let mut v = base.clone();
            v["metric-store"]["nats-subscriptions"][0][rest] = json!("x");
            v
        } else if let Some(rest) = pointer.strip_prefix("/nats/0/subscriptions/0/") {
            let mut v = base.clone();
            v["nats"][0]["subscriptions"][0][rest] = json!("x");
            v
        } else if let Some(rest) = pointer.strip_prefix("/nats/0/") {
            let mut v = base.clone();
            v["nats"][0][rest] = json!("x");
            v
        } else {
            with(base.clone(), pointer, json!("x"))
        };
        let err = parse(&v).unwrap_err();
        assert_eq!(err.to_string(), format!("unknown key \"{dotted}\""), "{pointer}");
        let ConfigError::UnknownKey { section, key } = &err else { panic!("{err:?}") };
        let (want_section, want_key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
        assert_eq!((section.as_str(), key.as_str()), (want_section, want_key), "{pointer}");
    }
}

#[test]
fn keys_are_case_sensitive() {
    let v = with(without(minimal(), "/main/addr"), "/main/Addr", json!("127.0.0.1:1"));
    assert_eq!(parse(&v).unwrap_err().to_string(), "unknown key \"main.Addr\"");
}

#[test]
fn bad_durations_name_the_field() {
    let msg = invalid_at(
        &with(minimal(), "/metric-store/retention-in-memory", json!("48x")),
        "metric-store.retention-in-memory",
    );
    assert!(msg.starts_with("metric-store.retention-in-memory: invalid duration \"48x\""), "{msg}");
    let msg = invalid_at(
        &with(minimal(), "/metric-store/checkpoint-interval", json!("12")),
        "metric-store.checkpoint-interval",
    );
    assert!(msg.contains("invalid duration \"12\"") && msg.contains("missing unit"), "{msg}");
    let msg = invalid_at(
        &with(minimal(), "/metric-store/retention-in-memory", json!("-1h")),
        "metric-store.retention-in-memory",
    );
    assert!(msg.contains("negative"), "{msg}");
    let msg = invalid_at(
        &with(minimal(), "/metric-store/retention-in-memory", json!("0")),
        "metric-store.retention-in-memory",
    );
    assert!(msg.contains("positive"), "{msg}");
    let msg = invalid_at(
        &with(minimal(), "/metric-store/retention-in-memory", json!(48)),
        "metric-store.retention-in-memory",
    );
    assert!(msg.contains("expected a string, found a number"), "{msg}");
    invalid_at(&with(minimal_legacy(), "/checkpoints/restore", json!("2d")), "checkpoints.restore");
    invalid_at(&with(minimal_legacy(), "/archive/interval", json!("")), "archive.interval");
    invalid_at(&with(minimal_legacy(), "/retention-in-memory", json!("1y")), "retention-in-memory");
}

#[test]
fn bad_aggregation_names_the_metric() {
    for bad in ["maximum", "Max", "none", "mean"] {
        let msg =
            invalid_at(&with(minimal(), "/metrics/cpu_load/aggregation", json!(bad)), "metrics.cpu_load.aggregation");
        assert!(msg.contains(&format!("{bad:?}")) && msg.contains("metric \"cpu_load\""), "{msg}");
        // The accepted names are listed.
        for name in ["\"sum\"", "\"avg\"", "\"max\"", "\"min\"", "null"] {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
    }
    invalid_at(&with(minimal(), "/metrics/cpu_load/aggregation", json!(1)), "metrics.cpu_load.aggregation");
    // Required in the current layout (null is the way to say none), optional in the legacy one.
    invalid_at(&without(minimal(), "/metrics/cpu_load/aggregation"), "metrics.cpu_load.aggregation");
    let c = parse(&without(minimal_legacy(), "/metrics/cpu_load/aggregation")).unwrap();
    assert_eq!(c.metrics["cpu_load"].aggregation, Aggregation::None);
    // "" is none, as in cc-metric-store.
    let c = parse(&with(minimal(), "/metrics/cpu_load/aggregation", json!(""))).unwrap();
    assert_eq!(c.metrics["cpu_load"].aggregation, Aggregation::None);
}

#[test]
fn every_aggregation_name_parses() {
    for (name, want) in
        [("sum", Aggregation::Sum), ("avg", Aggregation::Avg), ("max", Aggregation::Max), ("min", Aggregation::Min)]
    {
        let c = parse(&with(minimal(), "/metrics/cpu_load/aggregation", json!(name))).unwrap();
        assert_eq!(c.metrics["cpu_load"].aggregation, want, "{name}");
        assert_eq!(c.metric_configs().into_iter().find(|(n, _)| n == "cpu_load").unwrap().1.aggregation, want);
    }
}

#[test]
fn bad_frequencies_name_the_field() {
    for bad in [json!(0), json!(-60), json!(60.5), json!("60"), json!(1_000_000_000)] {
        invalid_at(&with(minimal(), "/metrics/cpu_load/frequency", bad), "metrics.cpu_load.frequency");
    }
    let msg = invalid_at(&without(minimal(), "/metrics/cpu_load/frequency"), "metrics.cpu_load.frequency");
    assert!(msg.contains("required"), "{msg}");
    let mut v = minimal();
    v["metrics"]["a/b"] = json!({"frequency": 60, "aggregation": null});
    let msg = invalid_at(&v, "metrics");
    assert!(msg.contains("\"a/b\""), "{msg}");
}

#[test]
fn bad_json_has_line_and_column() {
    let text = "{\n  \"main\": {\n    \"addr\": \"x\",\n  }\n}";
    match Config::from_json(text).unwrap_err() {
        e @ ConfigError::Json { .. } => {
            let ConfigError::Json { path, line, column, message } = &e else { unreachable!() };
            assert_eq!((path, *line, *column), (&None, 4, 3), "{e}");
            assert!(!message.contains("at line"), "{message}");
            assert_eq!(e.to_string(), format!("invalid JSON at line 4, column 3: {message}"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(Config::from_json("{} {}"), Err(ConfigError::Json { line: 1, column: 4, .. })));
    let e = Config::from_json("[1]").unwrap_err();
    assert!(e.to_string().contains("expected a JSON object, found an array"), "{e}");
}

#[test]
fn required_sections_and_fields() {
    for section in ["main", "metrics", "metric-store"] {
        let msg = invalid_at(&without(minimal(), &format!("/{section}")), section);
        assert!(msg.contains("missing"), "{msg}");
    }
    invalid_at(&without(minimal(), "/main/addr"), "main.addr");
    invalid_at(&with(minimal(), "/main/addr", json!("")), "main.addr");
    invalid_at(&with(minimal(), "/main/addr", json!("localhost")), "main.addr");
    invalid_at(&without(minimal(), "/metric-store/retention-in-memory"), "metric-store.retention-in-memory");
    invalid_at(&without(minimal(), "/metric-store/memory-cap"), "metric-store.memory-cap");
    invalid_at(&with(minimal(), "/nats/address", json!(null)), "nats.address");
    let mut v = minimal();
    v["metric-store"]["nats-subscriptions"][0] = json!({"cluster-tag": "c"});
    invalid_at(&v, "metric-store.nats-subscriptions[0].subscribe-to");
    invalid_at(&without(minimal_legacy(), "/http-api"), "http-api");
    invalid_at(&without(minimal_legacy(), "/retention-in-memory"), "retention-in-memory");
    // No nats section: fine.
    assert_eq!(parse(&without(minimal(), "/nats")).unwrap().nats, None);
}

#[test]
fn bad_values_name_the_field() {
    let ms = |key: &str, value: Value| with(minimal(), &format!("/metric-store/{key}"), value);
    invalid_at(&ms("memory-cap", json!(-1)), "metric-store.memory-cap");
    invalid_at(&ms("memory-cap", json!("100")), "metric-store.memory-cap");
    invalid_at(&ms("memory-cap", json!(100_000_000_000_u64)), "metric-store.memory-cap");
    invalid_at(&ms("num-workers", json!(-2)), "metric-store.num-workers");
    invalid_at(&ms("checkpoints", json!({"file-format": "parquet"})), "metric-store.checkpoints.file-format");
    invalid_at(&ms("checkpoints", json!({"max-wal-size": -1})), "metric-store.checkpoints.max-wal-size");
    invalid_at(&ms("cleanup", json!({"mode": "move"})), "metric-store.cleanup.mode");
    invalid_at(&ms("cleanup", json!({"mode": "archive"})), "metric-store.cleanup.directory");
    invalid_at(&ms("checkpoints", json!("./data")), "metric-store.checkpoints");
    invalid_at(&ms("nats-subscriptions", json!({})), "metric-store.nats-subscriptions");
    invalid_at(&with(minimal(), "/main/debug/gops", json!("yes")), "main.debug.gops");
    invalid_at(&with(minimal(), "/nats", json!([{"address": "nats://x:1"}])), "nats");
    invalid_at(&with(minimal_legacy(), "/archive/directory", json!("")), "archive.directory");
    let two = json!([{"address": "nats://a:1"}, {"address": "nats://b:1"}]);
    invalid_at(&with(minimal_legacy(), "/nats", two), "nats");

    for format in ["json", "wal", "avro"] {
        let c = parse(&ms("checkpoints", json!({"file-format": format}))).unwrap();
        let want = match format {
            "json" => CheckpointFormat::Json,
            "wal" => CheckpointFormat::Wal,
            _ => CheckpointFormat::Avro,
        };
        assert_eq!(c.metric_store.checkpoints.file_format, want);
    }
    let c = parse(&ms("memory-cap", json!(0))).unwrap();
    assert_eq!(c.metric_store.memory_cap_bytes(), 0);
    let c = parse(&with(minimal_legacy(), "/archive/delete-instead", json!(true))).unwrap();
    assert_eq!(c.metric_store.cleanup.as_ref().unwrap().mode, CleanupMode::Delete);
}

#[test]
fn nulls_and_empty_strings_are_absent() {
    let mut v = minimal();
    v["main"]["https-cert-file"] = json!("");
    v["main"]["https-key-file"] = json!(null);
    v["main"]["user"] = json!("");
    v["metric-store"]["checkpoints"] = json!(null);
    v["metric-store"]["nats-subscriptions"] = json!(null);
    let c = parse(&v).unwrap();
    assert_eq!(c.main.https_cert_file, None);
    assert_eq!(c.main.https_key_file, None);
    assert_eq!(c.main.user, None);
    assert_eq!(c.metric_store.checkpoints.directory, None);
    assert!(c.metric_store.nats_subscriptions.is_empty());
    assert_eq!(c.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));

    v["main"]["https-cert-file"] = json!("cert.pem");
    v["main"]["https-key-file"] = json!("key.pem");
    let c = parse(&v).unwrap();
    assert_eq!(c.main.tls_files(), Some((Path::new("cert.pem"), Path::new("key.pem"))));
}

#[test]
fn parse_duration_follows_go() {
    let ok: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("+0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("48h", hours(48)),
        ("1h30m", Duration::from_secs(5400)),
        ("1.5h", Duration::from_secs(5400)),
        ("90s", Duration::from_secs(90)),
        ("500ms", Duration::from_millis(500)),
        ("10us", Duration::from_micros(10)),
        ("10\u{b5}s", Duration::from_micros(10)),
        ("10\u{3bc}s", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        ("2h45m10.5s", Duration::from_millis((2 * 3600 + 45 * 60 + 10) * 1000 + 500)),
        ("+5s", Duration::from_secs(5)),
        (".5s", Duration::from_millis(500)),
        ("5.s", Duration::from_secs(5)),
        ("30m1h", Duration::from_secs(5400)),
        ("1.0000000001s", Duration::from_secs(1)),
        ("1.9999999999ns", Duration::from_nanos(1)),
        ("2562047h47m16.854775807s", Duration::from_nanos(i64::MAX as u64)),
    ];
    for (s, want) in ok {
        assert_eq!(parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}")), *want, "{s:?}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty"),
        ("48", "missing unit"),
        ("1h30", "missing unit"),
        ("48x", "unknown unit \"x\""),
        ("1d", "unknown unit \"d\""),
        ("\u{b5}s", "expected a number"),
        ("h", "expected a number"),
        (".s", "expected a number"),
        ("-1h", "negative"),
        ("-0", "negative"),
        ("1 h", "unknown unit \" h\""),
        (" 1h", "expected a number"),
        ("1e3s", "unknown unit \"e\""),
        ("2562047h47m16.854775808s", "out of range"),
        ("99999999999999999999999h", "out of range"),
    ];
    for (s, detail) in bad {
        let e = parse_duration(s).expect_err(s);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("invalid duration {s:?}")) && msg.contains(detail), "{s:?}: {msg}");
        assert!(matches!(&e, ConfigError::Invalid { field, .. } if field.is_empty()), "{e:?}");
    }
}

#[test]
fn data_dir_and_defaults() {
    let c = parse(&without(minimal(), "/metric-store/checkpoints")).unwrap();
    assert_eq!(c.data_dir(), PathBuf::from("./silt-data"));
    let c = parse(&with(minimal(), "/metric-store/checkpoints", json!({"file-format": "json"}))).unwrap();
    assert_eq!(c.data_dir(), PathBuf::from("./silt-data"));
    assert_eq!(parse(&minimal()).unwrap().data_dir(), PathBuf::from("./data"));

    let d = Config::default_loopback();
    assert_eq!(d.main.addr, "127.0.0.1:8082");
    assert_eq!(d.main.listen_addr().unwrap(), "127.0.0.1:8082".parse().unwrap());
    assert!(d.metrics.is_empty());
    assert_eq!(d.data_dir(), PathBuf::from("./silt-data"));
    assert_eq!(d.nats, None);
    assert_eq!(d.metric_store.memory_cap_bytes(), 0);
}

#[test]
fn listen_addr_and_db_options() {
    let c = parse(&with(minimal(), "/main/addr", json!(":8082"))).unwrap();
    assert_eq!(c.main.listen_addr().unwrap(), "0.0.0.0:8082".parse().unwrap());
    let c = parse(&with(minimal(), "/main/addr", json!("[::1]:9000"))).unwrap();
    assert_eq!(c.main.listen_addr().unwrap(), "[::1]:9000".parse().unwrap());

    let c = Config::from_json(CONFIG_JSON).unwrap();
    let opts = c.db_options();
    assert_eq!(opts.retention, Some(hours(48)));
    assert_eq!(opts.memory_cap_bytes, 100_000_000_000);
    assert_eq!(opts.checkpoint_interval, Some(hours(12)));
    let configs = c.metric_configs();
    assert_eq!(configs.len(), 41);
    let (_, cpu_load) = configs.iter().find(|(n, _)| n == "cpu_load").unwrap();
    assert_eq!((cpu_load.frequency, cpu_load.aggregation), (60, Aggregation::None));
    // Without checkpoint-interval silt keeps its own default.
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.db_options().checkpoint_interval, silt::Options::default().checkpoint_interval);
}

#[test]
fn load_reads_files_and_section_files() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, r#"{"mem_used": {"frequency": 10, "aggregation": "sum"}}"#).unwrap();
    let mut v = without(minimal(), "/metrics");
    v["metrics-file"] = json!(metrics.to_str().unwrap());
    let path = dir.path().join("config.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.metrics.keys().collect::<Vec<_>>(), ["mem_used"]);
    assert_eq!(c.metrics["mem_used"].frequency, 10);

    // Errors inside a section file name that file, or the key inside the section.
    std::fs::write(&metrics, "{\"mem_used\": }").unwrap();
    match Config::load(&path).unwrap_err() {
        ConfigError::Json { path: Some(p), line: 1, .. } => assert_eq!(p, metrics),
        other => panic!("{other:?}"),
    }
    std::fs::write(&metrics, r#"{"mem_used": {"frequency": 10, "aggregation": "sum", "x": 1}}"#).unwrap();
    assert_eq!(Config::load(&path).unwrap_err().to_string(), "unknown key \"metrics.mem_used.x\"");

    // Both forms at once, or a missing section file.
    let mut both = v.clone();
    both["metrics"] = minimal()["metrics"].clone();
    invalid_at(&both, "metrics-file");
    let mut gone = v.clone();
    gone["metrics-file"] = json!(dir.path().join("nope.json").to_str().unwrap());
    assert!(matches!(parse(&gone), Err(ConfigError::Io { .. })));

    // Bad JSON in the main file names it; a missing file is an Io error naming it.
    std::fs::write(&path, "{").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}: invalid JSON at line 1", path.display())), "{e}");
    let missing = dir.path().join("missing.json");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(&e, ConfigError::Io { path, .. } if path == &missing), "{e:?}");
    assert!(e.to_string().starts_with(&missing.display().to_string()), "{e}");
}

#[test]
fn debug_output_hides_the_nats_password() {
    let c = Config::from_json(CONFIG_JSON).unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("nats://0.0.0.0:4222") && shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("password: Some(\"root\")"), "{shown}");
}

/// cc-metric-store's `configs/config.json`.
const CONFIG_JSON: &str = r#"{
  "main": {
    "addr": "0.0.0.0:8082",
    "https-cert-file": "",
    "https-key-file": "",
    "jwt-public-key": "kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="
  },
  "nats": {
    "address": "nats://0.0.0.0:4222",
    "username": "root",
    "password": "root"
  },
  "metric-store": {
    "checkpoints": {
      "file-format": "wal",
      "directory": "./var/checkpoints"
    },
    "checkpoint-interval": "12h",
    "memory-cap": 100,
    "retention-in-memory": "48h",
    "cleanup": {
      "mode": "archive",
      "directory": "./var/archive"
    },
    "nats-subscriptions": [
      {
        "subscribe-to": "hpc-nats",
        "cluster-tag": "fritz"
      },
      {
        "subscribe-to": "hpc-nats",
        "cluster-tag": "alex"
      }
    ]
  },
  "metrics": {
    "debug_metric": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "clock": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_idle": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_iowait": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_irq": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_system": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_user": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "nv_mem_util": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "nv_temp": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "nv_sm_clock": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "acc_utilization": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "acc_mem_used": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "acc_power": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "flops_any": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "flops_dp": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "flops_sp": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "ib_recv": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "ib_xmit": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "ib_recv_pkts": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "ib_xmit_pkts": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "cpu_power": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "core_power": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "mem_power": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "ipc": {
      "frequency": 60,
      "aggregation": "avg"
    },
    "cpu_load": {
      "frequency": 60,
      "aggregation": null
    },
    "lustre_close": {
      "frequency": 60,
      "aggregation": null
    },
    "lustre_open": {
      "frequency": 60,
      "aggregation": null
    },
    "lustre_statfs": {
      "frequency": 60,
      "aggregation": null
    },
    "lustre_read_bytes": {
      "frequency": 60,
      "aggregation": null
    },
    "lustre_write_bytes": {
      "frequency": 60,
      "aggregation": null
    },
    "net_bw": {
      "frequency": 60,
      "aggregation": null
    },
    "file_bw": {
      "frequency": 60,
      "aggregation": null
    },
    "mem_bw": {
      "frequency": 60,
      "aggregation": "sum"
    },
    "mem_cached": {
      "frequency": 60,
      "aggregation": null
    },
    "mem_used": {
      "frequency": 60,
      "aggregation": null
    },
    "net_bytes_in": {
      "frequency": 60,
      "aggregation": null
    },
    "net_bytes_out": {
      "frequency": 60,
      "aggregation": null
    },
    "nfs4_read": {
      "frequency": 60,
      "aggregation": null
    },
    "nfs4_total": {
      "frequency": 60,
      "aggregation": null
    },
    "nfs4_write": {
      "frequency": 60,
      "aggregation": null
    },
    "vectorization_ratio": {
      "frequency": 60,
      "aggregation": "avg"
    }
  }
}"#;

/// cc-metric-store's `configs/config-nats.json` (pre-1.5 layout).
const CONFIG_NATS_JSON: &str = r#"{
    "metrics": {
        "debug_metric": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "clock": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_idle": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_iowait": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_irq": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_system": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_user": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "nv_mem_util": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "nv_temp": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "nv_sm_clock": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "acc_utilization": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "acc_mem_used": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "acc_power": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "flops_any": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "flops_dp": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "flops_sp": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "ib_recv": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "ib_xmit": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "ib_recv_pkts": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "ib_xmit_pkts": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "cpu_power": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "core_power": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "mem_power": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "ipc": {
            "frequency": 60,
            "aggregation": "avg"
        },
        "cpu_load": {
            "frequency": 60,
            "aggregation": null
        },
        "lustre_close": {
            "frequency": 60,
            "aggregation": null
        },
        "lustre_open": {
            "frequency": 60,
            "aggregation": null
        },
        "lustre_statfs": {
            "frequency": 60,
            "aggregation": null
        },
        "lustre_read_bytes": {
            "frequency": 60,
            "aggregation": null
        },
        "lustre_write_bytes": {
            "frequency": 60,
            "aggregation": null
        },
        "net_bw": {
            "frequency": 60,
            "aggregation": null
        },
        "file_bw": {
            "frequency": 60,
            "aggregation": null
        },
        "mem_bw": {
            "frequency": 60,
            "aggregation": "sum"
        },
        "mem_cached": {
            "frequency": 60,
            "aggregation": null
        },
        "mem_used": {
            "frequency": 60,
            "aggregation": null
        },
        "net_bytes_in": {
            "frequency": 60,
            "aggregation": null
        },
        "net_bytes_out": {
            "frequency": 60,
            "aggregation": null
        },
        "nfs4_read": {
            "frequency": 60,
            "aggregation": null
        },
        "nfs4_total": {
            "frequency": 60,
            "aggregation": null
        },
        "nfs4_write": {
            "frequency": 60,
            "aggregation": null
        },
        "vectorization_ratio": {
            "frequency": 60,
            "aggregation": "avg"
        }
    },
    "checkpoints": {
        "interval": "12h",
        "directory": "./var/checkpoints",
        "restore": "48h"
    },
    "archive": {
        "interval": "50h",
        "directory": "./var/archive"
    },
    "http-api": {
        "address": "localhost:8082",
        "https-cert-file": null,
        "https-key-file": null
    },
    "retention-in-memory": "48h",
    "nats": [
        {
            "address": "nats://localhost:4222",
            "creds-file-path": "test.creds",
            "subscriptions": [
                {
                    "subscribe-to": "ee-hpc-nats",
                    "cluster-tag": "fritz2"
                }
            ]
        }
    ],
    "jwt-public-key": "kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="
}"#;

#[test]
fn page_slots_sets_the_head_page_class_of_a_new_data_directory() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.metric_store.page_slots, silt::server::config::DEFAULT_SERVER_PAGE_SLOTS);
    let o = c.db_options();
    assert_eq!((o.page_slots, o.pages_per_file), (64, 32768), "16 MiB head files of 512-byte pages");
    let c = parse(&with(minimal(), "/metric-store/page-slots", json!(512))).unwrap();
    assert_eq!((c.db_options().page_slots, c.db_options().pages_per_file), (512, 4096));
    for bad in [json!(0), json!(48), json!(1024), json!(4), json!(-8), json!(1e20)] {
        let v = with(minimal(), "/metric-store/page-slots", bad.clone());
        match parse(&v) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "metric-store.page-slots", "{bad}"),
            other => panic!("{bad}: expected Invalid at metric-store.page-slots, got {other:?}"),
        }
    }
    let msg = invalid_at(&with(minimal(), "/metric-store/page-slots", json!(48)), "metric-store.page-slots");
    assert!(msg.contains("48 is not a power of two from 8 to 512"), "{msg}");
}

#[test]
fn max_series_is_the_cardinality_limit() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.db_options().max_series, silt::server::config::DEFAULT_SERVER_MAX_SERIES);
    let c = parse(&with(minimal(), "/metric-store/max-series", json!(5000))).unwrap();
    assert_eq!(c.db_options().max_series, 5000);
    assert_eq!(parse(&with(minimal(), "/metric-store/max-series", json!(0))).unwrap().db_options().max_series, 0);
    invalid_at(&with(minimal(), "/metric-store/max-series", json!(-1)), "metric-store.max-series");
    invalid_at(&with(minimal(), "/metric-store/max-series", json!(1u64 << 40)), "metric-store.max-series");
}

/// `db_options`' long-term retention: (block_retention, archive_dir).
fn long_term(c: &Config) -> (Option<Duration>, Option<PathBuf>) {
    let o = c.db_options();
    (o.block_retention, o.archive_dir)
}

#[test]
fn block_retention_is_a_positive_duration_no_shorter_than_retention_in_memory() {
    let br = |v: Value| with(minimal(), "/metric-store/block-retention", v);
    assert_eq!(parse(&minimal()).unwrap().metric_store.block_retention, None);
    assert_eq!(parse(&br(json!(null))).unwrap().metric_store.block_retention, None);
    assert_eq!(parse(&br(json!("720h"))).unwrap().metric_store.block_retention, Some(hours(720)));
    assert_eq!(parse(&br(json!("1h30m47h"))).unwrap().metric_store.block_retention, Some(hours(48) + hours(1) / 2));
    // Equal to retention-in-memory is fine: it is what a cleanup section alone means.
    assert_eq!(parse(&br(json!("48h"))).unwrap().metric_store.block_retention, Some(hours(48)));

    let field = "metric-store.block-retention";
    let msg = invalid_at(&br(json!("30d")), field);
    assert!(msg.contains("invalid duration \"30d\"") && msg.contains("unknown unit \"d\""), "{msg}");
    let msg = invalid_at(&br(json!("0")), field);
    assert!(msg.contains("must be positive"), "{msg}");
    let msg = invalid_at(&br(json!("-720h")), field);
    assert!(msg.contains("negative"), "{msg}");
    let msg = invalid_at(&br(json!(720)), field);
    assert!(msg.contains("expected a string, found a number"), "{msg}");

    // Shorter than retention-in-memory: the error names both keys and both values.
    let msg = invalid_at(&br(json!("47h59m")), field);
    assert_eq!(
        msg,
        "metric-store.block-retention: \"47h59m\" is shorter than metric-store.retention-in-memory (\"48h\"): data \
         must stay on disk at least as long as in memory"
    );
    // Whatever the order of the keys, and with or without a cleanup section.
    let mut v = without(br(json!("1h")), "/metric-store/cleanup");
    v["metric-store"]["retention-in-memory"] = json!("2h");
    let msg = invalid_at(&v, field);
    assert!(msg.contains("\"1h\"") && msg.contains("metric-store.retention-in-memory (\"2h\")"), "{msg}");

    // A silt extension of the current layout only: the legacy layout has archive.interval instead.
    assert_eq!(
        parse(&with(minimal_legacy(), "/block-retention", json!("720h"))).unwrap_err().to_string(),
        "unknown key \"block-retention\""
    );
    let msg = invalid_at(&with(minimal_legacy(), "/archive/interval", json!("24h")), "archive.interval");
    assert!(msg.contains("\"24h\" is shorter than retention-in-memory (\"48h\")"), "{msg}");
}

#[test]
fn db_options_long_term_retention_follows_cleanup() {
    let ms = |v: Value, key: &str, value: Value| with(v, &format!("/metric-store/{key}"), value);
    let no_cleanup = without(minimal(), "/metric-store/cleanup");
    let archive = json!({"mode": "archive", "directory": "./var/archive"});

    // No cleanup section: blocks are kept for ever (cc-metric-store would delete), unless block-retention
    // asks for deletion.
    assert_eq!(parse(&no_cleanup).unwrap().metric_store.cleanup, None);
    assert_eq!(long_term(&parse(&no_cleanup).unwrap()), (None, None));
    assert_eq!(long_term(&parse(&ms(minimal(), "cleanup", json!(null))).unwrap()), (None, None));
    assert_eq!(long_term(&Config::default_loopback()), (None, None));
    assert_eq!(
        long_term(&parse(&ms(no_cleanup.clone(), "block-retention", json!("720h"))).unwrap()),
        (Some(hours(720)), None)
    );

    // Delete mode (also an empty section, its default): blocks go at retention-in-memory, as in
    // cc-metric-store, or at block-retention; a directory is ignored.
    assert_eq!(long_term(&parse(&minimal()).unwrap()), (Some(hours(48)), None));
    assert_eq!(long_term(&parse(&ms(minimal(), "cleanup", json!({}))).unwrap()), (Some(hours(48)), None));
    let delete_dir = ms(minimal(), "cleanup", json!({"mode": "delete", "directory": "./var/archive"}));
    assert_eq!(long_term(&parse(&delete_dir).unwrap()), (Some(hours(48)), None));
    let v = ms(ms(minimal(), "retention-in-memory", json!("2h")), "block-retention", json!("168h"));
    assert_eq!(long_term(&parse(&v).unwrap()), (Some(hours(168)), None));

    // Archive mode: the same ages, archived into cleanup.directory first.
    let archived = ms(minimal(), "cleanup", archive);
    assert_eq!(long_term(&parse(&archived).unwrap()), (Some(hours(48)), Some(PathBuf::from("./var/archive"))));
    let v = ms(archived, "block-retention", json!("8760h"));
    assert_eq!(long_term(&parse(&v).unwrap()), (Some(hours(8760)), Some(PathBuf::from("./var/archive"))));
    // cc-metric-store's shipped config archives after its 48h retention.
    let shipped = Config::from_json(CONFIG_JSON).unwrap();
    assert_eq!(long_term(&shipped), (Some(hours(48)), Some(PathBuf::from("./var/archive"))));
    // The rest of the options is untouched by it.
    assert_eq!(shipped.db_options().retention, Some(hours(48)));
}

#[test]
fn legacy_archive_section_maps_onto_cleanup_and_block_retention() {
    // archive.interval was the age past which cc-metric-store ≤ 0.x archived (or deleted) checkpoints.
    let l = parse(&minimal_legacy()).unwrap();
    assert_eq!(l.metric_store.block_retention, Some(hours(50)));
    let cleanup = l.metric_store.cleanup.as_ref().unwrap();
    assert_eq!((cleanup.mode, cleanup.directory.as_deref()), (CleanupMode::Archive, Some(Path::new("./var/archive"))));
    assert_eq!(long_term(&l), (Some(hours(50)), Some(PathBuf::from("./var/archive"))));
    assert_eq!(
        long_term(&Config::from_json(CONFIG_NATS_JSON).unwrap()),
        (Some(hours(50)), Some(PathBuf::from("./var/archive")))
    );

    let delete = with(minimal_legacy(), "/archive/delete-instead", json!(true));
    assert_eq!(long_term(&parse(&delete).unwrap()), (Some(hours(50)), None));
    // Without an interval, the age is retention-in-memory, as for a cleanup section.
    let no_interval = without(minimal_legacy(), "/archive/interval");
    assert_eq!(long_term(&parse(&no_interval).unwrap()), (Some(hours(48)), Some(PathBuf::from("./var/archive"))));
    // No archive section: kept for ever.
    let none = parse(&without(minimal_legacy(), "/archive")).unwrap();
    assert_eq!((none.metric_store.cleanup.as_ref(), long_term(&none)), (None, (None, None)));
}
