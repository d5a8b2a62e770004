//! `run --dry-run` and `sign` through the real binary: what a dry run says would go on the wire.
//!
//! - the signed requests of `tests/fixtures/dry_run/signed.yaml` (every Kommo body shape, Ogmma
//!   react and remove) as JSON Lines, as curl, and the dry-run report, snapshotted with a fixed
//!   clock in `snapshots/dry_run__*.snap`;
//! - every request of a generated 2 000-row CSV plan verifies: its body is the exact bytes the
//!   row calls for, and `Content-MD5`/`X-Signature` are recomputed here independently (md-5,
//!   hmac, sha1) over the documented string;
//! - Kommo's published signing example through `reactbatch sign kommo`, and `sign -v` output;
//! - a curl rendering, made without `--now`, runs under `sh` against the sandbox and changes its
//!   state exactly as planned.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::{ReactionState, Sandbox, SandboxConfig, OGMMA_USER};
use reactbatch::secret::Secret;
use serde_json::Value;
use sha1::Sha1;

use crate::common::{require_tool, root, snapshot, text};

/// The clock every snapshot is taken at, and the `Date` it gives.
const NOW: &str = "2026-12-01T09:00:00Z";
const NOW_DATE: &str = "Tue, 01 Dec 2026 09:00:00 +0000";
/// Long, distinctive values, so a leak would be unmistakable (see also tests/it/secrets.rs).
const KOMMO_SECRET: &str = "test-kommo-secret-5f1e8c2a9d7b4e6f0a1c3e5d7b9f2a4c6e8d0b1f";
const OGMMA_KEY: &str = "test-ogmma-key-9a7c4e2b0d8f6a1c3e5b7d9f0a2c4e6b8d1f3a5c";
const SCOPE: &str = "344a5002-f8ca-454d-af3d-396180102ac7_52e591f7-c98f-4255-8495-827210138c81";

/// The binary, run in `dir`, with the test secrets in its environment.
fn reactbatch(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reactbatch"));
    cmd.current_dir(dir)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run reactbatch")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn hmac_sha1_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `https://host:port/a/b` → `/a/b`.
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"].get(name).and_then(Value::as_str)
}

/// Checks one emitted JSONL record as the provider would: Kommo's Content-MD5 and X-Signature
/// are recomputed from the `body` bytes and the documented string; Ogmma carries the redacted
/// bearer only. `date` is the expected Kommo `Date`, when the clock was fixed.
fn verify(record: &Value, date: Option<&str>) {
    let row = record["row"].as_u64().expect("row number");
    let url = record["url"].as_str().expect("url");
    let body = record["body"].as_str().expect("body");
    assert_eq!(record["method"], "POST", "row {row}");
    assert_eq!(
        header(record, "Content-Type"),
        Some("application/json"),
        "row {row}"
    );
    if url.contains("/v2/origin/custom/") {
        let sent_date = header(record, "Date").expect("Kommo Date");
        if let Some(date) = date {
            assert_eq!(sent_date, date, "row {row}");
        }
        let md5 = hex::encode(Md5::digest(body.as_bytes()));
        assert_eq!(header(record, "Content-MD5"), Some(&*md5), "row {row}");
        let signed = format!(
            "POST\n{md5}\napplication/json\n{sent_date}\n{}",
            path_of(url)
        );
        let signature = hmac_sha1_hex(KOMMO_SECRET, &signed);
        assert_eq!(
            header(record, "X-Signature"),
            Some(&*signature),
            "row {row}"
        );
        assert_eq!(header(record, "Authorization"), None, "row {row}");
    } else {
        assert!(url.ends_with("/messages/react"), "row {row}: {url}");
        assert_eq!(
            header(record, "Authorization"),
            Some("Bearer (redacted)"),
            "row {row}"
        );
        for kommo_only in ["Date", "Content-MD5", "X-Signature"] {
            assert_eq!(header(record, kommo_only), None, "row {row}: {kommo_only}");
        }
    }
}

fn records(jsonl: &str) -> Vec<Value> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn signed_requests_of_every_shape_are_snapshotted() {
    let dir = root().join("tests/fixtures/dry_run");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (jsonl, curl, report) = (
        tmp.path().join("requests.jsonl"),
        tmp.path().join("requests.sh"),
        tmp.path().join("report.csv"),
    );
    let run = |emit: &Path, format: &[&str]| {
        output(
            reactbatch(&dir)
                .args([
                    "run",
                    "signed.yaml",
                    "--dry-run",
                    "--now",
                    NOW,
                    "--no-progress",
                ])
                .arg("--report")
                .arg(&report)
                .arg("--emit")
                .arg(emit)
                .args(format),
        )
    };

    let out = run(&jsonl, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert!(stderr.contains("12 planned"), "{stderr}");
    assert!(stderr.contains("plan digest sha256:"), "{stderr}");
    let emitted = read(&jsonl);
    let recs = records(&emitted);
    assert_eq!(recs.len(), 12);
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec["row"], i as u64 + 1, "plan order");
        assert_eq!(rec["attempt"], 1);
        verify(rec, Some(NOW_DATE));
    }
    // Header order on the wire is part of what the snapshot shows; check it independently.
    let first = emitted.lines().next().expect("a line");
    let at = |needle: &str| first.find(needle).expect(needle);
    assert!(at("\"Date\"") < at("\"Content-Type\""));
    assert!(at("\"Content-Type\"") < at("\"Content-MD5\""));
    assert!(at("\"Content-MD5\"") < at("\"X-Signature\""));
    snapshot(
        "dry_run__signed_requests_jsonl",
        Some("run signed.yaml --dry-run --now 2026-12-01T09:00:00Z --emit requests.jsonl"),
        &emitted,
    );
    let report_csv = read(&report);
    snapshot(
        "dry_run__signed_report_csv",
        Some("run signed.yaml --dry-run --now 2026-12-01T09:00:00Z --report report.csv"),
        &report_csv,
    );

    let out = run(&curl, &["--emit-format", "curl"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = read(&curl);
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    assert_eq!(script.matches("\ncurl ").count(), 12);
    snapshot(
        "dry_run__signed_requests_curl",
        Some("run signed.yaml --dry-run --now 2026-12-01T09:00:00Z --emit requests.sh --emit-format curl"),
        &script,
    );
    // The same clock gives the same report, whatever the emit format.
    assert_eq!(read(&report), report_csv);
    for secret in [KOMMO_SECRET, OGMMA_KEY] {
        assert!(!emitted.contains(secret) && !script.contains(secret));
    }
}

/// One generated row of the big plan, and the exact body it must produce.
struct GenRow {
    csv: String,
    url_suffix: String,
    body: String,
}

const EMOJIS: &[&str] = &["👍", "❤️", "👩‍👩‍👧", "🎉", "👨🏽‍💻", "🇧🇷", "✅", "😂"];

/// Row `n` (1-based) of a mixed plan: both providers, both actions, every id combination.
fn gen_row(n: usize) -> GenRow {
    let emoji = EMOJIS[n % EMOJIS.len()];
    // Some ids are non-ASCII; none needs JSON escaping, so bodies can be written by hand here.
    let tag = if n.is_multiple_of(7) { "ção" } else { "x" };
    let kommo = |cells: [&str; 8], body: String| GenRow {
        csv: format!("kommo-main,{}", cells.join(",")),
        url_suffix: format!("/v2/origin/custom/{SCOPE}/react"),
        body,
    };
    // Cells: action,emoji,message_id,msgid,conversation_id,conversation_ref_id,user_id,user_ref_id
    match n % 6 {
        0 => {
            let (id, chat) = (format!("m-{n}-{tag}"), format!("chat-{}", n / 10));
            kommo(
                ["react", emoji, &id, "", &chat, "", "", ""],
                format!(
                    r#"{{"conversation_id":"{chat}","id":"{id}","user":{{"id":"bot-x"}},"type":"react","emoji":"{emoji}"}}"#
                ),
            )
        }
        1 => {
            let (msgid, chat, mgr) = (
                format!("own-{n}"),
                format!("ref-{}-{tag}", n / 10),
                format!("mgr-{}", n % 13),
            );
            kommo(
                ["react", emoji, "", &msgid, "", &chat, "", &mgr],
                format!(
                    r#"{{"conversation_ref_id":"{chat}","msgid":"{msgid}","user":{{"ref_id":"{mgr}"}},"type":"react","emoji":"{emoji}"}}"#
                ),
            )
        }
        2 => {
            let (id, chat) = (format!("m-{n}"), format!("chat-{tag}"));
            kommo(
                ["unreact", emoji, &id, "", &chat, "", "agent-7", ""],
                format!(
                    r#"{{"conversation_id":"{chat}","id":"{id}","user":{{"id":"agent-7"}},"type":"unreact","emoji":"{emoji}"}}"#
                ),
            )
        }
        3 => {
            let (id, msgid, chat) = (format!("m-{n}"), format!("own-{n}"), format!("chat-{n}"));
            kommo(
                ["unreact", "", &id, &msgid, &chat, "", "", ""],
                format!(
                    r#"{{"conversation_id":"{chat}","id":"{id}","msgid":"{msgid}","user":{{"id":"bot-x"}},"type":"unreact"}}"#
                ),
            )
        }
        4 => {
            let id = format!("{n:024x}");
            GenRow {
                csv: format!("ogmma-br,react,{emoji},{id},,,,,"),
                url_suffix: "/v1/channels/ch_123/messages/react".into(),
                body: format!(r#"{{"messageId":"{id}","emoji":"{emoji}"}}"#),
            }
        }
        _ => {
            let id = format!("{n:024x}");
            GenRow {
                csv: format!("ogmma-br,unreact,,{id},,,,,"),
                url_suffix: "/v1/channels/ch_123/messages/react".into(),
                body: format!(r#"{{"messageId":"{id}","emoji":""}}"#),
            }
        }
    }
}

#[test]
fn every_request_of_a_2000_row_csv_plan_verifies() {
    const ROWS: usize = 2000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("targets.yaml"),
        format!(
            "targets:\n  kommo-main:\n    provider: kommo\n    scope_id: {SCOPE}\n    \
             secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: bot-x\n  ogmma-br:\n    \
             provider: ogmma\n    channel_id: ch_123\n    api_key: {{ env: OGMMA_API_KEY }}\n"
        ),
    )
    .expect("write targets");
    let rows: Vec<GenRow> = (1..=ROWS).map(gen_row).collect();
    let mut csv = String::from(
        "target,action,emoji,message_id,msgid,conversation_id,conversation_ref_id,user_id,user_ref_id\n",
    );
    for r in &rows {
        writeln!(csv, "{}", r.csv).expect("write to string");
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");

    let out = output(reactbatch(dir).args([
        "run",
        "rows.csv",
        "--targets",
        "targets.yaml",
        "--dry-run",
        "--now",
        NOW,
        "--emit",
        "requests.jsonl",
        "--report",
        "report.csv",
        "--no-progress",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("{ROWS} planned")), "{stderr}");

    let recs = records(&read(&dir.join("requests.jsonl")));
    assert_eq!(recs.len(), ROWS);
    let mut seen = BTreeSet::new();
    for rec in &recs {
        verify(rec, Some(NOW_DATE));
        let n = rec["row"].as_u64().expect("row") as usize;
        assert!(seen.insert(n), "row {n} emitted twice");
        assert_eq!(rec["attempt"], 1);
        let want = &rows[n - 1];
        let url = rec["url"].as_str().expect("url");
        assert_eq!(
            url,
            format!(
                "https://{}{}",
                if n % 6 < 4 {
                    "amojo.kommo.com"
                } else {
                    "oapi.ogmma.com.br"
                },
                want.url_suffix
            ),
            "row {n}"
        );
        let body = rec["body"].as_str().expect("body");
        assert_eq!(body, want.body, "row {n}: exact body bytes");
        let parsed: Value = serde_json::from_str(body).expect("body is JSON");
        assert!(parsed.is_object(), "row {n}");
    }
    assert_eq!(seen.len(), ROWS);

    let report = read(&dir.join("report.csv"));
    let mut lines = report.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("row,source,")));
    let mut count = 0;
    for (i, line) in lines.enumerate() {
        assert!(
            line.starts_with(&format!("{},rows.csv:{},", i + 1, i + 2)),
            "{line}"
        );
        assert!(line.contains(",planned,"), "{line}");
        assert!(line.contains(",2026-12-01T09:00:00.000Z,"), "{line}");
        count += 1;
    }
    assert_eq!(count, ROWS);
}

/// The example in Kommo's documentation, through the command line.
const VECTOR_BODY: &str = r#"{"account_id":"52e591f7-c98f-4255-8495-827210138c81","title":"ChatsIntegration","hook_api_version":"v2"}"#;
const VECTOR_SECRET: &str = "f2d7f8704eff95087ed45b23ba99c0b5aac8278e";

fn sign_vector(verbose: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reactbatch"));
    cmd.args([
        "sign",
        "kommo",
        "--secret-env",
        "V",
        "--path",
        "/v2/origin/custom/344a5002-f8ca-454d-af3d-396180102ac7/connect",
        "--date",
        "Wed, 15 Dec 2021 23:12:55 +0000",
    ]);
    if verbose {
        cmd.arg("-v");
    }
    let mut child = cmd
        .arg("-")
        .env("V", VECTOR_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reactbatch sign");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(VECTOR_BODY.as_bytes())
        .expect("write body");
    child.wait_with_output().expect("reactbatch sign")
}

#[test]
fn sign_reproduces_the_published_kommo_vector() {
    let out = sign_vector(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Content-MD5: 2fbcb3c652b61e24e004daddfc73d0ce\n\
         X-Signature: 81211856ce0c5095f3e1a90c0a38dc9d736cfd55\n"
    );
    assert!(out.stderr.is_empty());

    let out = sign_vector(true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(VECTOR_SECRET));
    snapshot(
        "sign__kommo_published_vector_verbose",
        Some("reactbatch sign kommo -v on the example from Kommo's documentation"),
        &stdout,
    );
}

/// Writes a plan whose targets point at `base_url`: Kommo, Ogmma with the key from the
/// environment, and Ogmma with the key in a file.
fn sandbox_plan(dir: &Path, base_url: &str) {
    std::fs::write(dir.join("ogmma.key"), format!("{OGMMA_KEY}\n")).expect("write key file");
    let plan = format!(
        r#"version: 1
targets:
  kommo-main:
    provider: kommo
    scope_id: {SCOPE}
    secret: {{ env: KOMMO_CHANNEL_SECRET }}
    user_id: bot
    base_url: {base_url}
  ogmma-env:
    provider: ogmma
    channel_id: ch_env
    api_key: {{ env: OGMMA_API_KEY }}
    base_url: {base_url}
  ogmma-file:
    provider: ogmma
    channel_id: ch_file
    api_key: {{ file: ogmma.key }}
    base_url: {base_url}
defaults: {{ target: kommo-main, conversation_id: chat-7 }}
rows:
  - {{ message_id: m-1, emoji: "👍" }}
  - {{ message_id: m-2, emoji: "👩‍👩‍👧" }}
  - {{ message_id: m-3, emoji: "🎉" }}
  - {{ message_id: m-3, action: unreact }}
  - {{ msgid: own-4, conversation_id: conversa-ção, user_ref_id: mgr-9, emoji: "❤️" }}
  - {{ message_id: "it's-5", emoji: "✅" }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f0, emoji: "❤️" }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f1, emoji: "👍" }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f1, action: unreact }}
  - {{ target: ogmma-file, message_id: 6650a1b2c3d4e5f6a7b8c9f2, emoji: "🔥" }}
"#
    );
    std::fs::write(dir.join("plan.yaml"), plan).expect("write plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curl_rendering_runs_against_the_sandbox() {
    require_tool("curl", "curl");
    let sandbox = Sandbox::start(
        SandboxConfig::new()
            .kommo_secret(Secret::new(KOMMO_SECRET))
            .ogmma_key(Secret::new(OGMMA_KEY)),
    )
    .await
    .expect("sandbox starts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    sandbox_plan(&dir, &sandbox.base_url());

    // Blocking child processes run off the runtime, which keeps serving the sandbox.
    let run_dir = dir.clone();
    let (out, script) = tokio::task::spawn_blocking(move || {
        // No --now: the Dates are fresh, so the sandbox accepts the signatures.
        let out = output(reactbatch(&run_dir).args([
            "run",
            "plan.yaml",
            "--dry-run",
            "--emit",
            "requests.sh",
            "--emit-format",
            "curl",
            "--report",
            "report.csv",
            "-q",
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        // Run from another directory, with only the Ogmma key in the environment: the Kommo
        // requests carry their signatures, so the channel secret is not needed.
        let elsewhere = run_dir.join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let script = Command::new("bash")
            .arg(run_dir.join("requests.sh"))
            .current_dir(&elsewhere)
            .env_remove("KOMMO_CHANNEL_SECRET")
            .env("OGMMA_API_KEY", OGMMA_KEY)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .expect("run sh");
        (out, script)
    })
    .await
    .expect("child processes");
    assert!(out.stdout.is_empty());
    let stdout = text(&script.stdout);
    let stderr = text(&script.stderr);
    assert_eq!(script.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "curl complained: {stderr}");

    let stats = sandbox.stats();
    assert_eq!(stats.count(ProviderKind::Kommo, 200), 6, "{stdout}");
    assert_eq!(stats.count(ProviderKind::Ogmma, 200), 4, "{stdout}");
    assert_eq!(stats.requests, 10, "{stats:?}\n{stdout}");

    let reaction = |provider, scope: &str, message: &str, user: &str, emoji: &str| ReactionState {
        provider,
        scope: scope.into(),
        message: message.into(),
        user: user.into(),
        emoji: emoji.into(),
    };
    let k = ProviderKind::Kommo;
    let o = ProviderKind::Ogmma;
    let mut want = vec![
        reaction(k, SCOPE, "it's-5", "bot", "✅"),
        reaction(k, SCOPE, "m-1", "bot", "👍"),
        reaction(k, SCOPE, "m-2", "bot", "👩‍👩‍👧"),
        // A message named by `msgid` only: its own namespace in the sandbox.
        reaction(k, SCOPE, "msgid:own-4", "mgr-9", "❤️"),
        reaction(o, "ch_env", "6650a1b2c3d4e5f6a7b8c9f0", OGMMA_USER, "❤️"),
        reaction(o, "ch_file", "6650a1b2c3d4e5f6a7b8c9f2", OGMMA_USER, "🔥"),
    ];
    let mut got = sandbox.reactions();
    want.sort_by(|a, b| (a.scope.as_str(), a.message.as_str()).cmp(&(&b.scope, &b.message)));
    got.sort_by(|a, b| (a.scope.as_str(), a.message.as_str()).cmp(&(&b.scope, &b.message)));
    assert_eq!(got, want);
    sandbox.shutdown().await;
}

/// The plan digest and the per-file digests of two example plans (includes, per-row accounts)
/// are what audits already hold: `--expect-digest` compares against digests written by
/// earlier versions, so how the rows are fed to the hash may change, the bytes hashed may not.
#[test]
fn the_digests_of_the_example_plans_stay_what_earlier_audits_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "migration",
            "sha256:010aa57563911241e10230da251bc369cdb674cacfb725eb0bf89cf44fa4e1d3",
            [
                (
                    "migration-rows.csv",
                    "sha256:9b5ba40665c75780a151705db9195028c5a9060c068469df3db1e1812a780b23",
                ),
                (
                    "migration.yaml",
                    "sha256:d742ea026555f6d5e2ccd76e27982d61b7314d9e1ec1d2ddcd318993f165ef64",
                ),
            ],
        ),
        (
            "integrator",
            "sha256:e5115dd935beeeb1bf21e07eb4a3b180187f138ce260fb6e4b4d1f8cae62732a",
            [
                (
                    "integrator-accounts.csv",
                    "sha256:d6cc453afef398260e4b527f4991e73343f3bc3d5c9bb5f8337a7368d180f12f",
                ),
                (
                    "integrator.yaml",
                    "sha256:d06c71a43829f054c45dd5cc87ba7f82cd51d334901c0487eba4482b945e3082",
                ),
            ],
        ),
    ];
    for (name, plan_digest, files) in cases {
        let summary = dir.path().join(format!("{name}.json"));
        let out = crate::common::bin()
            .arg("run")
            .arg(root().join(format!("examples/workflows/{name}.yaml")))
            .args(["--dry-run", "--no-progress", "-q", "--now", NOW, "--report"])
            .arg(dir.path().join(format!("{name}.csv")))
            .arg("--summary-json")
            .arg(&summary)
            .env("KOMMO_CHANNEL_SECRET", "x")
            .env("OGMMA_API_KEY", "y")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
        assert_eq!(doc["digest"], plan_digest, "{name}");
        let got: Vec<(String, String)> = doc["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                let file = f["file"].as_str().unwrap_or("");
                let base = Path::new(file).file_name().map(|n| n.to_string_lossy());
                (
                    base.unwrap_or_default().to_string(),
                    f["digest"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = files
            .iter()
            .map(|(f, d)| (f.to_string(), d.to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
