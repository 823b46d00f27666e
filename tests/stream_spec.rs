//! The declarative pipeline form: every bad field is refused with an error naming it, and a rollup built
//! from JSON writes per-group window aggregates that match a model computed from the samples as stored
//! (tumbling and sliding windows, filter and map, per cluster and per host). The key operator's checkpoint
//! state refills the key dictionary, and a key the sink cannot name fails the pipeline cleanly.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use serde_json::{json, Value};
use silt::keys::SeriesPath;
use silt::stream::graph::NodeKind;
use silt::stream::operators::{Collector, Map, Operator, TumblingWindow};
use silt::stream::runtime::start;
use silt::stream::spec::{
    group_key, pipelines_from_config, GroupBy, GroupKeyOperator, KeyDictionary, MapSpec, PipelineSpec, SpecError,
};
use silt::stream::store::scan_schema;
use silt::stream::StreamError;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options};

/// A multiple of 300 and of 60.
const T: i64 = 1_700_000_100;
/// One hour of samples.
const SPAN: i64 = 3600;
const FREQ: i64 = 60;

fn base() -> Value {
    json!({
        "name": "cluster_load_5m",
        "source": {"kind": "scan", "metric": "cpu_load", "selector": ["*"], "from": T, "to": T + SPAN},
        "group_by": "cluster",
        "window": {"width": 300, "aggregate": "avg"},
        "sink": {"metric": "cpu_load_5m_avg"},
        "parallelism": 2
    })
}

fn with(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = cur.get_mut(*p).unwrap();
    }
    cur.as_object_mut().unwrap().insert(path[path.len() - 1].to_owned(), value);
    v
}

fn err_of(v: &Value) -> String {
    match PipelineSpec::from_json(&serde_json::to_string_pretty(v).unwrap()) {
        Ok(s) => panic!("accepted {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_base_spec_is_valid_and_round_trips() {
    let spec = PipelineSpec::from_json(&base().to_string()).unwrap();
    assert_eq!(spec.window.slide(), 300);
    assert_eq!(spec.sink_config(), MetricConfig { frequency: 300, aggregation: Aggregation::Avg });
    let again = PipelineSpec::from_json(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    // The documented example parses too.
    let doc = r#"{"name": "cluster_load_5m",
        "source": {"kind": "scan", "metric": "cpu_load", "selector": ["emmy", ["n1", "n2"], "*"],
                   "from": 1700000000, "to": 1700086400},
        "filter": {"min": 0.0, "max": 1e9}, "map": {"scale": 0.001, "offset": 0.0},
        "group_by": {"level": 2},
        "window": {"width": 300, "slide": 300, "aggregate": "avg"},
        "sink": {"metric": "cpu_load_5m_avg", "frequency": 300, "aggregation": "avg"},
        "parallelism": 2, "checkpoint_interval_secs": 10}"#;
    let spec = PipelineSpec::from_json(doc).unwrap();
    assert_eq!(spec.group_by, GroupBy::Level(2));
    assert_eq!(spec.checkpoint_interval(), Some(std::time::Duration::from_secs(10)));
    assert_eq!(PipelineSpec::from_json(&serde_json::to_string(&spec).unwrap()).unwrap(), spec);
}

#[test]
fn every_sink_aggregation_round_trips_by_name() {
    for a in Aggregation::ALL {
        let v = with(base(), &["sink", "aggregation"], json!(a.name()));
        let spec = PipelineSpec::from_json(&v.to_string()).unwrap();
        assert_eq!(spec.sink.aggregation, Some(a));
        assert_eq!(spec.sink_config().aggregation, a);
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(&format!(r#""aggregation":"{}""#, a.name())), "{text}");
        assert_eq!(PipelineSpec::from_json(&text).unwrap(), spec);
    }
    let e = err_of(&with(base(), &["sink", "aggregation"], json!("maximum")));
    assert!(e.contains("sink.aggregation") && e.contains("\"maximum\""), "{e}");
    for name in ["none", "sum", "avg", "max", "min"] {
        assert!(e.contains(&format!("\"{name}\"")), "{e} lacks {name}");
    }
}

/// A sliding window adds each row to `ceil(width / slide)` windows: a spec with a huge width and a small
/// slide (`{"width": 6e12, "slide": 60}`) passed validation and made every row cost about 1e11 map entries.
/// Seen while writing the `pipeline_spec` fuzz check; the limit is [`MAX_WINDOWS_PER_ROW`] windows per row.
#[test]
fn a_row_may_fall_in_at_most_max_windows_per_row_windows() {
    use silt::stream::spec::MAX_WINDOWS_PER_ROW;
    let at_limit =
        with(base(), &["window"], json!({"width": 60 * MAX_WINDOWS_PER_ROW, "slide": 60, "aggregate": "avg"}));
    assert!(PipelineSpec::from_json(&at_limit.to_string()).is_ok());
    let e = err_of(&with(base(), &["window"], json!({"width": 6_000_000_000_000i64, "slide": 60, "aggregate": "avg"})));
    assert!(e.contains("window.slide") && e.contains("100000000000 windows"), "{e}");
    // Tumbling windows (slide = width) are one per row, whatever the width.
    let tumbling = with(base(), &["window"], json!({"width": i64::MAX, "aggregate": "avg"}));
    assert!(PipelineSpec::from_json(&tumbling.to_string()).is_ok());
}

#[test]
fn each_bad_field_is_named() {
    let cases: Vec<(Value, &str)> = vec![
        (with(base(), &["name"], json!("")), "name"),
        (with(base(), &["name"], json!("a/b")), "name"),
        (with(base(), &["window", "aggregate"], json!("median")), "window.aggregate"),
        (with(base(), &["window", "width"], json!(0)), "window.width"),
        (with(base(), &["window", "width"], json!(-300)), "window.width"),
        (with(base(), &["window", "slide"], json!(0)), "window.slide"),
        (with(base(), &["window", "slide"], json!(301)), "window.slide"),
        // Every row in 10,001 windows: a sliding window would add each row to all of them.
        (with(base(), &["window"], json!({"width": 600_060, "slide": 60, "aggregate": "avg"})), "10001 windows"),
        (with(base(), &["window"], json!({"width": i64::MAX, "slide": 1, "aggregate": "sum"})), "window.slide"),
        (with(base(), &["parallelism"], json!(0)), "parallelism"),
        (with(base(), &["parallelism"], json!(65)), "parallelism"),
        (with(base(), &["source", "from"], json!(T + SPAN)), "source.from"),
        (with(base(), &["source", "kind"], json!("tail")), "source.kind"),
        (with(base(), &["source", "namespace"], json!("rack")), "source.namespace"),
        (with(base(), &["source", "selector"], json!(["emmy", "a/b"])), "source.selector[1]"),
        (with(base(), &["source", "selector"], json!([["n1", ".."]])), "source.selector[0]"),
        (with(base(), &["source", "selector"], json!([[]])), "source.selector[0]"),
        (with(base(), &["source", "selector"], json!([3])), "selector element"),
        (with(base(), &["source", "selector"], json!([])), "source.selector"),
        (with(base(), &["source", "metric"], json!("")), "source.metric"),
        (with(base(), &["group_by"], json!("rack")), "group_by"),
        (with(base(), &["group_by"], json!({"level": 0})), "group_by.level"),
        (with(base(), &["group_by"], json!({"depth": 2})), "group_by"),
        (with(base(), &["sink", "metric"], json!("cpu_load")), "sink.metric"),
        (with(base(), &["sink", "frequency"], json!(7)), "sink.frequency"),
        (with(base(), &["sink", "aggregation"], json!("median")), "sink.aggregation"),
        (with(base(), &["filter"], json!({"min": 2.0, "max": 1.0})), "filter.min"),
        (with(base(), &["checkpoint_interval_secs"], json!(0)), "checkpoint_interval_secs"),
        // Typos are errors, not ignored.
        (with(base(), &["window", "widht"], json!(300)), "widht"),
        (with(base(), &["parallelsim"], json!(2)), "parallelsim"),
        (with(base(), &["filter"], json!({"minimum": 0.0})), "minimum"),
    ];
    for (v, field) in cases {
        let e = err_of(&v);
        assert!(e.contains(field), "error {e:?} does not name {field:?}");
    }
    // A missing scan bound and a range on a live source.
    let mut v = base();
    v["source"].as_object_mut().unwrap().remove("to");
    assert!(err_of(&v).contains("source.to"));
    let v = with(base(), &["source", "kind"], json!("ingest"));
    assert!(err_of(&v).contains("source.from"));
}

#[test]
fn parse_errors_carry_line_and_column() {
    let e = PipelineSpec::from_json("{\n  \"name\": \"x\",\n  \"window\": 3,\n}").unwrap_err();
    let SpecError::Json { line, column, .. } = &e else { panic!("{e:?}") };
    assert!(*line >= 3 && *column > 0, "{e}");
    let text = serde_json::to_string_pretty(&with(base(), &["window", "aggregate"], json!("median"))).unwrap();
    let e = PipelineSpec::from_json(&text).unwrap_err();
    assert!(matches!(e, SpecError::Json { line, .. } if line > 1), "{e}");
}

#[test]
fn config_pipelines_are_read_and_named_by_index() {
    assert!(pipelines_from_config(&json!({"main": {}})).unwrap().is_empty());
    let two = json!({"pipelines": [base(), with(base(), &["name"], json!("other"))]});
    assert_eq!(pipelines_from_config(&two).unwrap().len(), 2);
    let dup = json!({"pipelines": [base(), base()]});
    assert!(matches!(pipelines_from_config(&dup), Err(SpecError::DuplicateName { index: 1, .. })));
    let bad = json!({"pipelines": [base(), with(base(), &["window", "width"], json!(0))]});
    let e = pipelines_from_config(&bad).unwrap_err().to_string();
    assert!(e.contains("pipelines[1]") && e.contains("window.width"), "{e}");
    assert!(pipelines_from_config(&json!({"pipelines": {}})).is_err());
}

fn open() -> (tempfile::TempDir, Arc<Db>) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(tmp.path(), Options { checkpoint_interval: None, ..Options::default() }).unwrap());
    db.declare_metric("cpu_load", MetricConfig { frequency: FREQ, aggregation: Aggregation::Avg }).unwrap();
    (tmp, db)
}

/// Writes `cpu_load` under two clusters (emmy: 3 hosts, woody: 2), two cpus each, one hour at 60 s, with
/// a few gaps; returns every leaf series' path.
fn populate(db: &Db) -> Vec<HostKey> {
    let mut keys = Vec::new();
    let mut b = Batch::new();
    for (ci, (cluster, hosts)) in [("emmy", 3), ("woody", 2)].into_iter().enumerate() {
        for h in 0..hosts {
            for c in 0..2 {
                let k = HostKey::new(cluster, &format!("n{h}")).unwrap().component("cpu", c).unwrap();
                for i in 0..SPAN / FREQ {
                    if (i + h + c) % 7 == 3 {
                        continue; // a gap
                    }
                    let v = (ci as f64) * 1000.0 + (h * 100 + c * 10) as f64 + ((i * 37) % 23) as f64;
                    b.push(&k, "cpu_load", T + i * FREQ, v);
                }
                keys.push(k);
            }
        }
    }
    db.write(&b).unwrap();
    keys
}

/// The stored samples of one series, read back (`(time, value)`, gaps left out).
fn stored(db: &Db, k: &HostKey) -> Vec<(i64, f64)> {
    let r = db.read(k, "cpu_load", T, T + SPAN).unwrap();
    r.values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, v)| (r.from + i as i64 * r.frequency, *v))
        .collect()
}

/// The model: per group text and window start, the aggregate of the stored samples, each passed through
/// `derive` first (`None`: filtered out).
fn model(
    db: &Db,
    keys: &[HostKey],
    group: impl Fn(&SeriesPath) -> String,
    (width, slide): (i64, i64),
    derive: impl Fn(f64) -> Option<f64>,
    agg: impl Fn(&[f64]) -> f64,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut rows: BTreeMap<String, BTreeMap<i64, Vec<f64>>> = BTreeMap::new();
    for k in keys {
        let g = group(&silt::Key::path(k));
        for (t, v) in stored(db, k) {
            let Some(v) = derive(v) else { continue };
            let mut start = t.div_euclid(slide) * slide;
            while start > t - width {
                rows.entry(g.clone()).or_default().entry(start).or_default().push(v);
                start -= slide;
            }
        }
    }
    rows.into_iter().map(|(g, w)| (g, w.into_iter().map(|(s, vs)| (s, agg(&vs))).collect())).collect()
}

/// What the pipeline wrote: per group, window start → value, over `[from, to)`.
fn written(db: &Db, groups: &[&str], metric: &str, from: i64, to: i64) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut out = BTreeMap::new();
    for g in groups {
        let p: SeriesPath = g.parse().unwrap();
        let r = db.read(&p, metric, from, to).unwrap();
        let w: BTreeMap<i64, f64> = r
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, v)| (r.from + i as i64 * r.frequency, *v))
            .collect();
        out.insert(g.to_string(), w);
    }
    out
}

fn assert_close(got: &BTreeMap<String, BTreeMap<i64, f64>>, want: &BTreeMap<String, BTreeMap<i64, f64>>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (g, w) in want {
        let gw = &got[g];
        assert_eq!(gw.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "window starts of {g}");
        for (s, v) in w {
            let x = gw[s];
            assert!((x - v).abs() <= 1e-9 * v.abs().max(1.0), "{g} @ {s}: wrote {x}, model {v}");
        }
    }
}

fn avg(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn cluster_of(p: &SeriesPath) -> String {
    format!("host:{}", p.segments()[0])
}

fn host_of(p: &SeriesPath) -> String {
    format!("host:{}/{}", p.segments()[0], p.segments()[1])
}

fn run(spec: &PipelineSpec, db: &Arc<Db>) {
    let g = spec.build(db.clone()).unwrap();
    start(&g, 256).unwrap().join().unwrap();
}

#[test]
fn per_cluster_tumbling_average() {
    let (_tmp, db) = open();
    let keys = populate(&db);
    let spec = PipelineSpec::from_json(&base().to_string()).unwrap();
    run(&spec, &db);
    assert_eq!(db.metric("cpu_load_5m_avg"), Some(MetricConfig { frequency: 300, aggregation: Aggregation::Avg }));
    let want = model(&db, &keys, cluster_of, (300, 300), Some, avg);
    assert_eq!(want.len(), 2);
    assert_eq!(want["host:emmy"].len(), 12);
    let got = written(&db, &["host:emmy", "host:woody"], "cpu_load_5m_avg", T, T + SPAN);
    assert_close(&got, &want);
    // The source is left as it was: the rollup went to the cluster level only.
    assert_eq!(stored(&db, &keys[0]).len(), (SPAN / FREQ) as usize - 9);

    // Building again is idempotent (the sink metric is already declared with the same configuration), and
    // running again writes the same values.
    run(&spec, &db);
    assert_close(&written(&db, &["host:emmy", "host:woody"], "cpu_load_5m_avg", T, T + SPAN), &want);
}

#[test]
fn per_host_sliding_max() {
    let (_tmp, db) = open();
    let keys = populate(&db);
    let v = with(base(), &["group_by"], json!("host"));
    let v = with(v, &["source", "selector"], json!(["emmy"]));
    let v = with(v, &["window"], json!({"width": 600, "slide": 300, "aggregate": "max"}));
    let v = with(v, &["sink"], json!({"metric": "cpu_load_10m_max"}));
    let v = with(v, &["parallelism"], json!(3));
    let spec = PipelineSpec::from_json(&v.to_string()).unwrap();
    run(&spec, &db);
    let emmy: Vec<HostKey> = keys.iter().filter(|k| k.cluster() == "emmy").cloned().collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let want = model(&db, &emmy, host_of, (600, 300), Some, max);
    assert_eq!(want.len(), 3);
    // The first window starts one slide before the data; the last ends one slide after it.
    assert_eq!(want["host:emmy/n0"].len(), 13);
    let got = written(&db, &["host:emmy/n0", "host:emmy/n1", "host:emmy/n2"], "cpu_load_10m_max", T - 600, T + SPAN);
    assert_close(&got, &want);
    // woody is not selected.
    let woody: SeriesPath = "host:woody/n0".parse().unwrap();
    assert!(db.read(&woody, "cpu_load_10m_max", T, T + SPAN).unwrap().values.iter().all(|v| v.is_nan()));
}

#[test]
fn filter_and_map_are_applied() {
    let (_tmp, db) = open();
    let keys = populate(&db);
    let v = with(base(), &["filter"], json!({"min": 5.0, "max": 1100.0}));
    let v = with(v, &["map"], json!({"scale": 0.5, "offset": 2.0}));
    let v = with(v, &["window", "aggregate"], json!("sum"));
    let v = with(v, &["sink"], json!({"metric": "cpu_load_sum", "frequency": 60}));
    let spec = PipelineSpec::from_json(&v.to_string()).unwrap();
    assert_eq!(spec.map, Some(MapSpec { scale: 0.5, offset: 2.0 }));
    run(&spec, &db);
    assert_eq!(db.metric("cpu_load_sum"), Some(MetricConfig { frequency: 60, aggregation: Aggregation::Sum }));
    let derive = |v: f64| (5.0..=1100.0).contains(&v).then_some(v * 0.5 + 2.0);
    let want = model(&db, &keys, cluster_of, (300, 300), derive, |v| v.iter().sum());
    // The filter really drops something in both clusters (small values in emmy, woody's above 1100).
    let unfiltered = model(&db, &keys, cluster_of, (300, 300), |v| Some(v * 0.5 + 2.0), |v| v.iter().sum());
    assert_ne!(want["host:emmy"], unfiltered["host:emmy"]);
    assert_ne!(want["host:woody"], unfiltered["host:woody"]);
    let got = written(&db, &["host:emmy", "host:woody"], "cpu_load_sum", T, T + SPAN);
    assert_close(&got, &want);
}

#[test]
fn build_checks_the_database() {
    let (_tmp, db) = open();
    let v = with(base(), &["source", "metric"], json!("mem_used"));
    let e = PipelineSpec::from_json(&v.to_string()).unwrap().build(db.clone()).unwrap_err();
    assert!(matches!(e, SpecError::UnknownMetric { field: "source.metric", .. }), "{e}");
    assert!(e.to_string().contains("source.metric"));

    db.declare_metric("cpu_load_5m_avg", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    let e = PipelineSpec::from_json(&base().to_string()).unwrap().build(db.clone()).unwrap_err();
    assert!(matches!(e, SpecError::SinkConflict { .. }), "{e}");
    assert!(e.to_string().contains("sink.metric"), "{e}");
    // Same frequency, but a named aggregation that differs.
    let v = with(base(), &["sink"], json!({"metric": "cpu_load_5m_avg", "frequency": 60, "aggregation": "sum"}));
    let e = PipelineSpec::from_json(&v.to_string()).unwrap().build(db.clone()).unwrap_err();
    assert!(matches!(e, SpecError::SinkConflict { .. }), "{e}");
    // Without a named aggregation the declared one is taken.
    let v = with(base(), &["sink"], json!({"metric": "cpu_load_5m_avg", "frequency": 60}));
    PipelineSpec::from_json(&v.to_string()).unwrap().build(db.clone()).unwrap();

    // An ingest source on an undeclared metric is refused the same way, declaring nothing.
    let mut v = with(base(), &["source", "kind"], json!("ingest"));
    v = with(v, &["source", "metric"], json!("mem_used"));
    v = with(v, &["sink"], json!({"metric": "cpu_load_live_avg"}));
    v["source"].as_object_mut().unwrap().remove("from");
    v["source"].as_object_mut().unwrap().remove("to");
    let e = PipelineSpec::from_json(&v.to_string()).unwrap().build(db.clone()).unwrap_err();
    assert!(matches!(e, SpecError::UnknownMetric { .. }), "{e}");
    assert_eq!(db.metric("cpu_load_live_avg"), None, "a refused spec declares nothing");
}

#[test]
fn an_ingest_rollup_follows_live_writes() {
    use silt::stream::controller::{PipelineDef, PipelineState, StopMode, StreamEngine};
    let (_tmp, db) = open();
    let mut v = with(base(), &["source", "kind"], json!("ingest"));
    v["source"].as_object_mut().unwrap().remove("from");
    v["source"].as_object_mut().unwrap().remove("to");
    let spec = PipelineSpec::from_json(&v.to_string()).unwrap();
    let engine = StreamEngine::new(2, db.clone()).unwrap();
    let h = engine.submit(PipelineDef::new(&spec.name, spec.build(db.clone()).unwrap())).unwrap();
    h.wait_for(std::time::Duration::from_secs(10), |i| i.state == PipelineState::Running);
    // Written after the pipeline started: the live source sees every sample.
    let keys = populate(&db);
    // The watermark is the latest time less one frequency (T + 3480): every window but the last closes.
    let mut want = model(&db, &keys, cluster_of, (300, 300), Some, avg);
    want.values_mut().for_each(|w| {
        w.remove(&(T + 3300));
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = written(&db, &["host:emmy", "host:woody"], "cpu_load_5m_avg", T, T + SPAN);
    while got.values().map(|w| w.len()).sum::<usize>() < 22 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        got = written(&db, &["host:emmy", "host:woody"], "cpu_load_5m_avg", T, T + SPAN);
    }
    assert_close(&got, &want);
    h.stop(StopMode::Graceful);
    let info = h.wait_for(std::time::Duration::from_secs(10), |i| i.state == PipelineState::Stopped);
    assert_eq!(info.state, PipelineState::Stopped, "{info:?}");
    assert!(info.checkpoint_epoch > 0, "a graceful stop checkpoints: {info:?}");
}

struct Out(Vec<RecordBatch>);

impl Collector for Out {
    fn emit(&mut self, batch: RecordBatch) -> Result<(), StreamError> {
        self.0.push(batch);
        Ok(())
    }
}

fn scan_batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        scan_schema(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

#[test]
fn key_operator_snapshot_refills_the_dictionary() {
    let dict = KeyDictionary::default();
    let mut op = GroupKeyOperator::new(GroupBy::Cluster, None, None, dict.clone());
    let mut out = Out(Vec::new());
    let b = scan_batch(&[
        ("host:emmy/n0/cpu0", T, 1.0),
        ("host:emmy/n1/cpu0", T, 2.0),
        ("host:woody/n0/cpu1", T, 3.0),
        ("host:woody/n0/cpu1", T + 60, f64::NAN),
    ]);
    op.process(0, b, &mut out).unwrap();
    let emmy: SeriesPath = "host:emmy".parse().unwrap();
    let woody: SeriesPath = "host:woody".parse().unwrap();
    let keys = out.0[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(keys.values().to_vec(), vec![group_key(&emmy), group_key(&emmy), group_key(&woody)]);
    assert_eq!(out.0[0].schema(), TumblingWindow::input_schema());
    assert_eq!(dict.len(), 2);
    let state = op.snapshot().unwrap();

    // A new process: a fresh dictionary, filled only by restoring the key operator.
    let fresh = KeyDictionary::default();
    let mut restored = GroupKeyOperator::new(GroupBy::Cluster, None, None, fresh.clone());
    assert!(fresh.get(group_key(&emmy)).is_none());
    restored.restore(&state).unwrap();
    assert_eq!(fresh.get(group_key(&emmy)), Some(emmy.clone()));
    assert_eq!(fresh.get(group_key(&woody)), Some(woody.clone()));
    // The restored operator checkpoints its groups again, even before seeing them.
    assert_eq!(restored.snapshot().unwrap(), state);
    // An empty state (a first start) restores nothing; a truncated one is refused.
    GroupKeyOperator::new(GroupBy::Cluster, None, None, KeyDictionary::default()).restore(&[]).unwrap();
    for cut in 1..state.len() {
        let mut op = GroupKeyOperator::new(GroupBy::Cluster, None, None, KeyDictionary::default());
        assert!(op.restore(&state[..cut]).is_err(), "restored a state cut at {cut}");
    }
}

#[test]
fn key_operator_leaves_out_series_without_a_group() {
    let dict = KeyDictionary::default();
    let mut op = GroupKeyOperator::new(GroupBy::Host, None, None, dict.clone());
    let mut out = Out(Vec::new());
    op.process(0, scan_batch(&[("host:emmy", T, 1.0), ("host:emmy/n0", T, 2.0)]), &mut out).unwrap();
    assert_eq!(out.0[0].num_rows(), 1);
    assert_eq!(op.ungrouped, 1);
    let bad = op.process(0, scan_batch(&[("nonsense", T, 1.0)]), &mut out).unwrap_err();
    assert!(bad.to_string().contains("nonsense"), "{bad}");
}

#[test]
fn a_key_without_a_group_fails_the_pipeline() {
    let (_tmp, db) = open();
    populate(&db);
    let mut g = PipelineSpec::from_json(&base().to_string()).unwrap().build(db.clone()).unwrap();
    // Replace the key operator by one that emits keys it never records (as a window restored without its
    // key operator's state would).
    let key = g.nodes.iter().position(|n| n.name == "key").unwrap();
    g.nodes[key].kind = NodeKind::Operator(Arc::new(|_, _| {
        Box::new(Map(|b: RecordBatch| {
            let n = b.num_rows();
            Ok(RecordBatch::try_new(
                TumblingWindow::input_schema(),
                vec![Arc::new(Int64Array::from(vec![42i64; n])), b.column(1).clone(), b.column(2).clone()],
            )?)
        }))
    }));
    let e = start(&g, 256).unwrap().join().unwrap_err();
    assert!(e.to_string().contains("window key 42"), "{e}");
}
