//! The HTTP routes: fieldkit's JSON API (`/v1`), the Open Inference Protocol (`/v2`, what
//! KServe and Triton clients speak), Prometheus `/metrics`, and model management.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldkit_runtime::{LoadOptions, PredictOptions};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::{
    ErrorBody, InferOutput, InferResponse, Live, Loaded, ModelEntry, ModelList, ModelMetadata, PredictResponse,
    PredictTiming, Ready, ServerMetadata, TensorMetadata, Unloaded,
};
use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::metrics::{Metrics, ModelLabel, RequestLabels};
use crate::pool::{Done, Input, Output, Pool};
use crate::registry::{allowed, Model, Registry};

pub struct AppState {
    pub models: Registry,
    pub pool: Pool,
    pub metrics: Metrics,
    pub cfg: ServeConfig,
    /// sha256 of the bearer token, compared in constant time.
    token_hash: Option<[u8; 32]>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(cfg: ServeConfig) -> Self {
        let token_hash = cfg.token.as_ref().map(|t| Sha256::digest(t.as_bytes()).into());
        AppState {
            models: Registry::new(LoadOptions {
                cache: cfg.nnef_cache.clone(),
                layout: cfg.layout,
                precision: cfg.precision,
            }),
            pool: Pool::new(cfg.workers, cfg.queue),
            metrics: Metrics::new(),
            cfg,
            token_hash,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    /// Runs one request on the workers, recording its queue wait and worker time.
    async fn infer(&self, model: Arc<Model>, input: Input) -> Result<Done, ServeError> {
        let name = model.name.clone();
        let rx = self.pool.submit(model, input, self.timeout())?;
        let done = match tokio::time::timeout(self.timeout(), rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ServeError::Internal("the inference worker stopped".into())),
            Err(_) => return Err(ServeError::Timeout(self.cfg.timeout_ms)),
        };
        let label = ModelLabel { model: name };
        self.metrics.queue_wait.get_or_create(&label).observe(done.queue_s);
        self.metrics.inference.get_or_create(&label).observe(done.run_s);
        Ok(done)
    }
}

pub fn router(state: Shared) -> Router {
    let protected = Router::new()
        .route("/v1/models", get(list_models).post(load_model))
        .route("/v1/models/{name}", axum::routing::delete(unload_model))
        .route("/v1/models/{name}/predict", post(predict))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let public = Router::new().route("/v2/health/live", get(live)).route("/v2/health/ready", get(ready));
    let limit = (state.cfg.max_body_mb * 1024.0 * 1024.0) as usize;
    public
        .merge(protected)
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(ErrorBody { error: "no such route".into() })) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), declared_size))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(want) = &s.token_hash {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
        let ok = given.is_some_and(|g| bool::from(g.ct_eq(want)));
        if !ok {
            return ServeError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Refuses a body whose declared length is over the limit before reading it (so a client
/// sending `Expect: 100-continue` never uploads it); bodies without a length are cut at the
/// limit while being read.
async fn declared_size(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let limit = s.cfg.max_body_mb * 1024.0 * 1024.0;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ServeError::TooLarge(format!(
            "request body of {} bytes is over the {} MB limit",
            declared.unwrap_or(0.0),
            s.cfg.max_body_mb
        ))
        .into_response();
    }
    next.run(req).await
}

/// Counts every request by model, route and status, and logs it.
async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let t = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let model = model_in_path(&route, req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    s.metrics.requests.get_or_create(&RequestLabels { model: model.unwrap_or_default(), route, status }).inc();
    tracing::info!(%method, %path, status, ms = t.elapsed().as_secs_f64() * 1e3, "request");
    resp
}

/// The `{name}` segment of `path` under the route template.
fn model_in_path(route: &str, path: &str) -> Option<String> {
    let i = route.split('/').position(|s| s == "{name}")?;
    path.split('/').nth(i).map(str::to_string)
}

async fn live() -> Json<Live> {
    Json(Live { live: true })
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.models.is_empty() {
        let body = Ready { name: None, ready: false, error: Some("no model loaded".into()) };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(Ready { name: None, ready: true, error: None }).into_response()
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata { name: "fieldkit", version: env!("CARGO_PKG_VERSION"), extensions: Vec::new() })
}

fn input_shape(m: &Model) -> Vec<usize> {
    let (w, h) = m.engine.input_size();
    vec![1, 3, h as usize, w as usize]
}

async fn model_metadata(State(s): State<Shared>, Path(name): Path<String>) -> Result<Json<ModelMetadata>, ServeError> {
    let m = s.models.get(&name)?;
    let card = m.engine.card();
    Ok(Json(ModelMetadata {
        name: m.name.clone(),
        versions: vec![m.version.to_string()],
        platform: "tract_onnx",
        inputs: vec![TensorMetadata { name: card.input.name.clone(), datatype: "FP32", shape: input_shape(&m) }],
        outputs: vec![TensorMetadata {
            name: card.decode.output().to_string(),
            datatype: "FP32",
            shape: m.engine.output_shape().to_vec(),
        }],
    }))
}

async fn model_ready(State(s): State<Shared>, Path(name): Path<String>) -> Result<Json<Ready>, ServeError> {
    let m = s.models.get(&name)?;
    Ok(Json(Ready { name: Some(m.name.clone()), ready: true, error: None }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictQuery {
    conf: Option<f32>,
    iou: Option<f32>,
    agnostic: Option<bool>,
    max_det: Option<usize>,
    top_k: Option<usize>,
}

impl PredictQuery {
    /// The request's options: the CLI's defaults (`PredictOptions::default()`), overridden by
    /// the query, checked under the same names as `fieldkit predict`'s flags.
    fn options(&self) -> Result<PredictOptions, ServeError> {
        let mut o = PredictOptions::default();
        if let Some(v) = self.conf {
            o.nms.score_threshold = v;
        }
        if let Some(v) = self.iou {
            o.nms.iou_threshold = v;
        }
        if let Some(v) = self.agnostic {
            o.nms.class_agnostic = v;
        }
        if let Some(v) = self.max_det {
            o.nms.max_detections = v;
        }
        if let Some(v) = self.top_k {
            o.top_k = v.max(1);
        }
        o.nms.validate().map_err(|e| ServeError::BadRequest(e.to_string()))?;
        Ok(o)
    }
}

/// A body that could not be read: too large (413) or malformed (400).
fn unreadable(status: StatusCode, text: String, limit_mb: f64) -> ServeError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ServeError::TooLarge(format!("request body over the {limit_mb} MB limit"))
    } else {
        ServeError::BadRequest(text)
    }
}

/// The image of a request: the raw body, or the first file part of a multipart form.
async fn image_body(req: Request, limit_mb: f64) -> Result<Vec<u8>, ServeError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let bytes = if multipart {
        let mut form =
            Multipart::from_request(req, &()).await.map_err(|e| unreadable(e.status(), e.body_text(), limit_mb))?;
        let field = form
            .next_field()
            .await
            .map_err(|e| unreadable(e.status(), e.body_text(), limit_mb))?
            .ok_or_else(|| ServeError::BadRequest("multipart form without a file".into()))?;
        field.bytes().await.map_err(|e| unreadable(e.status(), e.body_text(), limit_mb))?
    } else {
        Bytes::from_request(req, &()).await.map_err(|e| unreadable(e.status(), e.body_text(), limit_mb))?
    };
    if bytes.is_empty() {
        return Err(ServeError::BadRequest("empty body: send a JPEG or PNG".into()));
    }
    Ok(bytes.to_vec())
}

async fn predict(
    State(s): State<Shared>,
    Path(name): Path<String>,
    query: Result<Query<PredictQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Json<PredictResponse>, ServeError> {
    let t = Instant::now();
    let Query(q) = query.map_err(|e| ServeError::BadRequest(e.body_text()))?;
    let opts = q.options()?;
    let model = s.models.get(&name)?;
    let bytes = image_body(req, s.cfg.max_body_mb).await?;
    let version = model.version;
    let done = s.infer(model, Input::Image(bytes, opts)).await?;
    let Output::Prediction(p) = done.output else {
        return Err(ServeError::Internal("tensor output for an image request".into()));
    };
    Ok(Json(PredictResponse {
        model: name,
        version: version.to_string(),
        width: p.width,
        height: p.height,
        timing: PredictTiming {
            queue_ms: done.queue_s * 1e3,
            preprocess_ms: p.timing.preprocess_ms,
            inference_ms: p.timing.inference_ms,
            postprocess_ms: p.timing.postprocess_ms,
            total_ms: t.elapsed().as_secs_f64() * 1e3,
        },
        output: p.output.into(),
    }))
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    inputs: Vec<InferTensor>,
}

#[derive(Debug, Deserialize)]
struct InferTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    parameters: Option<Value>,
}

/// Row-major flattening of nested JSON arrays of numbers.
fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), ServeError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        other => Err(ServeError::BadRequest(format!("tensor data holds {other}, expected numbers"))),
    }
}

async fn infer(
    State(s): State<Shared>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<InferResponse>, ServeError> {
    let body = body.map_err(|e| unreadable(e.status(), e.body_text(), s.cfg.max_body_mb))?;
    // Clients (tritonclient among them) do not always say application/json; the binary tensor
    // extension puts the JSON header first and says how long it is.
    let json_len = match headers.get("inference-header-content-length") {
        Some(v) => {
            v.to_str().ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n <= body.len()).ok_or_else(|| {
                ServeError::BadRequest(format!(
                    "Inference-Header-Content-Length {v:?} does not fit the {}-byte body",
                    body.len()
                ))
            })?
        }
        None => body.len(),
    };
    let req: InferRequest = serde_json::from_slice(&body[..json_len])
        .map_err(|e| ServeError::BadRequest(format!("not an inference request: {e}")))?;
    let mut binary = &body[json_len..];
    let model = s.models.get(&name)?;
    let card = model.engine.card();
    let [input] = req.inputs.as_slice() else {
        return Err(ServeError::BadRequest(format!(
            "{} inputs given; model {name:?} takes one, {:?}",
            req.inputs.len(),
            card.input.name
        )));
    };
    if input.name != card.input.name {
        return Err(ServeError::BadRequest(format!(
            "input {:?}: model {name:?} takes {:?}",
            input.name, card.input.name
        )));
    }
    if input.datatype != "FP32" {
        return Err(ServeError::BadRequest(format!("datatype {:?}: model {name:?} takes FP32", input.datatype)));
    }
    let want = input_shape(&model);
    if input.shape.iter().map(|&d| d as i128).ne(want.iter().map(|&d| d as i128)) {
        return Err(ServeError::BadRequest(format!("shape {:?}: model {name:?} takes {want:?}", input.shape)));
    }
    let mut data = Vec::with_capacity(want.iter().product());
    match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64) {
        Some(n) => {
            let n = n as usize;
            if n > binary.len() || !n.is_multiple_of(4) {
                return Err(ServeError::BadRequest(format!(
                    "binary_data_size {n} does not fit the {} binary bytes",
                    binary.len()
                )));
            }
            data.extend(binary[..n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            binary = &binary[n..];
        }
        None => flatten(&input.data, &mut data)?,
    }
    if !binary.is_empty() {
        return Err(ServeError::BadRequest(format!("{} binary bytes not claimed by any input", binary.len())));
    }
    if data.len() != want.iter().product::<usize>() {
        return Err(ServeError::BadRequest(format!(
            "{} values for shape {want:?} ({} expected)",
            data.len(),
            want.iter().product::<usize>()
        )));
    }
    let (output_name, output_shape, version) =
        (card.decode.output().to_string(), model.engine.output_shape().to_vec(), model.version);
    let done = s.infer(model, Input::Tensor(data)).await?;
    let Output::Tensor(out) = done.output else {
        return Err(ServeError::Internal("image output for a tensor request".into()));
    };
    Ok(Json(InferResponse {
        model_name: name,
        model_version: version.to_string(),
        id: req.id,
        outputs: vec![InferOutput { name: output_name, datatype: "FP32", shape: output_shape, data: out }],
    }))
}

async fn metrics(State(s): State<Shared>) -> Response {
    let text = s.metrics.render(&s.models, &s.pool);
    ([(header::CONTENT_TYPE, crate::exporter::CONTENT_TYPE)], text).into_response()
}

async fn list_models(State(s): State<Shared>) -> Json<ModelList> {
    let models = s
        .models
        .list()
        .iter()
        .map(|m| {
            let card = m.engine.card();
            ModelEntry {
                name: m.name.clone(),
                version: m.version.to_string(),
                path: m.path.clone(),
                sha256: m.sha256.clone(),
                task: card.task,
                classes: card.classes.clone(),
                input: input_shape(m),
                in_flight: m.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            }
        })
        .collect();
    Json(ModelList { models })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    name: String,
    path: PathBuf,
}

async fn load_model(
    State(s): State<Shared>,
    body: Result<Json<LoadRequest>, JsonRejection>,
) -> Result<Json<Loaded>, ServeError> {
    let Json(req) = body.map_err(|e| ServeError::BadRequest(e.body_text()))?;
    crate::config::check_name(&req.name)?;
    let path = allowed(s.cfg.model_dir.as_deref(), &req.path)?;
    let state = s.clone();
    let m = tokio::task::spawn_blocking(move || state.models.load(&req.name, &path))
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))??;
    tracing::info!(model = %m.name, version = m.version, path = %m.path.display(), load_ms = m.engine.load_ms(), from = ?m.engine.load_source(), "loaded");
    Ok(Json(Loaded { name: m.name.clone(), version: m.version.to_string(), sha256: m.sha256.clone() }))
}

async fn unload_model(State(s): State<Shared>, Path(name): Path<String>) -> Result<Json<Unloaded>, ServeError> {
    let m = s.models.remove(&name)?;
    tracing::info!(model = %m.name, "unloaded");
    Ok(Json(Unloaded { name: m.name.clone(), unloaded: true }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn model_label_from_the_matched_route() {
        assert_eq!(
            super::model_in_path("/v1/models/{name}/predict", "/v1/models/weeds/predict").as_deref(),
            Some("weeds")
        );
        assert_eq!(super::model_in_path("/metrics", "/metrics"), None);
    }
}
