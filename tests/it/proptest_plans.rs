//! Property tests: random and mutated plans fed to the loader never panic, never hang, and
//! every problem found is located (a line within the file). Over 10 000 cases in all.
//! "Never hang" is a watchdog per case, not a time budget: see [`WATCHDOG`].

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use proptest::prelude::*;
use reactbatch::plan::{Plan, Problem};

const VALID_PLAN: &str = r#"version: 1
targets:
  k:
    provider: kommo
    scope_id: scope-1_acct-1
    secret: { env: PROPTEST_KOMMO_SECRET }
    user_id: bot
    base_url: http://127.0.0.1:9
  o:
    provider: ogmma
    channel_id: ch_1
    api_key: { env: PROPTEST_OGMMA_KEY }
defaults:
  target: k
  action: react
settings: { concurrency: 4, retries: 2, timeout: 5s, rate: 10/s }
rows:
  - { message_id: m-1, conversation_id: c-1, emoji: "👍" }
  - { msgid: x-2, conversation_ref_id: c-2, emoji: "🎉", not_before: 2026-12-01T09:00:00Z }
  - { target: o, message_id: 665a, emoji: "❤️" }
  - { target: o, message_id: 665b, action: unreact, previous_emoji: "❤️" }
include: [rows.csv]
"#;

const VALID_CSV: &str =
    "target,action,message_id,conversation_id,emoji\nk,react,m-3,c-1,👍\no,unreact,665c,,\n";

/// How long one case may take before it counts as hung. Not a speed limit: a case is a
/// sub-millisecond load of a few hundred bytes, so only a hang (a loop that never ends) can
/// reach this, however loaded the machine.
const WATCHDOG: Duration = Duration::from_secs(120);

/// What loading and validating one plan gave.
struct Outcome {
    problems: Vec<Problem>,
    /// Rows counted by [`Plan::validate`] and rows yielded by [`Plan::rows`]; `None` where the
    /// plan did not load.
    rows: Option<(u64, u64)>,
}

/// Loads and validates `plan_text` (with `csv_text` as `rows.csv` beside it); checks that the
/// work stayed bounded (no hang, no more rows than the input has bytes), that streaming agrees
/// with validation, and that every problem is located inside the files.
fn check_plan(plan_text: &[u8], csv_text: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(&plan_path, plan_text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(dir.path().join("rows.csv"), csv_text)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The load runs on a thread of its own so that a hang fails this case instead of stalling
    // the whole suite.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = plan_path.clone();
    std::thread::spawn(move || {
        let outcome = match Plan::load(&path, None) {
            Err(problems) => Outcome {
                problems,
                rows: None,
            },
            Ok(plan) => {
                let v = plan.validate();
                let mut problems = v.errors;
                problems.extend(v.warnings);
                let streamed = plan.rows().count() as u64;
                Outcome {
                    problems,
                    rows: Some((v.rows, streamed)),
                }
            }
        };
        // The receiver is gone only if the watchdog already failed the case.
        let _ = tx.send(outcome);
    });
    let outcome = rx.recv_timeout(WATCHDOG).map_err(|e| match e {
        RecvTimeoutError::Timeout => {
            TestCaseError::fail(format!("hung: no answer in {WATCHDOG:?}"))
        }
        RecvTimeoutError::Disconnected => TestCaseError::fail("the load panicked (see above)"),
    })?;
    let problems = outcome.problems;
    if let Some((validated, streamed)) = outcome.rows {
        // Streaming the rows yields one item (a row or its first problem) per row validation
        // counted.
        prop_assert_eq!(streamed, validated, "rows streamed vs rows validated");
        // Bounded work: every row takes at least one byte of input (no alias multiplies rows).
        let input = (plan_text.len() + csv_text.len()) as u64;
        prop_assert!(validated <= input, "{validated} rows from {input} bytes");
    }
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.split(|c| *c == b'\n').count() as u32)
            .unwrap_or(0)
    };
    let plan_lines = lines(&plan_path);
    let csv_lines = lines(&dir.path().join("rows.csv"));
    for p in &problems {
        prop_assert!(!p.message.is_empty());
        if let Some(line) = p.line {
            let max = if p.file.ends_with("rows.csv") {
                csv_lines
            } else {
                plan_lines
            };
            prop_assert!(
                line >= 1 && line <= max.max(1),
                "{p} (file has {max} lines)"
            );
        }
        if p.file.ends_with("plan.yaml") || p.file.ends_with("rows.csv") {
            // Located: every problem about file content names its line; only problems about a
            // file or the plan as a whole may go without.
            let whole = ["file", "empty", "UTF-8", "larger", "no rows"];
            prop_assert!(
                p.line.is_some() || whole.iter().any(|w| p.message.contains(w)),
                "unlocated: {p}"
            );
        }
    }
    Ok(())
}

/// A mutation of a text: delete, insert, duplicate or swap at byte/line granularity.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let noise = prop::collection::vec(
        prop_oneof![
            Just(b':'),
            Just(b'-'),
            Just(b' '),
            Just(b'\t'),
            Just(b'\n'),
            Just(b'{'),
            Just(b'}'),
            Just(b'['),
            Just(b'"'),
            Just(b'&'),
            Just(b'*'),
            Just(b','),
            Just(0u8),
            Just(0xffu8),
            any::<u8>()
        ],
        1..8,
    );
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), noise).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut t = text.to_vec();
    for m in mutations {
        let len = t.len().max(1);
        match m {
            Mutation::Delete(at, n) => {
                let a = at % len;
                let b = (a + n).min(t.len());
                if a < b {
                    t.drain(a..b);
                }
            }
            Mutation::Insert(at, bytes) => {
                let a = at % (t.len() + 1);
                t.splice(a..a, bytes.iter().copied());
            }
            Mutation::DuplicateLine(i) | Mutation::SwapLines(i, _) => {
                let mut lines: Vec<Vec<u8>> =
                    t.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                let a = i % n;
                match m {
                    Mutation::DuplicateLine(_) => {
                        let l = lines[a].clone();
                        lines.insert(a, l);
                    }
                    Mutation::SwapLines(_, j) => lines.swap(a, j % n),
                    _ => {}
                }
                t = lines.join(&b'\n');
            }
            Mutation::Truncate(at) => t.truncate(at % len),
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

    #[test]
    fn mutated_plans_never_panic_and_problems_are_located(muts in prop::collection::vec(mutation(), 1..4)) {
        std::env::set_var("PROPTEST_KOMMO_SECRET", "k");
        std::env::set_var("PROPTEST_OGMMA_KEY", "o");
        check_plan(&apply(VALID_PLAN.as_bytes(), &muts), VALID_CSV.as_bytes())?;
    }

    #[test]
    fn mutated_csv_includes_never_panic_and_problems_are_located(muts in prop::collection::vec(mutation(), 1..4)) {
        check_plan(VALID_PLAN.as_bytes(), &apply(VALID_CSV.as_bytes(), &muts))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_plan(&bytes, VALID_CSV.as_bytes())?;
    }

    #[test]
    fn random_yaml_shapes_never_panic(
        keys in prop::collection::vec("[a-z_]{1,12}", 1..6),
        values in prop::collection::vec(prop_oneof![
            Just("[]".to_string()), Just("{}".to_string()), Just("~".to_string()),
            Just("-1".to_string()), Just("99999999999999999999".to_string()),
            Just("{ env: X }".to_string()), Just("[a, [b, [c]]]".to_string()),
            "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
        ], 1..6),
        nest in 0..3usize,
    ) {
        let mut text = String::new();
        for (i, k) in keys.iter().enumerate() {
            let v = &values[i % values.len()];
            text.push_str(&format!("{}{k}: {v}\n", "  ".repeat(nest.min(i))));
        }
        check_plan(text.as_bytes(), VALID_CSV.as_bytes())?;
    }
}

/// The binary on a sample of mutated plans: exit 0 or 2 (never a panic's 101), and an error
/// output that names the file and a line.
#[test]
fn check_binary_exits_2_with_a_location_on_broken_plans() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 60,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(mutation(), 1..4), |muts| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let plan = dir.path().join("plan.yaml");
            std::fs::write(&plan, apply(VALID_PLAN.as_bytes(), &muts))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            std::fs::write(dir.path().join("rows.csv"), VALID_CSV)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_reactbatch"))
                .arg("check")
                .arg("plan.yaml")
                .current_dir(dir.path())
                .env("PROPTEST_KOMMO_SECRET", "k")
                .env("PROPTEST_OGMMA_KEY", "o")
                .output()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let code = out.status.code();
            prop_assert!(code == Some(0) || code == Some(2), "exit {code:?}");
            if code == Some(2) {
                let err = String::from_utf8_lossy(&out.stderr);
                prop_assert!(
                    err.contains("plan.yaml:") || err.contains("rows.csv:"),
                    "{err}"
                );
            }
            Ok(())
        })
        .expect("property holds");
}
