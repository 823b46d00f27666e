//! `/api/pipelines`: stream pipelines in their declarative form ([`crate::stream::spec`]).
//!
//! - `GET /api/pipelines`: every pipeline with its state, restarts, last checkpoint and error.
//! - `POST /api/pipelines` (body: one pipeline spec as JSON): validates, builds and starts it; `201` with
//!   its info. A bad spec is `400` naming the field; a name in use by a pipeline that is not stopped is
//!   `409`. The spec is kept in the store, so the pipeline starts again (from its checkpoint) with the server.
//! - `GET /api/pipelines/{name}`: one pipeline; `404` if unknown.
//! - `POST /api/pipelines/{name}/stop?mode=graceful|immediate` (default graceful): `202`.
//! - `DELETE /api/pipelines/{name}`: stops it at once and forgets its spec and checkpoint; `204`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};
use crate::stream::controller::{checkpoint_name, PipelineDef, StopMode, StreamEngine};
use crate::stream::spec::PipelineSpec;
use crate::stream::StreamError;
use crate::Db;

/// The store entry holding the specs submitted through the API (a JSON array).
pub const SPECS_STATE: &str = "stream.api-pipelines";

fn engine(st: &AppState) -> Result<&Arc<StreamEngine>, ApiError> {
    st.streams.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the stream engine is not running in this server".into(),
    })
}

fn stream_error(e: StreamError) -> ApiError {
    let status = match e {
        StreamError::Exists(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError { status, message: e.to_string() }
}

/// Builds and submits a spec.
pub fn submit(engine: &StreamEngine, db: &Arc<Db>, spec: &PipelineSpec) -> Result<(), ApiError> {
    let graph = spec.build(db.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut def = PipelineDef::new(&spec.name, graph);
    def.checkpoint_interval = spec.checkpoint_interval();
    def.description = serde_json::to_value(spec).ok();
    engine.submit(def).map_err(stream_error)?;
    Ok(())
}

/// The specs submitted through the API, as kept in the store.
pub fn saved_specs(db: &Db) -> Result<Vec<PipelineSpec>, crate::Error> {
    let Some(bytes) = db.state(SPECS_STATE)? else { return Ok(Vec::new()) };
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| crate::Error::InvalidArgument(format!("{SPECS_STATE}: {e}")))?;
    values
        .iter()
        .map(|v| PipelineSpec::from_value(v).map_err(|e| crate::Error::InvalidArgument(format!("{SPECS_STATE}: {e}"))))
        .collect()
}

fn save_specs(db: &Db, specs: &[PipelineSpec]) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(specs).map_err(|e| ApiError::bad_request(e.to_string()))?;
    db.put_state(SPECS_STATE, &bytes).map_err(ApiError::from)
}

pub(super) async fn list(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(engine(&st)?.list()).into_response())
}

pub(super) async fn get_one(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let h = engine(&st)?.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(h.info()).into_response())
}

fn not_found(name: &str) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, message: format!("no pipeline {name:?}") }
}

pub(super) async fn create(State(st): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let engine = engine(&st)?.clone();
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let spec = PipelineSpec::from_json(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let db = st.db.clone();
    let name = spec.name.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        submit(&engine, &db, &spec)?;
        let mut specs = saved_specs(&db)?;
        specs.retain(|s| s.name != spec.name);
        specs.push(spec);
        save_specs(&db, &specs)
    })
    .await
    .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })??;
    let info = st.streams.as_ref().and_then(|e| e.get(&name)).map(|h| h.info());
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `?mode=` of a stop.
#[derive(serde::Deserialize)]
pub(super) struct StopQuery {
    mode: Option<String>,
}

pub(super) async fn stop(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    let mode = match q.mode.as_deref() {
        None | Some("graceful") => StopMode::Graceful,
        Some("immediate") => StopMode::Immediate,
        Some(m) => return Err(ApiError::bad_request(format!("mode {m:?}: want graceful or immediate"))),
    };
    let h = engine(&st)?.get(&name).ok_or_else(|| not_found(&name))?;
    h.stop(mode);
    Ok((StatusCode::ACCEPTED, Json(h.info())).into_response())
}

pub(super) async fn delete(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let engine = engine(&st)?.clone();
    let h = engine.get(&name).ok_or_else(|| not_found(&name))?;
    let db = st.db.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        h.stop(StopMode::Immediate);
        let done = h.wait_for(std::time::Duration::from_secs(10), |i| {
            matches!(
                i.state,
                crate::stream::controller::PipelineState::Stopped | crate::stream::controller::PipelineState::Failed
            )
        });
        if !matches!(
            done.state,
            crate::stream::controller::PipelineState::Stopped | crate::stream::controller::PipelineState::Failed
        ) {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("pipeline {name:?} did not stop within 10 s"),
            });
        }
        let mut specs = saved_specs(&db)?;
        specs.retain(|s| s.name != name);
        save_specs(&db, &specs)?;
        db.delete_state(&checkpoint_name(&name))?;
        engine.remove(&name);
        Ok(())
    })
    .await
    .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
