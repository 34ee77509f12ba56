use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Every failure a client can see, with its HTTP status; the body is `{"error": "..."}` (the
/// Open Inference Protocol's error shape).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("model {0:?} has {1} requests waiting; retry later")]
    Busy(String, usize),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::Config(_) | ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::UnknownModel(_) => StatusCode::NOT_FOUND,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServeError::Busy(..) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(crate::api::ErrorBody { error: self.to_string() });
        let mut r = (status, body).into_response();
        match self {
            ServeError::Busy(..) => {
                r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            }
            ServeError::Unauthorized => {
                r.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}
