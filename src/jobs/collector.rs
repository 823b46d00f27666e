//! The sampler: one thread that, every [`super::rate::COLLECTION_RATE`], reads every running pipeline's
//! probe and every service source, keeps the rings, and writes one tick into the store (see
//! [`crate::jobs`]).
//!
//! Ticks are aligned to multiples of the interval in wall-clock time, so each lands in its own 2 s slot of
//! the store. A failed write is logged and the next tick tries again; the rings are kept either way. Each
//! running pipeline is also a service instance, `pipeline/<name>`, with counters `rows_in` (rows its
//! sources emitted), `rows_out` (rows its sinks took) and `restarts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::service::{ServiceMetrics, ServiceReading, ServiceSource, ServiceValue};
use super::{store, JobMetrics, JobReport, TickValue};
use crate::stream::controller::StreamEngine;
use crate::{Batch, Db, Error};

/// What the collector keeps between ticks.
#[derive(Default)]
struct State {
    jobs: BTreeMap<String, JobMetrics>,
    /// Each job's operators and their parallelism, as of its last running tick.
    shapes: BTreeMap<String, Vec<(String, u32)>>,
    services: ServiceMetrics,
    /// Operators already reported as unusable as key names.
    refused: Vec<(String, String)>,
}

struct Shared {
    db: Arc<Db>,
    streams: Option<Arc<StreamEngine>>,
    sources: Vec<Arc<dyn ServiceSource>>,
    state: Mutex<State>,
}

/// Samples pipelines and services into rings and the store (see the module doc).
pub struct Collector {
    shared: Arc<Shared>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Collector {
    /// A collector over `db` that samples the pipelines of `streams` (if any) and `sources`. Declares the
    /// job metrics (an error if one of their names is declared otherwise). Takes no ticks until
    /// [`Collector::start`] or [`Collector::tick`].
    pub fn new(
        db: Arc<Db>,
        streams: Option<Arc<StreamEngine>>,
        sources: Vec<Arc<dyn ServiceSource>>,
    ) -> Result<Collector, Error> {
        store::declare(&db)?;
        Ok(Collector {
            shared: Arc::new(Shared { db, streams, sources, state: Mutex::new(State::default()) }),
            stop: None,
            thread: None,
        })
    }

    /// Starts ticking every `interval` (aligned to its multiples of wall-clock time) on a thread of its own.
    pub fn start(mut self, interval: Duration) -> Result<Collector, Error> {
        let interval_ms = (interval.as_millis() as i64).max(1);
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("silt-metrics".into())
            .spawn(move || loop {
                let now = unix_ms();
                let next = (now.div_euclid(interval_ms) + 1) * interval_ms;
                match rx.recv_timeout(Duration::from_millis((next - now).max(1) as u64)) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => tick(&shared, unix_ms()),
                    _ => return,
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the metrics thread: {e}")))?;
        self.stop = Some(tx);
        self.thread = Some(thread);
        Ok(self)
    }

    /// Takes one tick now, at `time_ms` (unix ms; later than the last tick's for rates to move).
    pub fn tick(&self, time_ms: i64) {
        tick(&self.shared, time_ms);
    }

    /// Takes one tick now, at the current time.
    pub fn tick_now(&self) {
        tick(&self.shared, unix_ms());
    }

    /// A job's report from the rings (the last five minutes), with every subtask of its last known shape;
    /// `None` for a job never seen running.
    pub fn job_report(&self, job: &str) -> Option<JobReport> {
        let st = self.shared.state.lock();
        let mut r = st.jobs.get(job)?.report(job);
        if let Some(shape) = st.shapes.get(job) {
            r.fill(shape);
        }
        Some(r)
    }

    /// A job's last known operators and their parallelism.
    pub fn job_shape(&self, job: &str) -> Option<Vec<(String, u32)>> {
        self.shared.state.lock().shapes.get(job).cloned()
    }

    /// The newest value of every metric of every subtask of every job seen: `(job, value)`.
    pub fn job_latest(&self) -> Vec<(String, TickValue)> {
        let st = self.shared.state.lock();
        st.jobs.iter().flat_map(|(j, m)| m.latest().into_iter().map(move |v| (j.clone(), v))).collect()
    }

    /// Every service counter's newest total and rate.
    pub fn service_latest(&self) -> Vec<ServiceValue> {
        self.shared.state.lock().services.latest()
    }

    /// The database it writes to.
    pub fn db(&self) -> &Arc<Db> {
        &self.shared.db
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tick(shared: &Shared, time_ms: i64) {
    let now = time_ms.div_euclid(1000);
    let mut batch = Batch::new();
    let mut readings: Vec<ServiceReading> = shared.sources.iter().flat_map(|s| s.read()).collect();
    let mut st = shared.state.lock();
    if let Some(engine) = &shared.streams {
        let infos = engine.list();
        // Forget the rings of pipelines that are gone.
        st.jobs.retain(|j, _| infos.iter().any(|i| &i.name == j));
        st.shapes.retain(|j, _| infos.iter().any(|i| &i.name == j));
        for info in infos {
            let Some(probe) = engine.get(&info.name).and_then(|h| h.probe()) else { continue };
            let subtasks = probe.read();
            st.shapes.insert(info.name.clone(), super::shape(&subtasks));
            let values = st.jobs.entry(info.name.clone()).or_default().update(time_ms, &subtasks);
            for op in store::push_tick(&mut batch, &info.name, now, &values) {
                let id = (info.name.clone(), op);
                if !st.refused.contains(&id) {
                    tracing::warn!(job = %id.0, operator = %id.1, "job metrics: not a valid key name, left out");
                    st.refused.push(id);
                }
            }
            let sum = |f: &dyn Fn(&crate::stream::probe::SubtaskReading) -> Option<u64>| -> u64 {
                subtasks.iter().filter_map(f).sum()
            };
            readings.push(ServiceReading {
                service: "pipeline".into(),
                instance: info.name.clone(),
                counters: vec![
                    ("rows_in".into(), sum(&|r| r.source.then_some(r.counters.messages_sent))),
                    ("rows_out".into(), sum(&|r| r.sink.then_some(r.counters.messages_recv))),
                    ("restarts".into(), info.total_restarts),
                ],
            });
        }
    }
    let State { services, .. } = &mut *st;
    services.update(&shared.db, time_ms, &readings, &mut batch);
    drop(st);
    if !batch.is_empty() {
        if let Err(e) = shared.db.write(&batch) {
            tracing::warn!(error = %e, "job metrics: write failed");
        }
    }
}
