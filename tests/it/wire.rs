//! Reality on the wire: HTTPS against `sandbox --tls` with and without `--ca-cert`,
//! dead proxy variables, a remote target through a live HTTP_PROXY, emoji values as the providers accept them, Ogmma `success: false`,
//! the `Accept` header, `sign kommo` on the document's example date, and the curl script run
//! with bash against the sandbox. Everything goes over real sockets on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::{Sandbox, OGMMA_USER};
use reactbatch::secret::Secret;

use crate::common::{
    bin, react, run_blocking, run_cmd, sandbox_config, stderr, write_plan, PlanRow, CHANNEL,
    KOMMO_SECRET, OGMMA_KEY, SCOPE, USER,
};

/// A `reactbatch sandbox` process, killed when dropped (a failing test leaves nothing behind).
struct SandboxProcess {
    child: Child,
    url: String,
    /// Kept open: the sandbox writes more lines, and a closed pipe would end it (SIGPIPE).
    _stdout: BufReader<std::process::ChildStdout>,
    /// The sandbox's stderr, for [`SandboxProcess::fate`].
    stderr_file: tempfile::NamedTempFile,
}

impl SandboxProcess {
    /// Asserts that a run against this sandbox exited 0 with every row of `report` ok.
    fn assert_all_ok(&mut self, out: &std::process::Output, report: &Path) {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            stderr(out),
            self.fate()
        );
        let rows_done = read_report(report).expect("report");
        assert_eq!(rows_done.len(), 3);
        assert!(
            rows_done.iter().all(|r| r.status == Status::Ok),
            "{rows_done:?}"
        );
    }

    /// Whether the sandbox is still running and what it printed to stderr: the message of an
    /// assertion on a run against it, so a sandbox that died says how.
    fn fate(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "still running".to_string(),
            Ok(Some(status)) => format!("exited: {status:?}"),
            Err(e) => format!("unknown: {e}"),
        };
        let printed = std::fs::read_to_string(self.stderr_file.path()).unwrap_or_default();
        format!("sandbox {state}; its stderr:\n{printed}")
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reactbatch sandbox` with the test credentials and `extra` flags; waits for its
/// first stdout line, the base URL.
fn sandbox_process(extra: &[&str]) -> SandboxProcess {
    let stderr_file = tempfile::NamedTempFile::new().expect("stderr file");
    let stderr_out = stderr_file.reopen().expect("stderr file");
    let mut child = bin()
        .args([
            "sandbox",
            "--kommo-rate",
            "unlimited",
            "--ogmma-rate",
            "unlimited",
        ])
        .args(extra)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr_out)
        .spawn()
        .expect("start reactbatch sandbox");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    SandboxProcess {
        child,
        url: line.trim_end().to_string(),
        _stdout: stdout,
        stderr_file,
    }
}

fn rows() -> Vec<PlanRow> {
    vec![
        react("k", "m-1", "👍"),
        react("o", "m-2", "❤️"),
        react("k", "m-3", "🎉"),
    ]
}

#[tokio::test]
async fn https_with_ca_cert_is_ok_and_without_it_fails_with_code_tls_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let mut sandbox = sandbox_process(&["--tls", "--cert-out", &ca.display().to_string()]);
    assert!(
        sandbox.url.starts_with("https://127.0.0.1:"),
        "{}",
        sandbox.url
    );
    let pem = std::fs::read_to_string(&ca).expect("the certificate was written before the URL");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    let plan = write_plan(dir.path(), &sandbox.url, &rows(), "");
    let report = dir.path().join("trusted.csv");
    let ca_arg = ca.display().to_string();
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--ca-cert", &ca_arg, "--rate", "unlimited"],
    ))
    .await;
    sandbox.assert_all_ok(&out, &report);

    // Without the CA: every row fails at once with `tls`, and says what to do.
    let report = dir.path().join("untrusted.csv");
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--rate", "unlimited", "--retries", "3"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failed = read_report(&report).expect("report");
    assert_eq!(failed.len(), 3);
    for r in &failed {
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert_eq!(r.code, "tls", "{r:?}\n{}", sandbox.fate());
        assert_eq!(r.attempts, 1, "a certificate failure is not retried: {r:?}");
        assert_eq!(r.http_status, None);
        assert!(r.message.contains("--ca-cert FILE"), "{}", r.message);
    }

    // The system store is trusted too: rustls-native-certs reads SSL_CERT_FILE when set.
    let report = dir.path().join("system.csv");
    let mut cmd = run_cmd(&plan, &report, &["--rate", "unlimited"]);
    cmd.env("SSL_CERT_FILE", &ca).env_remove("SSL_CERT_DIR");
    let out = run_blocking(cmd).await;
    sandbox.assert_all_ok(&out, &report);

    // `settings: ca_cert:` is the same trust, relative to the plan file.
    let plan = write_plan(dir.path(), &sandbox.url, &rows(), "ca_cert: ca.pem");
    let report = dir.path().join("settings.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["--rate", "unlimited"])).await;
    sandbox.assert_all_ok(&out, &report);
}

#[tokio::test]
async fn a_bad_ca_cert_file_is_a_usage_error_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows(), "");
    let bad = dir.path().join("not-a-cert.pem");
    std::fs::write(&bad, "hello\n").expect("write");
    for ca in [bad, dir.path().join("missing.pem")] {
        let ca = ca.display().to_string();
        let out = run_blocking(run_cmd(
            &plan,
            &dir.path().join("r.csv"),
            &["--ca-cert", &ca],
        ))
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--ca-cert"), "{}", stderr(&out));
    }
    assert_eq!(sandbox.stats().requests, 0);
    sandbox.shutdown().await;
}

/// Proxy variables pointing at a dead port, in both spellings.
fn dead_proxies(cmd: &mut Command) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, "http://127.0.0.1:1");
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
}

#[tokio::test]
async fn dead_proxy_variables_do_not_touch_the_sandbox_or_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `run --sandbox`, over HTTP and over HTTPS.
    let plan = write_plan(dir.path(), "https://example.invalid", &rows(), "");
    for (i, extra) in [&["--sandbox"][..], &["--sandbox", "--tls"]]
        .iter()
        .enumerate()
    {
        let report = dir.path().join(format!("sandbox-{i}.csv"));
        let mut cmd = run_cmd(&plan, &report, &[*extra, &["--rate", "unlimited"]].concat());
        dead_proxies(&mut cmd);
        let out = run_blocking(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stderr(&out));
        let done = read_report(&report).expect("report");
        assert!(done.iter().all(|r| r.status == Status::Ok), "{done:?}");
    }
    // A target on a loopback address is never proxied either.
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows(), "");
    let report = dir.path().join("loopback.csv");
    let mut cmd = run_cmd(&plan, &report, &["--rate", "unlimited"]);
    dead_proxies(&mut cmd);
    let out = run_blocking(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 3);
    sandbox.shutdown().await;
}

/// `check` on a one-row plan with `emoji` as written (a YAML double-quoted string).
fn check_emoji(dir: &Path, emoji_yaml: &str) -> std::process::Output {
    let plan = dir.join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "version: 1\ntargets:\n  o:\n    provider: ogmma\n    channel_id: ch_1\n    \
             api_key: {{ env: OGMMA_API_KEY }}\nrows:\n  - {{ message_id: m-1, emoji: \"{emoji_yaml}\" }}\n"
        ),
    )
    .expect("write plan");
    bin()
        .args(["check", "plan.yaml"])
        .current_dir(dir)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .output()
        .expect("check")
}

#[test]
fn emoji_values_are_exactly_one_emoji_or_a_known_shortcode() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bad, says) in [
        ("ok", "perhaps 👌 `:ok_hand:`, 👍 `:+1:`, 🆗 `:ok:`"),
        (":thumbsupp:", "did you mean `:thumbsup:`"),
        (" 👍", "write `👍`"),
        ("👍👍", "is 2 emojis"),
        ("\\u200b", "invisible"),
        ("👍\\u200b", "invisible"),
    ] {
        let out = check_emoji(dir.path(), bad);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {text}");
        assert!(text.contains("--> plan.yaml:8:"), "{bad}: located: {text}");
        assert!(text.contains(says), "{bad}: {text}");
    }
    for good in [":thumbsup:", "👨‍👩‍👧", "👍🏽", "🇧🇷", "1️⃣", "❤️", "❤"]
    {
        let out = check_emoji(dir.path(), good);
        assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
    }
}

#[test]
fn emoji_search_lists_matches_with_their_shortcodes() {
    let out = bin().args(["emoji", "thumbs"]).output().expect("emoji");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("👍\t") && l.contains(":thumbsup:") && l.contains(":+1:")),
        "{text}"
    );
    let out = bin()
        .args(["emoji", "no-such-emoji-zzz"])
        .output()
        .expect("emoji");
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test]
async fn shortcodes_go_on_the_wire_as_emoji_and_every_request_accepts_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(sandbox_config().request_log(log.clone()))
        .await
        .expect("sandbox");
    let rows = vec![
        react("k", "m-1", ":thumbsup:"),
        react("o", "m-2", ":thumbsup:"),
        react("k", "m-3", "👨‍👩‍👧"),
        react("k", "m-4", "👍🏽"),
        react("k", "m-5", "🇧🇷"),
        react("k", "m-6", "1️⃣"),
        react("o", "m-7", "❤️"),
    ];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("report.csv");
    let emit = dir.path().join("emit.jsonl");
    let emit_arg = emit.display().to_string();
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--rate", "unlimited", "--emit", &emit_arg],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = read_report(&report).expect("report");
    assert!(done.iter().all(|r| r.status == Status::Ok), "{done:?}");
    assert_eq!(
        done.iter()
            .find(|r| r.message_id == "m-1")
            .map(|r| r.emoji.as_str()),
        Some("👍")
    );
    assert_eq!(
        sandbox
            .reaction(ProviderKind::Kommo, SCOPE, "m-1", USER)
            .as_deref(),
        Some("👍")
    );
    assert_eq!(
        sandbox
            .reaction(ProviderKind::Ogmma, CHANNEL, "m-2", OGMMA_USER)
            .as_deref(),
        Some("👍")
    );
    assert_eq!(
        sandbox
            .reaction(ProviderKind::Kommo, SCOPE, "m-3", USER)
            .as_deref(),
        Some("👨‍👩‍👧")
    );
    let emitted = std::fs::read_to_string(&emit).expect("emit");
    assert!(!emitted.contains(":thumbsup:"), "{emitted}");
    for line in emitted.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let headers = &v["headers"];
        assert_eq!(headers["Accept"], "application/json", "{line}");
        for name in ["Host", "User-Agent", "Content-Length", "Content-Type"] {
            assert!(headers[name].is_string(), "{name} missing: {line}");
        }
    }

    sandbox.shutdown().await;
    let logged = std::fs::read_to_string(&log).expect("request log");
    assert_eq!(logged.lines().count(), rows.len());
    for line in logged.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["accept"], "application/json", "{line}");
        assert!(
            v["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with("reactbatch/")),
            "{line}"
        );
    }
}

/// A one-shot Ogmma stand-in: answers each of `n` connections `200` with a `success: false`
/// body (with a code unless the message id says `nocode`). Counts what it received.
fn success_false_server(n: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the headers, then the body by its Content-Length.
            while let Ok(k) = stream.read(&mut buf) {
                if k == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let body = if String::from_utf8_lossy(&request).contains("nocode") {
                r#"{"success":false}"#.to_string()
            } else {
                r#"{"success":false,"code":"MESSAGE_NOT_SENT","message":"Mensagem nao enviada."}"#
                    .to_string()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, seen)
}

#[tokio::test]
async fn ogmma_success_false_is_failed_with_the_body_code_and_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = success_false_server(2);
    let rows = vec![react("o", "m-1", "👍"), react("o", "m-nocode", "👍")];
    let plan = write_plan(dir.path(), &url, &rows, "");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--rate", "unlimited", "--retries", "3", "--timeout", "5s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let done = read_report(&report).expect("report");
    let by_id = |id: &str| done.iter().find(|r| r.message_id == id).expect("row");
    let first = by_id("m-1");
    assert_eq!(
        (
            first.status,
            first.http_status,
            first.code.as_str(),
            first.attempts
        ),
        (Status::Failed, Some(200), "MESSAGE_NOT_SENT", 1)
    );
    assert_eq!(first.message, "Mensagem nao enviada.");
    let second = by_id("m-nocode");
    assert_eq!(
        (second.status, second.code.as_str()),
        (Status::Failed, "success_false")
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// What the sandbox answers a hand-made request: status and JSON body.
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = client.post(url).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

fn kommo_headers(body: &str, date: &str) -> Vec<(&'static str, String)> {
    let path = format!("/v2/origin/custom/{SCOPE}/react");
    let sig = reactbatch::sign::sign_kommo(
        "POST",
        &path,
        body.as_bytes(),
        date,
        &Secret::new(KOMMO_SECRET),
    );
    vec![
        ("Date", sig.date),
        ("Content-Type", "application/json".into()),
        ("Content-MD5", sig.content_md5),
        ("X-Signature", sig.signature),
    ]
}

#[tokio::test]
async fn the_sandbox_refuses_what_the_services_refuse() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let client = reqwest::Client::new();
    let kommo_url = format!("{}/v2/origin/custom/{SCOPE}/react", sandbox.base_url());
    let ogmma_url = format!(
        "{}/v1/channels/{CHANNEL}/messages/react",
        sandbox.base_url()
    );
    let now = || reactbatch::sign::http_date(chrono::Utc::now());
    let ogmma_headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("Authorization", format!("Bearer {OGMMA_KEY}")),
    ];

    for emoji in ["ok", ":thumbsup:", " 👍", "👍👍", "\u{200b}"] {
        let body = serde_json::json!({"messageId": "m-1", "emoji": emoji}).to_string();
        let (status, answer) = post(&client, &ogmma_url, &ogmma_headers, &body).await;
        assert_eq!(status, 400, "{emoji:?}: {answer}");
        assert_eq!(answer["code"], "VALIDATION_ERROR", "{answer}");
        assert!(answer["message"].is_string(), "{answer}");

        let body = serde_json::json!({
            "conversation_id": "c", "id": "m-1", "user": {"id": USER}, "type": "react", "emoji": emoji
        })
        .to_string();
        let (status, answer) =
            post(&client, &kommo_url, &kommo_headers(&body, &now()), &body).await;
        assert_eq!(status, 400, "{emoji:?}: {answer}");
        assert_eq!(answer["error"], "invalid_emoji", "{answer}");
    }
    assert!(sandbox.reactions().is_empty());

    // Kommo `id` and `msgid` are different messages even with the same text.
    for (field, emoji) in [("id", "👍"), ("msgid", "🎉")] {
        let body = serde_json::json!({
            "conversation_id": "c", field: "same-1", "user": {"id": USER}, "type": "react", "emoji": emoji
        })
        .to_string();
        let (status, answer) =
            post(&client, &kommo_url, &kommo_headers(&body, &now()), &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(sandbox.reactions().len(), 2);
    assert_eq!(
        sandbox
            .reaction(ProviderKind::Kommo, SCOPE, "same-1", USER)
            .as_deref(),
        Some("👍")
    );

    // A Date more than 15 minutes away, either way, is refused.
    for minutes in [16i64, -16] {
        let date =
            reactbatch::sign::http_date(chrono::Utc::now() + chrono::Duration::minutes(minutes));
        let body =
            r#"{"conversation_id":"c","id":"m-9","user":{"id":"bot"},"type":"react","emoji":"👍"}"#;
        let (status, answer) = post(&client, &kommo_url, &kommo_headers(body, &date), body).await;
        assert_eq!(status, 403, "{minutes} min: {answer}");
        assert_eq!(answer["error"], "date_out_of_window", "{answer}");
    }
    sandbox.shutdown().await;
}

#[test]
fn sign_kommo_signs_the_documents_example_date_as_given_and_warns() {
    let body = r#"{"conversation_id":"chat-7","id":"m-1001","user":{"id":"bot"},"type":"react","emoji":"👍"}"#;
    let sign = |date: Option<&str>| {
        let mut cmd = bin();
        cmd.args([
            "sign",
            "kommo",
            "--secret-env",
            "S",
            "--path",
            "/v2/origin/custom/scope-1/react",
        ]);
        if let Some(date) = date {
            cmd.args(["--date", date]);
        }
        let mut child = cmd
            .arg("-")
            .env("S", "doc-example-secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sign");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("body");
        child.wait_with_output().expect("sign")
    };
    // The document's format example, "Thu, 01 Jan 2023" (a Sunday). The expected values were
    // computed independently with Python's hashlib/hmac.
    let out = sign(Some("Thu, 01 Jan 2023 12:00:00 +0000"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Content-MD5: d70daffa0e9d950677004423fd68f1ee\n\
         X-Signature: 947915fbb49a21be96a88d1c1096a8ec5b9b0209\n"
    );
    let warning = stderr(&out);
    assert!(
        warning.contains("warning") && warning.contains("Sunday"),
        "{warning}"
    );

    // No --date: now, printed first so the request can carry it.
    let out = sign(None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let date = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Date: "))
        .expect("a Date line first");
    assert!(chrono::DateTime::parse_from_rfc2822(date).is_ok(), "{date}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

/// Runs the script with bash (off the test's runtime, which serves the sandbox); curl gives up
/// after 10 s so a hang fails the test instead of stalling it.
async fn bash(script: &Path, key: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script).stdin(Stdio::null());
    // Through curl's own configuration file variable: a bound on every transfer.
    cmd.env("CURL_HOME", script.parent().unwrap_or(Path::new(".")));
    match key {
        Some(k) => cmd.env("OGMMA_API_KEY", k),
        None => cmd.env_remove("OGMMA_API_KEY"),
    };
    run_blocking(cmd).await
}

#[tokio::test]
async fn the_curl_script_replays_a_dry_run_and_stops_at_a_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let rows = vec![
        react("k", "m-1", "👍"),
        react("o", "m-2", "❤️"),
        react("k", "m-3", "🎉"),
    ];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    std::fs::write(dir.path().join(".curlrc"), "max-time = 10\n").expect("curlrc");
    let script: PathBuf = dir.path().join("requests.sh");
    let script_arg = script.display().to_string();
    let dry = |extra: &'static [&'static str]| {
        let mut args = vec!["--dry-run", "--emit", &script_arg, "--emit-format", "curl"];
        args.extend_from_slice(extra);
        run_cmd(&plan, &dir.path().join("dry.csv"), &args)
    };

    // At the default pace the script sleeps after each request by its target's interval.
    let out = run_blocking(dry(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&script).expect("script");
    assert!(text.starts_with("#!/usr/bin/env bash\n"), "{text}");
    assert!(text.contains("\nset -eu\n"), "{text}");
    assert!(text.contains("15 minutes"), "{text}");
    assert!(text.contains("${OGMMA_API_KEY:?"), "{text}");
    assert_eq!(
        text.matches("\ncurl -sS --fail-with-body ").count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("\nsleep 0.143\n").count(), 2, "{text}");
    assert_eq!(text.matches("\nsleep 1.000\n").count(), 1, "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    // Unpaced for the replay (the test waits on nothing but the requests).
    let out = run_blocking(dry(&["--rate", "unlimited"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 0, "a dry run sends nothing");

    // Without the key: stops before sending anything.
    let out = bash(&script, None).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("OGMMA_API_KEY"), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 0);

    // With it: every request accepted, each answer labelled and on its own line.
    let out = bash(&script, Some(OGMMA_KEY)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr(&out));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout:?}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("row {}: {{", i + 1)), "{stdout}");
    }
    assert_eq!(sandbox.stats().requests, 3);
    assert_eq!(sandbox.reactions().len(), 3);

    // A refused request (wrong key) stops the script with a non-zero exit, after showing
    // the answer; the rows after it are not sent.
    let out = bash(&script, Some("wrong-key")).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("row 2: ") && stdout.contains("UNAUTHORIZED"),
        "{stdout}"
    );
    assert!(!stdout.contains("row 3: "), "{stdout}");
    assert_eq!(sandbox.stats().requests, 5);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_curl_script_of_a_live_run_holds_first_attempts_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config().error_rate(0.5).seed(7))
        .await
        .expect("sandbox");
    let rows: Vec<PlanRow> = (0..8).map(|i| react("o", format!("m-{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let script = dir.path().join("live.sh").display().to_string();
    let out = run_blocking(run_cmd(
        &plan,
        &dir.path().join("report.csv"),
        &[
            "--rate",
            "unlimited",
            "--retries",
            "20",
            "--emit",
            &script,
            "--emit-format",
            "curl",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = sandbox.stats();
    assert!(stats.requests > 8, "faults made some retries: {stats:?}");
    let text = std::fs::read_to_string(&script).expect("script");
    assert_eq!(text.matches("\ncurl ").count(), 8, "{text}");
    sandbox.shutdown().await;
}

/// A remote target with `HTTP_PROXY` set goes through the proxy: the proxy gets the request
/// in absolute form, with the signed headers and body untouched, and its answer is the row's.
/// (A plain-http remote host needs `--allow-insecure-http`; the proxy resolves nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_target_goes_through_http_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        while let Ok((mut sock, _)) = proxy.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(str::trim))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    buf.drain(..end + 4 + len);
                    if let Ok(mut log) = log.lock() {
                        log.push(format!("{head}\n\n{body}"));
                    }
                    let answer = r#"{"success":true,"message":"Reacao processada"}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("o", "p-1", "👍"), react("o", "p-2", "🎉")];
    let plan = write_plan(dir.path(), "http://reactions.example.test", &rows, "");
    let report = dir.path().join("report.csv");
    let mut cmd = run_cmd(
        &plan,
        &report,
        &["--allow-insecure-http", "--rate", "unlimited"],
    );
    dead_proxies(&mut cmd);
    cmd.env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url);
    let out = run_blocking(cmd).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = read_report(&report).expect("report");
    assert!(done.iter().all(|r| r.status == Status::Ok), "{done:?}");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert!(
            request.starts_with(&format!(
                "POST http://reactions.example.test/v1/channels/{CHANNEL}/messages/react HTTP/1.1"
            )),
            "{request}"
        );
        assert!(
            request.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                OGMMA_KEY.to_ascii_lowercase()
            )),
            "{request}"
        );
    }
    assert!(
        seen.iter()
            .any(|r| r.ends_with(r#"{"messageId":"p-1","emoji":"👍"}"#)),
        "{seen:?}"
    );
}
