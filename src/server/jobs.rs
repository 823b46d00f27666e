//! `GET /api/jobs/{job}/metrics?from=&to=`: a pipeline's job metrics (see [`crate::jobs`]) in Arroyo's
//! shape, read from the store, so history before a restart and beyond the collector's five-minute rings is
//! there too.
//!
//! - `from`, `to`: unix seconds, default the last five minutes; `to` before `from`, or a range over a day
//!   of 2 s steps, is a 400.
//! - The answer: `{"job", "from", "to", "operators": [{"operator", "backpressure", "metrics": [{"name",
//!   "subtasks": [{"index", "points": [{"time", "value"}]}]}]}]}`, each list sorted. A running job lists
//!   every subtask of every operator and every metric, an empty `points` where a subtask has not reported
//!   (partial, never an error). `backpressure` is the maximum over the operator's subtasks of their newest
//!   value in the range.
//! - 404 for a job that is neither a pipeline of this server nor has anything stored; 503 without a
//!   collector.
//!
//! Also here: the middleware that counts every response for the `http/server` service.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{blocking, unix_now, ApiError, AppState};
use crate::jobs::{store, JobReport};

/// Widest range one request may ask for, in seconds (43 200 steps of 2 s per series).
pub const MAX_RANGE_SECS: i64 = 86_400;

#[derive(Deserialize)]
pub(super) struct Params {
    from: Option<i64>,
    to: Option<i64>,
}

#[derive(Serialize)]
struct Answer {
    from: i64,
    to: i64,
    #[serde(flatten)]
    report: JobReport,
}

/// `GET /api/jobs/{job}/metrics`.
pub(super) async fn metrics(
    State(st): State<AppState>,
    Path(job): Path<String>,
    Query(p): Query<Params>,
) -> Result<Response, ApiError> {
    let Some(collector) = st.jobs.clone() else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "job metrics are not collected by this server".into(),
        });
    };
    let now = unix_now();
    let to = p.to.unwrap_or(now + 1);
    let from = p.from.unwrap_or(to.saturating_sub(crate::jobs::rate::COLLECTION_TIME.as_secs() as i64));
    if from > to {
        return Err(bad(format!("from ({from}) is after to ({to})")));
    }
    if to.checked_sub(from).is_none_or(|d| d > MAX_RANGE_SECS) {
        return Err(bad(format!("the range {from}..{to} is longer than {MAX_RANGE_SECS} s")));
    }
    let db = st.db.clone();
    let known = st.streams.as_ref().and_then(|e| e.get(&job));
    let report = blocking(move || {
        let mut r = store::report(&db, &job, from, to).map_err(|e| bad(e.to_string()))?;
        // The shape of a running job, from the collector or (before its first tick) from the pipeline.
        let shape = collector
            .job_shape(&job)
            .or_else(|| known.as_ref().and_then(|h| h.probe()).map(|p| crate::jobs::shape(&p.read())));
        match shape {
            Some(shape) => r.fill(&shape),
            None if r.operators.is_empty() && known.is_none() => {
                return Err(ApiError { status: StatusCode::NOT_FOUND, message: format!("no job {job:?}") })
            }
            None => {}
        }
        Ok(r)
    })
    .await?;
    Ok(Json(Answer { from, to, report }).into_response())
}

fn bad(message: String) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, message }
}

/// Counts every response by status class (service `http/server`).
pub(super) async fn count_response(
    State(m): State<Arc<super::metrics::ServerMetrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    m.http_response(resp.status().as_u16());
    resp
}
