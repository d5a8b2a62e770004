//! The run's one pass over the rows, before anything is sent: it validates every row and, on
//! the way, finds repeated rows (for identities), digests what would be sent, counts the
//! outline, and spools the valid rows (the executor reads the spool, never the plan files
//! again).
//!
//! The pass runs on two threads ([`Plan::validate_split`]): one reads and checks the rows,
//! the calling thread does everything else here. The digest only needs the rows in order, and
//! nothing else needs it before the pass ends, so it goes where it balances the two threads:
//! on the reader when the finder of pointless rows (`warnings`, on the calling thread) runs,
//! on the calling thread when it does not (`-q`). The spool needs the content id from the
//! identity scan, so those two stay together.

use chrono::{DateTime, Utc};

use crate::digest::PlanDigest;
use crate::identity::IdentityScan;
use crate::outputs::audit::AuditBuilder;
use crate::plan::pace::LaneMap;
use crate::plan::spool::Spool;
use crate::plan::{Plan, Shard, Threads, Validation};

/// What the pass found. Nothing here depends on how many threads ran it.
pub(super) struct RowPass {
    pub validation: Validation,
    pub scan: IdentityScan,
    pub digest: PlanDigest,
    pub audit: AuditBuilder,
    /// The lanes the valid rows go to (a lane per account their rows name).
    pub lanes: LaneMap,
    /// The valid rows, in plan order, each with its content id.
    pub spool: Spool,
    /// The first error writing the spool (the rows after it were not spooled).
    pub spool_error: Option<std::io::Error>,
}

impl RowPass {
    /// Runs the pass over `plan`. `warnings`: look for rows a later row makes pointless (off
    /// with `-q`, which would not show them). The outline counts only `shard`'s rows; `now`
    /// decides which rows are deferred.
    pub(super) fn run(
        plan: &Plan,
        warnings: bool,
        shard: Option<Shard>,
        now: DateTime<Utc>,
        mut spool: Spool,
        threads: Threads,
    ) -> RowPass {
        let mut scan = IdentityScan::new();
        let mut digest = PlanDigest::new(plan);
        let mut audit = AuditBuilder::new(plan.targets.len(), now);
        let mut lanes = LaneMap::new(&plan.pace_groups, &plan.targets);
        let mut spool_error = None;
        // Where the digest goes (see the module's notes): with the repeat finder on, the
        // calling thread has enough; without it, the reader has more.
        let (mut beside, mut calling) = if warnings {
            (Some(&mut digest), None)
        } else {
            (None, Some(&mut digest))
        };
        let validation = plan.validate_split(
            warnings,
            threads,
            |row| {
                if let Some(d) = beside.as_mut() {
                    d.row(row);
                }
            },
            |row, ()| {
                if let Some(d) = calling.as_mut() {
                    d.row(row);
                }
                let name = &plan.targets[row.target].name;
                let content_id = scan.observe(row, name);
                let lane = lanes.route(row, &plan.targets).unwrap_or(0);
                if shard.is_none_or(|s| s.owns(name, row)) {
                    audit.row(row, lane);
                }
                if spool_error.is_none() {
                    spool_error = spool.push_to(row, content_id, lane).err();
                }
            },
        );
        RowPass {
            validation,
            scan,
            digest,
            audit,
            lanes,
            spool,
            spool_error,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The two-thread pass must give exactly what the serial one gives, on a plan made to
    //! catch a row reordered, dropped, doubled or paired with another row's content id.

    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;
    use crate::digest::Digests;
    use crate::outputs::audit::Audit;
    use crate::plan::{Problem, Row};

    const TARGETS: &str = "version: 1
targets:
  kommo-main:
    provider: kommo
    scope_id: scope-1
    secret: { env: REACTBATCH_TEST_SECRET }
    user_id: bot
  ogmma-br:
    provider: ogmma
    channel_id: ch_123
    api_key: { env: REACTBATCH_TEST_SECRET }
defaults:
  target: kommo-main
  conversation_id: chat-7
";

    /// A plan of four files (inline rows, two CSV includes and a YAML include) with repeated
    /// rows, repeated messages, deferred and unreact rows, keys and, when `invalid`, invalid
    /// rows (more than the listing cap) and duplicate keys.
    fn write_plan(dir: &Path, invalid: bool) -> std::path::PathBuf {
        let mut plan = String::from(TARGETS);
        plan.push_str(
            "rows:
  - { message_id: in-1, emoji: \"👍\" }
  - { message_id: in-1, msgid: my-1, emoji: \"🎉\" }
  - { message_id: in-2, emoji: \"👍\", key: k-inline }
  - { message_id: in-1, action: unreact }
include: [a.csv, b.yaml, c.csv]
",
        );
        std::fs::write(dir.join("plan.yaml"), plan).expect("plan");

        let emoji = ["👍", "🎉", "❤️", "🔥"];
        let mut a = String::from("target,message_id,emoji,action,key,not_before,previous_emoji\n");
        for i in 0..2600u32 {
            // Every field but `key` depends on `i % 900` only: rows 900 apart are the same row
            // (identities `.2`, `.3`; pointless-row warnings).
            let j = i % 900;
            let target = if j % 7 == 0 { "ogmma-br" } else { "" };
            let mut e = emoji[(j % 4) as usize];
            if invalid && i % 97 == 5 {
                e = "nope";
            }
            let action = if j % 11 == 0 { "unreact" } else { "react" };
            let key = match (i % 13 == 0, invalid) {
                (false, _) => String::new(),
                (true, false) => format!("k-{i}"),
                // Rows 1300 apart share a key: duplicate-key errors from the second pass.
                (true, true) => format!("k-{}", i % 100),
            };
            let not_before = if j % 17 == 0 {
                "2030-01-01T00:00:00Z"
            } else {
                ""
            };
            let previous = if j % 19 == 0 { "👍" } else { "" };
            writeln!(
                a,
                "{target},m-{j},{e},{action},{key},{not_before},{previous}"
            )
            .expect("write");
        }
        std::fs::write(dir.join("a.csv"), a).expect("a.csv");

        let mut b = String::from("rows:\n");
        for i in 0..300u32 {
            writeln!(
                b,
                "  - {{ msgid: my-{i}, conversation_ref_id: ref-{}, emoji: \"🔥\" }}",
                i % 5
            )
            .expect("write");
        }
        std::fs::write(dir.join("b.yaml"), b).expect("b.yaml");

        let mut c = String::from("message_id,emoji\n");
        for i in 0..1500u32 {
            // Invalid: 950 react rows without an emoji. With a.csv's 27 bad emoji that is 977
            // errors in the first pass; the second pass's duplicate keys go past the cap.
            let e = if invalid && i < 1425 && i % 3 != 0 {
                ""
            } else {
                "👍"
            };
            writeln!(c, "c-{},{e}", i % 1100).expect("write");
        }
        std::fs::write(dir.join("c.csv"), c).expect("c.csv");
        dir.join("plan.yaml")
    }

    /// Everything the pass hands on, in comparable form.
    #[derive(Debug, PartialEq)]
    struct Seen {
        errors: Vec<Problem>,
        warnings: Vec<Problem>,
        counts: (u64, u64, u64),
        digest: Digests,
        audit: Audit,
        spooled: Vec<Row>,
        /// Each spooled row's identity, with the content id the spool carries.
        identities: Vec<String>,
    }

    fn pass(plan: &Plan, warnings: bool, threads: Threads) -> Seen {
        let now = "2026-06-01T00:00:00Z".parse().expect("time");
        let spool = Spool::create().expect("spool");
        let shard = Some(Shard { index: 1, count: 2 });
        let RowPass {
            validation: v,
            scan,
            digest,
            audit,
            lanes,
            spool,
            spool_error,
        } = RowPass::run(plan, warnings, shard, now, spool, threads);
        assert!(spool_error.is_none(), "{spool_error:?}");
        let rates: Vec<_> = lanes.lanes.iter().map(|g| g.rate(&plan.targets)).collect();
        let (mut audit, mut replacing) = audit.finish(&lanes.lanes, &rates, 3);
        let rows = spool.into_rows().expect("spool rows");
        let ids = scan.finish();
        let (mut fresh, mut linked) = (ids.clone(), ids.linked_to(rows.content_ids()));
        let (mut spooled, mut identities) = (Vec::new(), Vec::new());
        for row in rows {
            let row = row.expect("spooled row");
            let name = &plan.targets[row.target].name;
            let identity = linked.key(&row, name);
            // The content id travelling with the row is the row's own.
            assert_eq!(identity, fresh.key(&row, name), "row {}", row.number);
            replacing.row(&row, true);
            identities.push(identity);
            spooled.push(row);
        }
        replacing.apply(&mut audit);
        Seen {
            errors: v.errors,
            warnings: v.warnings,
            counts: (v.rows, v.errors_omitted, v.warnings_omitted),
            digest: digest.finish_all(),
            audit,
            spooled,
            identities,
        }
    }

    fn codes(problems: &[Problem]) -> Vec<&'static str> {
        problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn the_two_thread_pass_gives_what_the_serial_pass_gives() {
        for invalid in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let plan = Plan::load(&write_plan(dir.path(), invalid), None).expect("plan loads");
            // The digest is computed on either thread depending on `warnings`: the same.
            let mut digests = Vec::new();
            for warnings in [true, false] {
                let serial = pass(&plan, warnings, Threads::One);
                digests.push(serial.digest.clone());
                let two = pass(&plan, warnings, Threads::Two);
                // Compared field by field first, for a readable failure.
                assert_eq!(two.counts, serial.counts);
                assert_eq!(two.errors, serial.errors);
                assert_eq!(two.warnings, serial.warnings);
                assert_eq!(two.digest, serial.digest);
                assert_eq!(two.audit, serial.audit);
                assert_eq!(two.identities, serial.identities);
                assert_eq!(two, serial);

                // The plan exercises what it is meant to: several batches, every file,
                // repeated rows, and (invalid) errors past the cap.
                let s = &serial;
                assert_eq!(s.counts.0, 4 + 2600 + 300 + 1500);
                assert_eq!(s.digest.files.len(), 4, "{:?}", s.digest.files);
                assert!(s.identities.iter().any(|k| k.ends_with(".3")));
                assert!(s.identities.iter().any(|k| k == "k-inline"));
                let t = &s.audit.targets;
                assert!(t[0].replacing > 0 && t[0].deferred > 0 && t[1].unreacts > 0);
                assert!(codes(&s.warnings).contains(&"both_message_ids"));
                assert_eq!(codes(&s.warnings).contains(&"pointless_row"), warnings);
                assert_eq!(s.counts.2 > 0, warnings, "{:?}", s.counts);
                if invalid {
                    let errors = codes(&s.errors);
                    assert!(errors.contains(&"invalid_emoji") && errors.contains(&"missing_emoji"));
                    assert!(errors.contains(&"duplicate_key"), "{errors:?}");
                    assert!(s.counts.1 > 0, "{:?}", s.counts);
                    assert_eq!(s.spooled.len() as u64, s.counts.0 - 977);
                } else {
                    assert!(s.errors.is_empty(), "{:?}", s.errors);
                    assert_eq!(s.spooled.len() as u64, s.counts.0);
                }
            }
            assert_eq!(digests[0], digests[1]);
        }
    }
}
