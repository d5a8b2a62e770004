//! Turning a validated row into the exact request a provider receives.
//!
//! [`prepare`] serialises the body once; those bytes are what is hashed, signed and sent, on
//! every attempt. [`sign`] adds the per-attempt headers (Kommo: a fresh `Date` and signature)
//! with the clock passed in as a value. Both are pure.

mod kommo;
mod ogmma;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;

use crate::plan::{Action, ProviderKind, Row, Target};
use crate::secret::Secret;
use crate::sign::{KommoKey, CONTENT_TYPE};

/// What every request asks back: Kommo documents `application/json` (default) or `text/plain`,
/// Ogmma answers JSON; without the header a server may pick any type (`*/*`).
pub const ACCEPT: &str = "application/json";

/// The `User-Agent` every request carries: sent by the transport, listed by `--emit`.
pub const USER_AGENT: &str = concat!("reactbatch/", env!("CARGO_PKG_VERSION"));

/// A row's request before signing: method, URL and the exact body bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedRequest {
    pub provider: ProviderKind,
    pub method: &'static str,
    /// Path only (what Kommo signs), e.g. `/v2/origin/custom/{scope_id}/react`. Shared with
    /// every request to the target and every attempt's [`SignedRequest`], not copied.
    pub path: Arc<str>,
    /// `base_url` + `path`, shared the same way.
    pub url: Arc<str>,
    pub body: Bytes,
    /// Kommo: the body's lowercase hex MD5, computed once for every attempt.
    pub content_md5: Option<[u8; 32]>,
}

/// A request ready for the wire. Its `headers` never hold a secret: the Ogmma key travels in
/// `bearer`, which renderers show as `(redacted)` or a `$VAR` reference.
#[derive(Clone, Debug)]
pub struct SignedRequest {
    pub method: &'static str,
    pub url: Arc<str>,
    pub path: Arc<str>,
    /// In wire order, as the wire takes them: the constants and the second's `Date` are
    /// shared, not copied per request. Every value is visible ASCII ([`header_text`]).
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub bearer: Option<Secret>,
    pub body: Bytes,
}

/// A header value as text. Ours are built from visible ASCII (dates, hex digits and
/// constants), which is what [`HeaderValue::to_str`] accepts.
pub fn header_text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or_default()
}

/// The emoji the request for `row` carries, as the report's `emoji` column shows it: an Ogmma
/// unreact sends `""` whatever the row says; a Kommo unreact sends the row's emoji if it has one.
pub fn sent_emoji(provider: ProviderKind, row: &Row) -> &str {
    match (provider, row.action) {
        (ProviderKind::Ogmma, Action::Unreact) => "",
        _ => row.emoji.as_deref().unwrap_or_default(),
    }
}

/// What every request to one target shares, made once per target instead of once per row:
/// the path and the URL of its own account. A row that names its own account gets its own
/// path and URL (its Kommo signature covers that path).
#[derive(Clone, Debug)]
pub struct Endpoint {
    provider: ProviderKind,
    base_url: Arc<str>,
    /// The target's account's path and URL; `None` when its rows give their accounts.
    own: Option<(Arc<str>, Arc<str>)>,
}

impl Endpoint {
    pub fn new(target: &Target) -> Endpoint {
        let base_url: Arc<str> = target.base_url.trim_end_matches('/').into();
        let own = target.account().map(|account| {
            let path = path(target.provider(), account);
            let url = [&*base_url, &path].concat();
            (path.into(), url.into())
        });
        Endpoint {
            provider: target.provider(),
            base_url,
            own,
        }
    }

    /// The path and URL of `row`'s account.
    fn path_and_url(&self, row: &Row) -> (Arc<str>, Arc<str>) {
        match (row.own_account(), &self.own) {
            (None, Some((path, url))) => (Arc::clone(path), Arc::clone(url)),
            (account, _) => {
                let path = path(self.provider, account.unwrap_or_default());
                let url = [&*self.base_url, &path].concat();
                (path.into(), url.into())
            }
        }
    }

    /// The request for `row`: its account's path and URL, and the body bytes (serialised
    /// once; Kommo: their MD5 too).
    pub fn prepare(&self, row: &Row) -> PreparedRequest {
        let (body, content_md5) = match self.provider {
            ProviderKind::Kommo => {
                let body = kommo::body(row);
                let md5 = crate::sign::content_md5_hex(&body);
                (body, Some(md5))
            }
            ProviderKind::Ogmma => (ogmma::body(row), None),
        };
        let (path, url) = self.path_and_url(row);
        PreparedRequest {
            provider: self.provider,
            method: "POST",
            url,
            path,
            body: Bytes::from(body),
            content_md5,
        }
    }
}

/// The request path for an account: Kommo's scope, Ogmma's channel.
fn path(provider: ProviderKind, account: &str) -> String {
    match provider {
        ProviderKind::Kommo => kommo::path(account),
        ProviderKind::Ogmma => ogmma::path(account),
    }
}

/// Builds the request for `row` on `target`: path, URL and body bytes (serialised once).
pub fn prepare(target: &Target, row: &Row) -> PreparedRequest {
    Endpoint::new(target).prepare(row)
}

/// A target's credential, ready to sign many requests ([`KommoKey`]: the HMAC key state is
/// computed once).
#[derive(Clone)]
pub struct Signer {
    secret: Secret,
    key: KommoKey,
}

impl Signer {
    pub fn new(secret: &Secret) -> Signer {
        Signer {
            secret: secret.clone(),
            key: KommoKey::new(secret),
        }
    }

    /// Adds the headers of one attempt. `now` is the attempt's clock (Kommo's `Date`).
    pub fn sign(&self, request: &PreparedRequest, now: DateTime<Utc>) -> SignedRequest {
        let (headers, bearer) = match request.provider {
            ProviderKind::Kommo => {
                let md5 = request
                    .content_md5
                    .unwrap_or_else(|| crate::sign::content_md5_hex(&request.body));
                let date = date_value(now);
                let signature =
                    self.key
                        .sign(request.method, &md5, header_text(&date), &request.path);
                let headers = vec![
                    ("Date", date),
                    ("Content-Type", HeaderValue::from_static(CONTENT_TYPE)),
                    ("Content-MD5", ascii_value(&md5)),
                    ("X-Signature", ascii_value(&signature)),
                    ("Accept", HeaderValue::from_static(ACCEPT)),
                ];
                (headers, None)
            }
            ProviderKind::Ogmma => (
                vec![
                    ("Content-Type", HeaderValue::from_static(CONTENT_TYPE)),
                    ("Accept", HeaderValue::from_static(ACCEPT)),
                ],
                Some(self.secret.clone()),
            ),
        };
        SignedRequest {
            method: request.method,
            url: Arc::clone(&request.url),
            path: Arc::clone(&request.path),
            headers,
            bearer,
            body: request.body.clone(),
        }
    }
}

/// Adds the headers of one attempt. `now` is the attempt's clock (Kommo's `Date`).
pub fn sign(request: &PreparedRequest, secret: &Secret, now: DateTime<Utc>) -> SignedRequest {
    Signer::new(secret).sign(request, now)
}

/// Lowercase hex digits as a header value.
fn ascii_value(hex: &[u8]) -> HeaderValue {
    // Hex digits are visible ASCII: the conversion cannot fail.
    HeaderValue::from_bytes(hex).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Date` of `now` ([`crate::sign::http_date`]), made once per second per thread: every
/// request signed within that second shares it.
fn date_value(now: DateTime<Utc>) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, HeaderValue)> =
            const { std::cell::RefCell::new((i64::MIN, HeaderValue::from_static(""))) };
    }
    let second = now.timestamp();
    LAST.with_borrow_mut(|(cached_second, value)| {
        if *cached_second != second {
            let text = crate::sign::http_date(now);
            // An RFC 2822 date is visible ASCII.
            *value = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
            *cached_second = second;
        }
        value.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Source, TargetKind};
    use crate::secret::SecretRef;

    fn row(action: Action, emoji: Option<&str>) -> Row {
        Row {
            source: Source {
                file: "p.yaml".into(),
                line: 3,
            },
            emoji: emoji.map(str::to_string),
            conversation_id: Some("chat-7".into()),
            user_id: Some("bot".into()),
            ..Row::test(1).action(action).message("m-1")
        }
    }

    fn ogmma() -> Target {
        Target {
            name: "o".into(),
            kind: TargetKind::Ogmma {
                channel_id: Some("ch_1".into()),
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
        assert!(signed
            .headers
            .iter()
            .all(|(_, v)| !header_text(v).contains("k-123")));
        assert_eq!(signed.bearer.as_ref().map(Secret::expose), Some("k-123"));
    }

    #[test]
    fn a_row_naming_its_account_goes_to_that_accounts_path_and_is_signed_for_it() {
        let kommo = Target {
            name: "k".into(),
            kind: TargetKind::Kommo {
                scope_id: Some("scope-1".into()),
                user_id: None,
                user_ref_id: None,
            },
            ..ogmma()
        };
        let endpoint = Endpoint::new(&kommo);
        let own = endpoint.prepare(&row(Action::React, Some("👍")));
        assert_eq!(&*own.path, "/v2/origin/custom/scope-1/react");
        let mut other = row(Action::React, Some("👍"));
        other.scope_id = Some("scope-2".into());
        let req = endpoint.prepare(&other);
        assert_eq!(&*req.path, "/v2/origin/custom/scope-2/react");
        assert_eq!(
            &*req.url,
            "http://127.0.0.1:9/v2/origin/custom/scope-2/react"
        );
        assert_eq!(
            req.body, own.body,
            "the account is in the path, not the body"
        );
        // The signature covers the row's path: the same request on the target's path signs
        // differently.
        let now = Utc::now();
        let secret = Secret::new("s");
        let signature = |r: &PreparedRequest| {
            sign(r, &secret, now)
                .headers
                .iter()
                .find(|(n, _)| *n == "X-Signature")
                .map(|(_, v)| header_text(v).to_string())
        };
        assert_ne!(signature(&req), signature(&own));

        // A target that leaves its account to its rows; Ogmma rows name their channel.
        let bare = Target {
            kind: TargetKind::Ogmma { channel_id: None },
            ..ogmma()
        };
        let mut row = row(Action::React, Some("👍"));
        row.channel_id = Some("ch_9".into());
        assert_eq!(
            &*Endpoint::new(&bare).prepare(&row).url,
            "http://127.0.0.1:9/v1/channels/ch_9/messages/react"
        );
    }

    /// The bodies as `serde_json` serialised them before they were written by hand.
    mod reference {
        use serde::Serialize;

        #[derive(Serialize)]
        pub(super) struct User<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub ref_id: Option<&'a str>,
        }

        #[derive(Serialize)]
        pub(super) struct Kommo<'a> {
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
        pub(super) struct Ogmma<'a> {
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
