//! The HTTP server: cc-metric-store's API over a [`Db`], built with axum.
//!
//! Routes (each also with a trailing slash, as cc-metric-store registers them): `POST /api/write`,
//! `GET`/`POST /api/query` (a JSON body on GET, as cc-backend sends it), `POST /api/free`. Errors are JSON
//! `{"status": "<reason phrase>", "error": "<message>"}` with a 4xx for bad input; per-entry query errors are
//! inside a 200, as cc-metric-store does. Numbers in query results are rendered with three decimals and NaN as
//! `null` (cc-metric-store's `schema.Float`).
//!
//! The database's calls block (a write waits for its WAL acknowledgement), so handlers run them on tokio's
//! blocking pool.
//!
//! **Overload.** A write is admitted ([`AppState::writes`], the head's memory cap) or answered 503 with
//! `Retry-After` before its body is read. An admitted write then waits for one of
//! [`AppState::write_workers`] decode slots (`main.write-workers`, by default the cores less one) before
//! its body is decoded, on a thread of lower priority, and gives the slot back before it waits for the
//! WAL. So however many writes are admitted, at most that many use CPU for decoding at once, and reads,
//! which take no slot, keep a core and come first.

pub mod auth;
pub mod config;
pub mod jobs;
pub mod metrics;
pub mod nats;
pub mod pipelines;
pub mod tls;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::db::unix_now;
use crate::ingest::lineproto::{LineError, Precision};
use crate::ingest::writer::LineWriter;
use crate::keys::Namespace;
use crate::query::{ReadOptions, StatsResult};
use crate::{Db, Error, QueryError, Selector, SelectorElement};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Arc<Db>,
    /// silt's own metrics, served on `/metrics`.
    pub metrics: Arc<metrics::ServerMetrics>,
    /// JWT verification of `/api/*`; `None` serves them unauthenticated.
    pub auth: Option<Arc<auth::Auth>>,
    /// Longest a request may take before it is answered 503 (cc-metric-store's 30 s).
    pub request_timeout: std::time::Duration,
    /// Line-protocol writes, with their cache of series (shared by HTTP and NATS ingest).
    pub lines: Arc<LineWriter>,
    /// The stream engine behind `/api/pipelines`; `None` answers those routes 503.
    pub streams: Option<Arc<crate::stream::controller::StreamEngine>>,
    /// The job-metrics collector behind `/api/jobs/{job}/metrics` and part of `/metrics`; `None` answers
    /// that route 503.
    pub jobs: Option<Arc<crate::jobs::collector::Collector>>,
    /// What one request may ask for ([`RequestLimits::DEFAULT`]).
    pub limits: RequestLimits,
    /// Admission of writes: KiB of write bodies being handled at once ([`WRITE_BUDGET_BYTES`]). A write
    /// that finds no room is answered 503 with `Retry-After` at once, before its body is read, so that an
    /// overload is pushed back to the clients instead of piling up bodies in memory.
    pub writes: Arc<tokio::sync::Semaphore>,
    /// Where write bodies are decoded (`main.write-workers`, [`default_write_workers`]).
    pub write_workers: WriteWorkers,
}

/// Default for [`AppState::write_workers`]: the machine's cores less one (kept for reads, the WAL writer
/// and compaction), at least 1.
pub fn default_write_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1)
}

/// How much lower than the rest of the process the decode threads run (a nice value, Linux only), so
/// that under an overload of writes the reads get the CPU first.
pub const DECODE_NICE: i32 = 10;

/// The decode slots and threads of writes. An admitted write waits for a slot before its body is
/// decoded, on a thread of a lower priority ([`DECODE_NICE`]), and gives the slot back before it waits, on
/// the same thread, for the WAL. Writes beyond the slots queue without using CPU, so that an overload
/// of writes cannot take the cores from reads; their bodies are bounded by [`AppState::writes`].
#[derive(Clone)]
pub struct WriteWorkers {
    slots: Arc<tokio::sync::Semaphore>,
    /// `None` if its threads could not be started: then bodies are decoded on tokio's blocking pool.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl WriteWorkers {
    /// Threads beyond the slots: a write waits for the WAL on the thread that decoded it, slot given back, so
    /// that this many writes can wait there together (and be committed together) while others decode.
    pub const WAITING_THREADS: usize = 8;

    /// `n` slots (at least 1), and `n` + [`WriteWorkers::WAITING_THREADS`] threads.
    pub fn new(n: usize) -> WriteWorkers {
        let n = n.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n + Self::WAITING_THREADS)
            .thread_name(|i| format!("silt-decode-{i}"))
            .start_handler(|_| crate::storage::io::lower_thread_priority(DECODE_NICE))
            // A panic answers its write 500 (its reply is dropped) instead of aborting the process.
            .panic_handler(|_| {})
            .build()
            .inspect_err(|e| tracing::warn!(error = %e, "no decode threads; decoding on the blocking pool"))
            .ok()
            .map(Arc::new);
        WriteWorkers { slots: Arc::new(tokio::sync::Semaphore::new(n)), pool }
    }

    /// The slots: one is held by each write being decoded.
    pub fn slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.slots
    }

    /// Runs `f` on a decode thread.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let failed = |e: String| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e };
        match &self.pool {
            Some(pool) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                pool.spawn(move || {
                    let _ = tx.send(f());
                });
                rx.await.map_err(|_| failed("decoding the request body failed".into()))
            }
            None => tokio::task::spawn_blocking(f).await.map_err(|e| failed(format!("request handler failed: {e}"))),
        }
    }
}

/// Bytes of write bodies admitted at once by default (each write holds its `Content-Length`, or
/// [`MAX_BODY_BYTES`] without one, until it is answered).
pub const WRITE_BUDGET_BYTES: usize = 512 << 20;

impl AppState {
    /// State for a database, with fresh metrics.
    pub fn new(db: Arc<Db>) -> Self {
        AppState {
            db,
            metrics: Arc::new(metrics::ServerMetrics::new()),
            auth: None,
            request_timeout: REQUEST_TIMEOUT,
            lines: Arc::new(LineWriter::new()),
            streams: None,
            jobs: None,
            limits: RequestLimits::DEFAULT,
            writes: Arc::new(tokio::sync::Semaphore::new(WRITE_BUDGET_BYTES >> 10)),
            write_workers: WriteWorkers::new(default_write_workers()),
        }
    }
}

/// Seconds a client is told to wait (`Retry-After`) after a 503 or 507.
const RETRY_AFTER_SECS: &str = "5";

/// An error answered as `{"status", "error"}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    /// A 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message of its `error` field.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError { status: e.status(), message: e.body_text() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            // No room in the WAL for the write: nothing of it was logged, and it may succeed later.
            Error::Storage(crate::storage::StorageError::NotLogged { full: true, .. }) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Error::Storage(crate::storage::StorageError::NotLogged { full: false, .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Read-only after a failed write or fsync: reads go on, writes wait for a restart.
            Error::Storage(crate::storage::StorageError::PreviousIo(_)) => StatusCode::SERVICE_UNAVAILABLE,
            // The write would pass the cardinality limit: refused whole, as bad input.
            Error::Storage(crate::storage::StorageError::TooManySeries { .. }) => StatusCode::BAD_REQUEST,
            Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError { status, message: e.to_string() }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'a str,
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { status: self.status.canonical_reason().unwrap_or("Error"), error: &self.message };
        let mut r = (self.status, Json(body)).into_response();
        // Overload, a full disk, a timeout: the client may try again later.
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE) {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        r
    }
}

/// The router with every route of cc-metric-store's API; `/api/*` behind JWT when `state.auth` is set.
pub fn app(state: AppState) -> Router {
    let api = api_routes(state.clone());
    let api = match &state.auth {
        Some(a) => api.layer(axum::middleware::from_fn_with_state(a.clone(), auth::require_jwt)),
        None => api,
    };
    let timeout = state.request_timeout;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/metrics", get(prometheus))
        .with_state(state)
        .merge(api)
        .fallback(|| async { ApiError { status: StatusCode::NOT_FOUND, message: "no such route".into() } })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: format!("method {method} not allowed here") }
        })
        .layer(axum::middleware::from_fn(move |req, next| time_limit(timeout, req, next)))
        .layer(axum::middleware::from_fn_with_state(metrics, jobs::count_response))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Default for [`AppState::request_timeout`].
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers 503 (JSON) when a request outlives the limit. Work already handed to the database finishes
/// (a write that was acknowledged stays acknowledged); only the answer is given up.
async fn time_limit(
    limit: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    tokio::time::timeout(limit, next.run(req)).await.map_err(|_| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the request took longer than {} s", limit.as_secs_f64()),
    })
}

/// Admits a write if the head is not over its memory cap ([`Db::over_memory_cap`]) and the bytes its
/// `Content-Length` announces (or [`MAX_BODY_BYTES`] without one) fit what [`AppState::writes`] has left,
/// holding them until the write is answered; else 503 with `Retry-After`.
async fn admit_write(
    State((writes, db)): State<(Arc<tokio::sync::Semaphore>, Arc<Db>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    if db.over_memory_cap() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "overloaded: the head holds {} MiB, over its memory cap of {} MiB; compaction is \
                 catching up, retry later",
                db.head_bytes_in_use() >> 20,
                db.memory_cap_bytes() >> 20
            ),
        });
    }
    let len = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(MAX_BODY_BYTES as u64)
        .min(MAX_BODY_BYTES as u64);
    // A body larger than the whole budget waits for all of it (the body limit answers past MAX_BODY_BYTES).
    let budget = (WRITE_BUDGET_BYTES >> 10).max(1) as u64;
    let kib = u32::try_from(len.div_ceil(1024).clamp(1, budget)).unwrap_or(u32::MAX);
    let Ok(permit) = writes.clone().try_acquire_many_owned(kib) else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "overloaded: the writes being handled leave {} KiB of the admission budget, this one needs {kib} \
                 KiB; retry later",
                writes.available_permits()
            ),
        });
    };
    let r = next.run(req).await;
    drop(permit);
    Ok(r)
}

fn api_routes(state: AppState) -> Router {
    let writes = Router::new()
        .route("/api/write", post(write))
        .route("/api/write/", post(write))
        .route_layer(axum::middleware::from_fn_with_state((state.writes.clone(), state.db.clone()), admit_write));
    Router::new()
        .merge(writes)
        .route("/api/query", get(query).post(query))
        .route("/api/query/", get(query).post(query))
        .route("/api/free", post(free))
        .route("/api/free/", post(free))
        .route("/api/healthcheck", get(healthcheck).post(healthcheck))
        .route("/api/healthcheck/", get(healthcheck).post(healthcheck))
        .route("/api/debug", get(debug).post(debug))
        .route("/api/debug/", get(debug).post(debug))
        .route("/api/pipelines", get(pipelines::list).post(pipelines::create))
        .route("/api/pipelines/", get(pipelines::list).post(pipelines::create))
        .route("/api/pipelines/{name}", get(pipelines::get_one).delete(pipelines::delete))
        .route("/api/pipelines/{name}/stop", post(pipelines::stop))
        .route("/api/jobs/{job}/metrics", get(jobs::metrics))
        .with_state(state)
}

/// Largest request body accepted; a larger one is a 413.
pub const MAX_BODY_BYTES: usize = 256 << 20;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("request handler failed: {e}"),
    })?
}

/// A gauge raised while this is held (also when the future holding it is dropped).
struct Held(prometheus_client::metrics::gauge::Gauge);

impl Held {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Held {
        g.inc();
        Held(g.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Deserialize)]
struct WriteParams {
    cluster: Option<String>,
}

/// `POST /api/write?cluster=`: line protocol in, stored up to the first bad line, which is a 400 naming it.
async fn write(
    State(st): State<AppState>,
    Query(p): Query<WriteParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from)?;
    // Wait for a decode slot without using CPU (the admission budget bounds the bodies that wait).
    let waiting = Held::new(&st.metrics.http_writes_waiting);
    let slot = st.write_workers.slots.clone().acquire_owned().await.map_err(|_| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is shutting down".into(),
    })?;
    drop(waiting);
    // Decoded, then written, on one decode thread: the slot is given back before the wait for the WAL, which
    // costs no CPU (writes waiting there are committed together: group commit), and the thread hand-offs of a
    // write stay few (tokio, the decode thread, the engine's writer).
    let workers = st.write_workers.clone();
    workers
        .run(move || {
            let decoded = {
                let _decoding = Held::new(&st.metrics.http_writes_decoding);
                st.lines.decode(&st.db, &body, p.cluster.as_deref(), Precision::Auto, unix_now())
            };
            drop(slot);
            // Lines before a bad one are stored, as cc-metric-store does.
            let report = decoded?.write(&st.db)?;
            // Samples the store refused (older than what it keeps for their series, or out of range) are
            // never acknowledged with a 200: cc-metric-store answers 400 for a write "from past" too. The
            // other samples were stored.
            let refused = report.ack.map_or(0, |a| a.outcome.too_old + a.outcome.out_of_range);
            if refused > 0 && report.error.is_none() {
                return Err(ApiError::bad_request(format!(
                    "{refused} of {} samples were not stored: older than the data kept for their series (freed \
                     or compacted) or out of range; the others were stored",
                    report.added
                )));
            }
            match report.error {
                None => Ok(StatusCode::OK.into_response()),
                // A line over the limit is too large, not malformed (cc-metric-store's reader gives up on it).
                Some((line, error @ LineError::TooLong { .. })) => {
                    Err(ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, message: format!("line {line}: {error}") })
                }
                Some((line, error)) => Err(ApiError::bad_request(format!("line {line}: {error}"))),
            }
        })
        .await?
}

fn default_true() -> bool {
    true
}

/// cc-metric-store's `APIQueryRequest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    cluster: String,
    #[serde(default)]
    queries: Vec<ApiQuery>,
    #[serde(default, rename = "for-all-nodes")]
    for_all_nodes: Option<Vec<String>>,
    from: i64,
    to: i64,
    #[serde(default = "default_true", rename = "with-stats")]
    with_stats: bool,
    #[serde(default = "default_true", rename = "with-data")]
    with_data: bool,
    #[serde(default = "default_true", rename = "with-padding")]
    with_padding: bool,
}

/// cc-metric-store's `APIQuery`.
#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
struct ApiQuery {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subtype: Option<String>,
    metric: String,
    /// Required by cc-metric-store. silt also takes a query without it (or with `""`) and no `type`: the
    /// whole cluster, every host aggregated with the metric's aggregation.
    #[serde(default, rename = "host")]
    hostname: String,
    #[serde(default)]
    resolution: i64,
    #[serde(default, rename = "type-ids", skip_serializing_if = "Vec::is_empty")]
    type_ids: Vec<String>,
    #[serde(default, rename = "subtype-ids", skip_serializing_if = "Vec::is_empty")]
    subtype_ids: Vec<String>,
    #[serde(default, rename = "scale-by", skip_serializing_if = "Option::is_none")]
    scale_by: Option<f64>,
    #[serde(default)]
    aggreg: bool,
}

/// One entry of a query response (cc-metric-store's `APIMetricData`).
#[derive(Serialize)]
struct MetricData {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    from: i64,
    to: i64,
    resolution: i64,
    avg: Box<RawValue>,
    min: Box<RawValue>,
    max: Box<RawValue>,
}

#[derive(Serialize)]
struct QueryResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    queries: Vec<ApiQuery>,
    results: Vec<Vec<MetricData>>,
}

/// A number as cc-metric-store renders it: three decimals, NaN and infinities as `null`.
fn num(v: f64) -> Box<RawValue> {
    let text = if v.is_finite() { format!("{v:.3}") } else { "null".to_owned() };
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn nums(vs: &[f64]) -> Box<RawValue> {
    let mut s = String::with_capacity(vs.len() * 8 + 2);
    s.push('[');
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if v.is_finite() {
            s.push_str(&format!("{v:.3}"));
        } else {
            s.push_str("null");
        }
    }
    s.push(']');
    RawValue::from_string(s).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Limits on what one request may ask for, checked before the database does any of the work: a small body
/// must not expand into unbounded work or memory (a product of id lists, or of nodes and metric names).
/// Going over one is a 400 that names the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Series reads (selectors) one `/api/query` request may expand to, `for-all-nodes` included.
    pub query_selectors: u64,
    /// Values one `/api/query` request may read at the metrics' native resolution, summed over its series
    /// reads (each read of `[from, to)` at frequency F counts `ceil((to - from) / F)`, whatever the
    /// resolution asked for, since the read allocates that many before resampling).
    pub query_values: u64,
    /// Node × metric checks one `/api/healthcheck` request may ask for.
    pub health_checks: u64,
}

impl RequestLimits {
    /// The server's limits: a million series reads and [`crate::query::MAX_POINTS`] values per query request
    /// (what one read may return on its own), a million node × metric health checks.
    pub const DEFAULT: RequestLimits = RequestLimits {
        query_selectors: 1_000_000,
        query_values: crate::query::MAX_POINTS as u64,
        health_checks: 1_000_000,
    };
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits::DEFAULT
    }
}

/// What is left of a query request's [`RequestLimits`] while its series reads are planned.
struct QueryBudget {
    limits: RequestLimits,
    selectors: u64,
    values: u64,
}

impl QueryBudget {
    fn new(limits: RequestLimits) -> Self {
        QueryBudget { limits, selectors: 0, values: 0 }
    }

    /// Counts `reads` series reads of `steps` values each, or refuses them with a 400.
    fn charge(&mut self, reads: u64, steps: u64) -> Result<(), ApiError> {
        let selectors = self.selectors.saturating_add(reads);
        if selectors > self.limits.query_selectors {
            return Err(ApiError::bad_request(format!(
                "query too large: it expands to more than {} series reads (the limit per request); ask for fewer \
                 hosts, metrics or type ids",
                self.limits.query_selectors
            )));
        }
        let values = self.values.saturating_add(reads.saturating_mul(steps));
        if values > self.limits.query_values {
            return Err(ApiError::bad_request(format!(
                "query too large: it reads more than {} values at the metrics' native resolution (the limit per \
                 request, {values} asked for so far); ask for a shorter time range or fewer series",
                self.limits.query_values
            )));
        }
        (self.selectors, self.values) = (selectors, values);
        Ok(())
    }
}

/// Values a read of `metric` over `[from, to)` allocates at native resolution; 0 for an unknown metric
/// (the read then fails at once and the entry is skipped).
fn native_steps(db: &Db, metric: &str, from: i64, to: i64) -> u64 {
    let Some(cfg) = db.metric(metric) else { return 0 };
    let f = i128::from(cfg.frequency.max(1));
    let steps = (i128::from(to) - i128::from(from) + f - 1) / f;
    u64::try_from(steps.max(0)).unwrap_or(u64::MAX)
}

/// The selectors of one query, as cc-metric-store's `handleQuery` builds them, each charged to `budget`
/// (with `steps` values) before it is built.
fn selectors(cluster: &str, q: &ApiQuery, steps: u64, budget: &mut QueryBudget) -> Result<Vec<Selector>, ApiError> {
    let name = |s: &str| SelectorElement::Name(s.to_owned());
    let ids = |t: &str, ids: &[String]| -> SelectorElement {
        if ids.len() == 1 {
            SelectorElement::Name(format!("{t}{}", ids[0]))
        } else {
            SelectorElement::Group(ids.iter().map(|i| format!("{t}{i}")).collect())
        }
    };
    let mut out = Vec::new();
    if q.hostname.is_empty() {
        if q.typ.is_some() {
            return Err(ApiError::bad_request(format!(
                "query of {:?}: a type needs a host (without one the query is over the whole cluster)",
                q.metric
            )));
        }
        budget.charge(1, steps)?;
        out.push(vec![name(cluster)]);
    } else if q.aggreg || q.typ.is_none() {
        budget.charge(1, steps)?;
        let mut sel = vec![name(cluster), name(&q.hostname)];
        if let Some(t) = &q.typ {
            sel.push(ids(t, &q.type_ids));
            if let Some(st) = &q.subtype {
                sel.push(ids(st, &q.subtype_ids));
            }
        }
        out.push(sel);
    } else if let Some(t) = &q.typ {
        // One read per type id (and subtype id): charged up front, so a product of two long id lists is
        // refused before it is built.
        let per_type = if q.subtype.is_some() { q.subtype_ids.len() as u64 } else { 1 };
        budget.charge((q.type_ids.len() as u64).saturating_mul(per_type), steps)?;
        for tid in &q.type_ids {
            match &q.subtype {
                Some(st) => {
                    for sid in &q.subtype_ids {
                        out.push(vec![
                            name(cluster),
                            name(&q.hostname),
                            name(&format!("{t}{tid}")),
                            name(&format!("{st}{sid}")),
                        ]);
                    }
                }
                None => out.push(vec![name(cluster), name(&q.hostname), name(&format!("{t}{tid}"))]),
            }
        }
    }
    out.into_iter()
        .map(|s| Selector::new(Namespace::Host, s).map_err(|e| ApiError::bad_request(e.to_string())))
        .collect()
}

/// NaNs to put before an answer starting at `from` so that it starts at the step of the requested `req_from`
/// (`with-padding`, as cc-metric-store pads): the steps of `resolution` between them, counted on the grid
/// of `resolution` (floor division, so times before 1970 count as after).
fn front_padding(req_from: i64, from: i64, resolution: i64) -> usize {
    if resolution <= 0 {
        return 0;
    }
    usize::try_from(from.div_euclid(resolution) - req_from.div_euclid(resolution)).unwrap_or(0)
}

fn stats_of(values: &[f64]) -> StatsResult {
    let mut r = StatsResult { samples: 0, avg: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, series: 1 };
    for &v in values.iter().filter(|v| !v.is_nan()) {
        r.samples += 1;
        r.avg += v;
        r.min = r.min.min(v);
        r.max = r.max.max(v);
    }
    if r.samples == 0 {
        return StatsResult { samples: 0, avg: f64::NAN, min: f64::NAN, max: f64::NAN, series: 0 };
    }
    r.avg /= r.samples as f64;
    r
}

/// Parses an `/api/query` body and checks what needs no database: the handler's first step.
fn parse_query(body: &[u8]) -> Result<QueryRequest, ApiError> {
    let req: QueryRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad query body: {e}")))?;
    if req.from > req.to {
        return Err(ApiError::bad_request(format!("invalid time range: from {} is after to {}", req.from, req.to)));
    }
    Ok(req)
}

/// A query request's entries (those of `for-all-nodes` appended) with their selectors, within the limits.
struct QueryPlan {
    /// Every entry, in answer order.
    queries: Vec<ApiQuery>,
    /// The selectors of each entry of `queries`.
    selectors: Vec<Vec<Selector>>,
    /// The entries `for-all-nodes` added, echoed in the answer.
    echoed: Vec<ApiQuery>,
}

/// Expands `for-all-nodes` and builds every entry's selectors, charging each series read to the limits
/// before it is built; a bad selector or a request over the limits is a 400 before any series is read.
fn plan_query(db: &Db, req: &QueryRequest, limits: RequestLimits) -> Result<QueryPlan, ApiError> {
    let mut budget = QueryBudget::new(limits);
    let mut queries = req.queries.clone();
    let mut echoed = Vec::new();
    if let Some(metrics) = &req.for_all_nodes {
        let cluster = Selector::new(Namespace::Host, vec![SelectorElement::Name(req.cluster.clone())])
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let nodes = db.children(&cluster);
        // Nodes × metrics entries of one read each: refused before they are built when too many.
        let entries = (nodes.len() as u64).saturating_mul(metrics.len() as u64);
        let total = entries.saturating_add(queries.len() as u64);
        if total > limits.query_selectors {
            return Err(ApiError::bad_request(format!(
                "query too large: for-all-nodes expands to {entries} entries ({} nodes × {} metrics), more than \
                 the limit of {} series reads per request",
                nodes.len(),
                metrics.len(),
                limits.query_selectors
            )));
        }
        for node in nodes {
            for m in metrics {
                let q = ApiQuery {
                    typ: None,
                    subtype: None,
                    metric: m.clone(),
                    hostname: node.clone(),
                    resolution: 0,
                    type_ids: Vec::new(),
                    subtype_ids: Vec::new(),
                    scale_by: None,
                    aggreg: false,
                };
                queries.push(q.clone());
                echoed.push(q);
            }
        }
    }
    let mut selectors_of = Vec::with_capacity(queries.len());
    for q in &queries {
        let steps = native_steps(db, &q.metric, req.from, req.to);
        selectors_of.push(selectors(&req.cluster, q, steps, &mut budget)?);
    }
    Ok(QueryPlan { queries, selectors: selectors_of, echoed })
}

/// Runs a parsed query request: plans it ([`plan_query`]), then reads every selector.
fn run_query(db: &Db, req: &QueryRequest, limits: RequestLimits) -> Result<QueryResponse, ApiError> {
    let QueryPlan { queries, selectors: selectors_of, echoed } = plan_query(db, req, limits)?;
    let mut results = Vec::with_capacity(queries.len());
    for (q, sels) in queries.iter().zip(selectors_of) {
        let mut res = Vec::new();
        for sel in sels {
            let opts = ReadOptions { resolution: q.resolution, ..ReadOptions::default() };
            match db.query(&sel, &q.metric, req.from, req.to, opts) {
                // An unknown host is skipped, as cc-metric-store skips ErrNoHostOrMetric.
                Ok(r) if r.series == 0 => {}
                Ok(r) => {
                    let mut values = r.values;
                    let mut st = stats_of(&values);
                    if let Some(f) = q.scale_by.filter(|&f| f != 0.0 && f != 1.0) {
                        values.iter_mut().for_each(|v| *v *= f);
                        st.avg *= f;
                        st.min *= f;
                        st.max *= f;
                    }
                    let mut from = r.from;
                    let pad = if req.with_padding { front_padding(req.from, from, r.resolution) } else { 0 };
                    if pad > 0 {
                        let mut padded = vec![f64::NAN; pad];
                        padded.extend_from_slice(&values);
                        values = padded;
                        from = req.from;
                    }
                    res.push(MetricData {
                        error: None,
                        data: req.with_data.then(|| nums(&values)),
                        from,
                        to: r.to,
                        resolution: r.resolution,
                        avg: num(if req.with_stats { st.avg } else { f64::NAN }),
                        min: num(if req.with_stats { st.min } else { f64::NAN }),
                        max: num(if req.with_stats { st.max } else { f64::NAN }),
                    });
                }
                Err(Error::Query(QueryError::UnknownMetric(_))) => {}
                Err(e) => res.push(MetricData {
                    error: Some(e.to_string()),
                    data: None,
                    from: 0,
                    to: 0,
                    resolution: 0,
                    avg: num(f64::NAN),
                    min: num(f64::NAN),
                    max: num(f64::NAN),
                }),
            }
        }
        results.push(res);
    }
    Ok(QueryResponse { queries: echoed, results })
}

/// `GET|POST /api/query`: cc-metric-store's query shapes.
async fn query(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from)?;
    let req = parse_query(&body)?;
    let started = std::time::Instant::now();
    let metrics = st.metrics.clone();
    let resp = blocking(move || run_query(&st.db, &req, st.limits)).await?;
    metrics.observe_query(started.elapsed());
    Ok(Json(resp).into_response())
}

#[derive(Deserialize)]
struct FreeParams {
    to: Option<String>,
}

/// Parses an `/api/free` body (`[["cluster","host"], …]`) into its selectors; a bad one is a 400 before
/// anything is freed.
fn parse_free(body: &[u8]) -> Result<Vec<Selector>, ApiError> {
    let sels: Vec<Vec<String>> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad free body: {e}")))?;
    sels.into_iter()
        .map(|s| {
            Selector::new(Namespace::Host, s.into_iter().map(SelectorElement::Name).collect())
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .collect()
}

/// Frees, below each selector, the pages older than `to`; the pages freed.
fn free_all(db: &Db, sels: &[Selector], to: i64) -> Result<u64, ApiError> {
    let mut n = 0;
    for sel in sels {
        n += db.free_selector(sel, to)?;
    }
    Ok(n)
}

/// `POST /api/free?to=`: frees, below each selector of the body (`[["cluster","host"], …]`), the pages older
/// than `to`; answers `buffers freed: N`. Every selector is checked before anything is freed.
async fn free(
    State(st): State<AppState>,
    Query(p): Query<FreeParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from)?;
    let to = p.to.ok_or_else(|| ApiError::bad_request("'to' is a required query parameter"))?;
    let to: i64 = to.parse().map_err(|_| ApiError::bad_request(format!("'to' is not an integer: {to:?}")))?;
    let sels = parse_free(&body)?;
    let n = blocking(move || free_all(&st.db, &sels, to)).await?;
    Ok((StatusCode::OK, format!("buffers freed: {n}\n")).into_response())
}

/// cc-metric-store's `HealthCheckReq`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthRequest {
    cluster: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default, rename = "metric-names")]
    metric_names: Vec<String>,
}

/// Parses an `/api/healthcheck` body; more node × metric checks than the limits allow is a 400.
fn parse_health(body: &[u8], limits: RequestLimits) -> Result<HealthRequest, ApiError> {
    let req: HealthRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("parsing request body failed: {e}")))?;
    let checks = (req.nodes.len() as u64).saturating_mul(req.metric_names.len() as u64);
    if checks > limits.health_checks {
        return Err(ApiError::bad_request(format!(
            "health check too large: {} nodes × {} metrics is more than the limit of {} checks per request",
            req.nodes.len(),
            req.metric_names.len(),
            limits.health_checks
        )));
    }
    Ok(req)
}

/// The health check's answer at `now`: per node `{"State", "HealthMetrics"}`.
fn health_answer(db: &Db, req: &HealthRequest, now: i64) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (node, h) in db.health(&req.cluster, &req.nodes, &req.metric_names, now) {
        let metrics = serde_json::json!({ "missing": h.missing, "degraded": h.degraded }).to_string();
        map.insert(node, serde_json::json!({ "State": h.state.as_str(), "HealthMetrics": metrics }));
    }
    serde_json::Value::Object(map)
}

/// `GET /api/healthcheck`: per node `{"State": "full"|"partial"|"failed", "HealthMetrics": "{\"missing\":[…],
/// \"degraded\":[…]}"}`, as cc-metric-store encodes its `HealthCheckResult`.
async fn healthcheck(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from)?;
    let req = parse_health(&body, st.limits)?;
    let out = blocking(move || Ok(health_answer(&st.db, &req, unix_now()))).await?;
    Ok(Json(out).into_response())
}

/// What the handlers of `/api/query`, `/api/free` and `/api/healthcheck` make of one body (see
/// [`fuzz_bodies`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct BodyOutcomes {
    /// `/api/query`: the answer as JSON text, or the error.
    pub query: Result<Vec<u8>, ApiError>,
    /// `/api/free` with `to` = `i64::MIN`: the pages freed (none can be older), or the error.
    pub free: Result<u64, ApiError>,
    /// `/api/healthcheck` at the given `now`: the answer, or the error.
    pub health: Result<serde_json::Value, ApiError>,
}

/// For the fuzz target `query_body` (`silt::fuzzing::check_query_body`): runs `body` through the very
/// functions the `/api/query`, `/api/free` and `/api/healthcheck` handlers run, parse, checks, limits and
/// the database calls, without HTTP. `/api/free` frees with `to` = `i64::MIN`, which frees nothing, so the
/// database is not changed. Not part of the API.
#[doc(hidden)]
pub fn fuzz_bodies(db: &Db, body: &[u8], limits: RequestLimits, now: i64) -> BodyOutcomes {
    let query = parse_query(body).and_then(|req| run_query(db, &req, limits)).and_then(|resp| {
        serde_json::to_vec(&resp).map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the answer does not serialize: {e}"),
        })
    });
    let free = parse_free(body).and_then(|sels| free_all(db, &sels, i64::MIN));
    let health = parse_health(body, limits).map(|req| health_answer(db, &req, now));
    BodyOutcomes { query, free, health }
}

#[derive(Deserialize)]
struct DebugParams {
    selector: Option<String>,
}

fn debug_json(l: &crate::query::DebugLevel) -> serde_json::Value {
    let metrics: serde_json::Map<String, serde_json::Value> = l
        .metrics
        .iter()
        .map(|(m, pages, bytes)| (m.clone(), serde_json::json!({ "pages": pages, "bytes": bytes })))
        .collect();
    let children: serde_json::Map<String, serde_json::Value> =
        l.children.iter().map(|c| (c.name.clone(), debug_json(c))).collect();
    serde_json::json!({ "metrics": metrics, "children": children })
}

/// `GET /api/debug?selector=cluster:host`: the tree below the selected levels with pages and bytes per metric.
async fn debug(State(st): State<AppState>, Query(p): Query<DebugParams>) -> Result<Response, ApiError> {
    let parts: Vec<SelectorElement> = p
        .selector
        .filter(|s| !s.is_empty())
        .map(|s| s.split(':').map(|x| SelectorElement::Name(x.to_owned())).collect())
        .unwrap_or_default();
    let sel = Selector::new(Namespace::Host, parts).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let levels = blocking(move || Ok(st.db.debug(&sel))).await?;
    let map: serde_json::Map<String, serde_json::Value> = levels
        .iter()
        .map(|l| (if l.name.is_empty() { "root".to_owned() } else { l.name.clone() }, debug_json(l)))
        .collect();
    Ok(Json(serde_json::Value::Object(map)).into_response())
}

/// `GET /metrics`: silt's own health in Prometheus text format. Every metric is present from the start (as 0
/// before anything happened), never an error because one has no value yet.
async fn prometheus(State(st): State<AppState>) -> Response {
    let text = st.metrics.render(&st.db, st.jobs.as_deref());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// How `silt serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// Address to listen on; loopback by default.
    pub addr: std::net::SocketAddr,
    /// Metrics to declare at start-up (cc-metric-store's `metrics` section).
    pub metrics: Vec<(String, crate::MetricConfig)>,
    /// Database options (durability, retention, memory cap …); the file system is the real one.
    pub db: crate::Options,
    /// Base64 Ed25519 public key: when set, every `/api/*` route needs a JWT signed by its private half.
    pub jwt_public_key: Option<String>,
    /// The NATS server and the subjects to ingest from (cc-metric-store's `nats` and
    /// `metric-store.nats-subscriptions`); `None` or no subscriptions: no NATS.
    pub nats: Option<(config::NatsConfig, Vec<config::NatsSubscription>)>,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP (cc-metric-store's
    /// `https-cert-file` and `https-key-file`).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Stream pipelines to start (the config's `pipelines`), besides those submitted through the API
    /// earlier, which the store keeps.
    pub pipelines: Vec<crate::stream::spec::PipelineSpec>,
    /// Worker slots (threads) of the stream engine.
    pub stream_slots: usize,
    /// `/api/write` bodies decoded at once (`main.write-workers`; [`default_write_workers`]).
    pub write_workers: usize,
}

/// Default for [`ServeOptions::stream_slots`]: the machine's cores, at least 2.
pub fn default_stream_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// Starts the stream engine with the configured pipelines and those the API submitted before.
fn start_streams(
    db: &Arc<Db>,
    slots: usize,
    configured: &[crate::stream::spec::PipelineSpec],
) -> Result<Arc<crate::stream::controller::StreamEngine>, Error> {
    let engine = crate::stream::controller::StreamEngine::new(slots, db.clone())
        .map_err(|e| Error::InvalidArgument(format!("starting the stream engine: {e}")))?;
    // The config's pipelines are the operator's word: one that cannot start stops the server.
    for spec in configured {
        pipelines::submit(&engine, db, spec)
            .map_err(|e| Error::InvalidArgument(format!("pipeline {:?}: {}", spec.name, e.message)))?;
        tracing::info!(pipeline = %spec.name, "pipeline started");
    }
    // Those posted to the API earlier may no longer fit (a metric gone from the config): they are skipped
    // with a warning rather than keeping the server down.
    let saved = pipelines::saved_specs(db).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the pipelines posted to the API cannot be read; none started");
        Vec::new()
    });
    for spec in saved {
        if configured.iter().any(|c| c.name == spec.name) {
            tracing::warn!(pipeline = %spec.name, "a pipeline of the config replaces one submitted through the API");
        } else if let Err(e) = pipelines::submit(&engine, db, &spec) {
            tracing::warn!(pipeline = %spec.name, error = %e.message, "a pipeline posted to the API cannot start");
        } else {
            tracing::info!(pipeline = %spec.name, "pipeline started");
        }
    }
    Ok(Arc::new(engine))
}

/// Runs the server until SIGINT or SIGTERM: stops accepting, lets requests in flight finish, checkpoints
/// and closes the database. `ready` gets the bound address once it listens (useful with port 0).
pub async fn serve(
    opts: ServeOptions,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), Error> {
    check_data_dir(&opts.data_dir)?;
    let auth = match &opts.jwt_public_key {
        Some(k) => Some(Arc::new(auth::Auth::from_base64(k).map_err(Error::InvalidArgument)?)),
        None => None,
    };
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls::load_config(cert, key)?),
        None => None,
    };
    let data_dir = opts.data_dir.clone();
    match (opts.db.block_retention, &opts.db.archive_dir) {
        (None, _) => tracing::info!("blocks are kept for ever (no metric-store.cleanup or block-retention)"),
        (Some(r), None) => tracing::info!(older_than = ?r, "blocks past the block retention are deleted"),
        (Some(r), Some(dir)) => {
            tracing::info!(older_than = ?r, to = %dir.display(), "blocks past the block retention are archived")
        }
    }
    let db = tokio::task::spawn_blocking(move || -> Result<Db, Error> {
        let db = Db::open(&data_dir, opts.db)?;
        for (name, config) in &opts.metrics {
            db.declare_metric(name, *config)?;
        }
        Ok(db)
    })
    .await
    .map_err(|e| Error::InvalidArgument(format!("opening the database failed: {e}")))??;
    let db = Arc::new(db);
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| crate::storage::StorageError::io("bind", opts.addr.to_string(), e))?;
    let addr = listener.local_addr().map_err(|e| crate::storage::StorageError::io("bind", opts.addr.to_string(), e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, data = %opts.data_dir.display(), "silt listening");
    match (&auth, addr.ip().is_loopback()) {
        (Some(_), _) => tracing::info!("JWT authentication (EdDSA) required on /api"),
        (None, true) => tracing::info!("no authentication configured: the API is open to local clients"),
        (None, false) => tracing::warn!(%addr, "listening beyond loopback WITHOUT authentication"),
    }
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let streams = {
        let (db, specs, slots) = (db.clone(), opts.pipelines.clone(), opts.stream_slots);
        tokio::task::spawn_blocking(move || start_streams(&db, slots, &specs))
            .await
            .map_err(|e| Error::InvalidArgument(format!("starting the stream engine failed: {e}")))??
    };
    let base = AppState::new(db.clone());
    let collector = {
        let (db, streams, metrics) = (db.clone(), streams.clone(), base.metrics.clone());
        tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let mut sources = metrics.services();
            sources.push(Arc::new(crate::jobs::service::EngineServices(db.clone())));
            crate::jobs::collector::Collector::new(db, Some(streams), sources)?
                .start(crate::jobs::rate::COLLECTION_RATE)
                .map(Arc::new)
        })
        .await
        .map_err(|e| Error::InvalidArgument(format!("starting the job-metrics collector failed: {e}")))??
    };
    let state = AppState {
        auth,
        streams: Some(streams.clone()),
        jobs: Some(collector.clone()),
        write_workers: WriteWorkers::new(opts.write_workers),
        ..base
    };
    let nats = match &opts.nats {
        Some((config, subs)) if !subs.is_empty() => Some(nats::NatsIngest::start(config, subs, state.clone()).await?),
        Some((config, _)) => {
            tracing::warn!(address = %config.address, "nats is configured but metric-store.nats-subscriptions is empty");
            None
        }
        None => None,
    };
    let router = app(state);
    let served = match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)
                .map_err(|e| crate::storage::StorageError::io("bind", addr.to_string(), e))?;
            axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await
        }
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await,
    }
    .map_err(|e| crate::storage::StorageError::io("serve", addr.to_string(), e));
    if let Some(n) = nats {
        tracing::info!("shutting down: draining NATS");
        n.stop().await;
    }
    tracing::info!("shutting down: stopping pipelines at a final checkpoint");
    let stopping = streams.clone();
    let _ = tokio::task::spawn_blocking(move || stopping.shutdown(std::time::Duration::from_secs(10))).await;
    drop(streams);
    // The collector's last tick is written before the database closes (dropping it joins its thread).
    let _ = tokio::task::spawn_blocking(move || {
        collector.tick_now();
        drop(collector);
    })
    .await;
    served?;
    tracing::info!("shutting down: checkpointing");
    let db = Arc::try_unwrap(db).map_err(|_| Error::InvalidArgument("requests still hold the database".into()))?;
    tokio::task::spawn_blocking(move || db.close())
        .await
        .map_err(|e| Error::InvalidArgument(format!("closing the database failed: {e}")))??;
    Ok(())
}

/// Refuses a directory that holds files but none of silt's (for example cc-metric-store's own checkpoint
/// directory named in its config): silt would mix its files into it.
fn check_data_dir(dir: &std::path::Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    let ours = ["MANIFEST", "LOCK", "wal", "head", "blocks"];
    if !names.is_empty() && !names.iter().any(|n| ours.contains(&n.as_str())) {
        return Err(Error::InvalidArgument(format!(
            "{} holds files but is not a silt data directory (is it cc-metric-store's checkpoint directory?): \
             choose another with --data",
            dir.display()
        )));
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::front_padding;

    #[test]
    fn front_padding_counts_steps_on_the_grid_before_1970_too() {
        assert_eq!(front_padding(0, 120, 60), 2);
        assert_eq!(front_padding(30, 120, 60), 2, "the request's step is 0");
        assert_eq!(front_padding(120, 120, 60), 0);
        assert_eq!(front_padding(180, 120, 60), 0, "an answer starting early is not padded");
        // -30 lies in the step [-60, 0): one step before an answer starting at 0 (truncating division
        // said none).
        assert_eq!(front_padding(-30, 0, 60), 1);
        assert_eq!(front_padding(-60, 60, 60), 2);
        assert_eq!(front_padding(-61, 60, 60), 3);
        assert_eq!(front_padding(0, 120, 0), 0, "no resolution, no padding");
    }
}
