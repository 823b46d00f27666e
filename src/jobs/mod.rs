//! Job metrics: how every pipeline of the stream engine is doing, per operator subtask, kept in silt itself
//! (Arroyo's `JobMetrics`, `../shared/seeds/000_*`), and the same for silt's own services (AWX's lesson,
//! `002_*`).
//!
//! A client of the store like any other: it reads counters from the stream engine
//! ([`crate::stream::probe`]) and from services ([`service`]), and writes through the typed key space.
//!
//! # Per job
//!
//! Every [`rate::COLLECTION_RATE`] (2 s) the [`collector::Collector`] reads each running pipeline's probe.
//! For each operator subtask it feeds the six counters (rows, bytes and batches, received and sent) to a
//! [`rate::RateMetric`] each (EWMA, alpha 0.1, a ring of 150), and keeps three gauges in rings of the same
//! size: backpressure (`1 - (remaining + 1) / (size + 1)` of the queues the subtask sends into, the
//! maximum over them; see [`crate::stream::probe`]), and its input queue's size and remaining capacity.
//! It then writes one sample of each of the nine [`JobMetric`]s under
//! `JobKey { job: pipeline, operator, subtask }` (metric names `job_<name>`, frequency 2 s). A rate that
//! does not exist yet (the first reading) is stored as 0, so that every subtask has every series from its
//! first tick (Arroyo's #289: a subtask without a series broke the UI). Rates sum over subtasks in a
//! query, backpressure takes the maximum, queue gauges sum.
//!
//! [`JobReport`] is Arroyo's shape: operator → metric → subtask → `[{time, value}]`, each level sorted,
//! with the operator's backpressure (the maximum over its subtasks of their newest value). It is built
//! either from the rings ([`JobMetrics::report`], the last five minutes of a running job) or from the store
//! ([`store::report`], any range, also after a restart); `GET /api/jobs/{job}/metrics` serves the latter.
//!
//! # Per service
//!
//! [`service`] does the same for silt's services (ingest, WAL writer, compactor, HTTP, NATS, each
//! pipeline) under `ServiceKey { service, instance }`: each counter's running total (`svc_<counter>`,
//! continued across restarts from the last stored value) and its smoothed rate (`svc_<counter>_rate`).

pub mod collector;
pub mod rate;
pub mod service;
pub mod store;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stream::probe::SubtaskReading;
use crate::Aggregation;
use rate::{CircularBuffer, RateMetric, NUM_BUCKETS};

/// One metric of an operator subtask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobMetric {
    /// Rows received per second.
    MessagesRecv,
    /// Rows sent per second.
    MessagesSent,
    /// Arrow bytes received per second.
    BytesRecv,
    /// Arrow bytes sent per second.
    BytesSent,
    /// Batches received per second.
    BatchesRecv,
    /// Batches sent per second.
    BatchesSent,
    /// How much the subtask is held back by the queues it sends into (0 to 1).
    Backpressure,
    /// Rows its input queue holds at most.
    QueueSize,
    /// Rows its input queue can take now.
    QueueRemaining,
}

impl JobMetric {
    /// Every metric, rates first.
    pub const ALL: [JobMetric; 9] = [
        JobMetric::MessagesRecv,
        JobMetric::MessagesSent,
        JobMetric::BytesRecv,
        JobMetric::BytesSent,
        JobMetric::BatchesRecv,
        JobMetric::BatchesSent,
        JobMetric::Backpressure,
        JobMetric::QueueSize,
        JobMetric::QueueRemaining,
    ];

    /// The rates, in the order of [`crate::stream::probe::Counters`].
    pub const RATES: [JobMetric; 6] = [
        JobMetric::MessagesRecv,
        JobMetric::MessagesSent,
        JobMetric::BytesRecv,
        JobMetric::BytesSent,
        JobMetric::BatchesRecv,
        JobMetric::BatchesSent,
    ];

    /// Its name in reports and on `/metrics` (Arroyo's names).
    pub fn name(self) -> &'static str {
        NAMES[self as usize].0
    }

    /// Its metric name in the store: `job_<name>`.
    pub fn stored(self) -> &'static str {
        NAMES[self as usize].1
    }

    /// The metric with this stored name.
    pub fn from_stored(name: &str) -> Option<JobMetric> {
        JobMetric::ALL.into_iter().find(|m| m.stored() == name)
    }

    /// How a level above the subtasks combines them: rates and queue gauges sum, backpressure takes the
    /// maximum.
    pub fn aggregation(self) -> Aggregation {
        match self {
            JobMetric::Backpressure => Aggregation::Max,
            _ => Aggregation::Sum,
        }
    }
}

/// Each [`JobMetric`]'s report name and stored name, in declaration order.
const NAMES: [(&str, &str); 9] = [
    ("messages_recv", "job_messages_recv"),
    ("messages_sent", "job_messages_sent"),
    ("bytes_recv", "job_bytes_recv"),
    ("bytes_sent", "job_bytes_sent"),
    ("batches_recv", "job_batches_recv"),
    ("batches_sent", "job_batches_sent"),
    ("backpressure", "job_backpressure"),
    ("queue_size", "job_queue_size"),
    ("queue_remaining", "job_queue_remaining"),
];

/// One value at a time (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub time: i64,
    /// The value.
    pub value: f64,
}

/// One subtask's series of one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubtaskSeries {
    /// The subtask index.
    pub index: u32,
    /// Its points, oldest first.
    pub points: Vec<Point>,
}

/// One metric of an operator, by subtask.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricGroup {
    /// The metric's name ([`JobMetric::name`]).
    pub name: String,
    /// Its subtasks, by index.
    pub subtasks: Vec<SubtaskSeries>,
}

/// One operator's metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorMetrics {
    /// The operator's name.
    pub operator: String,
    /// The maximum over its subtasks of their newest backpressure (0 without any).
    pub backpressure: f64,
    /// Its metrics, by name.
    pub metrics: Vec<MetricGroup>,
}

/// A job's metrics: operator → metric → subtask → points, each level sorted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobReport {
    /// The job (pipeline) name.
    pub job: String,
    /// Its operators, by name.
    pub operators: Vec<OperatorMetrics>,
}

impl JobReport {
    /// Builds the sorted report from `(operator, metric name, subtask) → points`.
    pub fn from_series(job: &str, series: BTreeMap<(String, String, u32), Vec<Point>>) -> JobReport {
        let mut operators: Vec<OperatorMetrics> = Vec::new();
        for ((op, metric, subtask), points) in series {
            if operators.last().is_none_or(|o| o.operator != op) {
                operators.push(OperatorMetrics { operator: op.clone(), backpressure: 0.0, metrics: Vec::new() });
            }
            let o = operators.last_mut().expect("pushed above");
            if metric == JobMetric::Backpressure.name() {
                if let Some(p) = points.last() {
                    o.backpressure = o.backpressure.max(p.value);
                }
            }
            if o.metrics.last().is_none_or(|m| m.name != metric) {
                o.metrics.push(MetricGroup { name: metric.clone(), subtasks: Vec::new() });
            }
            let m = o.metrics.last_mut().expect("pushed above");
            m.subtasks.push(SubtaskSeries { index: subtask, points });
        }
        JobReport { job: job.to_owned(), operators }
    }

    /// Adds an empty series for every `(operator, subtask < parallelism)` and job metric the report lacks
    /// (a subtask that has not reported yet): the report is partial, never short of a subtask.
    pub fn fill(&mut self, shape: &[(String, u32)]) {
        let mut series: BTreeMap<(String, String, u32), Vec<Point>> = BTreeMap::new();
        for o in self.operators.drain(..) {
            for m in o.metrics {
                for s in m.subtasks {
                    series.insert((o.operator.clone(), m.name.clone(), s.index), s.points);
                }
            }
        }
        for (op, p) in shape {
            for m in JobMetric::ALL {
                for s in 0..*p {
                    series.entry((op.clone(), m.name().to_owned(), s)).or_default();
                }
            }
        }
        *self = JobReport::from_series(&self.job, series);
    }
}

/// The operators of a probe's reading and their parallelism, in node order.
pub fn shape(readings: &[SubtaskReading]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for r in readings {
        if out.last().is_none_or(|(op, _)| op != &r.operator) {
            out.push((r.operator.clone(), r.parallelism as u32));
        }
    }
    out
}

/// What the collector keeps of one operator subtask.
#[derive(Clone, Debug, Default)]
struct TaskMetrics {
    rates: [RateMetric; 6],
    /// Backpressure, queue size, queue remaining: `(unix ms, value)`.
    gauges: [CircularBuffer<(i64, f64), NUM_BUCKETS>; 3],
}

/// One job's recent metrics (the rings), fed from its probe.
#[derive(Clone, Debug, Default)]
pub struct JobMetrics {
    tasks: BTreeMap<(String, u32), TaskMetrics>,
}

/// One value to store: operator, subtask, metric, value.
pub type TickValue = (String, u32, JobMetric, f64);

impl JobMetrics {
    /// No readings yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one reading of every subtask at `time_ms` (unix ms); returns each subtask's value of each
    /// metric now (a rate without one yet is 0).
    pub fn update(&mut self, time_ms: i64, readings: &[SubtaskReading]) -> Vec<TickValue> {
        let mut out = Vec::with_capacity(readings.len() * JobMetric::ALL.len());
        for r in readings {
            let t = self.tasks.entry((r.operator.clone(), r.subtask as u32)).or_default();
            let c = &r.counters;
            let counters =
                [c.messages_recv, c.messages_sent, c.bytes_recv, c.bytes_sent, c.batches_recv, c.batches_sent];
            for ((rate, value), m) in t.rates.iter_mut().zip(counters).zip(JobMetric::RATES) {
                rate.add(time_ms, value);
                out.push((r.operator.clone(), r.subtask as u32, m, rate.last().unwrap_or(0.0)));
            }
            let gauges = [
                (JobMetric::Backpressure, r.backpressure),
                (JobMetric::QueueSize, r.queue_size as f64),
                (JobMetric::QueueRemaining, r.queue_remaining as f64),
            ];
            for (ring, (m, v)) in t.gauges.iter_mut().zip(gauges) {
                if ring.last().is_none_or(|(last, _)| time_ms > last) {
                    ring.push((time_ms, v));
                }
                out.push((r.operator.clone(), r.subtask as u32, m, v));
            }
        }
        out
    }

    /// The newest value of each metric of each subtask (a rate without one yet is 0).
    pub fn latest(&self) -> Vec<TickValue> {
        let mut out = Vec::new();
        for ((op, s), t) in &self.tasks {
            for (rate, m) in t.rates.iter().zip(JobMetric::RATES) {
                out.push((op.clone(), *s, m, rate.last().unwrap_or(0.0)));
            }
            for (ring, m) in
                t.gauges.iter().zip([JobMetric::Backpressure, JobMetric::QueueSize, JobMetric::QueueRemaining])
            {
                out.push((op.clone(), *s, m, ring.last().map_or(0.0, |(_, v)| v)));
            }
        }
        out
    }

    /// The rings as a report (times in unix seconds): every subtask seen, every metric, even if empty.
    pub fn report(&self, job: &str) -> JobReport {
        let mut series: BTreeMap<(String, String, u32), Vec<Point>> = BTreeMap::new();
        let point = |(t, v): (i64, f64)| Point { time: t.div_euclid(1000), value: v };
        for ((op, s), t) in &self.tasks {
            for (rate, m) in t.rates.iter().zip(JobMetric::RATES) {
                series.insert((op.clone(), m.name().to_owned(), *s), rate.iter().map(point).collect());
            }
            for (ring, m) in
                t.gauges.iter().zip([JobMetric::Backpressure, JobMetric::QueueSize, JobMetric::QueueRemaining])
            {
                series.insert((op.clone(), m.name().to_owned(), *s), ring.iter().map(point).collect());
            }
        }
        JobReport::from_series(job, series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::probe::Counters;

    fn reading(op: &str, subtask: usize, sent: u64, bp: f64) -> SubtaskReading {
        SubtaskReading {
            node: 0,
            operator: op.to_owned(),
            subtask,
            parallelism: 2,
            counters: Counters { messages_sent: sent, ..Counters::default() },
            queue_size: 10,
            queue_remaining: 4,
            backpressure: bp,
            source: false,
            sink: false,
        }
    }

    #[test]
    fn update_stores_zero_before_the_first_rate_then_the_ewma() {
        let mut j = JobMetrics::new();
        let first = j.update(0, &[reading("src", 0, 100, 0.5)]);
        assert_eq!(first.len(), 9);
        let get = |v: &[TickValue], m: JobMetric| v.iter().find(|x| x.2 == m).map(|x| x.3);
        assert_eq!(get(&first, JobMetric::MessagesSent), Some(0.0));
        assert_eq!(get(&first, JobMetric::Backpressure), Some(0.5));
        assert_eq!(get(&first, JobMetric::QueueRemaining), Some(4.0));
        let second = j.update(2000, &[reading("src", 0, 300, 0.25)]);
        assert_eq!(get(&second, JobMetric::MessagesSent), Some(100.0));
        let third = j.update(4000, &[reading("src", 0, 340, 0.25)]);
        assert!((get(&third, JobMetric::MessagesSent).expect("rate") - 92.0).abs() < 1e-9);
        let r = j.report("job");
        let op = &r.operators[0];
        assert_eq!(op.operator, "src");
        assert_eq!(op.backpressure, 0.25);
        let sent = op.metrics.iter().find(|m| m.name == "messages_sent").expect("messages_sent");
        // The first reading made no rate: two points, at 2 s and 4 s.
        assert_eq!(sent.subtasks[0].points.iter().map(|p| p.time).collect::<Vec<_>>(), vec![2, 4]);
        let bp = op.metrics.iter().find(|m| m.name == "backpressure").expect("backpressure");
        assert_eq!(bp.subtasks[0].points.len(), 3);
    }

    #[test]
    fn report_is_sorted_and_fill_adds_missing_subtasks() {
        let mut j = JobMetrics::new();
        j.update(0, &[reading("b", 1, 0, 0.1), reading("a", 0, 0, 0.9), reading("b", 0, 0, 0.3)]);
        let mut r = j.report("job");
        assert_eq!(r.operators.iter().map(|o| o.operator.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(r.operators[1].backpressure, 0.3f64.max(0.1));
        let names: Vec<_> = r.operators[0].metrics.iter().map(|m| m.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(r.operators[0].metrics[0].subtasks.len(), 1);
        r.fill(&[("a".to_owned(), 2), ("c".to_owned(), 1)]);
        assert_eq!(r.operators.len(), 3);
        for m in &r.operators[0].metrics {
            assert_eq!(m.subtasks.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1], "{}", m.name);
        }
        assert_eq!(r.operators[2].metrics.len(), JobMetric::ALL.len());
        assert!(r.operators[2].metrics.iter().all(|m| m.subtasks[0].points.is_empty()));
        // The data already there is kept.
        assert_eq!(r.operators[0].backpressure, 0.9);
    }

    #[test]
    fn stored_names_round_trip() {
        for m in JobMetric::ALL {
            assert_eq!(JobMetric::from_stored(m.stored()), Some(m));
            assert_eq!(m.stored(), format!("job_{}", m.name()));
        }
        assert_eq!(JobMetric::from_stored("messages_recv"), None);
    }
}
