//! Row warnings. [`both_message_ids`]: a Kommo row giving both `message_id` and `msgid` (the
//! two ids may name different messages; Kommo documents each as required only without the
//! other, so which one wins is not a contract).
//!
//! Warnings for rows a later row makes pointless, on the same (target, message, user):
//! - a `react` followed by another `react` (the later one replaces it) or by an `unreact` (the
//!   later one removes it) → warning at the earlier row;
//! - an `unreact` followed by another `unreact` → warning at the later row (nothing left to
//!   remove).
//!
//! Rows whose `not_before` differ are never flagged: "react now, unreact tomorrow" is a plan.
//!
//! # Memory
//! Plans may hold millions of CSV rows, so no map of every message is kept. Two passes:
//! 1. [`RepeatFinder`] hashes each row's (target, message, user) key to 64 bits and sets it in a
//!    fixed 1 MiB Bloom filter; a key already (probably) present goes into a set of candidates.
//!    The candidate set is capped at [`MAX_CANDIDATES`] (a note says when the cap was hit).
//! 2. Only if there are candidates, the rows are streamed again and [`PointlessRows`] tracks the
//!    last row of each candidate key (by its 64-bit hash: a collision between two different keys
//!    among a million is about 1 in 10^7, and would only cost a spurious warning).
//!
//! Memory is thus ~1 MiB plus ~100 bytes per repeated message, whatever the row count.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

use chrono::{DateTime, Utc};

use super::model::{Action, Row, Source};
use super::problem::Problem;

pub(super) const MAX_CANDIDATES: usize = 200_000;

/// A row that names its message twice, by Kommo id and by integration id.
pub(super) fn both_message_ids(row: &Row) -> Option<Problem> {
    let (Some(id), Some(msgid)) = (&row.message_id, &row.msgid) else {
        return None;
    };
    Some(
        Problem::warning(
            &*row.source.file,
            Some(row.source.line),
            None,
            format!(
                "row {} gives both `message_id` ({}) and `msgid` ({}): both are sent, and Kommo \
                 does not document which one it uses",
                row.number,
                super::source::shorten(id),
                super::source::shorten(msgid)
            ),
        )
        .with_hint(
            "keep the one that names the message: `message_id` for Kommo's id, `msgid` for yours",
        )
        .with_code("both_message_ids"),
    )
}

const BLOOM_BITS: usize = 1 << 23;
const BLOOM_HASHES: u64 = 4;

/// The identity rows are compared on. A fixed-seed hasher, so both passes agree; foldhash, not
/// SipHash: this runs on every row of the serial validation pass (SipHash was ~9 % of it).
fn row_key(row: &Row) -> u64 {
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    row.target.hash(&mut h);
    row.message_id.hash(&mut h);
    row.msgid.hash(&mut h);
    row.user_id.hash(&mut h);
    row.user_ref_id.hash(&mut h);
    // One message id in two accounts is two messages.
    if let Some(account) = row.own_account() {
        account.hash(&mut h);
    }
    h.finish()
}

/// Pass 1: finds keys seen more than once (with Bloom-filter false positives, weeded out in
/// pass 2 at no cost but a little memory).
pub(super) struct RepeatFinder {
    bits: Vec<u64>,
    candidates: HashSet<u64>,
    overflowed: bool,
}

impl Default for RepeatFinder {
    fn default() -> Self {
        RepeatFinder {
            bits: vec![0; BLOOM_BITS / 64],
            candidates: HashSet::new(),
            overflowed: false,
        }
    }
}

impl RepeatFinder {
    pub(super) fn add(&mut self, row: &Row) {
        let key = row_key(row);
        let (h1, h2) = (key & 0xffff_ffff, (key >> 32) | 1);
        let mut present = true;
        for i in 0..BLOOM_HASHES {
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % BLOOM_BITS;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if self.bits[word] & mask == 0 {
                present = false;
                self.bits[word] |= mask;
            }
        }
        if present && !self.candidates.contains(&key) {
            if self.candidates.len() < MAX_CANDIDATES {
                self.candidates.insert(key);
            } else {
                self.overflowed = true;
            }
        }
    }

    /// `None` when no key repeats: the second pass can be skipped.
    pub(super) fn finish(self) -> Option<PointlessRows> {
        if self.candidates.is_empty() {
            return None;
        }
        Some(PointlessRows {
            candidates: self.candidates,
            last: HashMap::new(),
            overflowed: self.overflowed,
        })
    }
}

struct Last {
    number: u64,
    source: Source,
    action: Action,
    not_before: Option<DateTime<Utc>>,
}

/// Pass 2: tracks the last row of each candidate key and reports pointless rows.
pub(super) struct PointlessRows {
    candidates: HashSet<u64>,
    last: HashMap<u64, Last>,
    overflowed: bool,
}

impl PointlessRows {
    /// Checks `row` against the last row on the same key; a warning if one of them is pointless.
    pub(super) fn add(&mut self, row: &Row) -> Option<Problem> {
        let key = row_key(row);
        if !self.candidates.contains(&key) {
            return None;
        }
        let now = Last {
            number: row.number,
            source: row.source.clone(),
            action: row.action,
            not_before: row.not_before,
        };
        let prev = self.last.insert(key, now)?;
        if prev.not_before != row.not_before {
            return None;
        }
        let warn = |at: &Source, message: String| {
            Problem::warning(&*at.file, Some(at.line), None, message).with_code("pointless_row")
        };
        match (prev.action, row.action) {
            (Action::React, later) => Some(warn(
                &prev.source,
                format!(
                    "row {} (react) is pointless: row {} at {} {} on the same message and user later",
                    prev.number,
                    row.number,
                    row.source,
                    match later {
                        Action::React => "reacts again",
                        Action::Unreact => "removes the reaction",
                    }
                ),
            )),
            (Action::Unreact, Action::Unreact) => Some(warn(
                &row.source,
                format!(
                    "row {} (unreact) is pointless: row {} at {} already removed the reaction on \
                     the same message and user",
                    row.number, prev.number, prev.source
                ),
            )),
            (Action::Unreact, Action::React) => None,
        }
    }

    /// A note when the candidate cap was hit (warnings are then not exhaustive).
    pub(super) fn note(&self, file: &str) -> Option<Problem> {
        self.overflowed.then(|| {
            Problem::warning(
                file,
                None,
                None,
                format!(
                    "more than {MAX_CANDIDATES} messages appear in several rows; pointless-row \
                     warnings cover only the first {MAX_CANDIDATES}"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: u64, message: &str, action: Action) -> Row {
        Row {
            user_id: Some("u".into()),
            ..Row::test(number)
                .action(action)
                .message(message)
                .emoji("👍")
        }
    }

    #[test]
    fn two_passes_find_pointless_rows() {
        let rows = [
            row(1, "a", Action::React),
            row(2, "b", Action::React),
            row(3, "a", Action::Unreact),
            row(4, "c", Action::Unreact),
            row(5, "c", Action::Unreact),
            row(6, "b", Action::Unreact),
            row(7, "b", Action::React),
        ];
        let mut finder = RepeatFinder::default();
        rows.iter().for_each(|r| finder.add(r));
        let mut pass2 = finder.finish().unwrap();
        let warnings: Vec<String> = rows
            .iter()
            .filter_map(|r| pass2.add(r))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            warnings,
            [
                "p.csv:2: warning: row 1 (react) is pointless: row 3 at p.csv:4 removes the reaction on the same message and user later",
                "p.csv:6: warning: row 5 (unreact) is pointless: row 4 at p.csv:5 already removed the reaction on the same message and user",
                "p.csv:3: warning: row 2 (react) is pointless: row 6 at p.csv:7 removes the reaction on the same message and user later",
            ]
        );
    }

    #[test]
    fn no_repeats_no_second_pass() {
        let mut finder = RepeatFinder::default();
        for i in 0..10_000 {
            finder.add(&row(i, &format!("m{i}"), Action::React));
        }
        assert!(finder.finish().is_none());
    }
}
