//! The Ogmma endpoint `POST /v1/channels/{channelId}/messages/react`, as documented in
//! `shared/api/ogmma-react.txt`: `Authorization: Bearer KEY`, body `{messageId, emoji}`, an
//! empty emoji removes the sender's reaction. The documented bodies (200, 401, 404, 429) are
//! reproduced byte for byte; the undocumented ones (400, 405, 5xx) follow the same
//! `{"message", "code"}` shape in Portuguese without accents, as the documented ones are.

use std::borrow::Cow;

use bytes::Bytes;
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};

use super::reply::Reply;
use super::state::OGMMA_USER;
use super::Reaction;
use crate::secret::Secret;

pub(crate) const PREFIX: &str = "/v1/channels/";
pub(crate) const SUFFIX: &str = "/messages/react";

pub(crate) const SUCCESS: &str = r#"{"success":true,"message":"Reacao processada"}"#;
pub(crate) const UNAUTHORIZED: &str =
    r#"{"message":"Token de autenticacao invalido ou ausente.","code":"UNAUTHORIZED"}"#;
pub(crate) const NOT_FOUND: &str =
    r#"{"message":"Mensagem nao encontrada.","code":"MESSAGE_NOT_FOUND"}"#;
pub(crate) const RATE_LIMITED: &str = r#"{"message":"Limite de requisicoes excedido. Tente novamente em alguns segundos.","code":"RATE_LIMIT_EXCEEDED"}"#;

/// The channel id of an Ogmma react path, or `None` when `path` is not one.
pub(crate) fn channel_of(path: &str) -> Option<&str> {
    let channel = path.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (!channel.is_empty() && !channel.contains('/')).then_some(channel)
}

/// `Authorization: Bearer KEY` with one of the sandbox's keys (the scheme name is
/// case-insensitive). Returns which key: each customer's key is limited on its own.
pub(crate) fn authenticate(keys: &[Secret], headers: &HeaderMap) -> Result<usize, Reply> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Every key is compared, whichever matches: the time taken says nothing about which.
    let matched = presented.and_then(|token| {
        keys.iter().enumerate().fold(None, |found, (i, key)| {
            let same = constant_time_eq(token.as_bytes(), key.expose().as_bytes());
            found.or(same.then_some(i))
        })
    });
    match matched {
        Some(i) => Ok(i),
        None => Err(Reply::new(
            401,
            "unauthorized",
            Bytes::from_static(UNAUTHORIZED.as_bytes()),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ogmma's error shape: `{"message", "code"}`, in that order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    code: &'static str,
}

fn invalid(message: String) -> Reply {
    let body = ErrorBody {
        message: &message,
        code: "VALIDATION_ERROR",
    };
    // Serialising a struct of strings cannot fail.
    Reply::new(
        400,
        "validation_error",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    emoji: Option<Cow<'a, str>>,
}

/// Content-Type `application/json` (parameters such as `charset` allowed) and the body rules.
pub(crate) fn parse<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<Reaction<'b>, Reply> {
    let json_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(invalid(
            "Content-Type deve ser application/json.".to_string(),
        ));
    }
    let parsed: Body<'_> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Corpo da requisicao invalido: {e}.")))?;
    let message = parsed
        .message_id
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("O campo messageId e obrigatorio.".to_string()))?;
    let emoji = parsed.emoji.ok_or_else(|| {
        invalid("O campo emoji e obrigatorio (envie \"\" para remover a reacao).".to_string())
    })?;
    Ok(Reaction {
        message,
        user: Cow::Borrowed(OGMMA_USER),
        emoji,
    })
}

/// An emoji that is not exactly one emoji, in the documented error shape.
pub(crate) fn invalid_emoji(emoji: &str) -> Reply {
    invalid(format!(
        "O campo emoji deve conter exatamente um emoji (recebido \"{}\").",
        emoji.escape_debug()
    ))
}

pub(crate) fn success() -> Reply {
    Reply::new(200, "ok", Bytes::from_static(SUCCESS.as_bytes()))
}

pub(crate) fn not_found() -> Reply {
    Reply::new(
        404,
        "message_not_found",
        Bytes::from_static(NOT_FOUND.as_bytes()),
    )
}

pub(crate) fn rate_limited() -> Reply {
    Reply::new(
        429,
        "rate_limit_exceeded",
        Bytes::from_static(RATE_LIMITED.as_bytes()),
    )
}

pub(crate) fn server_error(status: u16) -> Reply {
    let body: &'static str = match status {
        502 => r#"{"message":"Gateway invalido.","code":"BAD_GATEWAY"}"#,
        503 => {
            r#"{"message":"Servico temporariamente indisponivel.","code":"SERVICE_UNAVAILABLE"}"#
        }
        _ => r#"{"message":"Erro interno do servidor.","code":"INTERNAL_SERVER_ERROR"}"#,
    };
    Reply::new(status, "server_error", Bytes::from_static(body.as_bytes()))
}

pub(crate) fn method_not_allowed() -> Reply {
    let mut reply = Reply::new(
        405,
        "method_not_allowed",
        Bytes::from_static(br#"{"message":"Metodo nao permitido.","code":"METHOD_NOT_ALLOWED"}"#),
    );
    reply.allow_post = true;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h
    }

    #[test]
    fn bearer_must_match() {
        let key = [Secret::new("k1")];
        let mut h = json_headers();
        assert_eq!(authenticate(&key, &h).err().map(|r| r.status), Some(401));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k2"));
        assert!(authenticate(&key, &h).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer k1"));
        assert_eq!(authenticate(&key, &h).ok(), Some(0));
        // With several keys, which one was presented.
        let keys = [Secret::new("k1"), Secret::new("k2")];
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k2"));
        assert_eq!(authenticate(&keys, &h).ok(), Some(1));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer k3"));
        assert!(authenticate(&keys, &h).is_err());
    }

    #[test]
    fn body_needs_message_id_and_emoji_which_may_be_empty() {
        let h = json_headers();
        let r = parse(&h, br#"{"messageId":"m","emoji":""}"#).expect("valid");
        assert_eq!((&*r.message, &*r.emoji), ("m", ""));
        for body in [
            &br#"{"emoji":"x"}"#[..],
            br#"{"messageId":"m"}"#,
            b"nope",
            br#"{"messageId":""}"#,
        ] {
            assert_eq!(parse(&h, body).err().map(|r| r.status), Some(400));
        }
        assert_eq!(
            parse(&HeaderMap::new(), br#"{"messageId":"m","emoji":""}"#)
                .err()
                .map(|r| r.status),
            Some(400)
        );
    }
}
