//! The Kommo Chats API endpoint `POST /v2/origin/custom/{scope_id}/react`, as documented in
//! `shared/api/kommo-react.md`: header checks (Content-Type, Date window, Content-MD5,
//! X-Signature over the documented string) and body rules.
//!
//! Error bodies name the problem so a user can debug a 403 without guessing:
//! `{"error":"invalid_signature","message":"...","header":"X-Signature"}` (body problems carry
//! `"field"` instead of `"header"`). They never contain the secret or the expected signature;
//! a signature mismatch shows the string the sandbox signed, which holds no secret and can be
//! compared with `reactbatch sign kommo -v`.
//!
//! Success is `200 {"status":"accepted"}` (Kommo documents no body; "a 200 means accepted for
//! processing").

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::{HeaderMap, CONTENT_TYPE};
use serde::Deserialize;

use super::reply::{ErrorBody, Reply};
use super::Reaction;
use crate::secret::Secret;
use crate::sign::{content_md5, hmac_sha1_hex, string_to_sign, CONTENT_TYPE as JSON};

pub(crate) const PREFIX: &str = "/v2/origin/custom/";
pub(crate) const SUFFIX: &str = "/react";
/// How a message named only by `msgid` is keyed in the state (see [`parse`]).
pub(crate) const MSGID_PREFIX: &str = "msgid:";

/// The scope id of a Kommo react path, or `None` when `path` is not one.
pub(crate) fn scope_of(path: &str) -> Option<&str> {
    let scope = path.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (!scope.is_empty() && !scope.contains('/')).then_some(scope)
}

fn header_error(status: u16, error: &'static str, header: &'static str, message: String) -> Reply {
    Reply::error_body(
        status,
        ErrorBody {
            error,
            message: &message,
            header: Some(header),
            ..ErrorBody::default()
        },
    )
}

fn field_error(error: &'static str, field: &'static str, message: String) -> Reply {
    Reply::error_body(
        400,
        ErrorBody {
            error,
            message: &message,
            field: (!field.is_empty()).then_some(field),
            ..ErrorBody::default()
        },
    )
}

/// A required header as text; `name` is the documented spelling (lookup ignores case).
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, Reply> {
    let value = headers.get(name).ok_or_else(|| {
        header_error(
            403,
            "missing_header",
            name,
            format!("the {name} header is required on every Chats API request"),
        )
    })?;
    value.to_str().map_err(|_| {
        header_error(
            403,
            "invalid_header",
            name,
            format!("the {name} header is not valid ASCII"),
        )
    })
}

/// Checks the headers that make a request authentic, in the order a user fixes them.
pub(crate) fn authenticate(
    secret: &Secret,
    date_window: Duration,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Reply> {
    match headers.get(CONTENT_TYPE).map(|v| v.as_bytes()) {
        Some(v) if v == JSON.as_bytes() => {}
        other => {
            let got = other.map_or_else(
                || "no Content-Type".to_string(),
                |v| format!("`{}`", String::from_utf8_lossy(v)),
            );
            return Err(header_error(
                400,
                "unsupported_content_type",
                "Content-Type",
                format!(
                    "Content-Type must be exactly `{JSON}` (the only supported value); got {got}"
                ),
            ));
        }
    }

    let date = header(headers, "Date")?;
    let sent = DateTime::parse_from_rfc2822(date).map_err(|_| {
        header_error(
            403,
            "invalid_date",
            "Date",
            format!(
                "Date `{date}` is not RFC 2822 (expected e.g. `Thu, 01 Jan 2023 12:00:00 +0000`)"
            ),
        )
    })?;
    let skew = Utc::now().signed_duration_since(sent);
    let window = chrono::Duration::from_std(date_window).unwrap_or(chrono::Duration::MAX);
    if skew > window || -skew > window {
        let (secs, side) = if skew > chrono::TimeDelta::zero() {
            (skew.num_seconds(), "behind")
        } else {
            (-skew.num_seconds(), "ahead of")
        };
        return Err(header_error(
            403,
            "date_out_of_window",
            "Date",
            format!(
                "Date `{date}` is {} {side} the server clock; the signature is valid for {} \
                 around its Date: sign each attempt afresh",
                human(secs),
                human(date_window.as_secs() as i64)
            ),
        ));
    }

    let md5 = header(headers, "Content-MD5")?;
    let actual = content_md5(body);
    if md5 != actual {
        let hint = if md5.eq_ignore_ascii_case(&actual) {
            " (it must be lowercase hex)"
        } else {
            ""
        };
        return Err(header_error(
            403,
            "content_md5_mismatch",
            "Content-MD5",
            format!(
                "Content-MD5 does not match the received body ({} bytes, MD5 {actual}){hint}: \
                 hash the exact bytes sent, including any trailing newline or spaces",
                body.len()
            ),
        ));
    }

    let signature = header(headers, "X-Signature")?;
    let signed = string_to_sign(method, md5, JSON, date, path);
    let expected = hmac_sha1_hex(secret.expose().as_bytes(), signed.as_bytes());
    if !constant_time_eq(signature.as_bytes(), expected.as_bytes()) {
        let hint = if signature.eq_ignore_ascii_case(&expected) {
            " (it must be lowercase hex)"
        } else {
            " keyed with the channel secret"
        };
        let message = format!(
            "X-Signature does not match the HMAC-SHA1 of the signed string{hint}; \
             compare `signed_string` with `reactbatch sign kommo -v`"
        );
        return Err(Reply::error_body(
            403,
            ErrorBody {
                error: "invalid_signature",
                message: &message,
                header: Some("X-Signature"),
                signed_string: Some(&signed),
                ..ErrorBody::default()
            },
        ));
    }
    Ok(())
}

fn human(secs: i64) -> String {
    if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{secs} s")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct User<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ref_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    conversation_ref_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msgid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<User<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    emoji: Option<Cow<'a, str>>,
}

/// An absent, null or empty string counts as not given.
fn given<'a>(v: Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    v.filter(|s| !s.is_empty())
}

/// Applies the documented body rules. `unreact` becomes an empty emoji (remove).
pub(crate) fn parse(body: &[u8]) -> Result<Reaction<'_>, Reply> {
    let parsed: Body<'_> = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "the body has a field of the wrong type"
        } else {
            "the body is not a JSON object"
        };
        field_error("invalid_body", "", format!("{what}: {e}"))
    })?;
    let action = match given(parsed.kind).as_deref() {
        Some("react") => true,
        Some("unreact") => false,
        Some(other) => {
            return Err(field_error(
                "invalid_field",
                "type",
                format!("`type` must be `react` or `unreact`, got `{other}`"),
            ))
        }
        None => {
            return Err(field_error(
                "missing_field",
                "type",
                "`type` is required: `react` or `unreact`".into(),
            ))
        }
    };
    // `id` (Kommo's) and `msgid` (the integration's) are different namespaces: the same text
    // in both names two messages, so a msgid is kept under its own prefix.
    let msgid = given(parsed.msgid).map(|m| Cow::Owned(format!("{MSGID_PREFIX}{m}")));
    let message = given(parsed.id).or(msgid).ok_or_else(|| {
        field_error(
            "missing_field",
            "id",
            "one of `id` (Kommo message id) or `msgid` (integration message id) is required".into(),
        )
    })?;
    if given(parsed.conversation_id).is_none() && given(parsed.conversation_ref_id).is_none() {
        return Err(field_error(
            "missing_field",
            "conversation_id",
            "one of `conversation_id` or `conversation_ref_id` is required".into(),
        ));
    }
    let user = parsed
        .user
        .and_then(|u| given(u.id).or(given(u.ref_id)))
        .ok_or_else(|| {
            field_error(
                "missing_field",
                "user",
                "a `user` object with `id` or `ref_id` is required".into(),
            )
        })?;
    let emoji = if action {
        given(parsed.emoji).ok_or_else(|| {
            field_error(
                "missing_field",
                "emoji",
                "`emoji` is required when `type` is `react`".into(),
            )
        })?
    } else {
        Cow::Borrowed("")
    };
    Ok(Reaction {
        message,
        user,
        emoji,
    })
}

/// A `react` whose emoji is not exactly one emoji: Kommo's documented 400.
pub(crate) fn invalid_emoji(emoji: &str) -> Reply {
    field_error(
        "invalid_emoji",
        "emoji",
        format!(
            "`emoji` must be exactly one emoji; got `{}`",
            emoji.escape_debug()
        ),
    )
}

pub(crate) fn success() -> Reply {
    Reply::new(200, "ok", Bytes::from_static(br#"{"status":"accepted"}"#))
}

pub(crate) fn not_found(scope: &str, message: &str) -> Reply {
    Reply::error(
        404,
        "message_not_found",
        &format!("message `{message}` was not found in scope `{scope}`"),
    )
}

pub(crate) fn rate_limited(rate: &str) -> Reply {
    Reply::error(
        429,
        "rate_limit_exceeded",
        &format!("too many requests: the limit is {rate} per scope; retry later"),
    )
}

pub(crate) fn server_error(status: u16) -> Reply {
    let (error, text) = match status {
        502 => ("bad_gateway", "bad gateway"),
        503 => ("service_unavailable", "service temporarily unavailable"),
        _ => ("internal_error", "internal server error"),
    };
    Reply::error(status, error, &format!("{text} (injected by the sandbox)"))
}

pub(crate) fn method_not_allowed(method: &str) -> Reply {
    let mut reply = Reply::error(
        405,
        "method_not_allowed",
        &format!("{method} is not allowed here; use POST"),
    );
    reply.allow_post = true;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_the_single_segment_between_prefix_and_suffix() {
        assert_eq!(scope_of("/v2/origin/custom/abc_def/react"), Some("abc_def"));
        assert_eq!(scope_of("/v2/origin/custom//react"), None);
        assert_eq!(scope_of("/v2/origin/custom/a/b/react"), None);
        assert_eq!(scope_of("/v2/origin/custom/a/reactx"), None);
    }

    #[test]
    fn body_rules() {
        let ok = parse(br#"{"conversation_id":"c","msgid":"m","user":{"ref_id":"u"},"type":"react","emoji":"x"}"#)
            .expect("valid");
        assert_eq!((&*ok.message, &*ok.user, &*ok.emoji), ("msgid:m", "u", "x"));
        let both = parse(br#"{"conversation_id":"c","id":"k","msgid":"m","user":{"id":"u"},"type":"react","emoji":"x"}"#)
            .expect("valid");
        assert_eq!(both.message, "k");
        let unreact =
            parse(br#"{"conversation_ref_id":"c","id":"m","user":{"id":"u"},"type":"unreact"}"#)
                .expect("valid");
        assert_eq!(unreact.emoji, "");
        for (body, outcome) in [
            (&br#"[1]"#[..], "invalid_body"),
            (br#"{"type":"like"}"#, "invalid_field"),
            (
                br#"{"conversation_id":"c","user":{"id":"u"},"type":"react","emoji":"x"}"#,
                "missing_field",
            ),
            (
                br#"{"conversation_id":"c","id":"m","type":"react","emoji":"x"}"#,
                "missing_field",
            ),
            (
                br#"{"conversation_id":"c","id":"m","user":{},"type":"react","emoji":"x"}"#,
                "missing_field",
            ),
            (
                br#"{"id":"m","user":{"id":"u"},"type":"react","emoji":"x"}"#,
                "missing_field",
            ),
            (
                br#"{"conversation_id":"c","id":"m","user":{"id":"u"},"type":"react"}"#,
                "missing_field",
            ),
            (
                br#"{"conversation_id":"c","id":5,"user":{"id":"u"},"type":"react"}"#,
                "invalid_body",
            ),
        ] {
            let err = parse(body).err().expect("invalid");
            assert_eq!(err.status, 400);
            assert_eq!(err.outcome, outcome, "{}", String::from_utf8_lossy(body));
        }
    }
}
