//! Turning a validated row into the exact request a provider receives.
//!
//! [`prepare`] serialises the body once; those bytes are what is hashed, signed and sent, on
//! every attempt. [`sign`] adds the per-attempt headers (Kommo: a fresh `Date` and signature)
//! with the clock passed in as a value. Both are pure.

mod kommo;
mod ogmma;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::plan::{Action, ProviderKind, Row, Target, TargetKind};
use crate::secret::Secret;
use crate::sign::CONTENT_TYPE;

/// What every request asks back: Kommo documents `application/json` (default) or `text/plain`,
/// Ogmma answers JSON; reqwest alone would send `*/*`.
pub const ACCEPT: &str = "application/json";

/// A row's request before signing: method, URL and the exact body bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedRequest {
    pub provider: ProviderKind,
    pub method: &'static str,
    /// Path only (what Kommo signs), e.g. `/v2/origin/custom/{scope_id}/react`. Shared with
    /// every attempt's [`SignedRequest`], not copied.
    pub path: Arc<str>,
    /// `base_url` + `path`.
    pub url: Arc<str>,
    pub body: Bytes,
}

/// A request ready for the wire. Its `headers` never hold a secret: the Ogmma key travels in
/// `bearer`, which renderers show as `(redacted)` or a `$VAR` reference.
#[derive(Clone, Debug)]
pub struct SignedRequest {
    pub method: &'static str,
    pub url: Arc<str>,
    pub path: Arc<str>,
    /// In wire order. The values every request repeats are borrowed, not copied.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub bearer: Option<Secret>,
    pub body: Bytes,
    /// Kommo only: the exact string that was signed.
    pub signed_string: Option<String>,
}

/// Builds the request for `row` on `target`: path, URL and body bytes (serialised once).
/// The emoji the request for `row` carries, as the report's `emoji` column shows it: an Ogmma
/// unreact sends `""` whatever the row says; a Kommo unreact sends the row's emoji if it has one.
pub fn sent_emoji(provider: ProviderKind, row: &Row) -> &str {
    match (provider, row.action) {
        (ProviderKind::Ogmma, Action::Unreact) => "",
        _ => row.emoji.as_deref().unwrap_or_default(),
    }
}

pub fn prepare(target: &Target, row: &Row) -> PreparedRequest {
    let (path, body) = match &target.kind {
        TargetKind::Kommo { scope_id, .. } => (kommo::path(scope_id), kommo::body(row)),
        TargetKind::Ogmma { channel_id } => (ogmma::path(channel_id), ogmma::body(row)),
    };
    // Per row, so no `format!`: two exact-size copies.
    let base = target.base_url.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + path.len());
    url.push_str(base);
    url.push_str(&path);
    PreparedRequest {
        provider: target.provider(),
        method: "POST",
        url: url.into(),
        path: path.into(),
        body: Bytes::from(body),
    }
}

/// Adds the headers of one attempt. `now` is the attempt's clock (Kommo's `Date`).
pub fn sign(request: &PreparedRequest, secret: &Secret, now: DateTime<Utc>) -> SignedRequest {
    let (headers, bearer, signed_string) = match request.provider {
        ProviderKind::Kommo => {
            let date = crate::sign::http_date(now);
            let sig = crate::sign::sign_kommo(
                request.method,
                &request.path,
                &request.body,
                &date,
                secret,
            );
            let headers = vec![
                ("Date", Cow::Owned(sig.date)),
                ("Content-Type", Cow::Borrowed(CONTENT_TYPE)),
                ("Content-MD5", Cow::Owned(sig.content_md5)),
                ("X-Signature", Cow::Owned(sig.signature)),
                ("Accept", Cow::Borrowed(ACCEPT)),
            ];
            (headers, None, Some(sig.signed))
        }
        ProviderKind::Ogmma => (
            vec![
                ("Content-Type", Cow::Borrowed(CONTENT_TYPE)),
                ("Accept", Cow::Borrowed(ACCEPT)),
            ],
            Some(secret.clone()),
            None,
        ),
    };
    SignedRequest {
        method: request.method,
        url: request.url.clone(),
        path: request.path.clone(),
        headers,
        bearer,
        body: request.body.clone(),
        signed_string,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Source};
    use crate::secret::SecretRef;

    fn row(action: Action, emoji: Option<&str>) -> Row {
        Row {
            number: 1,
            source: Source {
                file: "p.yaml".into(),
                line: 3,
            },
            target: 0,
            action,
            emoji: emoji.map(str::to_string),
            message_id: Some("m-1".into()),
            msgid: None,
            conversation_id: Some("chat-7".into()),
            conversation_ref_id: None,
            user_id: Some("bot".into()),
            user_ref_id: None,
            not_before: None,
            previous_emoji: None,
            key: None,
        }
    }

    fn ogmma() -> Target {
        Target {
            name: "o".into(),
            kind: TargetKind::Ogmma {
                channel_id: "ch_1".into(),
            },
            base_url: "http://127.0.0.1:9/".into(),
            rate: None,
            credential: SecretRef::Env("OGMMA_API_KEY".into()),
            source: Source {
                file: "p.yaml".into(),
                line: 1,
            },
        }
    }

    #[test]
    fn ogmma_unreact_sends_empty_emoji_and_keeps_key_out_of_headers() {
        let req = prepare(&ogmma(), &row(Action::Unreact, Some("👍")));
        assert_eq!(&req.body[..], br#"{"messageId":"m-1","emoji":""}"#);
        assert_eq!(
            &*req.url,
            "http://127.0.0.1:9/v1/channels/ch_1/messages/react"
        );
        let signed = sign(&req, &Secret::new("k-123"), Utc::now());
        assert!(signed.headers.iter().all(|(_, v)| !v.contains("k-123")));
        assert_eq!(signed.bearer.as_ref().map(Secret::expose), Some("k-123"));
    }

    /// The bodies as `serde_json` serialised them before they were written by hand.
    mod reference {
        use serde::Serialize;

        #[derive(Serialize)]
        pub struct User<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub ref_id: Option<&'a str>,
        }

        #[derive(Serialize)]
        pub struct Kommo<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub conversation_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub conversation_ref_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub msgid: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub user: Option<User<'a>>,
            #[serde(rename = "type")]
            pub kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub emoji: Option<&'a str>,
        }

        #[derive(Serialize)]
        pub struct Ogmma<'a> {
            #[serde(rename = "messageId")]
            pub message_id: &'a str,
            pub emoji: &'a str,
        }
    }

    #[test]
    fn bodies_match_serde_json_for_every_shape_and_hostile_strings() {
        let hostile = crate::json::HOSTILE;
        let mut n = 0;
        for present in 0u32..128 {
            for action in [Action::React, Action::Unreact] {
                for shift in [0, 3, 7] {
                    // Each present field gets another hostile string (the empty one included).
                    let mut pick = |bit: u32| {
                        n += 1;
                        (present & (1 << bit) != 0)
                            .then(|| hostile[(n + shift) % hostile.len()].to_string())
                    };
                    let r = Row {
                        action,
                        emoji: pick(0),
                        message_id: pick(1),
                        msgid: pick(2),
                        conversation_id: pick(3),
                        conversation_ref_id: pick(4),
                        user_id: pick(5),
                        user_ref_id: pick(6),
                        ..row(action, None)
                    };
                    let user = (r.user_id.is_some() || r.user_ref_id.is_some()).then_some(
                        reference::User {
                            id: r.user_id.as_deref(),
                            ref_id: r.user_ref_id.as_deref(),
                        },
                    );
                    let kommo = reference::Kommo {
                        conversation_id: r.conversation_id.as_deref(),
                        conversation_ref_id: r.conversation_ref_id.as_deref(),
                        id: r.message_id.as_deref(),
                        msgid: r.msgid.as_deref(),
                        user,
                        kind: r.action.as_str(),
                        emoji: r
                            .emoji
                            .as_deref()
                            .filter(|e| !e.is_empty() || r.action == Action::React),
                    };
                    let expected = serde_json::to_vec(&kommo).expect("serialises");
                    assert_eq!(
                        String::from_utf8_lossy(&kommo::body(&r)),
                        String::from_utf8_lossy(&expected)
                    );
                    let ogmma = reference::Ogmma {
                        message_id: r.message_id.as_deref().unwrap_or(""),
                        emoji: match r.action {
                            Action::React => r.emoji.as_deref().unwrap_or(""),
                            Action::Unreact => "",
                        },
                    };
                    let expected = serde_json::to_vec(&ogmma).expect("serialises");
                    assert_eq!(
                        String::from_utf8_lossy(&ogmma::body(&r)),
                        String::from_utf8_lossy(&expected)
                    );
                }
            }
        }
    }

    #[test]
    fn the_report_shows_the_emoji_that_is_sent() {
        let unreact = row(Action::Unreact, Some("👍"));
        assert_eq!(sent_emoji(ProviderKind::Ogmma, &unreact), "");
        assert_eq!(sent_emoji(ProviderKind::Kommo, &unreact), "👍");
        let react = row(Action::React, Some("🎉"));
        assert_eq!(sent_emoji(ProviderKind::Ogmma, &react), "🎉");
        assert_eq!(
            sent_emoji(ProviderKind::Kommo, &row(Action::Unreact, None)),
            ""
        );
    }
}
