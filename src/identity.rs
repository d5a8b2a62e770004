//! A row's stable identity, for `--resume`: its `key` when the plan gives one, otherwise a hash
//! of its content plus its occurrence number among identical rows. Neither depends on the
//! row's position, so adding or removing rows elsewhere in the plan keeps identities stable.
//!
//! Counting occurrences exactly without a map of every row: a first pass ([`IdentityScan`])
//! puts each content hash in a fixed 2 MiB Bloom filter and keeps, exactly, the hashes the
//! filter says it may have seen before (true repeats plus a few false positives). The second
//! pass ([`Identities`]) counts only those. Memory is the filter plus the repeated rows, not
//! the plan.
//!
//! The first pass's content hash of each row travels with the row in the spool
//! ([`crate::plan::spool`]); a spool reader hands it to the [`Identities`] linked to it
//! ([`crate::plan::spool::LastContentId`]), so the run does not hash every row a second time.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::bloom::Bloom;
use crate::plan::spool::LastContentId;
use crate::plan::Row;

/// 256-bit digest of what a row does (not where it is written).
fn content_digest(row: &Row, target_name: &str) -> [u8; 32] {
    // The fields are gathered first and hashed at once: fed a few bytes at a time, the hasher
    // spent more on each feeding than on the hashing.
    thread_local! {
        static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BYTES.with_borrow_mut(|bytes| {
        bytes.clear();
        content_bytes(row, target_name, bytes);
        Sha256::digest(&bytes[..]).into()
    })
}

/// What [`content_digest`] hashes.
fn content_bytes(row: &Row, target_name: &str, bytes: &mut Vec<u8>) {
    let mut field = |v: Option<&str>| crate::digest::put_opt(bytes, v);
    field(Some(target_name));
    field(Some(row.action.as_str()));
    field(row.emoji.as_deref());
    field(row.message_id.as_deref());
    field(row.msgid.as_deref());
    field(row.conversation_id.as_deref());
    field(row.conversation_ref_id.as_deref());
    field(row.user_id.as_deref());
    field(row.user_ref_id.as_deref());
    let not_before = row.not_before.map(|t| t.to_rfc3339());
    field(not_before.as_deref());
    field(row.previous_emoji.as_deref());
    // The row's own account, only when it gives one: rows without one keep the identities
    // earlier reports hold.
    if row.scope_id.is_some() || row.channel_id.is_some() {
        field(Some("account"));
        field(row.scope_id.as_deref());
        field(row.channel_id.as_deref());
    }
}

fn word(d: &[u8; 32], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[i * 8..i * 8 + 8]);
    u64::from_le_bytes(b)
}

/// First pass: finds which content hashes may repeat.
#[derive(Default)]
pub(crate) struct IdentityScan {
    bloom: Bloom,
    candidates: HashSet<u64>,
}

impl IdentityScan {
    pub(crate) fn new() -> IdentityScan {
        IdentityScan::default()
    }

    /// Counts a row; returns its content id (for the spool), `None` when it has a `key`.
    pub(crate) fn observe(&mut self, row: &Row, target_name: &str) -> Option<u64> {
        if row.key.is_some() {
            return None;
        }
        let d = content_digest(row, target_name);
        let id = word(&d, 0);
        // The digest's other words are as uniform as the first: no mixing needed. The answer
        // is the previous row's (see `Bloom::add`).
        if let Some(seen) = self.bloom.add(word(&d, 1), word(&d, 2), Some(id)) {
            self.candidates.insert(seen);
        }
        Some(id)
    }

    pub(crate) fn finish(mut self) -> Identities {
        if let Some(seen) = self.bloom.finish() {
            self.candidates.insert(seen);
        }
        Identities {
            counts: self.candidates.into_iter().map(|id| (id, 0)).collect(),
            last: None,
        }
    }
}

/// Second pass: hands out identities in plan order. Cloned for each pass that needs them
/// (the copy of a resumed report's done rows, then the run).
#[derive(Clone, Debug)]
pub(crate) struct Identities {
    counts: HashMap<u64, u32, foldhash::fast::FixedState>,
    /// Where the spool leaves each row's content id (else the row is hashed again).
    last: Option<LastContentId>,
}

impl Identities {
    /// Takes each row's content id from the spool reader that shares `last`, when it is there
    /// for the row asked about.
    pub(crate) fn linked_to(mut self, last: LastContentId) -> Identities {
        self.last = Some(last);
        self
    }

    /// The identity of the next row (rows must come in plan order, each once).
    pub(crate) fn key(&mut self, row: &Row, target_name: &str) -> String {
        if let Some(k) = &row.key {
            return k.clone();
        }
        let id = match self.last.as_ref().and_then(|l| l.get(row.number)) {
            Some(id) => id,
            None => word(&content_digest(row, target_name), 0),
        };
        let occurrence = match self.counts.get_mut(&id) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => 1,
        };
        key_text(id, occurrence)
    }
}

/// `#` + the id as 16 lowercase hex digits + `.` + the occurrence: what `format!("#{id:016x}.
/// {occurrence}")` writes, by hand (one per row of a run).
fn key_text(id: u64, occurrence: u32) -> String {
    let mut hex = [0u8; 16];
    // Eight bytes, sixteen digits.
    let _ = hex::encode_to_slice(id.to_be_bytes(), &mut hex);
    let mut n = itoa::Buffer::new();
    let occurrence = n.format(occurrence);
    let mut out = String::with_capacity(18 + occurrence.len());
    out.push('#');
    out.extend(hex.iter().map(|&b| char::from(b)));
    out.push('.');
    out.push_str(occurrence);
    out
}

/// Which of `count` shards a (target, message) belongs to, 1-based; stable across runs.
#[cfg(test)]
pub(crate) fn shard_of(target_name: &str, message: &str, count: u32) -> u32 {
    shard_of_account(target_name, None, message, count)
}

/// Which of `count` shards `row` on target `target_name` belongs to: by (target, the row's
/// own account, message), so one message id in two accounts is two messages. A row without
/// an account of its own falls where [`shard_of`] puts its (target, message).
pub(crate) fn row_shard(target_name: &str, row: &Row, count: u32) -> u32 {
    shard_of_account(target_name, row.own_account(), row.message_ref(), count)
}

impl crate::plan::Shard {
    /// Whether `row`, on target `target_name`, is one of this shard's rows ([`row_shard`]).
    pub fn owns(self, target_name: &str, row: &Row) -> bool {
        row_shard(target_name, row, self.count) == self.index
    }
}

fn shard_of_account(target_name: &str, account: Option<&str>, message: &str, count: u32) -> u32 {
    let mut h = Sha256::new();
    h.update(target_name.as_bytes());
    h.update([0u8]);
    if let Some(account) = account {
        // 0xff never occurs in UTF-8: no target name ends where an account begins.
        h.update([0xffu8]);
        h.update(account.as_bytes());
        h.update([0u8]);
    }
    h.update(message.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    (word(&d, 0) % u64::from(count.max(1))) as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_what_format_wrote() {
        for (id, occurrence) in [(0, 1), (1, 2), (0xdead_beef, 10), (u64::MAX, u32::MAX)] {
            assert_eq!(key_text(id, occurrence), format!("#{id:016x}.{occurrence}"));
        }
    }

    fn row(msg: &str, emoji: &str) -> Row {
        Row::test(1).message(msg).emoji(emoji)
    }

    fn keys(rows: &[Row]) -> Vec<String> {
        let mut scan = IdentityScan::new();
        rows.iter().for_each(|r| {
            scan.observe(r, "t");
        });
        let mut ids = scan.finish();
        rows.iter().map(|r| ids.key(r, "t")).collect()
    }

    #[test]
    fn identical_rows_get_occurrence_numbers_and_others_are_stable() {
        let a = row("m1", "👍");
        let b = row("m2", "👍");
        let k = keys(&[a.clone(), b.clone(), a.clone()]);
        assert!(k[0].ends_with(".1") && k[2].ends_with(".2"), "{k:?}");
        assert_eq!(k[0].split('.').next(), k[2].split('.').next());
        // Adding a row elsewhere does not change existing identities.
        let k2 = keys(&[row("m0", "x"), a.clone(), b.clone(), a.clone()]);
        assert_eq!(k2[1..], k[..]);
    }

    #[test]
    fn the_rows_own_account_is_part_of_its_identity_and_shard() {
        let plain = row("m1", "👍");
        let mut a = plain.clone();
        a.scope_id = Some("acct-a".into());
        let mut b = plain.clone();
        b.scope_id = Some("acct-b".into());
        let k = keys(&[plain.clone(), a.clone(), b.clone()]);
        // Three different rows: none is an occurrence of another.
        assert!(k.iter().all(|k| k.ends_with(".1")), "{k:?}");
        assert_ne!(k[1], k[2]);
        assert_ne!(k[0], k[1]);
        // A row without an account keeps the identity it always had.
        assert_eq!(
            word(&content_digest(&plain, "t"), 0),
            u64::from_str_radix(&k[0][1..17], 16).expect("hex")
        );
        // Shards: unchanged without an account; with one, by (target, account, message).
        assert_eq!(row_shard("t", &plain, 7), shard_of("t", "m1", 7));
        let spread: std::collections::HashSet<u32> = (0..64)
            .map(|i| {
                let mut r = plain.clone();
                r.scope_id = Some(format!("acct-{i}"));
                row_shard("t", &r, 4)
            })
            .collect();
        assert_eq!(
            spread.len(),
            4,
            "one message in many accounts spreads over shards"
        );
    }

    #[test]
    fn explicit_key_wins() {
        let mut a = row("m1", "👍");
        a.key = Some("row-7".into());
        assert_eq!(keys(&[a]), vec!["row-7".to_string()]);
    }

    #[test]
    fn shards_cover_every_message_once() {
        let n = 3;
        let mut per = [0u32; 3];
        for i in 0..3000 {
            let s = shard_of("t", &format!("m{i}"), n);
            assert!((1..=n).contains(&s));
            per[(s - 1) as usize] += 1;
        }
        assert!(per.iter().all(|c| *c > 800), "{per:?}");
    }
}
