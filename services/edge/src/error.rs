//! Errors as the edge answers them: gRPC codes mapped to HTTP statuses the way
//! google.rpc and grpc-gateway do, with the JSON body
//! `{"error": {"code", "status", "message", "details"}}`; `details` carries the
//! google.rpc details the service sent (BadRequest field violations, RetryInfo,
//! ErrorInfo) in proto3 JSON with their `@type`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

pub use emporium_common::status::code_name;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub http: StatusCode,
    /// The gRPC code it stands for.
    pub code: Code,
    /// Human-readable, safe to show.
    pub message: String,
    /// google.rpc details as JSON objects with `@type`.
    pub details: Vec<Value>,
    /// Seconds for `Retry-After` (RESOURCE_EXHAUSTED, UNAVAILABLE).
    pub retry_after: Option<u64>,
    /// Methods for `Allow` (405).
    pub allow: Vec<http::Method>,
}

/// The HTTP status of a gRPC code (google.rpc.Code's documented mapping).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error of `code` with the usual HTTP status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            http: http_status(code),
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            allow: Vec::new(),
        }
    }

    /// INVALID_ARGUMENT (400) with one field violation.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut e = Self::new(Code::InvalidArgument, format!("{field}: {description}"));
        e.details
            .push(bad_request(&[(field.to_owned(), description)]));
        e
    }

    /// 404 for a path no route has.
    pub fn no_route(method: &http::Method, path: &str) -> Self {
        Self::new(Code::NotFound, format!("no route for {method} {path}"))
    }

    /// 405 for a path that exists with other methods.
    pub fn wrong_method(method: &http::Method, path: &str, allow: Vec<http::Method>) -> Self {
        let mut e = Self::new(
            Code::Unimplemented,
            format!("{method} is not allowed on {path}"),
        );
        e.http = StatusCode::METHOD_NOT_ALLOWED;
        e.allow = allow;
        e
    }

    /// 413 for a body over `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        let mut e = Self::new(
            Code::OutOfRange,
            format!("request body is larger than {limit} bytes"),
        );
        e.http = StatusCode::PAYLOAD_TOO_LARGE;
        e
    }

    /// What a service's status becomes.
    pub fn from_status(status: &Status) -> Self {
        let mut e = Self::new(status.code(), status.message());
        let details = status.get_error_details();
        if let Some(br) = details.bad_request() {
            let violations: Vec<(String, String)> = br
                .field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect();
            e.details.push(bad_request(&violations));
        }
        if let Some(retry) = details.retry_info() {
            let delay = retry.retry_delay.unwrap_or_default();
            let secs = delay.as_secs_f64();
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{secs}s"),
            }));
            e.retry_after = Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0));
        }
        if let Some(info) = details.error_info() {
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info.reason,
                "domain": info.domain,
                "metadata": info.metadata,
            }));
        }
        if status.code() == Code::ResourceExhausted && e.retry_after.is_none() {
            e.retry_after = Some(1);
        }
        e
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "code": self.code as i32,
                "status": code_name(self.code),
                "message": self.message,
                "details": self.details,
            }
        })
    }
}

fn bad_request(violations: &[(String, String)]) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": violations
            .iter()
            .map(|(field, description)| json!({"field": field, "description": description}))
            .collect::<Vec<_>>(),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.http, self.body().to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if !self.allow.is_empty() {
            let allow = self
                .allow
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                headers.insert(header::ALLOW, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_http_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn field_violations_and_retry_info_become_details_and_retry_after() {
        let details = tonic_types::ErrorDetails::with_bad_request_violation(
            "items[0].quantity",
            "must be > 0",
        );
        let status = Status::with_error_details(Code::InvalidArgument, "bad order", details);
        let e = ApiError::from_status(&status);
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(body["error"]["code"], 3);
        assert_eq!(
            body["error"]["details"][0]["fieldViolations"][0]["field"],
            "items[0].quantity"
        );
        let retry = tonic_types::ErrorDetails::with_retry_info(Some(
            std::time::Duration::from_millis(1_500),
        ));
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", retry);
        let e = ApiError::from_status(&status);
        assert_eq!(e.http, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(2));
    }
}
