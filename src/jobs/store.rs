//! Job metrics in the store: declaring the metrics, writing one tick, and reading a job's report back over
//! any range (also after a restart, and beyond the five minutes the rings hold).

use std::collections::BTreeMap;

use super::{JobMetric, JobReport, Point, TickValue};
use crate::keys::{JobKey, Namespace};
use crate::query::selector::SelectorElement;
use crate::{Batch, Db, Error, MetricConfig, Selector};

/// Seconds between two stored samples of a job metric (the collection rate).
pub const FREQUENCY: i64 = super::rate::COLLECTION_RATE.as_secs() as i64;

/// Declares the nine job metrics (idempotent; a metric of that name declared otherwise is an error that
/// names it).
pub fn declare(db: &Db) -> Result<(), Error> {
    for m in JobMetric::ALL {
        db.declare_metric(m.stored(), MetricConfig { frequency: FREQUENCY, aggregation: m.aggregation() })?;
    }
    Ok(())
}

/// Adds one tick of `job` at `time` (unix seconds) to `batch`. Values whose operator name is not a valid key
/// name are left out and returned, so the caller can say so once.
pub fn push_tick(batch: &mut Batch, job: &str, time: i64, values: &[TickValue]) -> Vec<String> {
    let mut refused = Vec::new();
    let mut key: Option<JobKey> = None;
    for (op, subtask, m, v) in values {
        if key.as_ref().is_none_or(|k| k.operator() != op || k.subtask() != *subtask) {
            key = match JobKey::new(job, op, *subtask) {
                Ok(k) => Some(k),
                Err(_) => {
                    if !refused.contains(op) {
                        refused.push(op.clone());
                    }
                    None
                }
            };
        }
        if let Some(k) = &key {
            batch.push(k, m.stored(), time, *v);
        }
    }
    refused
}

/// The selector of every subtask of `job`.
pub fn selector(job: &str) -> Result<Selector, Error> {
    Ok(Selector::new(Namespace::Job, vec![SelectorElement::Name(job.to_owned())])?)
}

/// `job`'s metrics stored with times in `[from, to)` (unix seconds): every subtask and metric the store
/// holds for it, missing steps left out. A job with nothing stored gives a report without operators.
pub fn report(db: &Db, job: &str, from: i64, to: i64) -> Result<JobReport, Error> {
    let sel = selector(job)?;
    let mut series: BTreeMap<(String, String, u32), Vec<Point>> = BTreeMap::new();
    for (_, metric, path) in db.series_under(&sel) {
        let Ok(key) = JobKey::from_path(&path) else { continue };
        let name = JobMetric::from_stored(&metric).map_or(metric.clone(), |m| m.name().to_owned());
        let r = db.read(&key, &metric, from, to)?;
        let points = r
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &value)| Point { time: r.from + i as i64 * r.frequency, value })
            .collect();
        series.insert((key.operator().to_owned(), name, key.subtask()), points);
    }
    Ok(JobReport::from_series(job, series))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    #[test]
    fn a_tick_reads_back_as_a_report() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = Db::open(tmp.path(), Options { checkpoint_interval: None, ..Options::default() }).expect("open");
        declare(&db).expect("declare");
        declare(&db).expect("declaring twice is fine");
        let mut b = Batch::new();
        let values = vec![
            ("map".to_owned(), 1, JobMetric::MessagesRecv, 10.0),
            ("map".to_owned(), 0, JobMetric::MessagesRecv, 5.0),
            ("bad/name".to_owned(), 0, JobMetric::MessagesRecv, 1.0),
            ("map".to_owned(), 0, JobMetric::Backpressure, 0.75),
        ];
        assert_eq!(push_tick(&mut b, "j", 1000, &values), vec!["bad/name".to_owned()]);
        let mut values2 = values.clone();
        values2.truncate(2);
        values2[0].3 = 12.0;
        push_tick(&mut b, "j", 1002, &values2);
        db.write(&b).expect("write");
        let r = report(&db, "j", 990, 1010).expect("report");
        assert_eq!(r.operators.len(), 1);
        let op = &r.operators[0];
        assert_eq!(op.backpressure, 0.75);
        let names: Vec<_> = op.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["backpressure", "messages_recv"]);
        let recv = &op.metrics[1];
        assert_eq!(recv.subtasks.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(recv.subtasks[1].points, vec![Point { time: 1000, value: 10.0 }, Point { time: 1002, value: 12.0 }]);
        assert_eq!(recv.subtasks[0].points, vec![Point { time: 1000, value: 5.0 }, Point { time: 1002, value: 5.0 }]);
        let bp = &op.metrics[0];
        assert_eq!(bp.subtasks[0].points, vec![Point { time: 1000, value: 0.75 }]);
        // Another job, and a range with nothing in it.
        assert!(report(&db, "other", 990, 1010).expect("report").operators.is_empty());
        let empty = report(&db, "j", 2000, 2010).expect("report");
        assert!(empty.operators[0].metrics.iter().all(|m| m.subtasks.iter().all(|s| s.points.is_empty())));
        assert!(report(&db, "bad/job", 0, 1).is_err());
    }

    #[test]
    fn an_operator_level_query_sums_rates_and_takes_the_largest_backpressure() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = Db::open(tmp.path(), Options { checkpoint_interval: None, ..Options::default() }).expect("open");
        declare(&db).expect("declare");
        let mut b = Batch::new();
        let values = vec![
            ("map".to_owned(), 0, JobMetric::MessagesRecv, 5.0),
            ("map".to_owned(), 1, JobMetric::MessagesRecv, 10.0),
            ("map".to_owned(), 0, JobMetric::Backpressure, 0.9),
            ("map".to_owned(), 1, JobMetric::Backpressure, 0.2),
        ];
        push_tick(&mut b, "j", 1000, &values);
        db.write(&b).expect("write");
        let op =
            Selector::new(Namespace::Job, vec![SelectorElement::Name("j".into()), SelectorElement::Name("map".into())])
                .expect("selector");
        let read = |m: JobMetric| db.query(&op, m.stored(), 1000, 1002, crate::ReadOptions::default()).expect("query");
        let recv = read(JobMetric::MessagesRecv);
        assert_eq!((recv.values.clone(), recv.series), (vec![15.0], 2));
        assert_eq!(read(JobMetric::Backpressure).values, vec![0.9]);
        // The job level too.
        let job = selector("j").expect("selector");
        let bp = db.query(&job, JobMetric::Backpressure.stored(), 1000, 1002, crate::ReadOptions::default());
        assert_eq!(bp.expect("query").values, vec![0.9]);
    }
}
