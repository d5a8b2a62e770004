//! An answer before it becomes an HTTP response: status, exact JSON body, and the few headers the
//! sandbox ever adds. Provider modules build these; the server turns them into responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Marks answers produced by fault injection, so a user reading a trace can tell an injected
/// 5xx from a real one without the body changing shape.
pub(crate) const FAULT_HEADER: &str = "x-sandbox-fault";

/// An error body that names the problem; fields in this order on the wire.
#[derive(Serialize, Default)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: &'static str,
    pub(crate) message: &'a str,
    /// The request header at fault (Kommo authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) header: Option<&'static str>,
    /// The body field at fault (Kommo body rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<&'static str>,
    /// On a signature mismatch: the string the sandbox signed (holds no secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signed_string: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    /// Short machine name of the outcome for the request log (`ok`, `invalid_signature`, ...).
    pub(crate) outcome: &'static str,
    /// Seconds for a `Retry-After` header (429 only, when configured).
    pub(crate) retry_after: Option<u64>,
    /// Adds `Allow: POST` (405).
    pub(crate) allow_post: bool,
    /// Adds the fault marker header.
    pub(crate) injected: bool,
}

impl Reply {
    pub(crate) fn new(status: u16, outcome: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            body: body.into(),
            outcome,
            retry_after: None,
            allow_post: false,
            injected: false,
        }
    }

    /// `{"error": error, "message": message}`: the sandbox's own error shape (Kommo's and the
    /// control endpoints').
    pub(crate) fn error(status: u16, error: &'static str, message: &str) -> Reply {
        Reply::error_body(
            status,
            ErrorBody {
                error,
                message,
                ..ErrorBody::default()
            },
        )
    }

    pub(crate) fn error_body(status: u16, body: ErrorBody<'_>) -> Reply {
        // Serialising a struct of strings cannot fail.
        Reply::new(
            status,
            body.error,
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.allow_post {
            headers.insert(ALLOW, HeaderValue::from_static("POST"));
        }
        if self.injected {
            headers.insert(FAULT_HEADER, HeaderValue::from_static("server-error"));
        }
        response
    }
}
