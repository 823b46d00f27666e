//! silt's own metrics for `/metrics`, encoded by `prometheus-client`.
//!
//! Engine counters live in the engine as plain atomics (the engine names no client); at each scrape they
//! are brought into the registry's counters by their increase since the last scrape. Every metric is
//! registered up front, so a scrape before any write shows zeros rather than missing series (AWX's lesson:
//! never a 500 because an instance lacks a metric).
//!
//! Beside them, from the kept data of the job-metrics collector ([`crate::jobs`]), when there is one:
//! - `silt_job_<metric>{job, operator, subtask}` for each [`JobMetric`] (rates per second, backpressure,
//!   queue gauges), the newest value of every subtask of every job the collector has seen;
//! - `silt_service_total{service, instance, counter}` (a counter that continues across restarts, from the
//!   totals kept in the store) and `silt_service_rate{…}` (its smoothed rate per second).
//!
//! These families are refilled from the collector at each scrape; a job or service not reported yet is
//! absent, never an error.

use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::jobs::collector::Collector;
use crate::jobs::service::{Counters, ServiceSource};
use crate::jobs::JobMetric;
use crate::storage::engine::WAL_SYNC_BUCKETS_US;
use crate::Db;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The HTTP server's counters (service `http`, instance `server`).
pub const HTTP_COUNTERS: [&str; 3] = ["requests", "responses_4xx", "responses_5xx"];
/// NATS ingest's counters (service `nats`, instance `ingest`).
pub const NATS_COUNTERS: [&str; 2] = ["messages_ok", "messages_error"];

/// The engine's WAL fsync latency histogram as of the last scrape (the engine keeps it as atomics).
#[derive(Clone, Debug, Default)]
struct SyncLatency(std::sync::Arc<Mutex<HistogramSnapshot>>);

/// Sum, count and per-bucket `(upper bound, count)`.
type HistogramSnapshot = (f64, u64, Vec<(f64, u64)>);

impl EncodeMetric for SyncLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = &*self.0.lock();
        encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The registry and the last engine counter values it has seen.
pub struct ServerMetrics {
    registry: Registry,
    samples: Family<Vec<(String, String)>, Counter>,
    wal_syncs: Counter,
    checkpoints: Counter,
    head_pages: Gauge,
    head_mapped_bytes: Gauge,
    series: Gauge,
    query_seconds: Histogram,
    wal_bytes: Counter,
    reads_ahead: Counter,
    wal_sync_seconds: SyncLatency,
    checkpoint_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    nats_messages: Family<Vec<(String, String)>, Counter>,
    /// `/api/write` requests admitted and waiting for a decode slot (`main.write-workers`).
    pub(crate) http_writes_waiting: Gauge,
    /// `/api/write` bodies being decoded now (at most `main.write-workers`).
    pub(crate) http_writes_decoding: Gauge,
    nats_slow_consumer: Counter,
    /// NATS messages received and not yet written (silt's queue and the workers' hands).
    pub(crate) nats_queued: Gauge,
    /// NATS workers holding back because the head is over its memory cap.
    pub(crate) nats_workers_holding: Gauge,
    seen: Mutex<[u64; 7]>,
    http: std::sync::Arc<Counters>,
    nats: std::sync::Arc<Counters>,
    jobs: Vec<(JobMetric, Family<Labels, FloatGauge>)>,
    service_total: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    service_rate: Family<Labels, FloatGauge>,
    /// Held from refilling the job and service families to encoding them, so that two scrapes at once
    /// never see each other's half-filled families.
    render: Mutex<()>,
}

const OUTCOMES: [&str; 3] = ["stored", "too_old", "unknown_metric"];

impl ServerMetrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("silt");
        let samples = Family::<Vec<(String, String)>, Counter>::default();
        let wal_syncs = Counter::default();
        let checkpoints = Counter::default();
        let head_pages = Gauge::default();
        let head_mapped_bytes = Gauge::default();
        let series = Gauge::default();
        let query_seconds = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        registry.register("samples", "Samples written, by outcome", samples.clone());
        registry.register("wal_syncs", "WAL fsyncs", wal_syncs.clone());
        registry.register("checkpoints", "Checkpoints completed", checkpoints.clone());
        registry.register("head_pages", "Head pages in use (owned or awaiting reuse)", head_pages.clone());
        registry.register("head_mapped_bytes", "Bytes of head files mapped", head_mapped_bytes.clone());
        registry.register("series", "Series in the registry", series.clone());
        registry.register("query_duration_seconds", "Latency of /api/query", query_seconds.clone());
        let wal_bytes = Counter::default();
        registry.register("wal_bytes", "Bytes appended to the WAL", wal_bytes.clone());
        let reads_ahead = Counter::default();
        registry.register(
            "query_reads_ahead",
            "Batches of series whose data a query found not in the page cache, and asked the disk for at once",
            reads_ahead.clone(),
        );
        let wal_sync_seconds = SyncLatency::default();
        registry.register("wal_fsync_duration_seconds", "Latency of WAL fsyncs", wal_sync_seconds.clone());
        let checkpoint_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "checkpoint_age_seconds",
            "Time since the last checkpoint completed (or since start, before the first), or since a timed checkpoint last found nothing new to write",
            checkpoint_age.clone(),
        );
        let nats_messages = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("nats_messages", "NATS messages written, by result", nats_messages.clone());
        for r in ["ok", "error"] {
            let _ = nats_messages.get_or_create(&vec![("result".to_owned(), r.to_owned())]);
        }
        let http_writes_waiting = Gauge::default();
        registry.register(
            "http_writes_waiting",
            "Writes admitted and waiting for a decode slot (main.write-workers)",
            http_writes_waiting.clone(),
        );
        let http_writes_decoding = Gauge::default();
        registry.register("http_writes_decoding", "Write bodies being decoded now", http_writes_decoding.clone());
        let nats_slow_consumer = Counter::default();
        registry.register(
            "nats_slow_consumer",
            "NATS messages dropped by the client because silt's subscription buffer was full (slow consumer)",
            nats_slow_consumer.clone(),
        );
        let nats_queued = Gauge::default();
        registry.register("nats_queued_messages", "NATS messages received and not yet written", nats_queued.clone());
        let nats_workers_holding = Gauge::default();
        registry.register(
            "nats_workers_holding",
            "NATS workers holding back while the head is over its memory cap",
            nats_workers_holding.clone(),
        );
        for o in OUTCOMES {
            let _ = samples.get_or_create(&vec![("outcome".to_owned(), o.to_owned())]);
        }
        let jobs: Vec<(JobMetric, Family<Labels, FloatGauge>)> =
            JobMetric::ALL.iter().map(|&m| (m, Family::default())).collect();
        for (m, f) in &jobs {
            let help = match m {
                JobMetric::Backpressure => "Job subtask backpressure (0 to 1), newest value".to_owned(),
                JobMetric::QueueSize | JobMetric::QueueRemaining => {
                    format!("Job subtask input queue {}, rows", m.name().trim_start_matches("queue_"))
                }
                _ => format!("Job subtask {} per second (EWMA), newest value", m.name().replace('_', " ")),
            };
            registry.register(format!("job_{}", m.name()), help, f.clone());
        }
        let service_total = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("service", "Service counters, continued across restarts", service_total.clone());
        let service_rate = Family::<Labels, FloatGauge>::default();
        registry.register("service_rate", "Service counter rates per second (EWMA)", service_rate.clone());
        let counters = |service, instance, names: &[&'static str]| {
            Counters::new(service, instance, names).expect("fixed, valid service and counter names")
        };
        ServerMetrics {
            http: counters("http", "server", &HTTP_COUNTERS),
            nats: counters("nats", "ingest", &NATS_COUNTERS),
            jobs,
            service_total,
            service_rate,
            render: Mutex::new(()),
            registry,
            samples,
            wal_syncs,
            checkpoints,
            head_pages,
            head_mapped_bytes,
            series,
            query_seconds,
            wal_bytes,
            reads_ahead,
            wal_sync_seconds,
            checkpoint_age,
            nats_messages,
            http_writes_waiting,
            http_writes_decoding,
            nats_slow_consumer,
            nats_queued,
            nats_workers_holding,
            seen: Mutex::new([0; 7]),
        }
    }

    /// Records one query's latency.
    pub fn observe_query(&self, d: Duration) {
        self.query_seconds.observe(d.as_secs_f64());
    }

    /// Counts one NATS message, written whole (`ok`) or not.
    pub fn nats_message(&self, ok: bool) {
        let r = if ok { "ok" } else { "error" };
        self.nats_messages.get_or_create(&vec![("result".to_owned(), r.to_owned())]).inc();
        self.nats.add(if ok { "messages_ok" } else { "messages_error" }, 1);
    }

    /// Counts one NATS message the client dropped because its subscription buffer was full; returns the count.
    pub fn nats_slow_consumer(&self) -> u64 {
        self.nats_slow_consumer.inc() + 1
    }

    /// Counts one HTTP response by its status.
    pub fn http_response(&self, status: u16) {
        self.http.add("requests", 1);
        match status {
            400..=499 => self.http.add("responses_4xx", 1),
            500..=599 => self.http.add("responses_5xx", 1),
            _ => {}
        }
    }

    /// The services whose counters live here (HTTP, NATS), for the job-metrics collector.
    pub fn services(&self) -> Vec<std::sync::Arc<dyn ServiceSource>> {
        vec![self.http.clone(), self.nats.clone()]
    }

    /// Refills the job and service families from the collector's kept data.
    fn bring_in(&self, c: &Collector) {
        for (_, f) in &self.jobs {
            f.clear();
        }
        for (job, (op, subtask, m, v)) in c.job_latest() {
            if let Some((_, f)) = self.jobs.iter().find(|(x, _)| *x == m) {
                let labels = vec![
                    ("job".to_owned(), job),
                    ("operator".to_owned(), op),
                    ("subtask".to_owned(), subtask.to_string()),
                ];
                f.get_or_create(&labels).set(v);
            }
        }
        self.service_total.clear();
        self.service_rate.clear();
        for v in c.service_latest() {
            let labels = vec![
                ("service".to_owned(), v.service),
                ("instance".to_owned(), v.instance),
                ("counter".to_owned(), v.counter),
            ];
            self.service_total.get_or_create(&labels).inc_by(v.total as f64);
            self.service_rate.get_or_create(&labels).set(v.rate);
        }
    }

    /// Brings the engine's counters and the collector's kept data in and encodes everything in Prometheus
    /// text format.
    pub fn render(&self, db: &Db, jobs: Option<&Collector>) -> String {
        let _one_at_a_time = self.render.lock();
        if let Some(c) = jobs {
            self.bring_in(c);
        }
        let engine = db.engine();
        let st = engine.stats();
        let now = [
            st.samples_stored.load(Ordering::Relaxed),
            st.samples_too_old.load(Ordering::Relaxed),
            st.samples_unknown_metric.load(Ordering::Relaxed),
            st.wal_syncs.load(Ordering::Relaxed),
            st.checkpoints.load(Ordering::Relaxed),
            st.wal_bytes.load(Ordering::Relaxed),
            st.query_reads_ahead.load(Ordering::Relaxed),
        ];
        {
            let mut seen = self.seen.lock();
            for (i, o) in OUTCOMES.iter().enumerate() {
                let c = self.samples.get_or_create(&vec![("outcome".to_owned(), (*o).to_owned())]);
                c.inc_by(now[i].saturating_sub(seen[i]));
            }
            self.wal_syncs.inc_by(now[3].saturating_sub(seen[3]));
            self.checkpoints.inc_by(now[4].saturating_sub(seen[4]));
            self.wal_bytes.inc_by(now[5].saturating_sub(seen[5]));
            self.reads_ahead.inc_by(now[6].saturating_sub(seen[6]));
            *seen = now;
        }
        {
            // Per-bucket counts: the encoder makes them cumulative.
            let mut count = 0;
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(WAL_SYNC_BUCKETS_US.len() + 1);
            for (i, c) in st.wal_sync_buckets.iter().enumerate() {
                let c = c.load(Ordering::Relaxed);
                count += c;
                let bound = WAL_SYNC_BUCKETS_US.get(i).map_or(f64::INFINITY, |&us| us as f64 / 1e6);
                buckets.push((bound, c));
            }
            let sum = st.wal_sync_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            *self.wal_sync_seconds.0.lock() = (sum, count, buckets);
        }
        let last = st.last_checkpoint_unix_ms.load(Ordering::Relaxed);
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.checkpoint_age.set(now_ms.saturating_sub(last) as f64 / 1e3);
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head_pages.set(gauge(engine.head().pages_in_use()));
        self.head_mapped_bytes.set(gauge(engine.head().mapped_bytes()));
        self.series.set(gauge(engine.series_count() as u64));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
