//! Plan loading and `reactbatch check`, through the real binary and the library API.
//!
//! - every plan in `tests/fixtures/broken/` fails `check` with exit 2, names `file:line`, never
//!   shows a secret, and its stderr is snapshotted in `snapshots/check__broken__NAME.snap`;
//! - valid plans stream the expected rows (numbers, sources, fields): BOM + CRLF CSV, quoted
//!   newlines, defaults, includes;
//! - every example in `examples/workflows/` passes `check`.

use std::path::Path;
use std::process::{Command, Output};

use reactbatch::plan::{Action, Plan, Row, TargetKind};

use crate::common::{names_file_and_line, root};

/// The value tests put in REACTBATCH_TEST_SECRET; it must never be printed.
const TEST_SECRET: &str = "s3cr3t-v4lue-never-printed";
/// Secrets written literally in broken fixtures; they must never be echoed.
const LITERAL_SECRETS: &[&str] = &[
    "f2d7f8704eff95087ed45b23ba99c0b5aac8278e",
    "sk-live-5f2b9c0e1d",
];

/// Git checks files out world-readable; secret files get the owner-only mode a user would
/// give them, so the "readable by other users" warning shows only where a test wants it.
fn private_fixture_secrets() {
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "tests/fixtures/broken/support/empty.secret",
        "tests/fixtures/valid/secret.txt",
    ] {
        std::fs::set_permissions(root().join(f), std::fs::Permissions::from_mode(0o600))
            .expect("chmod fixture secret");
    }
}

fn check(dir: &Path, args: &[&str]) -> Output {
    private_fixture_secrets();
    Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .env("REACTBATCH_TEST_SECRET", TEST_SECRET)
        .env("KOMMO_CHANNEL_SECRET", TEST_SECRET)
        .env("OGMMA_API_KEY", TEST_SECRET)
        .env_remove("REACTBATCH_TEST_UNSET_VAR")
        .output()
        .expect("run reactbatch")
}

#[test]
fn broken_plans_fail_check_with_located_errors() {
    let dir = root().join("tests/fixtures/broken");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 90, "only {} broken fixtures", names.len());
    for name in &names {
        let out = if name.ends_with(".csv") {
            check(&dir, &[name, "--targets", "support/targets.yaml"])
        } else {
            check(&dir, &[name])
        };
        let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
        assert_eq!(out.status.code(), Some(2), "{name}: exit code\n{stderr}");
        assert!(out.stdout.is_empty(), "{name}: stdout should be empty");
        assert!(
            names_file_and_line(&stderr),
            "{name}: no file:line in\n{stderr}"
        );
        for secret in LITERAL_SECRETS.iter().chain([&TEST_SECRET]) {
            assert!(!stderr.contains(secret), "{name}: a secret was printed");
        }
        assert!(!stderr.contains("panicked"), "{name}: panic\n{stderr}");
        let snapshot = format!("check__broken__{}", name.replace('.', "_"));
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("reactbatch check {name}"),
        }, {
            insta::assert_snapshot!(snapshot, stderr);
        });
    }
}

#[test]
fn examples_pass_check() {
    let dir = root().join("examples/workflows");
    for name in [
        "quickstart.yaml",
        "migration.yaml",
        "cron.yaml",
        "audit.yaml",
        "migration-to-ogmma.yaml",
        "cron-followups.yaml",
    ] {
        let out = check(&dir, &[name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}:\n{stderr}");
        assert!(
            stderr.contains(", 0 errors, 0 warnings"),
            "{name}:\n{stderr}"
        );
    }
}

#[test]
fn missing_secret_env_var_fails_check_of_an_example() {
    let dir = root().join("examples/workflows");
    let out = Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .args(["check", "quickstart.yaml"])
        .current_dir(&dir)
        .env_remove("KOMMO_CHANNEL_SECRET")
        .env("OGMMA_API_KEY", TEST_SECRET)
        .output()
        .expect("run reactbatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains(
        "error: environment variable `KOMMO_CHANNEL_SECRET` is not set (secret of target `kommo-main`)\n  \
         --> quickstart.yaml:10:13\n"
    ), "{stderr}");
    assert!(stderr.contains("= help: set KOMMO_CHANNEL_SECRET or use { file: ... }"));
}

fn rows_of(plan: &Plan) -> Vec<Row> {
    plan.rows()
        .map(|r| r.unwrap_or_else(|p| panic!("unexpected problem: {p}")))
        .collect()
}

#[test]
fn includes_defaults_and_settings_stream_in_plan_order() {
    let dir = root().join("tests/fixtures/valid");
    let plan = Plan::load(&dir.join("includes.yaml"), None).unwrap_or_else(|ps| {
        panic!(
            "{}",
            ps.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(plan.targets.len(), 2);
    assert_eq!(plan.targets[0].base_url, "http://127.0.0.1:8080");
    assert_eq!(plan.targets[1].base_url, "https://oapi.ogmma.com.br");
    assert_eq!(
        plan.targets[1].rate.map(|r| r.to_string()).as_deref(),
        Some("30/min")
    );
    assert_eq!(plan.settings.report, Some(dir.join("out/report.csv")));
    assert_eq!(plan.settings.concurrency, Some(4));
    assert_eq!(
        plan.settings.timeout,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(plan.settings.dry_run, Some(true));
    assert_eq!(
        plan.settings.shard.map(|s| (s.index, s.count)),
        Some((1, 2))
    );
    assert_eq!(
        plan.files(),
        [
            dir.join("includes.yaml"),
            dir.join("more/rows.csv"),
            dir.join("more/extra.yaml"),
            dir.join("more/rows2.csv"),
        ]
    );

    let rows = rows_of(&plan);
    let d = dir.display().to_string();
    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                r.number,
                r.source.to_string().replace(&*d, "DIR"),
                plan.targets[r.target].name,
                r.action,
                r.emoji,
                r.message_id,
                r.msgid,
                r.conversation_id
                    .as_ref()
                    .or(r.conversation_ref_id.as_ref()),
                r.user_id,
                r.user_ref_id,
                r.not_before.map(|t| t.to_rfc3339()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"1 DIR/includes.yaml:25 kommo-main react Some("👍") Some("1001") None Some("chat-7") Some("bot") None None"#,
            r#"2 DIR/includes.yaml:26 kommo-main unreact None Some("1e3") None Some("chat-7") None Some("agent-9") None"#,
            r#"3 DIR/more/rows.csv:2 ogmma-br react Some("❤\u{fe0f}") Some("6650a1b2c3d4e5f6a7b8c9f0") None None None None Some("2026-12-01T09:00:00+00:00")"#,
            r#"4 DIR/more/rows.csv:3 kommo-main react Some("👍") Some("m-2") None Some("chat-7") Some("bot") None None"#,
            r#"5 DIR/more/extra.yaml:2 kommo-main react Some("👨\u{200d}👩\u{200d}👧") None Some("my-1") Some("my-chat") Some("bot") None None"#,
            r#"6 DIR/more/rows2.csv:2 kommo-main react Some("🔥") Some("m-9") None Some("chat-7") Some("bot") None None"#,
            r#"7 DIR/more/rows2.csv:3 kommo-main unreact None Some("m-9") None Some("chat-7") Some("bot") None None"#,
        ]
    );

    let v = plan.validate();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.rows, 7);
    let warnings: Vec<String> = v
        .warnings
        .iter()
        .map(|w| w.to_string().replace(&*d, "DIR"))
        .collect();
    assert_eq!(
        warnings,
        ["DIR/more/rows2.csv:2: warning: row 6 (react) is pointless: row 7 at DIR/more/rows2.csv:3 removes the reaction on the same message and user later"]
    );

    let secrets = plan.resolve_secrets().expect("secrets");
    assert_eq!(secrets.len(), 2);
    assert_eq!(
        secrets[1].expose(),
        "f2d7f8704eff95087ed45b23ba99c0b5aac8278e"
    );
}

#[test]
fn check_prints_warnings_and_succeeds() {
    let dir = root().join("tests/fixtures/valid");
    let out = check(&dir, &["includes.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "warning: row 6 (react) is pointless: row 7 at more/rows2.csv:3 removes the reaction on the same message and user later\n \
         --> more/rows2.csv:2:1\n  \
         |\n\
         2 | m-9,🔥,react\n  \
         | ^^^^^^^^^^^^\n\n\
         includes.yaml: 7 rows, 2 targets, 0 errors, 1 warning\n"
    );
}

#[test]
fn bom_crlf_and_quoted_newlines_keep_line_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let targets = root().join("tests/fixtures/valid/targets.yaml");
    let csv = tmp.path().join("rows.csv");
    std::fs::write(
        &csv,
        "\u{feff}target,message_id,conversation_id,emoji,key,previous_emoji\r\n\
         kommo-main,m-1,c-1,👍,\"multi\r\nline\r\nkey\",\r\n\
         \r\n\
         ogmma-br,\"id,with,commas\",,❤️,k2,\r\n\
         kommo-main,m-3,c-1,,\"a \"\"quoted\"\" key\",👍\r\n",
    )
    .expect("write csv");
    let plan = Plan::load(&csv, Some(&targets)).expect("plan loads");
    assert!(matches!(plan.targets[0].kind, TargetKind::Kommo { .. }));
    let rows: Vec<Result<Row, String>> =
        plan.rows().map(|r| r.map_err(|p| p.to_string())).collect();
    assert_eq!(rows.len(), 3);
    let first = rows[0].as_ref().expect("row 1");
    assert_eq!((first.number, first.source.line), (1, 2));
    assert_eq!(first.key.as_deref(), Some("multi\r\nline\r\nkey"));
    assert_eq!(first.emoji.as_deref(), Some("👍"));
    assert_eq!(first.user_id.as_deref(), Some("bot"));
    let second = rows[1].as_ref().expect("row 2");
    assert_eq!((second.number, second.source.line), (2, 6));
    assert_eq!(second.message_id.as_deref(), Some("id,with,commas"));
    assert_eq!(second.action, Action::React);
    // Row 3 is a react with an empty emoji cell: an error on its own line.
    let third = rows[2].as_ref().expect_err("row 3 is invalid");
    assert!(
        third.ends_with("rows.csv:7: error: a react row needs an `emoji`"),
        "{third}"
    );

    // Same file through the binary: exit 2, the error names line 7.
    let out = check(
        tmp.path(),
        &["rows.csv", "--targets", &targets.display().to_string()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr,
        "error: a react row needs an `emoji`\n \
         --> rows.csv:7:1\n  \
         |\n\
         7 | kommo-main,m-3,c-1,,\"a \"\"quoted\"\" key\",👍\n  \
         | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n\n\
         rows.csv: 3 rows, 2 targets, 1 error, 0 warnings\n"
    );
}

#[test]
fn csv_plan_without_targets_is_a_usage_error() {
    let dir = root().join("tests/fixtures/broken");
    let out = check(&dir, &["csv_ragged.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("error: a CSV plan needs `--targets FILE`\n--> csv_ragged.csv\n"),
        "{stderr}"
    );
}

#[test]
fn large_csv_streams_and_warns_on_repeats() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("big.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("create"));
    writeln!(f, "target,message_id,conversation_id,emoji,action").expect("write");
    for i in 0..50_000u32 {
        writeln!(f, "ogmma-br,msg-{i},,👍,react").expect("write");
    }
    // Three repeats, far from their first occurrence.
    for i in [7u32, 20_000, 49_999] {
        writeln!(f, "ogmma-br,msg-{i},,,unreact").expect("write");
    }
    drop(f);
    let targets = root().join("tests/fixtures/valid/targets.yaml");
    let plan = Plan::load(&csv, Some(&targets)).expect("plan loads");
    let v = plan.validate();
    assert!(v.errors.is_empty());
    assert_eq!(v.rows, 50_003);
    let lines: Vec<u32> = v.warnings.iter().filter_map(|w| w.line).collect();
    assert_eq!(lines, [9, 20_002, 50_001]);
    assert_eq!(plan.rows().count(), 50_003);
}

#[test]
fn validation_without_warnings_finds_the_same_errors() {
    // What `run -q` uses: no pointless-row search, but repeated keys are still errors (found
    // by the same second pass), and every row still reaches the caller once.
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("rows.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("create"));
    writeln!(f, "target,message_id,emoji,action,key").expect("write");
    for i in 0..20_000u32 {
        writeln!(f, "ogmma-br,msg-{i},👍,react,k-{i}").expect("write");
    }
    writeln!(f, "ogmma-br,msg-7,,unreact,k-19999").expect("write");
    writeln!(f, "ogmma-br,msg-8,nope,react,").expect("write");
    drop(f);
    let targets = root().join("tests/fixtures/valid/targets.yaml");
    let plan = Plan::load(&csv, Some(&targets)).expect("plan loads");
    let full = plan.validate();
    let mut seen = 0u64;
    let quiet = plan.validate_errors_with(|_| seen += 1);
    let text = |v: &reactbatch::plan::Validation| -> Vec<String> {
        v.errors.iter().map(ToString::to_string).collect()
    };
    assert_eq!(text(&quiet), text(&full));
    assert_eq!(quiet.errors.len(), 2, "{:?}", text(&quiet));
    assert!(
        text(&quiet).iter().any(|e| e.contains("k-19999")),
        "{:?}",
        text(&quiet)
    );
    assert_eq!((quiet.rows, seen), (20_002, 20_001));
    // The full validation also warns that row 8 is pointless; the quiet one does not look.
    assert!(
        full.warnings.iter().any(|w| w.line == Some(9)),
        "{:?}",
        full.warnings
    );
    assert!(quiet.warnings.iter().all(|w| w.line != Some(9)));
}

#[test]
fn structural_errors_fail_load_with_every_problem() {
    let dir = root().join("tests/fixtures/broken");
    let problems = Plan::load(&dir.join("bad_settings_values.yaml"), None).expect_err("invalid");
    assert_eq!(problems.len(), 8);
    assert!(problems
        .iter()
        .all(|p| p.line.is_some() && p.column.is_some()));
}

#[test]
fn an_unclosed_quote_cannot_swallow_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("rows.csv");
    let mut text = String::from("message_id,conversation_id,emoji\nm-1,c-1,\"👍\n");
    for i in 0..20_000 {
        text.push_str(&format!("m-{i},c-1,👍\n"));
    }
    std::fs::write(&csv, text).expect("write");
    let targets = root().join("tests/fixtures/broken/support/targets.yaml");
    let out = check(
        tmp.path(),
        &["rows.csv", "--targets", &targets.display().to_string()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("error: a CSV record is longer than 64 KiB (an unclosed quote?)"),
        "{stderr}"
    );
}

#[test]
fn secret_files_readable_by_others_get_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key.txt"), "k-1").expect("write key");
    std::fs::set_permissions(
        dir.path().join("key.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\ntargets:\n  o:\n    provider: ogmma\n    channel_id: ch_1\n    api_key: { file: key.txt }\nrows:\n  - { message_id: m1, emoji: \"👍\" }\n",
    )
    .expect("write plan");
    let out = Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .args(["check", "p.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for part in [
        "warning: secret file `key.txt` (target `o`) can be read by other users (mode 644)",
        "--> p.yaml:6:14",
        "help: chmod 600 key.txt",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
    assert!(!stderr.contains("k-1"));
}
