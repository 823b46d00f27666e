//! silt's own services, recorded like jobs: each service instance has named monotonic counters; every tick
//! the collector turns them into a running total and a smoothed rate, kept under
//! `ServiceKey { service, instance }` as `svc_<counter>` (the total) and `svc_<counter>_rate` (per second,
//! EWMA as [`super::rate::RateMetric`]), both frequency 2 s, summing over instances.
//!
//! **Totals survive restarts.** A service's counters start at zero with the process. The first time the
//! collector sees a counter, it looks up the largest total stored for it (a total never goes down, so that
//! is the last one) and counts on from there; a counter that goes down while the process runs (a pipeline
//! restarted) is a reset, and the total goes on from the value before it. `/metrics` shows these kept
//! totals and rates, so a scrape after a restart continues where the last one left off, and a counter a
//! service has not reported yet is simply absent from its instance: never an error (AWX's lesson).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::rate::RateMetric;
use crate::keys::ServiceKey;
use crate::{Aggregation, Batch, Db, Error, MetricConfig};

/// One reading of one service instance: `(counter, value)`s, each monotonic while the process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceReading {
    /// The service, e.g. `ingest`.
    pub service: String,
    /// The instance, e.g. `http`.
    pub instance: String,
    /// Counter names (valid metric-name tails) and values.
    pub counters: Vec<(String, u64)>,
}

/// Something that reports service counters when asked.
pub trait ServiceSource: Send + Sync {
    /// The counters now.
    fn read(&self) -> Vec<ServiceReading>;
}

/// A fixed set of named counters a service bumps (HTTP requests, NATS messages, …).
#[derive(Debug)]
pub struct Counters {
    service: String,
    instance: String,
    names: Vec<&'static str>,
    values: Vec<AtomicU64>,
}

impl Counters {
    /// Counters `names` of one service instance, all at zero.
    pub fn new(service: &str, instance: &str, names: &[&'static str]) -> Result<Arc<Counters>, Error> {
        ServiceKey::new(service, instance)?;
        for n in names {
            crate::keys::validate_name("counter", &stored_total(n))?;
        }
        Ok(Arc::new(Counters {
            service: service.to_owned(),
            instance: instance.to_owned(),
            names: names.to_vec(),
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        }))
    }

    /// Adds `n` to counter `name`; an unknown name is ignored (it is a programming error, caught in tests).
    pub fn add(&self, name: &str, n: u64) {
        debug_assert!(self.names.contains(&name), "unknown counter {name}");
        if let Some(i) = self.names.iter().position(|&x| x == name) {
            self.values[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `name` now (0 for an unknown name).
    pub fn get(&self, name: &str) -> u64 {
        self.names.iter().position(|&x| x == name).map_or(0, |i| self.values[i].load(Ordering::Relaxed))
    }
}

impl ServiceSource for Counters {
    fn read(&self) -> Vec<ServiceReading> {
        vec![ServiceReading {
            service: self.service.clone(),
            instance: self.instance.clone(),
            counters: self
                .names
                .iter()
                .zip(&self.values)
                .map(|(n, v)| ((*n).to_owned(), v.load(Ordering::Relaxed)))
                .collect(),
        }]
    }
}

/// The engine's services, from its statistics: `ingest/engine` (samples stored and refused), `wal/writer`
/// (bytes, fsyncs), `compactor/engine` (pages compacted, blocks and their bytes, checkpoints).
pub struct EngineServices(pub Arc<Db>);

impl ServiceSource for EngineServices {
    fn read(&self) -> Vec<ServiceReading> {
        let st = self.0.engine().stats();
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let r = |service: &str, instance: &str, counters: Vec<(&str, u64)>| ServiceReading {
            service: service.to_owned(),
            instance: instance.to_owned(),
            counters: counters.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        };
        vec![
            r(
                "ingest",
                "engine",
                vec![
                    ("samples_stored", l(&st.samples_stored)),
                    ("samples_too_old", l(&st.samples_too_old)),
                    ("samples_unknown_metric", l(&st.samples_unknown_metric)),
                ],
            ),
            r("wal", "writer", vec![("bytes", l(&st.wal_bytes)), ("syncs", l(&st.wal_syncs))]),
            r(
                "compactor",
                "engine",
                vec![
                    ("pages", l(&st.pages_compacted)),
                    ("blocks", l(&st.blocks_written)),
                    ("block_bytes", l(&st.block_bytes_written)),
                    ("checkpoints", l(&st.checkpoints)),
                ],
            ),
        ]
    }
}

/// The stored metric of a counter's total: `svc_<counter>`.
pub fn stored_total(counter: &str) -> String {
    format!("svc_{counter}")
}

/// The stored metric of a counter's rate: `svc_<counter>_rate`.
pub fn stored_rate(counter: &str) -> String {
    format!("svc_{counter}_rate")
}

/// One counter as kept: its total and rate.
#[derive(Clone, Debug)]
struct Kept {
    /// What the total was when the current run of the raw counter started.
    base: u64,
    /// The raw counter's last value.
    last_raw: u64,
    rate: RateMetric,
}

/// The newest total and rate of one counter of one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceValue {
    /// The service.
    pub service: String,
    /// The instance.
    pub instance: String,
    /// The counter.
    pub counter: String,
    /// Its total, continued across restarts.
    pub total: u64,
    /// Its smoothed rate per second (0 before the first).
    pub rate: f64,
}

/// Every service counter's total and rate (the collector's part for services).
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    kept: BTreeMap<(String, String, String), Kept>,
}

impl ServiceMetrics {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes readings at `time_ms`, adding each counter's total and rate at `time_ms / 1000` to `batch`.
    /// `db` is asked for the stored total the first time a counter is seen (and the metrics declared).
    pub fn update(&mut self, db: &Db, time_ms: i64, readings: &[ServiceReading], batch: &mut Batch) {
        let now = time_ms.div_euclid(1000);
        for r in readings {
            let Ok(key) = ServiceKey::new(&r.service, &r.instance) else {
                tracing::warn!(service = %r.service, instance = %r.instance, "service metrics: not a valid key");
                continue;
            };
            for (counter, raw) in &r.counters {
                let id = (r.service.clone(), r.instance.clone(), counter.clone());
                if !self.kept.contains_key(&id) {
                    match first_sight(db, &key, counter, now) {
                        Ok(base) => {
                            self.kept.insert(id.clone(), Kept { base, last_raw: 0, rate: RateMetric::new() });
                        }
                        Err(e) => {
                            tracing::warn!(service = %r.service, counter = %counter, error = %e, "service metrics");
                            continue;
                        }
                    }
                }
                let Some(k) = self.kept.get_mut(&id) else { continue };
                if *raw < k.last_raw {
                    k.base += k.last_raw;
                }
                k.last_raw = *raw;
                let total = k.base + raw;
                k.rate.add(time_ms, total);
                batch.push(&key, &stored_total(counter), now, total as f64);
                batch.push(&key, &stored_rate(counter), now, k.rate.last().unwrap_or(0.0));
            }
        }
    }

    /// Every counter's newest total and rate, sorted.
    pub fn latest(&self) -> Vec<ServiceValue> {
        self.kept
            .iter()
            .map(|((service, instance, counter), k)| ServiceValue {
                service: service.clone(),
                instance: instance.clone(),
                counter: counter.clone(),
                total: k.base + k.last_raw,
                rate: k.rate.last().unwrap_or(0.0),
            })
            .collect()
    }
}

/// Declares a counter's two metrics and finds its largest stored total (0 if none).
fn first_sight(db: &Db, key: &ServiceKey, counter: &str, now: i64) -> Result<u64, Error> {
    let config = MetricConfig { frequency: super::store::FREQUENCY, aggregation: Aggregation::Sum };
    db.declare_metric(&stored_total(counter), config)?;
    db.declare_metric(&stored_rate(counter), config)?;
    // A total never goes down, so the largest stored one is the last. Page statistics make this cheap.
    let s = db.stats(key, &stored_total(counter), 0, now.saturating_add(1))?;
    Ok(if s.samples > 0 && s.max.is_finite() && s.max > 0.0 { s.max as u64 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    #[test]
    fn totals_continue_across_restarts_and_resets() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = Counters::new("http", "server", &["requests"]).expect("counters");
        {
            let db = Db::open(tmp.path(), Options::default()).expect("open");
            let mut m = ServiceMetrics::new();
            let mut b = Batch::new();
            c.add("requests", 10);
            m.update(&db, 1_000_000, &c.read(), &mut b);
            c.add("requests", 30);
            m.update(&db, 1_002_000, &c.read(), &mut b);
            assert_eq!(m.latest()[0].total, 40);
            assert_eq!(m.latest()[0].rate, 15.0);
            db.write(&b).expect("write");
            db.close().expect("close");
        }
        // A new process: the raw counter starts again at 0.
        let c = Counters::new("http", "server", &["requests"]).expect("counters");
        let db = Db::open(tmp.path(), Options::default()).expect("reopen");
        let mut m = ServiceMetrics::new();
        let mut b = Batch::new();
        c.add("requests", 5);
        m.update(&db, 1_010_000, &c.read(), &mut b);
        assert_eq!(m.latest()[0].total, 45);
        // A reset within the process (a raw counter that went down) keeps the total growing.
        let reset = vec![ServiceReading {
            service: "http".into(),
            instance: "server".into(),
            counters: vec![("requests".into(), 2)],
        }];
        m.update(&db, 1_012_000, &reset, &mut b);
        assert_eq!(m.latest()[0].total, 47);
        db.write(&b).expect("write");
        let r = db.read(&ServiceKey::new("http", "server").expect("key"), "svc_requests", 990, 1020);
        let vals: Vec<f64> = r.expect("read").values.into_iter().filter(|v| !v.is_nan()).collect();
        assert_eq!(vals, vec![10.0, 40.0, 45.0, 47.0]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Counters::new("a/b", "x", &["n"]).is_err());
        assert!(Counters::new("a", "x", &["bad/name"]).is_err());
    }
}
