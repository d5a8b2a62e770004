//! The sandbox over loopback: each documented status for its cause, with requests built and
//! signed by the project's own `provider::{prepare, sign}`; faults, limits, stats, the request
//! log, and the `reactbatch sandbox` binary itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use reactbatch::plan::{Action, ProviderKind, Rate, Row, Source, Target, TargetKind};
use reactbatch::provider::{prepare, sign, SignedRequest};
use reactbatch::sandbox::{Sandbox, SandboxConfig, SandboxHandle, Stats, OGMMA_USER};
use reactbatch::secret::{Secret, SecretRef};

use crate::common::snapshot;

const SCOPE: &str = "344a5002-f8ca-454d-af3d-396180102ac7_52e591f7-c98f-4255-8495-827210138c81";
const CHANNEL: &str = "ch_123";

const OGMMA_401: &str =
    r#"{"message":"Token de autenticacao invalido ou ausente.","code":"UNAUTHORIZED"}"#;
const OGMMA_404: &str = r#"{"message":"Mensagem nao encontrada.","code":"MESSAGE_NOT_FOUND"}"#;
const OGMMA_429: &str = r#"{"message":"Limite de requisicoes excedido. Tente novamente em alguns segundos.","code":"RATE_LIMIT_EXCEEDED"}"#;
const OGMMA_200: &str = r#"{"success":true,"message":"Reacao processada"}"#;

fn source() -> Source {
    Source {
        file: "plan.yaml".into(),
        line: 1,
    }
}

fn kommo_target(base_url: &str) -> Target {
    Target {
        name: "kommo-main".into(),
        kind: TargetKind::Kommo {
            scope_id: Some(SCOPE.into()),
            user_id: None,
            user_ref_id: None,
        },
        base_url: base_url.into(),
        rate: None,
        credential: SecretRef::Env("KOMMO_CHANNEL_SECRET".into()),
        source: source(),
    }
}

fn ogmma_target(base_url: &str) -> Target {
    Target {
        name: "ogmma-br".into(),
        kind: TargetKind::Ogmma {
            channel_id: Some(CHANNEL.into()),
        },
        base_url: base_url.into(),
        rate: None,
        credential: SecretRef::Env("OGMMA_API_KEY".into()),
        source: source(),
    }
}

fn row(message: &str, action: Action, emoji: Option<&str>) -> Row {
    Row {
        number: 1,
        source: source(),
        target: 0,
        action,
        emoji: emoji.map(str::to_string),
        message_id: Some(message.into()),
        msgid: None,
        conversation_id: Some("chat-7".into()),
        conversation_ref_id: None,
        user_id: Some("bot".into()),
        user_ref_id: None,
        not_before: None,
        previous_emoji: None,
        key: None,
        scope_id: None,
        channel_id: None,
    }
}

fn react(message: &str, emoji: &str) -> Row {
    row(message, Action::React, Some(emoji))
}

fn kommo_signed(sandbox: &SandboxHandle, row: &Row) -> SignedRequest {
    let req = prepare(&kommo_target(&sandbox.base_url()), row);
    sign(&req, sandbox.kommo_secret(), Utc::now())
}

fn ogmma_signed(sandbox: &SandboxHandle, row: &Row) -> SignedRequest {
    let req = prepare(&ogmma_target(&sandbox.base_url()), row);
    sign(&req, sandbox.ogmma_key(), Utc::now())
}

/// The status, `Retry-After` and body of one answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// Sends `signed` as is (URL, headers, bearer, body).
async fn send(client: &reqwest::Client, signed: &SignedRequest) -> reqwest::Result<Answer> {
    send_parts(client, &signed.url, signed, signed.body.to_vec()).await
}

/// A request with `signed`'s headers (and bearer) to `url` with `body`.
fn build(
    client: &reqwest::Client,
    url: &str,
    signed: &SignedRequest,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut request = client.post(url).body(body);
    for (name, value) in &signed.headers {
        request = request.header(*name, value.clone());
    }
    if let Some(key) = &signed.bearer {
        request = request.bearer_auth(key.expose());
    }
    request
}

/// Sends `signed`'s headers to `url` with `body`: for tampering with one part.
async fn send_parts(
    client: &reqwest::Client,
    url: &str,
    signed: &SignedRequest,
    body: Vec<u8>,
) -> reqwest::Result<Answer> {
    let response = build(client, url, signed, body).send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = response.text().await?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

async fn json_of<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> T {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the expected JSON ({e}): {text}"))
}

fn header_value<'a>(signed: &'a SignedRequest, name: &str) -> &'a str {
    signed
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| reactbatch::provider::header_text(v))
        .expect("header present")
}

/// The same headers with one replaced.
fn with_header(signed: &SignedRequest, name: &str, value: String) -> SignedRequest {
    let mut copy = signed.clone();
    for (n, v) in &mut copy.headers {
        if *n == name {
            *v = value.parse().expect("a header value");
        }
    }
    copy
}

async fn start(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config).await.expect("sandbox starts")
}

#[tokio::test]
async fn kommo_requests_signed_by_the_project_pass_and_change_state() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();

    let ok = send(&client, &kommo_signed(&sandbox, &react("m-1", "👍")))
        .await
        .expect("answer");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, r#"{"status":"accepted"}"#);
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, SCOPE, "m-1", "bot"),
        Some("👍".into())
    );

    // react replaces, unreact removes.
    let replaced = send(&client, &kommo_signed(&sandbox, &react("m-1", "❤️")))
        .await
        .expect("answer");
    assert_eq!(replaced.status, 200);
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, SCOPE, "m-1", "bot"),
        Some("❤️".into())
    );
    let removed = send(
        &client,
        &kommo_signed(&sandbox, &row("m-1", Action::Unreact, None)),
    )
    .await
    .expect("answer");
    assert_eq!(removed.status, 200);
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, SCOPE, "m-1", "bot"),
        None
    );

    // `msgid` and `user.ref_id` identify the message and user when `id`/`user.id` are absent.
    let mut by_msgid = react("ignored", "😂");
    by_msgid.message_id = None;
    by_msgid.msgid = Some("int-9".into());
    by_msgid.user_id = None;
    by_msgid.user_ref_id = Some("ref-5".into());
    by_msgid.conversation_id = None;
    by_msgid.conversation_ref_id = Some("conv-ref".into());
    let answer = send(&client, &kommo_signed(&sandbox, &by_msgid))
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let all = sandbox.reactions();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].message.as_str(), all[0].user.as_str()),
        ("msgid:int-9", "ref-5")
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_one_byte_change_to_body_path_date_or_secret_is_refused_with_403() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();
    let signed = kommo_signed(&sandbox, &react("m-1", "👍"));

    // Body: one byte changed after signing.
    let mut body = signed.body.to_vec();
    let at = body.iter().position(|b| *b == b'1').expect("a digit");
    body[at] = b'2';
    let answer = send_parts(&client, &signed.url, &signed, body)
        .await
        .expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "content_md5_mismatch");
    assert_eq!(answer.json()["header"], "Content-MD5");

    // Path: one byte of the scope changed.
    let url = signed.url.replace("344a5002", "344a5003");
    let answer = send_parts(&client, &url, &signed, signed.body.to_vec())
        .await
        .expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "invalid_signature");
    assert_eq!(answer.json()["header"], "X-Signature");
    assert!(answer.json()["signed_string"]
        .as_str()
        .expect("signed string")
        .ends_with("/v2/origin/custom/344a5003-f8ca-454d-af3d-396180102ac7_52e591f7-c98f-4255-8495-827210138c81/react"));

    // Date: the last digit of the seconds changed (still a valid date within the window).
    let date = header_value(&signed, "Date").to_string();
    let digit_at = date.rfind(':').expect("time") + 2;
    let mut bytes = date.clone().into_bytes();
    bytes[digit_at] = if bytes[digit_at] == b'0' { b'1' } else { b'0' };
    let tampered = with_header(&signed, "Date", String::from_utf8(bytes).expect("ascii"));
    let answer = send(&client, &tampered).await.expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "invalid_signature");

    // Secret: signed with a secret one byte off.
    let mut wrong = sandbox.kommo_secret().expose().to_string();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let req = prepare(&kommo_target(&sandbox.base_url()), &react("m-1", "👍"));
    let answer = send(
        &client,
        &sign(&req, &Secret::new(wrong.clone()), Utc::now()),
    )
    .await
    .expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "invalid_signature");
    // The secret is never echoed.
    assert!(!answer.body.contains(&wrong));
    assert!(!answer.body.contains(sandbox.kommo_secret().expose()));

    // Nothing of this changed state.
    assert!(sandbox.reactions().is_empty());
    assert_eq!(sandbox.stats().count(ProviderKind::Kommo, 403), 4);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn kommo_dates_outside_fifteen_minutes_are_refused() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();
    let req = prepare(&kommo_target(&sandbox.base_url()), &react("m-1", "👍"));
    let secret = sandbox.kommo_secret().clone();

    let old = sign(&req, &secret, Utc::now() - chrono::Duration::minutes(16));
    let answer = send(&client, &old).await.expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "date_out_of_window");
    assert_eq!(answer.json()["header"], "Date");

    let future = sign(&req, &secret, Utc::now() + chrono::Duration::minutes(16));
    let answer = send(&client, &future).await.expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "date_out_of_window");

    // 14 minutes old is still within the window.
    let recent = sign(&req, &secret, Utc::now() - chrono::Duration::minutes(14));
    assert_eq!(send(&client, &recent).await.expect("answer").status, 200);

    // Not RFC 2822.
    let garbled = with_header(&recent, "Date", "2026-01-01T00:00:00Z".into());
    let answer = send(&client, &garbled).await.expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"], "invalid_date");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn kommo_header_and_body_problems_are_named() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();
    let signed = kommo_signed(&sandbox, &react("m-1", "👍"));

    let answer = send(
        &client,
        &with_header(&signed, "Content-Type", "text/plain".into()),
    )
    .await
    .expect("answer");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"], "unsupported_content_type");

    let mut no_signature = signed.clone();
    no_signature.headers.retain(|(n, _)| *n != "X-Signature");
    let answer = send(&client, &no_signature).await.expect("answer");
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.body,
        r#"{"error":"missing_header","message":"the X-Signature header is required on every Chats API request","header":"X-Signature"}"#
    );

    // A properly signed body that breaks the body rules: react without an emoji.
    let body = br#"{"conversation_id":"chat-7","id":"m-1","user":{"id":"bot"},"type":"react"}"#;
    let date = reactbatch::sign::http_date(Utc::now());
    let path = format!("/v2/origin/custom/{SCOPE}/react");
    let sig = reactbatch::sign::sign_kommo("POST", &path, body, &date, sandbox.kommo_secret());
    let answer = client
        .post(format!("{}{path}", sandbox.base_url()))
        .header("Content-Type", "application/json")
        .header("Date", &date)
        .header("Content-MD5", &sig.content_md5)
        .header("X-Signature", &sig.signature)
        .body(&body[..])
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 400);
    let text = answer.text().await.expect("body");
    snapshot("kommo_400_missing_emoji", None, &text);

    // The body a changed byte produces, verbatim (the MD5 shown is of the received bytes).
    let tampered = send_parts(
        &client,
        &signed.url,
        &signed,
        br#"{"conversation_id":"chat-7","id":"m-2","user":{"id":"bot"},"type":"react","emoji":"x"}"#.to_vec(),
    )
    .await
    .expect("answer");
    snapshot("kommo_403_content_md5_mismatch", None, &tampered.body);

    // An invalid signature shows the string the sandbox signed (no secret in it).
    let bad = with_header(&signed, "X-Signature", "0".repeat(40));
    let answer = send(&client, &bad).await.expect("answer");
    let stable = answer
        .body
        .replace(header_value(&signed, "Date"), "<DATE>")
        .replace(header_value(&signed, "Content-MD5"), "<MD5>");
    snapshot("kommo_403_invalid_signature", None, &stable);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn ogmma_bearer_body_replace_and_remove() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();

    let ok = send(&client, &ogmma_signed(&sandbox, &react("6650a1b2", "👍")))
        .await
        .expect("answer");
    assert_eq!((ok.status, ok.body.as_str()), (200, OGMMA_200));
    let replaced = send(&client, &ogmma_signed(&sandbox, &react("6650a1b2", "❤️")))
        .await
        .expect("answer");
    assert_eq!(replaced.status, 200);
    assert_eq!(
        sandbox.reaction(ProviderKind::Ogmma, CHANNEL, "6650a1b2", OGMMA_USER),
        Some("❤️".into())
    );
    assert_eq!(sandbox.reactions().len(), 1, "one reaction per sender");

    let removed = send(
        &client,
        &ogmma_signed(&sandbox, &row("6650a1b2", Action::Unreact, None)),
    )
    .await
    .expect("answer");
    assert_eq!(removed.status, 200);
    assert!(sandbox.reactions().is_empty());

    // Wrong and missing bearer: 401 with the documented body.
    let mut wrong = ogmma_signed(&sandbox, &react("6650a1b2", "👍"));
    wrong.bearer = Some(Secret::new(format!("{}x", sandbox.ogmma_key().expose())));
    let answer = send(&client, &wrong).await.expect("answer");
    assert_eq!((answer.status, answer.body.as_str()), (401, OGMMA_401));
    wrong.bearer = None;
    let answer = send(&client, &wrong).await.expect("answer");
    assert_eq!((answer.status, answer.body.as_str()), (401, OGMMA_401));

    // Bad bodies: 400 in Ogmma's shape.
    let signed = ogmma_signed(&sandbox, &react("6650a1b2", "👍"));
    for body in [
        &br#"{"emoji":"x"}"#[..],
        br#"{"messageId":"m"}"#,
        b"not json",
    ] {
        let answer = send_parts(&client, &signed.url, &signed, body.to_vec())
            .await
            .expect("answer");
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.json()["code"], "VALIDATION_ERROR");
    }
    let answer = send_parts(&client, &signed.url, &signed, br#"{"emoji":"x"}"#.to_vec())
        .await
        .expect("answer");
    snapshot("ogmma_400_missing_message_id", None, &answer.body);

    assert!(sandbox.reactions().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn not_found_prefix_answers_404_without_state() {
    let sandbox = start(SandboxConfig::new().not_found_prefix("gone-")).await;
    let client = reqwest::Client::new();
    let answer = send(&client, &ogmma_signed(&sandbox, &react("gone-1", "👍")))
        .await
        .expect("answer");
    assert_eq!((answer.status, answer.body.as_str()), (404, OGMMA_404));
    let answer = send(&client, &kommo_signed(&sandbox, &react("gone-2", "👍")))
        .await
        .expect("answer");
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"], "message_not_found");
    assert!(sandbox.reactions().is_empty());
    assert_eq!(sandbox.stats().faults.not_found, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_the_documented_body_and_retry_after() {
    // One request a minute with a bucket of two: the third request at once is over.
    let per_minute = Rate::parse("1/min").expect("rate");
    let sandbox = start(
        SandboxConfig::new()
            .ogmma_rate(per_minute, 2)
            .kommo_rate(per_minute, 1)
            .retry_after(Some(Duration::from_secs(3))),
    )
    .await;
    let client = reqwest::Client::new();
    for message in ["a", "b"] {
        let ok = send(&client, &ogmma_signed(&sandbox, &react(message, "👍")))
            .await
            .expect("answer");
        assert_eq!(ok.status, 200);
    }
    let over = send(&client, &ogmma_signed(&sandbox, &react("c", "👍")))
        .await
        .expect("answer");
    assert_eq!((over.status, over.body.as_str()), (429, OGMMA_429));
    assert_eq!(over.retry_after.as_deref(), Some("3"));

    // Kommo: per scope, in Kommo's error style.
    assert_eq!(
        send(&client, &kommo_signed(&sandbox, &react("k1", "👍")))
            .await
            .expect("answer")
            .status,
        200
    );
    let over = send(&client, &kommo_signed(&sandbox, &react("k2", "👍")))
        .await
        .expect("answer");
    assert_eq!(over.status, 429);
    assert_eq!(over.json()["error"], "rate_limit_exceeded");
    assert_eq!(over.retry_after.as_deref(), Some("3"));

    // Rate-limited requests changed nothing.
    let messages: Vec<String> = sandbox.reactions().into_iter().map(|r| r.message).collect();
    assert_eq!(messages, ["k1", "a", "b"]);
    assert_eq!(sandbox.stats().rate_limited, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn no_retry_after_unless_configured() {
    let sandbox =
        start(SandboxConfig::new().ogmma_rate(Rate::parse("1/h").expect("rate"), 1)).await;
    let client = reqwest::Client::new();
    let _ = send(&client, &ogmma_signed(&sandbox, &react("a", "👍"))).await;
    let over = send(&client, &ogmma_signed(&sandbox, &react("b", "👍")))
        .await
        .expect("answer");
    assert_eq!(over.status, 429);
    assert_eq!(over.retry_after, None);
    sandbox.shutdown().await;
}

/// Sends `n` Ogmma requests for distinct messages one after another; returns each outcome.
async fn outcomes(sandbox: &SandboxHandle, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for i in 0..n {
        let signed = ogmma_signed(sandbox, &react(&format!("m{}", i % 10), "👍"));
        seen.push(match send(&client, &signed).await {
            Ok(answer) => answer.status.to_string(),
            Err(_) => "dropped".to_string(),
        });
    }
    seen
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed_and_never_change_state() {
    let config = |seed| {
        SandboxConfig::new()
            .seed(seed)
            .error_rate(0.3)
            .drop_rate(0.2)
    };
    let first = start(config(42)).await;
    let a = outcomes(&first, 60).await;
    let stats = first.stats();
    let second = start(config(42)).await;
    let b = outcomes(&second, 60).await;
    let third = start(config(43)).await;
    let c = outcomes(&third, 60).await;

    assert_eq!(a, b, "same seed, same outcomes");
    assert_ne!(a, c, "another seed, other outcomes");
    let dropped = a.iter().filter(|o| *o == "dropped").count() as u64;
    let errors = a.iter().filter(|o| o.starts_with('5')).count() as u64;
    assert!(dropped > 0 && errors > 0, "{a:?}");
    assert_eq!(stats.faults.dropped, dropped);
    assert_eq!(stats.faults.server_errors, errors);
    assert_eq!(stats.by_provider["ogmma"].dropped, dropped);

    // Only the 200s set reactions: a message whose every attempt failed has none.
    for m in 0..10 {
        let any_ok = a.iter().skip(m).step_by(10).any(|o| o == "200");
        let state = first.reaction(ProviderKind::Ogmma, CHANNEL, &format!("m{m}"), OGMMA_USER);
        assert_eq!(state.is_some(), any_ok, "message m{m}");
    }
    for s in [first, second, third] {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer_at_all() {
    let sandbox = start(SandboxConfig::new().drop_rate(1.0)).await;
    let signed = ogmma_signed(&sandbox, &react("m-1", "👍"));
    let addr = sandbox.addr();
    let key = sandbox.ogmma_key().expose().to_string();
    let body = signed.body.clone();
    let path = signed.path.clone();

    let received = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("write head");
        stream.write_all(&body).expect("write body");
        let mut received = Vec::new();
        // EOF (or a reset) with nothing read: the socket was closed without a response.
        let _ = stream.read_to_end(&mut received);
        received
    })
    .await
    .expect("join");
    assert!(
        received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );

    // And a real client sees an error, not a response.
    let client = reqwest::Client::new();
    let result = send(&client, &signed).await;
    assert!(result.is_err(), "{result:?}");
    assert!(sandbox.reactions().is_empty());
    assert_eq!(sandbox.stats().faults.dropped, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_server_errors_are_marked_and_retry_is_correct() {
    let sandbox = start(SandboxConfig::new().error_rate(1.0)).await;
    let client = reqwest::Client::new();
    let signed = kommo_signed(&sandbox, &react("m-1", "👍"));
    let response = build(&client, &signed.url, &signed, signed.body.to_vec())
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_server_error());
    assert_eq!(
        response
            .headers()
            .get("x-sandbox-fault")
            .map(|v| v.to_str().unwrap_or("")),
        Some("server-error")
    );
    let body: serde_json::Value = json_of(response).await;
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("injected"));
    assert!(sandbox.reactions().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_404_and_wrong_methods_405() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();
    let base = sandbox.base_url();
    let r = client
        .post(format!("{base}/v2/origin/custom/s/connect"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 404);
    let body: serde_json::Value = json_of(r).await;
    assert_eq!(body["error"], "not_found");

    let r = client
        .get(format!("{base}/v1/channels/{CHANNEL}/messages/react"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.headers().get("allow").map(|v| v.to_str().unwrap_or("")),
        Some("POST")
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn stats_and_reactions_endpoints_count() {
    let sandbox = start(SandboxConfig::new().record_arrivals(true)).await;
    let client = reqwest::Client::new();
    for m in ["a", "b", "c"] {
        send(&client, &kommo_signed(&sandbox, &react(m, "👍")))
            .await
            .expect("answer");
    }
    let mut unauthorized = ogmma_signed(&sandbox, &react("d", "👍"));
    unauthorized.bearer = None;
    send(&client, &unauthorized).await.expect("answer");
    send(&client, &ogmma_signed(&sandbox, &react("d", "👍")))
        .await
        .expect("answer");

    let stats: Stats = json_of(
        client
            .get(format!("{}/_sandbox/stats", sandbox.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(stats, sandbox.stats());
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.count(ProviderKind::Kommo, 200), 3);
    assert_eq!(stats.count(ProviderKind::Ogmma, 401), 1);
    assert_eq!(stats.count(ProviderKind::Ogmma, 200), 1);
    assert_eq!(stats.reactions, 4);

    let reactions: serde_json::Value = json_of(
        client
            .get(format!("{}/_sandbox/reactions", sandbox.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(reactions.as_array().map(Vec::len), Some(4));
    assert_eq!(reactions[0]["provider"], "kommo");
    assert_eq!(reactions[3]["provider"], "ogmma");
    assert_eq!(reactions[3]["user"], OGMMA_USER);

    // Arrivals: every provider request, the control endpoints excluded.
    let hour = Duration::from_secs(3600);
    assert_eq!(sandbox.max_in_window(None, hour), 5);
    assert_eq!(sandbox.max_in_window(Some(ProviderKind::Ogmma), hour), 2);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keep_alive_clients_all_land() {
    let sandbox = start(SandboxConfig::new()).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        let requests: Vec<SignedRequest> = (0..50)
            .map(|i| kommo_signed(&sandbox, &react(&format!("w{worker}-{i}"), "👍")))
            .collect();
        tasks.push(tokio::spawn(async move {
            for r in &requests {
                assert_eq!(send(&client, r).await.expect("answer").status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    assert_eq!(sandbox.reactions().len(), 400);
    assert_eq!(sandbox.stats().count(ProviderKind::Kommo, 200), 400);
    sandbox.shutdown().await;
}

/// On tokio's paused clock (the sandbox's latency is a tokio sleep, which the paused clock
/// skips to when nothing else is left to do), so a busy machine does not change the figure.
#[tokio::test(start_paused = true)]
async fn latency_is_added_and_counted() {
    let latency = Duration::from_millis(30);
    let sandbox = start(SandboxConfig::new().latency(latency)).await;
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let answer = send(&client, &ogmma_signed(&sandbox, &react("m", "👍")))
        .await
        .expect("answer");
    assert_eq!(answer.status, 200);
    let took = started.elapsed();
    assert!(took >= latency, "{took:?}");
    assert_eq!(sandbox.stats().faults.delayed, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn request_log_has_a_line_per_request_and_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("requests.jsonl");
    let sandbox = start(
        SandboxConfig::new()
            .request_log(path.clone())
            .drop_rate(0.0),
    )
    .await;
    let client = reqwest::Client::new();
    let kommo = kommo_signed(&sandbox, &react("m-1", "👍"));
    send(&client, &kommo).await.expect("answer");
    let mut bad = ogmma_signed(&sandbox, &react("m-2", "👍"));
    bad.bearer = Some(Secret::new("wrong-key"));
    send(&client, &bad).await.expect("answer");
    send(&client, &ogmma_signed(&sandbox, &react("m-3", "👍")))
        .await
        .expect("answer");
    let secret = sandbox.kommo_secret().expose().to_string();
    let key = sandbox.ogmma_key().expose().to_string();
    sandbox.shutdown().await;

    let text = std::fs::read_to_string(&path).expect("log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["provider"], "kommo");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["message_id"], "m-1");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["outcome"], "unauthorized");
    assert_eq!(lines[2]["message_id"], "m-3");
    assert!(lines[2]["latency_ms"].as_f64().is_some());
    assert!(lines[2]["time"].as_str().is_some());
    for forbidden in [
        secret.as_str(),
        key.as_str(),
        "wrong-key",
        header_value(&kommo, "X-Signature"),
    ] {
        assert!(!text.contains(forbidden), "log leaks {forbidden}");
    }
}

#[tokio::test]
async fn invalid_fault_rates_are_refused() {
    let err = Sandbox::start(SandboxConfig::new().error_rate(0.7).drop_rate(0.5))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// The real binary: first stdout line is the URL, credentials follow, env secrets are named not
/// printed, signed requests pass, SIGTERM exits 0.
#[test]
fn binary_prints_url_then_credentials_and_serves() {
    let secret = "env-secret-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .args(["sandbox", "--kommo-rate", "unlimited"])
        .env("KOMMO_CHANNEL_SECRET", secret)
        .env_remove("OGMMA_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    let url = line.trim_end().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .is_some());
    let mut credentials = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut credentials).expect("credential line");
    }
    assert!(
        credentials.contains("KOMMO_CHANNEL_SECRET"),
        "{credentials}"
    );
    assert!(
        !credentials.contains(secret),
        "the env secret is not printed"
    );
    let key = credentials
        .lines()
        .find_map(|l| l.strip_prefix("export OGMMA_API_KEY="))
        .expect("generated Ogmma key")
        .to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let kommo = prepare(&kommo_target(&url), &react("m-1", "👍"));
        let answer = send(&client, &sign(&kommo, &Secret::new(secret), Utc::now()))
            .await
            .expect("answer");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let ogmma = prepare(&ogmma_target(&url), &react("m-2", "👍"));
        let answer = send(&client, &sign(&ogmma, &Secret::new(key), Utc::now()))
            .await
            .expect("answer");
        assert_eq!(answer.status, 200, "{}", answer.body);
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn binary_help_documents_every_knob_and_bad_flags_exit_2() {
    let help = Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .args(["sandbox", "--help"])
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--kommo-rate",
        "--ogmma-rate",
        "--burst",
        "--retry-after",
        "--error-rate",
        "--drop-rate",
        "--latency",
        "--seed",
        "--not-found-prefix",
        "--request-log",
        "--date-window",
        "Examples:",
    ] {
        assert!(text.contains(flag), "help lacks {flag}");
    }

    for bad in [
        &["sandbox", "--error-rate", "2"][..],
        &["sandbox", "--kommo-rate", "fast"],
        &["sandbox", "--latency", "soon"],
        &["sandbox", "--error-rate", "0.6", "--drop-rate", "0.6"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_reactbatch"))
            .args(bad)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn documented_limits_let_a_full_window_through_then_429() {
    let sandbox = start(SandboxConfig::new().documented_limits()).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..70 {
        let signed = ogmma_signed(&sandbox, &react(&format!("m{i}"), "👍"));
        statuses.push(send(&client, &signed).await.expect("answer").status);
    }
    // 60/min with a bucket of 60: the first 60 pass at once; a refill of one a second could let
    // a few more through on a very slow machine, never all 70.
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses[..60].iter().all(|s| *s == 200), "{statuses:?}");
    assert!((60..70).contains(&ok), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    sandbox.shutdown().await;
}
