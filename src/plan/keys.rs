//! Duplicate explicit `key` values: an error, because a row's `key` is its identity for
//! `--resume`, and two rows sharing one would make a resumed run skip the second as "done".
//!
//! # Memory
//! A million-row plan must not hold a million strings, so, like [`super::warnings`], two passes:
//! 1. [`KeyFinder`] keeps the 64-bit hash of every explicit `key` (8 bytes plus hash-set
//!    overhead per keyed row; rows without a `key` cost nothing) and notes the hashes seen twice.
//! 2. Only if some hash repeated, the rows are streamed again and [`DuplicateKeys`] keeps the
//!    first row of each repeated hash's key *text* — only keys whose hash repeated — and reports
//!    every later row with the same text, pointing at the first. Texts are compared exactly, so
//!    a hash collision between two different keys costs a little memory, never a false error;
//!    and equal keys always have equal hashes, so no duplicate is missed.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::model::{Row, Source};
use super::problem::Problem;
use super::source::shorten;

/// A fixed-seed hasher, so both passes agree (foldhash: cheaper than SipHash per row).
fn hash(key: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(key)
}

/// Pass 1: the hashes of every explicit key, and those seen more than once.
#[derive(Default)]
pub(super) struct KeyFinder {
    seen: HashSet<u64>,
    repeated: HashSet<u64>,
}

impl KeyFinder {
    pub(super) fn add(&mut self, row: &Row) {
        if let Some(key) = &row.key {
            let h = hash(key);
            if !self.seen.insert(h) {
                self.repeated.insert(h);
            }
        }
    }

    /// What pass 2 needs, or `None` when no key can be a duplicate (no second pass then).
    pub(super) fn finish(self) -> Option<DuplicateKeys> {
        if self.repeated.is_empty() {
            None
        } else {
            Some(DuplicateKeys {
                repeated: self.repeated,
                first: HashMap::new(),
            })
        }
    }
}

/// Pass 2: the first row of each key whose hash repeated.
pub(super) struct DuplicateKeys {
    repeated: HashSet<u64>,
    first: HashMap<String, (Source, u64)>,
}

impl DuplicateKeys {
    /// An error if `row` repeats the key of an earlier row.
    pub(super) fn add(&mut self, row: &Row) -> Option<Problem> {
        let key = row.key.as_ref()?;
        if !self.repeated.contains(&hash(key)) {
            return None;
        }
        match self.first.get(key) {
            None => {
                self.first
                    .insert(key.clone(), (row.source.clone(), row.number));
                None
            }
            Some((source, number)) => Some(
                Problem::error(
                    &*row.source.file,
                    Some(row.source.line),
                    None,
                    format!(
                        "duplicate `key` `{}`: row {number} at {source} has the same key",
                        shorten(key)
                    ),
                )
                .with_hint("keys must be unique: a row's `key` is its identity for --resume")
                .with_code("duplicate_key"),
            ),
        }
    }
}
