//! Hostile input that is better generated than committed: 10 MB lines, 10 KB emojis, a
//! million aliases, files over the size limit, FIFOs, symlinks out of the plan's directory,
//! many targets, many keyed rows. The committed corpus is `tests/fixtures/broken/` (see
//! `tests/it/plan.rs`); this is its sibling loop.
//!
//! For every case, `reactbatch check` must: exit with the expected code (2, or 0 where the input
//! is legitimately fine), name `file:line`, not panic, never hang (a watchdog, not a time budget), and print
//! what its snapshot `snapshots/hostile__NAME.snap` shows. Outputs with thousands of problems
//! are snapshotted as their first and last lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{names_file_and_line, output_within};

const TEST_SECRET: &str = "s3cr3t-v4lue-never-printed";

/// The inputs here take well under a second even in a debug build; one still running after
/// this is hung (an alias bomb expanding, a loop), not slow. Not a speed limit.
const WATCHDOG: Duration = Duration::from_secs(120);

const TARGETS: &str = "version: 1
targets:
  kommo-main:
    provider: kommo
    scope_id: 344a5002-f8ca-454d-af3d-396180102ac7_52e591f7
    secret: { env: REACTBATCH_TEST_SECRET }
    user_id: bot
  ogmma-br:
    provider: ogmma
    channel_id: ch_123
    api_key: { env: REACTBATCH_TEST_SECRET }
";

/// The plan header most cases start from (two targets, a default target).
fn plan(rest: &str) -> String {
    format!("{TARGETS}defaults: {{ target: kommo-main }}\n{rest}")
}

struct Case {
    name: &'static str,
    /// Files to create in the case's directory (name, bytes).
    files: Vec<(&'static str, Vec<u8>)>,
    /// Extra setup (FIFOs, symlinks) in the case's directory.
    setup: Option<fn(&Path)>,
    /// `check` arguments; run in the case's directory.
    args: Vec<&'static str>,
    exit: i32,
    /// Keep only the first and last few lines of stderr in the snapshot.
    abridge: bool,
}

impl Case {
    fn new(name: &'static str, file: &'static str, bytes: impl Into<Vec<u8>>) -> Case {
        let args = if file.ends_with(".csv") {
            vec![file, "--targets", "targets.yaml"]
        } else {
            vec![file]
        };
        Case {
            name,
            files: vec![(file, bytes.into()), ("targets.yaml", TARGETS.into())],
            setup: None,
            args,
            exit: 2,
            abridge: false,
        }
    }

    fn with(mut self, file: &'static str, bytes: impl Into<Vec<u8>>) -> Case {
        self.files.push((file, bytes.into()));
        self
    }

    fn setup(mut self, f: fn(&Path)) -> Case {
        self.setup = Some(f);
        self
    }

    fn exit(mut self, code: i32) -> Case {
        self.exit = code;
        self
    }

    fn abridged(mut self) -> Case {
        self.abridge = true;
        self
    }
}

fn cases() -> Vec<Case> {
    let emoji_10kb = "👍".repeat(2560); // 4 bytes each
    let ten_mb = 10 * 1024 * 1024;
    vec![
        Case::new(
            "ten_mb_single_line_yaml",
            "plan.yaml",
            plan(&format!(
                "rows: [ {{ message_id: m-1, conversation_id: c-1, emoji: \"{}\" }} ]\n",
                "x".repeat(ten_mb)
            )),
        ),
        Case::new(
            "ten_mb_single_line_without_newline",
            "plan.yaml",
            format!("{}rows: [ {{ message_id: {}", plan(""), "m".repeat(ten_mb)),
        ),
        Case::new(
            "ten_mb_single_line_csv",
            "rows.csv",
            format!(
                "target,message_id,conversation_id,emoji\nkommo-main,m-1,c-1,{}\nkommo-main,m-2,c-1,👍\n",
                "x".repeat(ten_mb)
            ),
        ),
        Case::new(
            "emoji_10kb_yaml",
            "plan.yaml",
            plan(&format!(
                "rows:\n  - {{ message_id: m-1, conversation_id: c-1, emoji: \"{emoji_10kb}\" }}\n  - {{ message_id: m-2, conversation_id: c-1, emoji: \"👍\", action: unreact, previous_emoji: \"{emoji_10kb}\" }}\n"
            )),
        ),
        Case::new(
            "emoji_10kb_in_defaults",
            "plan.yaml",
            format!(
                "{TARGETS}defaults: {{ target: kommo-main, emoji: \"{emoji_10kb}\" }}\nrows:\n  - {{ message_id: m-1, conversation_id: c-1 }}\n"
            ),
        ),
        Case::new(
            "emoji_10kb_csv",
            "rows.csv",
            format!("target,message_id,conversation_id,emoji\nkommo-main,m-1,c-1,{emoji_10kb}\n"),
        ),
        Case::new(
            "million_aliases",
            "plan.yaml",
            plan(&format!("anchor: &a x\nrows: [{}]\n", vec!["*a"; 1_000_000].join(","))),
        )
        .abridged(),
        Case::new(
            "billion_laughs_nine_levels",
            "plan.yaml",
            plan(&{
                let mut s = String::from("lol:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
                for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
                    s.push_str(&format!("  {name}: &{name} [{}]\n", vec![format!("*{prev}"); 9].join(", ")));
                }
                s
            }),
        )
        .abridged(),
        Case::new(
            "half_a_million_duplicate_keys",
            "plan.yaml",
            plan(&format!("settings:\n{}", "  retries: 1\n".repeat(500_000))),
        )
        .abridged(),
        Case::new(
            "hundred_thousand_unknown_keys",
            "plan.yaml",
            plan(&format!(
                "settings:\n{}",
                (0..100_000).map(|i| format!("  k{i}: 1\n")).collect::<String>()
            )),
        )
        .abridged(),
        Case::new(
            "nesting_100k_levels",
            "plan.yaml",
            plan(&format!("rows: {}", "[".repeat(100_000))),
        ),
        Case::new("yaml_over_16_mib", "plan.yaml", plan("rows: []\n"))
            .setup(|dir| {
                // A sparse file: 17 MiB long without writing 17 MiB.
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("plan.yaml"))
                    .expect("open plan");
                f.set_len(17 * 1024 * 1024).expect("grow plan");
            }),
        Case::new(
            "include_fifo",
            "plan.yaml",
            plan("include: [rows.csv]\n"),
        )
        .setup(|dir| mkfifo(&dir.join("rows.csv"))),
        Case::new(
            "secret_fifo",
            "plan.yaml",
            "version: 1\ntargets:\n  o:\n    provider: ogmma\n    channel_id: ch_1\n    api_key: { file: key.pipe }\nrows:\n  - { message_id: m-1, emoji: \"👍\" }\n",
        )
        .setup(|dir| mkfifo(&dir.join("key.pipe"))),
        Case::new(
            "include_symlink_out_of_dir",
            "plan/plan.yaml",
            plan("include: [rows.csv, inside.csv]\n"),
        )
        .with("outside.csv", "message_id,conversation_id,emoji\nm-9,c-1,👍\n")
        .with("plan/real.csv", "message_id,conversation_id,emoji\nm-8,c-1,👍\n")
        .setup(|dir| {
            symlink(&dir.join("outside.csv"), &dir.join("plan/rows.csv"));
            symlink(&dir.join("plan/real.csv"), &dir.join("plan/inside.csv"));
        }),
        Case::new(
            "secret_symlink_out_of_dir",
            "plan/plan.yaml",
            "version: 1\ntargets:\n  o:\n    provider: ogmma\n    channel_id: ch_1\n    api_key: { file: key.txt }\nrows:\n  - { message_id: m-1, emoji: \"👍\" }\n",
        )
        .with("id_rsa", "not a key")
        .setup(|dir| symlink(&dir.join("id_rsa"), &dir.join("plan/key.txt"))),
        Case::new(
            "include_absolute_path_is_allowed",
            "plan.yaml",
            plan("include: [ABSOLUTE]\n"),
        )
        .setup(|dir| {
            // The absolute path is only known here: rewrite the plan with it.
            let rows = dir.join("sub/rows.csv");
            std::fs::create_dir_all(rows.parent().expect("parent")).expect("mkdir");
            std::fs::write(&rows, "message_id,conversation_id,emoji\nm-1,c-1,👍\n").expect("rows");
            let text = std::fs::read_to_string(dir.join("plan.yaml")).expect("plan");
            // A relative path that climbs out via the absolute one's parent is still refused;
            // the absolute one itself loads. Its location is not in the snapshot (it varies).
            let text = text.replace("ABSOLUTE", &rows.display().to_string());
            std::fs::write(dir.join("plan.yaml"), text + "rows:\n  - { message_id: m-2, conversation_id: c-1, emoji: \"👍\" }\n").expect("plan");
        })
        .exit(0),
        Case::new(
            "csv_header_only",
            "rows.csv",
            "\u{feff}target,message_id,conversation_id,emoji\r\n",
        )
        .exit(0),
        Case::new(
            "only_comments",
            "plan.yaml",
            "# a plan\n# with nothing in it\n\n   # at all\n",
        ),
        Case::new(
            "many_targets_and_rows",
            "plan.yaml",
            {
                let n = 5_000;
                let mut s = String::from("version: 1\ntargets:\n");
                for i in 0..n {
                    s.push_str(&format!("  t{i}: {{ provider: ogmma, channel_id: c, api_key: {{ env: REACTBATCH_TEST_SECRET }} }}\n"));
                }
                s.push_str("rows:\n");
                for i in 0..n {
                    s.push_str(&format!("  - {{ target: t{}, message_id: m{i}, emoji: \"👍\" }}\n", n - 1 - i));
                }
                s.push_str("  - { target: t-unknown, message_id: m, emoji: \"👍\" }\n");
                s
            },
        ),
        Case::new(
            "keyed_csv_with_two_duplicates",
            "rows.csv",
            {
                let mut s = String::from("target,message_id,emoji,key\n");
                for i in 0..200_000 {
                    s.push_str(&format!("ogmma-br,m-{i},👍,key-{i}\n"));
                }
                s.push_str("ogmma-br,m-x,👍,key-7\nogmma-br,m-y,👍,key-199999\n");
                s
            },
        ),
    ]
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// The first 30 and last 12 lines, with a count of what was cut.
fn abridge(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 42 {
        return text.to_string();
    }
    format!(
        "{}\n[… {} lines …]\n{}\n",
        lines[..30].join("\n"),
        lines.len() - 42,
        lines[lines.len() - 12..].join("\n")
    )
}

#[test]
fn generated_hostile_inputs_fail_check_fast_with_located_errors() {
    for case in cases() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir: PathBuf = tmp.path().to_path_buf();
        for (name, bytes) in &case.files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, bytes).expect("write case file");
        }
        if let Some(setup) = case.setup {
            setup(&dir);
        }
        let out = output_within(
            Command::new(env!("CARGO_BIN_EXE_reactbatch"))
                .arg("check")
                .args(&case.args)
                .current_dir(&dir)
                .env("REACTBATCH_TEST_SECRET", TEST_SECRET)
                .env("NO_COLOR", "1"),
            WATCHDOG,
        );
        let name = case.name;
        let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
        assert!(!stderr.contains("panicked"), "{name}: panic\n{stderr}");
        assert_eq!(
            out.status.code(),
            Some(case.exit),
            "{name}: exit code\n{}",
            abridge(&stderr)
        );
        assert!(out.stdout.is_empty(), "{name}: stdout should be empty");
        assert!(
            !stderr.contains(TEST_SECRET),
            "{name}: a secret was printed"
        );
        if case.exit == 2 {
            assert!(
                names_file_and_line(&stderr),
                "{name}: no file:line in\n{}",
                abridge(&stderr)
            );
        }
        // No terminal gets a 10 MB line: the renderer shows a window around the column.
        let longest = stderr.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 1024, "{name}: a {longest}-byte line in stderr");
        let shown = if case.abridge {
            abridge(&stderr)
        } else {
            stderr.clone()
        };
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("reactbatch check {} (generated: {name})", case.args.join(" ")),
        }, {
            insta::assert_snapshot!(format!("hostile__{name}"), shown);
        });
    }
}
