//! The ecosystem surface, through the real binary:
//!
//! - diagnostics in colour on a terminal (a pty) or with `--color always`, plain when piped;
//! - `check --format json`;
//! - `reactbatch schema`: the committed `schema/plan.schema.json` is its output, every example
//!   (and valid fixture) validates against it, and broken fixtures with shape errors do not;
//! - `completions bash` driven through bash's own `complete` machinery, and `man`;
//! - `--version` with the git commit;
//! - `docs/summary-schema.md` lists exactly the fields of `--summary-json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{require_tool, root, text};

fn reactbatch(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reactbatch"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env("KOMMO_CHANNEL_SECRET", "test-secret")
        .env("OGMMA_API_KEY", "test-key")
        .env("REACTBATCH_TEST_SECRET", "test-secret")
        .output()
        .expect("run reactbatch")
}

fn broken() -> PathBuf {
    root().join("tests/fixtures/broken")
}

// ---- diagnostics: colour vs plain ----

#[test]
fn mistyped_field_shows_line_caret_and_fix_plain_when_piped() {
    let out = reactbatch(&broken(), &["check", "unknown_row_field.yaml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr.contains('\x1b'),
        "piped output has no colour:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "error: unknown key `emoij` in a row\n  \
             --> unknown_row_field.yaml:10:46\n   \
             |\n\
             10 |   - { message_id: m-2, conversation_id: c-1, emoij: \"👍\" }\n   \
             |                                              ^^^^^\n   \
             |\n   \
             = help: did you mean `emoji`?\n"
        ),
        "{stderr}"
    );
}

#[test]
fn color_always_colours_even_when_piped_and_never_wins_on_a_terminal() {
    let out = reactbatch(
        &broken(),
        &["check", "unknown_row_field.yaml", "--color", "always"],
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\x1b["), "{stderr:?}");
    assert!(stderr.contains("did you mean `emoji`?"));
    // `--color` is global: it may come before the subcommand too.
    let out = reactbatch(
        &broken(),
        &["--color", "never", "check", "unknown_row_field.yaml"],
    );
    assert!(!text(&out.stderr).contains('\x1b'));
}

/// Runs `reactbatch ARGS` with stderr on a pseudo-terminal (util-linux `script`), returning
/// what the terminal showed.
fn on_a_terminal(dir: &Path, args: &str, no_color: bool) -> String {
    let bin = env!("CARGO_BIN_EXE_reactbatch");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &format!("{bin} {args}"), "/dev/null"])
        .current_dir(dir)
        .env("REACTBATCH_TEST_SECRET", "test-secret")
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("run script");
    assert!(
        out.status.code().is_some(),
        "script was killed: {:?}",
        out.status
    );
    text(&out.stdout)
}

#[test]
fn on_a_terminal_colour_unless_no_color() {
    require_tool("script", "bsdutils");
    let shown = on_a_terminal(&broken(), "check unknown_row_field.yaml", false);
    assert!(shown.contains("\x1b["), "{shown:?}");
    assert!(shown.contains("did you mean `emoji`?"), "{shown:?}");
    let plain = on_a_terminal(&broken(), "check unknown_row_field.yaml", true);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("^^^^^"), "{plain:?}");
}

// ---- check --format json ----

#[test]
fn check_format_json_lists_problems_and_keeps_exit_codes() {
    let out = reactbatch(
        &broken(),
        &[
            "check",
            "unknown_row_field.yaml",
            "tab_indent.yaml",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"], 3);
    let first = &doc["plans"][0];
    assert_eq!(first["plan"], "unknown_row_field.yaml");
    assert_eq!(first["rows"], 3);
    assert_eq!(
        first["problems"][0],
        serde_json::json!({
            "file": "unknown_row_field.yaml",
            "line": 10,
            "column": 46,
            "severity": "error",
            "code": "unknown_field",
            "message": "unknown key `emoij` in a row",
            "hint": "did you mean `emoji`?",
            "group": 1
        })
    );
    let second = &doc["plans"][1];
    assert_eq!(second["loaded"], false);
    assert_eq!(second["rows"], serde_json::Value::Null);
    assert_eq!(second["problems"][0]["code"], "yaml_syntax");

    let ok = reactbatch(
        &root().join("examples/workflows"),
        &["check", "quickstart.yaml", "--format", "json"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let doc: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["plans"][0]["problems"], serde_json::json!([]));
}

// ---- schema ----

fn yaml_to_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(yaml).expect("YAML as JSON")
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/plan.schema.json")).expect("schema file"),
    )
    .expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

#[test]
fn committed_schema_is_the_commands_output() {
    let out = reactbatch(&root(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read_to_string(root().join("schema/plan.schema.json")).expect("schema file");
    assert!(
        text(&out.stdout) == committed,
        "schema/plan.schema.json is stale: run `reactbatch schema > schema/plan.schema.json`"
    );
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_names_and_passes_the_schema() {
    let v = validator();
    let examples = yaml_files(&root().join("examples/workflows"));
    assert!(examples.len() >= 4);
    let valid = root().join("tests/fixtures/valid");
    let fixtures = yaml_files(&valid)
        .into_iter()
        .chain(yaml_files(&valid.join("more")));
    for path in examples.iter().cloned().chain(fixtures) {
        let doc = yaml_to_json(&path);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
    for path in &examples {
        let first = std::fs::read_to_string(path).expect("read");
        assert_eq!(
            first.lines().next(),
            Some("# yaml-language-server: $schema=../../schema/plan.schema.json"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn broken_fixtures_with_shape_errors_fail_the_schema() {
    let v = validator();
    // Wrong types, unknown keys, bad enum values: what a schema can see without the loader.
    for name in [
        "bad_action.yaml",
        "bad_base_url.yaml",
        "bad_rate.yaml",
        "bad_scope_id.yaml",
        "bad_settings_values.yaml",
        "bad_version.yaml",
        "bad_duration.yaml",
        "literal_secret.yaml",
        "missing_secret.yaml",
        "rows_not_a_list.yaml",
        "unknown_defaults_key.yaml",
        "unknown_provider.yaml",
        "unknown_row_field.yaml",
        "unknown_settings_key.yaml",
        "unknown_target_key.yaml",
        "unknown_top_key.yaml",
        "wrong_types.yaml",
    ] {
        let doc = yaml_to_json(&broken().join(name));
        assert!(!v.is_valid(&doc), "{name} passes the schema");
    }
    // Errors only the loader can see (a row's needs, files, environment) pass the schema:
    // the schema checks shape, `reactbatch check` checks meaning.
    for name in [
        "kommo_missing_fields.yaml",
        "missing_env_var.yaml",
        "unknown_target.yaml",
    ] {
        let doc = yaml_to_json(&broken().join(name));
        assert!(v.is_valid(&doc), "{name} should pass the schema");
    }
}

// ---- completions and man ----

/// Completes `line` (the words before the cursor, the last one being completed) in bash with
/// the generated script, through `complete -p reactbatch`, and returns COMPREPLY.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source '{script}'
spec=$(complete -p reactbatch) || exit 3
func=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
"$func" reactbatch "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = quoted.join(" "),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash");
    assert!(out.status.success(), "bash: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    let out = reactbatch(&root(), &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    for needle in [
        "run",
        "check",
        "--dry-run",
        "--resume",
        "--summary-json",
        "--format",
    ] {
        assert!(script.contains(needle), "bash script lacks {needle}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reactbatch.bash");
    std::fs::write(&path, script).expect("write");
    require_tool("bash", "bash");
    let subcommands = bash_complete(&path, &["reactbatch", ""]);
    for sub in [
        "run",
        "check",
        "undo",
        "sandbox",
        "schema",
        "completions",
        "man",
    ] {
        assert!(
            subcommands.iter().any(|s| s == sub),
            "{sub} in {subcommands:?}"
        );
    }
    assert_eq!(bash_complete(&path, &["reactbatch", "ru"]), ["run"]);
    let flags = bash_complete(&path, &["reactbatch", "run", "--dr"]);
    assert_eq!(flags, ["--dry-run"]);
    let flags = bash_complete(&path, &["reactbatch", "run", "--res"]);
    assert_eq!(flags, ["--resume"]);
    let formats = bash_complete(&path, &["reactbatch", "check", "--format", ""]);
    assert_eq!(formats, ["human", "json"]);
    let shells = bash_complete(&path, &["reactbatch", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.iter().any(|s| s == shell), "{shell} in {shells:?}");
    }
}

#[test]
fn other_shells_and_the_man_page() {
    for shell in ["zsh", "fish", "powershell"] {
        let out = reactbatch(&root(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("--dry-run"), "{shell}");
    }
    let out = reactbatch(&root(), &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..80]);
    assert!(page.contains(".TH reactbatch 1"), "{page}");
    for needle in ["check", "run", "undo", "completions", "\\-\\-color"] {
        assert!(page.contains(needle), "man page lacks {needle}");
    }
}

// ---- version ----

#[test]
fn version_names_the_commit_in_a_checkout() {
    let out = reactbatch(&root(), &["--version"]);
    let version = text(&out.stdout);
    let expected = format!("reactbatch {}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    let in_checkout = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root())
        .output()
        .is_ok_and(|o| o.status.success());
    if in_checkout {
        // The commit the binary was built from (not necessarily HEAD now).
        let rest = version.trim_end().strip_prefix(&expected).expect("prefix");
        let hash = rest.strip_prefix(" (").and_then(|r| r.strip_suffix(')'));
        assert!(
            hash.is_some_and(|h| h.len() >= 7 && h.chars().all(|c| c.is_ascii_hexdigit())),
            "{version}"
        );
    }
}

// ---- documented JSON ----

#[test]
fn summary_schema_doc_lists_exactly_the_summary_fields() {
    use reactbatch::outputs::summary::{LaneSummary, LatencySummary, Summary, TargetSummary};
    let summary = Summary {
        plan: "p.yaml".into(),
        report: "r.csv".into(),
        dry_run: false,
        rows: 1,
        not_in_plan: 0,
        counts: [("ok", 1)].into_iter().collect(),
        attempts: 1,
        retries: 0,
        elapsed_ms: 1,
        rows_per_second: 1.0,
        estimated_ms: 0,
        targets: vec![TargetSummary {
            name: "t".into(),
            provider: "kommo".into(),
            rate: "7/s".into(),
            requests: 1,
            achieved_rate: None,
            max_requests_in_1s: 1,
            stopped: None,
            plan: reactbatch::outputs::audit::TargetAudit {
                top_emoji: vec![reactbatch::outputs::audit::EmojiCount {
                    emoji: "👍".into(),
                    rows: 1,
                }],
                // Present when the target's rows go to several lanes (one per account).
                lanes: 2,
                ..Default::default()
            },
        }],
        lanes: vec![LaneSummary {
            name: "t".into(),
            provider: "kommo".into(),
            targets: vec!["t".into()],
            rate: "7/s".into(),
            requests: 1,
            achieved_rate: None,
            max_requests_in_1s: 1,
            rate_limited: 0,
            slowdowns: 0,
            slowest_rate: None,
            pauses: 0,
            settled_rate: None,
            failed: 0,
            series: None,
        }],
        hosts: vec![reactbatch::outputs::summary::HostSummary {
            host: "amojo.kommo.com".into(),
            base_url: "https://amojo.kommo.com".into(),
            lanes: 1,
            rate_sum: Some(7.0),
            ceiling: Some("50/s".into()),
        }],
        latency: Some(LatencySummary {
            p50_ms: 1.0,
            p95_ms: 1.0,
            max_ms: 1.0,
            samples: 1,
        }),
        digest: None,
        files: vec![reactbatch::digest::FileDigest {
            file: "p.yaml".into(),
            digest: "sha256:0".into(),
        }],
        interrupted: false,
        not_recorded: 0,
        exit_code: 0,
    };
    let value = serde_json::to_value(&summary).expect("JSON");
    let mut fields = Vec::new();
    for (k, v) in value.as_object().expect("object") {
        fields.push(k.clone());
        let nested = match v {
            serde_json::Value::Array(items) => items.first().map(|i| (format!("{k}[]"), i)),
            serde_json::Value::Object(_) if k != "counts" => Some((k.clone(), v)),
            _ => None,
        };
        if let Some((prefix, obj)) = nested {
            for inner in obj.as_object().expect("object").keys() {
                fields.push(format!("{prefix}.{inner}"));
            }
        }
    }
    fields.sort();
    let doc = std::fs::read_to_string(root().join("docs/summary-schema.md")).expect("doc");
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect();
    documented.sort();
    assert_eq!(documented, fields);
}

// ---- cron-friendly logging ----

fn run_quickstart(dir: &Path, extra: &[&str]) -> Output {
    let plan = root().join("examples/workflows/quickstart.yaml");
    let plan = plan.display().to_string();
    let mut args = vec!["run", &plan, "--sandbox", "--rate", "unlimited"];
    args.extend_from_slice(extra);
    reactbatch(dir, &args)
}

fn is_timestamp(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z')
}

#[test]
fn piped_summary_lines_are_timestamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_quickstart(dir.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("reactbatch: 5 rows in"))
        .take_while(|l| !l.contains("sandbox now holds"))
        .collect();
    assert!(summary.len() >= 3, "{stderr}");
    for line in summary {
        let (ts, _) = line.split_once(' ').expect("ts then text");
        assert!(is_timestamp(ts), "{line}");
    }
}

#[test]
fn log_format_json_makes_every_stderr_line_an_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_quickstart(dir.path(), &["--log-format", "json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for e in &events {
        assert!(is_timestamp(e["ts"].as_str().expect("ts")), "{e}");
        assert!(["info", "warn", "error"].contains(&e["level"].as_str().expect("level")));
        assert!(e["event"].is_string(), "{e}");
    }
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["counts"]["ok"], 5);
    assert_eq!(summary["exit_code"], 0);

    // Plan problems are events too, with their location.
    let out = reactbatch(
        &broken(),
        &["run", "unknown_row_field.yaml", "--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let first: serde_json::Value =
        serde_json::from_str(text(&out.stderr).lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["event"], "problem");
    assert_eq!(first["level"], "error");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(10), Some(46))
    );
}
