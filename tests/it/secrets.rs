//! No secret value ever leaves the process in output: the real binary runs every command with
//! known, distinctive secrets (two in the environment, one in a `{ file: ... }`), and every byte
//! of stdout, stderr, report, emit, summary and undo output is searched for them.
//!
//! Covered: `check`; `run --dry-run` with `--emit` (JSON Lines and curl) and `--summary-json`;
//! live runs against in-process sandboxes holding those credentials (success), and against a
//! sandbox with other credentials (Kommo 403 and Ogmma 401, so the auth-failure and
//! stop-the-target paths run); `sign kommo -v`; `undo` of a live report (to a file and to
//! stdout); and plans with a literal secret, which `check` and `run` refuse (exit 2) without
//! echoing the value.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use reactbatch::secret::Secret;

use crate::common::text;

/// Long, distinctive values: any leak, whole or in part, is unmistakable.
const KOMMO_SECRET: &str = "test-kommo-secret-5f1e8c2a9d7b4e6f0a1c3e5d7b9f2a4c6e8d0b1f";
const OGMMA_KEY: &str = "test-ogmma-key-9a7c4e2b0d8f6a1c3e5b7d9f0a2c4e6b8d1f3a5c";
/// The Kommo secret of the target that reads it from a file.
const FILE_SECRET: &str = "test-file-secret-3b8e1d6c4a2f9e7b5d3c1a8f6e4d2b0c9a7e5f31";
/// Literal secrets written into broken plans.
const LITERAL_SECRETS: &[&str] = &[
    "abc7f3e9d1c5b8a2f6e4d0c3b7a9e1f5d8c2b6a4",
    "sk-literal-ogmma-2c9e5a1f7d3b8e6c4a0f2d9b",
    "abcd1e8f4c7b2a9d6e3f0c5b8a1d4e7f2c9b6a3d",
];
const SCOPE: &str = "344a5002-f8ca-454d-af3d-396180102ac7_52e591f7-c98f-4255-8495-827210138c81";

/// What must never be printed: each secret and its random tail (a truncated leak is a leak).
fn needles() -> Vec<&'static str> {
    let mut all = Vec::new();
    for s in [KOMMO_SECRET, OGMMA_KEY, FILE_SECRET]
        .iter()
        .chain(LITERAL_SECRETS)
    {
        all.push(*s);
        all.push(&s[s.len() - 20..]);
    }
    all
}

/// Everything the binary wrote, by where it came from.
#[derive(Default)]
struct Transcript {
    outputs: Vec<(String, Vec<u8>)>,
}

impl Transcript {
    fn record(&mut self, label: &str, out: &Output) {
        self.outputs
            .push((format!("{label}: stdout"), out.stdout.clone()));
        self.outputs
            .push((format!("{label}: stderr"), out.stderr.clone()));
    }

    /// Every file under `dir`, recursively.
    fn files(&mut self, dir: &Path) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                self.files(&path);
            } else {
                let bytes = std::fs::read(&path).expect("read output file");
                self.outputs.push((path.display().to_string(), bytes));
            }
        }
    }

    fn assert_no_secret(&self) {
        let needles = needles();
        for (label, bytes) in &self.outputs {
            for needle in &needles {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "{label} contains a secret ({}…):\n{}",
                    &needle[..8],
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }

    fn count_files(&self, ending: &str) -> usize {
        self.outputs
            .iter()
            .filter(|(label, _)| label.ends_with(ending))
            .count()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The binary in `dir`, with the known secrets in its environment.
fn reactbatch(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reactbatch"));
    cmd.current_dir(dir)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null());
    cmd
}

/// Runs `args` in `dir`, records the output, checks the exit code.
fn run(t: &mut Transcript, dir: &Path, args: &[&str], code: i32) -> Output {
    let out = reactbatch(dir).args(args).output().expect("run reactbatch");
    t.record(&args.join(" "), &out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "reactbatch {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A plan over three targets: Kommo with its secret in the environment, Kommo with its secret
/// in a file, Ogmma with its key in the environment. `base(target)` gives each one's base URL.
fn write_plan(dir: &Path, name: &str, kommo_env: &str, kommo_file: &str, ogmma: &str) {
    let plan = format!(
        r#"version: 1
targets:
  kommo-env:
    provider: kommo
    scope_id: {SCOPE}
    secret: {{ env: KOMMO_CHANNEL_SECRET }}
    user_id: bot
    base_url: {kommo_env}
  kommo-file:
    provider: kommo
    scope_id: {SCOPE}
    secret: {{ file: kommo.secret }}
    user_id: bot
    base_url: {kommo_file}
  ogmma-env:
    provider: ogmma
    channel_id: ch_123
    api_key: {{ env: OGMMA_API_KEY }}
    base_url: {ogmma}
defaults: {{ target: kommo-env, conversation_id: chat-7 }}
rows:
  - {{ message_id: m-1, emoji: "👍" }}
  - {{ message_id: m-2, action: unreact, previous_emoji: "🎉" }}
  - {{ msgid: own-3, user_ref_id: mgr-1, emoji: "👩‍👩‍👧" }}
  - {{ message_id: m-4, emoji: "✅" }}
  - {{ target: kommo-file, message_id: m-5, emoji: "❤️" }}
  - {{ target: kommo-file, message_id: m-6, emoji: "🔥" }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f0, emoji: "❤️" }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f1, action: unreact }}
  - {{ target: ogmma-env, message_id: 6650a1b2c3d4e5f6a7b8c9f2, emoji: "👍" }}
"#
    );
    std::fs::write(dir.join(name), plan).expect("write plan");
}

async fn sandbox(kommo: &str, ogmma: &str) -> SandboxHandle {
    Sandbox::start(
        SandboxConfig::new()
            .kommo_secret(Secret::new(kommo))
            .ogmma_key(Secret::new(ogmma)),
    )
    .await
    .expect("sandbox starts")
}

/// Runs blocking child processes off the runtime that serves the sandboxes.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("child task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_prints_a_secret() {
    // The right credentials; the file secret's target has its own sandbox; and a sandbox that
    // knows other credentials, for the 401/403 paths.
    let good = sandbox(KOMMO_SECRET, OGMMA_KEY).await;
    let file = sandbox(FILE_SECRET, "unused-ogmma-key").await;
    let wrong = sandbox(
        "wrong-kommo-secret-0000000000000000000000",
        "wrong-ogmma-key-000000000000000",
    )
    .await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&dir).expect("mkdir in");
    std::fs::create_dir_all(&out).expect("mkdir out");
    std::fs::write(dir.join("kommo.secret"), format!("{FILE_SECRET}\n")).expect("secret file");
    write_plan(
        &dir,
        "good.yaml",
        &good.base_url(),
        &file.base_url(),
        &good.base_url(),
    );
    let w = wrong.base_url();
    write_plan(&dir, "wrong.yaml", &w, &w, &w);

    let t = blocking(move || {
        let mut t = Transcript::default();
        let o = |name: &str| format!("../out/{name}");
        run(&mut t, &dir, &["check", "good.yaml", "wrong.yaml"], 0);

        let dry = [
            "run",
            "good.yaml",
            "--dry-run",
            "--now",
            "2026-12-01T09:00:00Z",
            "--no-progress",
        ];
        let (emit, summary, report) = (o("dry.jsonl"), o("dry.summary.json"), o("dry.csv"));
        let mut args = dry.to_vec();
        args.extend([
            "--emit",
            &emit,
            "--summary-json",
            &summary,
            "--report",
            &report,
        ]);
        run(&mut t, &dir, &args, 0);
        let (emit, summary, report) = (
            o("dry.sh"),
            o("dry-curl.summary.json"),
            o("dry.jsonl-report.jsonl"),
        );
        let mut args = dry.to_vec();
        args.extend([
            "--emit",
            &emit,
            "--emit-format",
            "curl",
            "--summary-json",
            &summary,
            "--report",
            &report,
        ]);
        run(&mut t, &dir, &args, 0);

        // Live, with the right credentials: everything is accepted.
        let (emit, summary, report) = (o("live.jsonl"), o("live.summary.json"), o("live.csv"));
        run(
            &mut t,
            &dir,
            &[
                "run",
                "good.yaml",
                "--rate",
                "unlimited",
                "--no-progress",
                "--emit",
                &emit,
                "--summary-json",
                &summary,
                "--report",
                &report,
            ],
            0,
        );
        let (emit, report) = (o("live.sh"), o("live-curl.jsonl"));
        run(
            &mut t,
            &dir,
            &[
                "run",
                "good.yaml",
                "--rate",
                "unlimited",
                "--no-progress",
                "--emit",
                &emit,
                "--emit-format",
                "curl",
                "--report",
                &report,
            ],
            0,
        );

        // Live, against a sandbox that knows other credentials: 403 / 401, targets stopped.
        let (emit, summary, report) = (
            o("wrong.jsonl"),
            o("wrong.summary.json"),
            o("wrong.jsonl-report.jsonl"),
        );
        run(
            &mut t,
            &dir,
            &[
                "run",
                "wrong.yaml",
                "--rate",
                "unlimited",
                "--retries",
                "0",
                "--no-progress",
                "--emit",
                &emit,
                "--summary-json",
                &summary,
                "--report",
                &report,
            ],
            3,
        );
        let (emit, report) = (o("wrong.sh"), o("wrong.csv"));
        let failed = run(
            &mut t,
            &dir,
            &[
                "run",
                "wrong.yaml",
                "--rate",
                "unlimited",
                "--concurrency",
                "1",
                "--no-progress",
                "--emit",
                &emit,
                "--emit-format",
                "curl",
                "--report",
                &report,
            ],
            3,
        );

        // Undo of the live report, to a file and to stdout; the undo plan checks and dry-runs.
        let (report, undo) = (o("live.csv"), o("undo.yaml"));
        run(
            &mut t,
            &dir,
            &["undo", &report, "--plan", "good.yaml", "-o", &undo],
            0,
        );
        run(&mut t, &dir, &["undo", &report, "--plan", "good.yaml"], 0);
        run(&mut t, &dir, &["check", &undo], 0);
        let (report, emit) = (o("undo-dry.csv"), o("undo-dry.jsonl"));
        run(
            &mut t,
            &dir,
            &[
                "run",
                &undo,
                "--dry-run",
                "--emit",
                &emit,
                "--report",
                &report,
                "--no-progress",
            ],
            0,
        );
        (t, failed)
    })
    .await;
    let (mut t, failed) = t;

    // The runs really used the credentials: the good sandboxes changed, the wrong one refused.
    let good_stats = good.stats();
    assert!(
        good_stats.count(ProviderKind::Kommo, 200) >= 4,
        "{good_stats:?}"
    );
    assert!(
        good_stats.count(ProviderKind::Ogmma, 200) >= 3,
        "{good_stats:?}"
    );
    assert!(file.stats().count(ProviderKind::Kommo, 200) >= 2);
    let wrong_stats = wrong.stats();
    assert!(
        wrong_stats.count(ProviderKind::Kommo, 403) >= 1,
        "{wrong_stats:?}"
    );
    assert!(
        wrong_stats.count(ProviderKind::Ogmma, 401) >= 1,
        "{wrong_stats:?}"
    );
    assert_eq!(wrong_stats.count(ProviderKind::Kommo, 200), 0);
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("skipped"), "{stderr}");

    t.files(&tmp.path().join("out"));
    assert!(t.count_files(".summary.json") >= 4);
    assert!(t.count_files(".sh") >= 3);
    assert!(t.count_files("undo.yaml") == 1);
    t.assert_no_secret();
    good.shutdown().await;
    file.shutdown().await;
    wrong.shutdown().await;
}

#[test]
fn sign_verbose_prints_the_signature_not_the_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let body = tmp.path().join("body.json");
    std::fs::write(
        &body,
        r#"{"conversation_id":"chat-7","id":"m-1","user":{"id":"bot"},"type":"react","emoji":"👍"}"#,
    )
    .expect("write body");
    let mut t = Transcript::default();
    let path = format!("/v2/origin/custom/{SCOPE}/react");
    let body = body.display().to_string();
    let base = [
        "sign",
        "kommo",
        "--secret-env",
        "KOMMO_CHANNEL_SECRET",
        "--path",
        &path,
        "--date",
        "Tue, 01 Dec 2026 09:00:00 +0000",
    ];
    let mut args = base.to_vec();
    args.extend(["-v", &body]);
    let out = run(&mut t, tmp.path(), &args, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("X-Signature: "), "{stdout}");
    assert!(stdout.contains("--- signed string"), "{stdout}");
    // Usage errors name the variable, never its value.
    let mut args = base.to_vec();
    args[3] = "NOT_SET_ANYWHERE_REACTBATCH";
    args.push(&body);
    run(&mut t, tmp.path(), &args, 2);
    // A secret pasted where the variable's name belongs is not echoed either.
    args[3] = LITERAL_SECRETS[2];
    let out = run(&mut t, tmp.path(), &args, 2);
    assert!(text(&out.stderr).contains("looks like a secret"));
    t.assert_no_secret();
}

#[test]
fn literal_secrets_are_refused_without_echoing_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let [kommo, ogmma, pasted] = [LITERAL_SECRETS[0], LITERAL_SECRETS[1], LITERAL_SECRETS[2]];
    std::fs::write(
        dir.join("literal.yaml"),
        format!(
            r#"version: 1
targets:
  kommo-main:
    provider: kommo
    scope_id: {SCOPE}
    secret: "{kommo}"
    user_id: bot
  ogmma-br:
    provider: ogmma
    channel_id: ch_123
    api_key: {ogmma}
  kommo-pasted:
    provider: kommo
    scope_id: {SCOPE}
    secret: {{ env: "{pasted}" }}
    user_id: bot
rows:
  - {{ target: kommo-main, message_id: m-1, conversation_id: chat-7, emoji: "👍" }}
  - {{ target: ogmma-br, message_id: 6650a1b2c3d4e5f6a7b8c9f0, emoji: "❤️" }}
  - {{ target: kommo-pasted, message_id: m-2, conversation_id: chat-7, emoji: "👍" }}
"#
        ),
    )
    .expect("write plan");
    let mut t = Transcript::default();
    let out = run(&mut t, dir, &["check", "literal.yaml"], 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("literal secret"), "{stderr}");
    assert!(stderr.contains("literal.yaml:6"), "{stderr}");
    assert!(stderr.contains("literal.yaml:11"), "{stderr}");
    assert!(stderr.contains("literal.yaml:15"), "{stderr}");
    assert!(stderr.contains("looks like a secret"), "{stderr}");
    run(
        &mut t,
        dir,
        &[
            "run",
            "literal.yaml",
            "--dry-run",
            "--report",
            "r.csv",
            "--emit",
            "e.jsonl",
        ],
        2,
    );
    // Whatever output files exist (the plan itself holds the literals, so it is not scanned).
    for name in ["r.csv", "e.jsonl"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            t.outputs.push((name.to_string(), bytes));
        }
    }
    run(&mut t, dir, &["undo", "r.csv", "--plan", "literal.yaml"], 2);
    t.assert_no_secret();
}
