//! What the operator reads: one grouped diagnostic for one mistake on many rows, errors that
//! make others meaningless shown alone, man pages with exit codes and environment, emoji
//! values sent in the form the services show, secrets never echoed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use reactbatch::sandbox::Sandbox;

use crate::common::*;

fn reactbatch(dir: &std::path::Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run reactbatch")
}

// ---- grouped diagnostics ----

const TARGETS: &str =
    "targets:\n  kommo-main:\n    provider: kommo\n    scope_id: scope-1_acct-1\n    \
     secret: { env: KOMMO_CHANNEL_SECRET }\n    user_id: bot\n";

/// `rows.csv`: 10 rows for `kommo-main`, then 90 naming `kommo-mian` (lines 12 to 101).
fn write_rows(dir: &Path) {
    let mut csv = String::from("target,message_id,conversation_id,emoji\n");
    for i in 0..100 {
        let target = if i < 10 { "kommo-main" } else { "kommo-mian" };
        csv.push_str(&format!("{target},m-{i},chat-1,👍\n"));
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");
}

/// A plan with the targets at `base_url` and the rows of [`write_rows`].
fn write_typo_plan(dir: &Path, base_url: &str) -> PathBuf {
    write_rows(dir);
    let plan = dir.join("plan.yaml");
    let targets = TARGETS.replace(
        "user_id: bot\n",
        &format!("user_id: bot\n    base_url: {base_url}\n"),
    );
    std::fs::write(&plan, format!("version: 1\n{targets}include: [rows.csv]\n")).expect("plan");
    plan
}

fn assert_one_grouped_error(err: &str) {
    assert!(
        err.lines().count() <= 15,
        "{} lines:\n{err}",
        err.lines().count()
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("error: unknown target `kommo-mian` on 90 rows (rows.csv:12–101)"),
        "{err}"
    );
    assert_eq!(
        err.matches("help: did you mean `kommo-main`?").count(),
        1,
        "{err}"
    );
}

#[test]
fn ninety_rows_naming_one_unknown_target_are_one_error_in_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_typo_plan(dir.path(), "http://127.0.0.1:9");
    let out = reactbatch(dir.path(), &["check", "plan.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_one_grouped_error(&err);
    assert!(
        err.contains("plan.yaml: 100 rows, 1 target, 90 errors"),
        "{err}"
    );

    // Tools still get one entry per row, tied together by the group's id.
    let out = reactbatch(dir.path(), &["check", "plan.yaml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems = doc["plans"][0]["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 90);
    let lines: Vec<u64> = problems.iter().filter_map(|p| p["line"].as_u64()).collect();
    assert_eq!(lines, (12..=101).collect::<Vec<u64>>());
    assert!(problems.iter().all(|p| p["group"] == 1), "{problems:?}");
    assert!(plan.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_rows_naming_one_unknown_target_are_one_error_in_run_and_nothing_is_sent() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    write_typo_plan(dir.path(), &sandbox.base_url());
    let mut cmd = run_cmd(Path::new("plan.yaml"), Path::new("report.csv"), &[]);
    cmd.current_dir(dir.path());
    let out = run_blocking(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_grouped_error(&stderr(&out));
    assert_eq!(sandbox.stats().requests, 0);
    sandbox.shutdown().await;
}

#[test]
fn past_the_listing_cap_repeats_are_counted_in_their_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("target,message_id,conversation_id,emoji\n");
    for i in 0..2500 {
        csv.push_str(&format!("kommo-mian,m-{i},chat-1,👍\n"));
    }
    std::fs::write(dir.path().join("rows.csv"), csv).expect("rows");
    std::fs::write(dir.path().join("targets.yaml"), TARGETS).expect("targets");
    let out = reactbatch(
        dir.path(),
        &["check", "rows.csv", "--targets", "targets.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_one_grouped_error(
        &err.replace("2500 rows (rows.csv:2–2501)", "90 rows (rows.csv:12–101)"),
    );
    assert!(!err.contains("not listed"), "{err}");
    assert!(err.contains("2500 errors"), "{err}");
}

#[test]
fn targets_given_twice_is_one_error_not_one_per_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_typo_plan(dir.path(), "http://127.0.0.1:9");
    std::fs::write(
        dir.path().join("targets.yaml"),
        TARGETS.replace("kommo-main", "other"),
    )
    .expect("t");
    let out = reactbatch(
        dir.path(),
        &["check", "plan.yaml", "--targets", "targets.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("targets are given both here and by `--targets`"),
        "{err}"
    );
    assert!(!err.contains("unknown target"), "{err}");
}

#[test]
fn an_invalid_targets_file_is_its_own_error_and_hints_are_never_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rows(dir.path());
    std::fs::write(dir.path().join("list.yaml"), "targets:\n  - kommo-main\n").expect("t");
    let out = reactbatch(dir.path(), &["check", "rows.csv", "--targets", "list.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("must be a mapping"), "{err}");
    assert!(err.contains("list.yaml:2:3"), "{err}");
    assert!(!err.contains("unknown target"), "{err}");

    // No targets at all: every row names an unknown target, with no empty list after it.
    std::fs::write(dir.path().join("none.yaml"), "targets: {}\n").expect("t");
    let out = reactbatch(dir.path(), &["check", "rows.csv", "--targets", "none.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown target `kommo-main` on 10 rows"),
        "{err}"
    );
    assert!(!err.contains("targets are:"), "{err}");
    assert!(err.lines().all(|l| !l.trim_end().ends_with(':')), "{err}");
}

// ---- emoji ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unqualified_heart_and_a_unicode_name_are_sent_as_the_services_show_them() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = [
        react("o", "m-1", "\u{2764}"),
        react("k", "m-2", ":thumbs_up:"),
        react("o", "m-3", ":red_heart:"),
    ];
    write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");

    let check = reactbatch(dir.path(), &["check", "plan.yaml"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let err = stderr(&check);
    assert!(
        err.contains("note: `❤` (U+2764) is sent as `❤️` (U+2764 U+FE0F)"),
        "{err}"
    );
    assert!(err.contains("--> rows.csv:2:14"), "{err}");
    assert!(err.contains("0 errors, 0 warnings"), "{err}");

    let mut cmd = run_cmd(Path::new("plan.yaml"), Path::new("report.csv"), &[]);
    cmd.current_dir(dir.path());
    let out = run_blocking(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = sandbox_state(&sandbox);
    let sent: std::collections::BTreeMap<&str, &str> = got
        .iter()
        .map(|((_, message), emoji)| (message.as_str(), emoji.as_str()))
        .collect();
    assert_eq!(
        sent.into_iter().collect::<Vec<_>>(),
        [
            ("m-1", "\u{2764}\u{fe0f}"),
            ("m-2", "\u{1f44d}"),
            ("m-3", "\u{2764}\u{fe0f}")
        ]
    );
    sandbox.shutdown().await;
}

#[test]
fn a_word_is_answered_with_the_emojis_it_likely_means() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reactbatch(dir.path(), &["emoji", "ok"]);
    assert_eq!(out.status.code(), Some(0));
    let first: Vec<String> = text(&out.stdout)
        .lines()
        .take(3)
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    assert_eq!(first, ["👌", "👍", "🆗"]);
    let out = reactbatch(dir.path(), &["emoji", ":thumbs_up:"]);
    assert!(
        text(&out.stdout).starts_with("👍\t"),
        "{}",
        text(&out.stdout)
    );

    // The same suggestions in the error for a word where an emoji belongs, at the cell.
    std::fs::write(dir.path().join("targets.yaml"), TARGETS).expect("targets");
    std::fs::write(
        dir.path().join("rows.csv"),
        "target,message_id,conversation_id,emoji\nkommo-main,m-1,\"chat,1\",ok\n",
    )
    .expect("rows");
    let out = reactbatch(
        dir.path(),
        &["check", "rows.csv", "--targets", "targets.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--> rows.csv:2:25"), "{err}");
    assert!(
        err.contains("2 | kommo-main,m-1,\"chat,1\",ok\n  |                         ^^"),
        "{err}"
    );
    assert!(
        err.contains("help: for `ok` perhaps 👌 `:ok_hand:`, 👍 `:+1:`, 🆗 `:ok:`"),
        "{err}"
    );
    let json = reactbatch(
        dir.path(),
        &[
            "check",
            "rows.csv",
            "--targets",
            "targets.yaml",
            "--format",
            "json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let p = &doc["plans"][0]["problems"][0];
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64()),
        (Some(2), Some(25)),
        "{p}"
    );
}

// ---- man pages ----

#[test]
fn man_run_prints_the_page_of_run_with_exit_codes_and_environment() {
    let out = reactbatch(&root(), &["man", "run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = text(&out.stdout);
    assert!(page.contains(".TH reactbatch-run 1"), "{page}");
    assert!(page.contains("\\-\\-resume"), "{page}");
    let exit = page
        .split(".SH \"EXIT STATUS\"")
        .nth(1)
        .expect("EXIT STATUS section");
    for code in [0, 1, 2, 3, 4, 5, 74, 130, 143] {
        assert!(
            exit.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "{code}: {exit}"
        );
    }
    let env = page.split(".SH ENVIRONMENT").nth(1).expect("ENVIRONMENT");
    for var in [
        "NO_COLOR",
        "HTTPS_PROXY",
        "KOMMO_CHANNEL_SECRET",
        "SSL_CERT_FILE",
    ] {
        assert!(env.contains(var), "{var}: {env}");
    }
    // `--help` prints the same table.
    let help = text(&reactbatch(&root(), &["run", "--help"]).stdout);
    for (code, meaning) in reactbatch::cli::EXIT_STATUS {
        assert!(
            help.contains(&format!("{code:<4}{meaning}")),
            "{code}: {help}"
        );
        assert!(page.contains(&meaning.replace('-', "\\-")), "{meaning}");
    }
}

#[test]
fn man_out_writes_a_page_per_subcommand_and_see_also_names_only_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man1");
    let out = reactbatch(dir.path(), &["man", "--out", "man1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for page in [
        "reactbatch.1",
        "reactbatch-run.1",
        "reactbatch-check.1",
        "reactbatch-man.1",
    ] {
        assert!(files.iter().any(|f| f == page), "{page} in {files:?}");
    }
    let main = std::fs::read_to_string(out_dir.join("reactbatch.1")).expect("main page");
    let see_also = main.split(".SH \"SEE ALSO\"").nth(1).expect("SEE ALSO");
    let named: Vec<String> = see_also
        .split([',', ' ', '\n'])
        .filter_map(|w| w.trim().strip_suffix("(1)"))
        .map(|name| format!("{}.1", name.replace("\\-", "-")))
        .collect();
    assert_eq!(named.len(), files.len() - 1, "{see_also}");
    for page in &named {
        assert!(
            files.contains(page),
            "SEE ALSO names {page}, not written: {files:?}"
        );
    }
    for file in &files {
        let page = std::fs::read_to_string(out_dir.join(file)).expect("page");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{file}");
        assert!(page.contains(".SH ENVIRONMENT"), "{file}");
    }
    let bad = reactbatch(dir.path(), &["man", "runn"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("the commands are check, run"),
        "{}",
        stderr(&bad)
    );
}

// ---- sign ----

#[test]
fn sign_never_echoes_a_pasted_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("body.json"), "{}").expect("body");
    for pasted in [
        "s3cr3tK3y9x",
        "dGhpcyBpcyBhIHNlY3JldA==",
        "ab12cd34ef56ab12cd34ef5678",
    ] {
        let out = reactbatch(
            dir.path(),
            &[
                "sign",
                "kommo",
                "--secret-env",
                pasted,
                "--path",
                "/v2/x",
                "body.json",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{pasted}");
        let err = stderr(&out);
        assert!(!err.contains(pasted), "{pasted} echoed: {err}");
        assert!(err.contains("--secret-env"), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A name that looks like one is named, so the user sees which variable is missing.
    let out = reactbatch(
        dir.path(),
        &[
            "sign",
            "kommo",
            "--secret-env",
            "MY_UNSET_SECRET",
            "--path",
            "/v2/x",
            "body.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("MY_UNSET_SECRET is not set"),
        "{}",
        stderr(&out)
    );
}
