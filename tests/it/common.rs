//! Helpers shared by the integration tests that run the real binary against the sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reactbatch::outputs::report::{RowResult, Status};
use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::{SandboxConfig, SandboxHandle, OGMMA_USER};
use reactbatch::secret::Secret;

pub const KOMMO_SECRET: &str = "run-test-kommo-secret-0b7d3e";
pub const OGMMA_KEY: &str = "run-test-ogmma-key-77c1a9";
pub const SCOPE: &str = "scope-1_acct-1";
pub const CHANNEL: &str = "ch_1";
pub const USER: &str = "bot";

/// The checkout: fixtures, examples and docs are found from here.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A process's output as text; the binary writes UTF-8 only, so anything else is a failure.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// `true` if some line of `stderr` is a diagnostic's origin ` --> file:LINE[:COL]` for a
/// `.yaml` or `.csv` file and a line number.
pub fn names_file_and_line(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        line.trim_start().strip_prefix("--> ").is_some_and(|loc| {
            let mut parts = loc.split(':');
            let file = parts.next().unwrap_or("");
            let line_no = parts.next().unwrap_or("");
            (file.ends_with(".yaml") || file.ends_with(".csv"))
                && !line_no.is_empty()
                && line_no.chars().all(|c| c.is_ascii_digit())
        })
    })
}

/// Asserts `value` against `snapshots/<name>.snap`, with `description` (the command that made
/// it, say) in the snapshot's header when given.
pub fn snapshot(name: &str, description: Option<&str>, value: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    if let Some(description) = description {
        settings.set_description(description);
    }
    settings.bind(|| insta::assert_snapshot!(name, value));
}

/// Fails the calling test, saying what to install, unless `tool --version` runs. Tests that
/// drive a real outside tool (bash, curl, util-linux `script`) need it: they never pass by
/// skipping. `.ci/run` installs these where they are missing.
pub fn require_tool(tool: &str, package: &str) {
    let runs = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "this test needs `{tool}` on PATH (Debian/Ubuntu package `{package}`); install it"
    );
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reactbatch"))
}

pub fn sandbox_config() -> SandboxConfig {
    SandboxConfig::new()
        .kommo_secret(Secret::new(KOMMO_SECRET))
        .ogmma_key(Secret::new(OGMMA_KEY))
}

/// One planned reaction; `target` is `k` (Kommo) or `o` (Ogmma).
#[derive(Clone, Debug)]
pub struct PlanRow {
    pub target: &'static str,
    pub message: String,
    pub action: &'static str,
    pub emoji: &'static str,
}

pub fn react(target: &'static str, message: impl Into<String>, emoji: &'static str) -> PlanRow {
    PlanRow {
        target,
        message: message.into(),
        action: "react",
        emoji,
    }
}

pub fn unreact(target: &'static str, message: impl Into<String>) -> PlanRow {
    PlanRow {
        target,
        message: message.into(),
        action: "unreact",
        emoji: "",
    }
}

/// Writes `plan.yaml` (targets at `base_url`) and `rows.csv` into `dir`.
pub fn write_plan(dir: &Path, base_url: &str, rows: &[PlanRow], settings: &str) -> PathBuf {
    let plan = format!(
        "version: 1\n\
         targets:\n  k:\n    provider: kommo\n    scope_id: {SCOPE}\n    secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    base_url: {base_url}\n\
         \x20 o:\n    provider: ogmma\n    channel_id: {CHANNEL}\n    api_key: {{ env: OGMMA_API_KEY }}\n    base_url: {base_url}\n\
         settings: {{ {settings} }}\n\
         include: [rows.csv]\n"
    );
    let mut csv = String::from("target,action,message_id,conversation_id,emoji\n");
    for r in rows {
        let conv = if r.target == "k" { "chat-1" } else { "" };
        csv.push_str(&format!(
            "{},{},{},{conv},{}\n",
            r.target, r.action, r.message, r.emoji
        ));
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).expect("write plan");
    path
}

pub fn run_cmd(plan: &Path, report: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.arg("run")
        .arg(plan)
        .arg("--report")
        .arg(report)
        .arg("--no-progress")
        .args(extra)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to the end like [`Command::output`], but kills it and fails the test if it is
/// still running after `watchdog`. For tests whose point is that something does not hang: the
/// watchdog is generous (a hang is forever), never a speed limit.
pub fn output_within(cmd: &mut Command, watchdog: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes).expect("read child output");
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + watchdog;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().expect("kill");
            child.wait().expect("wait");
            panic!("still running after {watchdog:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// Waits for an observable event (`happened` turning true: a request in the sandbox, a line in
/// a file), polling; fails the test if it has not happened after a generous watchdog, which
/// only a run that is stuck can reach.
pub async fn wait_until(what: &str, mut happened: impl FnMut() -> bool) {
    const WATCHDOG: Duration = Duration::from_secs(120);
    let deadline = Instant::now() + WATCHDOG;
    while !happened() {
        assert!(Instant::now() < deadline, "waited {WATCHDOG:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `--summary-json` file a run wrote, parsed.
pub fn summary_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary")).expect("summary is JSON")
}

pub async fn run_blocking(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run reactbatch"))
        .await
        .expect("join")
}

/// The final emoji per (provider, message) that the plan intends, in plan order.
pub fn intent(rows: &[PlanRow]) -> BTreeMap<(ProviderKind, String), String> {
    let mut state = BTreeMap::new();
    for r in rows {
        let p = if r.target == "k" {
            ProviderKind::Kommo
        } else {
            ProviderKind::Ogmma
        };
        let key = (p, r.message.clone());
        if r.action == "react" {
            state.insert(key, r.emoji.to_string());
        } else {
            state.remove(&key);
        }
    }
    state
}

pub fn sandbox_state(sandbox: &SandboxHandle) -> BTreeMap<(ProviderKind, String), String> {
    sandbox
        .reactions()
        .into_iter()
        .map(|r| {
            let expected_user = if r.provider == ProviderKind::Kommo {
                USER
            } else {
                OGMMA_USER
            };
            assert_eq!(r.user, expected_user);
            ((r.provider, r.message), r.emoji)
        })
        .collect()
}

pub fn by_status(report: &[RowResult]) -> BTreeMap<Status, usize> {
    let mut m = BTreeMap::new();
    for r in report {
        *m.entry(r.status).or_default() += 1;
    }
    m
}

pub fn assert_one_row_per_plan_row(report: &[RowResult], n: usize) {
    let mut numbers: Vec<u64> = report.iter().map(|r| r.row).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=n as u64).collect::<Vec<_>>(),
        "one report row per plan row"
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Mixed rows for both providers over a few messages, with reacts, replacements and unreacts.
pub fn mixed_rows(n: usize, messages: usize) -> Vec<PlanRow> {
    const EMOJIS: [&str; 4] = ["👍", "❤️", "🎉", "👩‍👩‍👧"];
    (0..n)
        .map(|i| {
            let target = if i % 2 == 0 { "k" } else { "o" };
            let message = format!("m-{}", (i / 2) % messages);
            if i % 7 == 3 {
                unreact(target, message)
            } else {
                react(target, message, EMOJIS[i % EMOJIS.len()])
            }
        })
        .collect()
}

/// Like [`write_plan`], with the Kommo and Ogmma targets at different base URLs.
pub fn write_plan_split(
    dir: &Path,
    kommo_url: &str,
    ogmma_url: &str,
    rows: &[PlanRow],
    settings: &str,
) -> PathBuf {
    let path = write_plan(dir, kommo_url, rows, settings);
    let text = std::fs::read_to_string(&path).expect("read plan");
    let ogmma_at = text.find("  o:\n").expect("ogmma target");
    let (head, tail) = text.split_at(ogmma_at);
    let tail = tail.replacen(
        &format!("base_url: {kommo_url}"),
        &format!("base_url: {ogmma_url}"),
        1,
    );
    std::fs::write(&path, format!("{head}{tail}")).expect("write plan");
    path
}

/// Rows of [`plan_to_interrupt`].
pub const ROWS_TO_INTERRUPT: usize = 200;

/// A plan of [`ROWS_TO_INTERRUPT`] Kommo rows at 20/s on `sandbox`: under way long enough for
/// a test to interrupt it ([`terminate_once_under_way`]).
pub fn plan_to_interrupt(dir: &Path, sandbox: &SandboxHandle) -> PathBuf {
    let rows: Vec<PlanRow> = (0..ROWS_TO_INTERRUPT)
        .map(|i| react("k", format!("t-{i}"), "👍"))
        .collect();
    write_plan(dir, &sandbox.base_url(), &rows, "rate: 20/s")
}

/// Sends SIGTERM to `child` (its stderr piped) once `report` holds a row `ok`, the observable
/// sign that the run is under way, then waits for it: its exit status and its stderr.
pub async fn terminate_once_under_way(
    mut child: std::process::Child,
    report: &Path,
) -> (std::process::ExitStatus, String) {
    wait_until("a row reported ok", || {
        std::fs::read_to_string(report).is_ok_and(|t| t.contains(",ok,"))
    })
    .await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        (child.wait().expect("wait"), err)
    })
    .await
    .expect("join")
}
