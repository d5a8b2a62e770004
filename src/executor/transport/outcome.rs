//! What one exchange comes to, as an [`AttemptOutcome`]: an answer's status, `Retry-After`
//! and the provider's code and message (a 2xx whose body refuses included), or why no answer
//! came, with a connection that could not be made told apart from one that dropped, and a
//! certificate only the user's trust settings can fix named as such.

use super::pool::Failure;
use crate::executor::retry::{parse_retry_after, retry_after_in_body, AttemptOutcome};
#[cfg(test)]
use crate::executor::Clock;

/// [`answered_at`] on the wall clock (the simulated provider's answers).
#[cfg(test)]
pub(in crate::executor) fn answered(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> AttemptOutcome {
    answered_at(status, retry_after, body, Clock::System.now())
}

/// The outcome of an answer: its status, `Retry-After` (a date in it read against `now`),
/// and the provider's code and message.
pub(super) fn answered_at(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> AttemptOutcome {
    let (code, message) = if (200..300).contains(&status) {
        // Empty unless the body refuses despite the status (Ogmma `success: false`):
        // a code on a 2xx makes it a final failure.
        refusal_in_success(body)
    } else {
        error_fields(status, body)
    };
    AttemptOutcome::Answered {
        status,
        retry_after: retry_after
            .and_then(|v| parse_retry_after(v, now))
            .or_else(|| (status >= 400).then(|| retry_after_in_body(body)).flatten()),
        code,
        message,
    }
}

/// Code and message of a 2xx body that says the request was not done: a JSON object with
/// `"success": false` (Ogmma), with its `code`/`message` or `success_false`. Empty otherwise.
fn refusal_in_success(body: &[u8]) -> (String, String) {
    // Most 2xx bodies say nothing of the kind: no JSON parse for them.
    if !body.windows(5).any(|w| w == b"false") {
        return (String::new(), String::new());
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return (String::new(), String::new());
    };
    if map.get("success") != Some(&serde_json::Value::Bool(false)) {
        return (String::new(), String::new());
    }
    let text = |k: &str| {
        map.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| one_line(s, 300))
    };
    (
        text("code").unwrap_or_else(|| "success_false".into()),
        text("message").unwrap_or_else(|| "the provider answered success: false".into()),
    )
}

/// The provider's error code and message from a JSON body (`code`/`error` and
/// `message`/`detail`), else `http_<status>` and the body's first line.
fn error_fields(status: u16, body: &[u8]) -> (String, String) {
    let fallback_code = format!("http_{status}");
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = |k: &str| {
            map.get(k)
                .and_then(|v| v.as_str())
                .map(|s| one_line(s, 300))
        };
        let code = text("code")
            .or_else(|| text("error"))
            .unwrap_or(fallback_code);
        let message = text("message")
            .or_else(|| text("detail"))
            .unwrap_or_default();
        return (code, message);
    }
    (fallback_code, one_line(&String::from_utf8_lossy(body), 300))
}

/// The outcome of a request that got no answer. A connection that could not be established
/// (refused, DNS, connect timeout, TLS handshake) is `Unreachable`, named by its origin; one
/// that dropped once open is `Connection`. Every message names `host:port`.
pub(super) fn failed(origin: &str, e: &Failure) -> AttemptOutcome {
    let e = match e {
        Failure::Dropped(_) => {
            return AttemptOutcome::Connection(format!("{origin}: {}", describe(e)))
        }
        Failure::ConnectTimeout => {
            return AttemptOutcome::Unreachable {
                origin: origin.to_string(),
                code: "connection".into(),
                message: format!("{origin}: no connection could be made in time"),
            }
        }
        Failure::Connect(e) => e,
    };
    let (code, message) = match certificate_problem(e) {
        Some(problem) => (
            "tls",
            format!(
                "{origin}: the server's certificate is not trusted ({problem}); if a private \
                 or corporate CA signed it, pass --ca-cert FILE (PEM) or set \
                 `settings: ca_cert:`"
            ),
        ),
        None if tls_failure(e) => ("tls", format!("{origin}: TLS handshake: {}", innermost(e))),
        None => ("connection", format!("{origin}: {}", innermost(e))),
    };
    AttemptOutcome::Unreachable {
        origin: origin.to_string(),
        code: code.into(),
        message,
    }
}
/// Why a request got no answer, in one line.
pub(super) fn describe(e: &Failure) -> String {
    match e {
        Failure::Connect(e) => innermost(e),
        Failure::ConnectTimeout => "no connection could be made in time".into(),
        Failure::Dropped(Some(e)) => innermost(e),
        Failure::Dropped(None) => "the connection closed before the answer".into(),
    }
}

/// The certificate problem behind a transport error, if that is what it is: retrying cannot
/// fix it, the user's trust settings can.
fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use tokio_rustls::rustls::Error as TlsError;
    causes(e)
        .find_map(|s| s.downcast_ref::<TlsError>())
        .and_then(|err| match err {
            TlsError::InvalidCertificate(_)
            | TlsError::NoCertificatesPresented
            | TlsError::UnsupportedNameType => Some(one_line(&err.to_string(), 200)),
            _ => None,
        })
}

/// Whether a TLS error lies behind `e` (a handshake the server refused, a protocol the two
/// sides do not share): retrying does not change it.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|s| s.is::<tokio_rustls::rustls::Error>())
}

/// The causes of `e`, outermost first. rustls and socket errors arrive wrapped in
/// io::Errors, whose `source()` skips the wrapped error: step into it instead.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |s| match s.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => s.source(),
    })
}

/// The innermost cause of `e`, in one line.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let text = causes(e)
        .last()
        .map_or_else(|| e.to_string(), |s| s.to_string());
    one_line(&text, 200)
}

/// `text` on one line (control characters as spaces, trimmed), cut to `max` characters.
pub(super) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_false_is_a_refusal_with_the_body_code() {
        assert_eq!(
            refusal_in_success(br#"{"success":true,"message":"Reacao processada"}"#),
            (String::new(), String::new())
        );
        assert_eq!(
            refusal_in_success(br#"{"success":false,"code":"X","message":"no"}"#),
            ("X".into(), "no".into())
        );
        assert_eq!(
            refusal_in_success(br#"{"success":false}"#).0,
            "success_false"
        );
        assert_eq!(refusal_in_success(b"ok").0, "");
    }

    #[test]
    fn error_fields_reads_provider_json_or_falls_back() {
        let body = br#"{"message":"Mensagem nao encontrada.","code":"MESSAGE_NOT_FOUND"}"#;
        assert_eq!(
            error_fields(404, body),
            (
                "MESSAGE_NOT_FOUND".into(),
                "Mensagem nao encontrada.".into()
            )
        );
        assert_eq!(
            error_fields(502, b"<html>\nbad gateway"),
            ("http_502".into(), "<html> bad gateway".into())
        );
    }
}
