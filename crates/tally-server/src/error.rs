//! The one error type of the HTTP edge: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered over HTTP. 5xx messages never carry internal detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    extra: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl ApiError {
    /// An error with a stable code and an operator-readable message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            extra: Vec::new(),
        }
    }

    /// Adds a response header (never one carrying a secret).
    pub fn with_header(
        mut self,
        name: axum::http::HeaderName,
        value: axum::http::HeaderValue,
    ) -> ApiError {
        self.extra.push((name, value));
        self
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with `code`; the message is generic.
    pub fn unavailable(code: &'static str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "the service cannot complete this request safely right now; see the server log",
        )
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// Describes why a request body was refused without repeating any of it: serde's
/// messages quote the offending values, which may be passwords or tokens.
pub(crate) fn body_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "unreadable body",
        Category::Syntax => "not valid JSON",
        Category::Data => "JSON of the wrong shape (a missing, unknown or mistyped field)",
        Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// The same for a rejected JSON body, in axum's terms.
pub(crate) fn json_rejection_problem(e: &axum::extract::rejection::JsonRejection) -> String {
    use axum::extract::rejection::JsonRejection;
    match e {
        JsonRejection::JsonDataError(_) => {
            "JSON of the wrong shape (a missing, unknown or mistyped field)".into()
        }
        JsonRejection::JsonSyntaxError(_) => "not valid JSON".into(),
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as Content-Type: application/json".into()
        }
        _ => "unreadable body".into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        for (name, value) in self.extra {
            r.headers_mut().insert(name, value);
        }
        r
    }
}
