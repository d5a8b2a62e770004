//! Which message a row reacts to: the unit the dispatcher keeps rows in plan order on.

use crate::plan::Row;

/// A (target, account, message) triple, account and message hashed: rows on one message run
/// in plan order, one at a time. Two messages whose hashes collide only wait for each other
/// (never overlap), so the dispatcher keeps no copy of each in-flight message id.
pub(crate) type MessageId = (usize, u64);

pub(crate) fn message_id(row: &Row) -> MessageId {
    use std::hash::BuildHasher;
    let hasher = foldhash::quality::FixedState::default();
    let hash = match row.own_account() {
        None => hasher.hash_one(row.message_ref()),
        // A message id is only unique within its account.
        Some(account) => hasher.hash_one((account, row.message_ref())),
    };
    (row.target, hash)
}

/// A message exactly (target, the row's own account, message id), where a collision would do
/// harm (deferring an unrelated row).
pub(crate) fn message_key(row: &Row) -> (usize, String) {
    let text = match row.own_account() {
        None => row.message_ref().to_string(),
        // `\0` is in no account (they are path-safe).
        Some(account) => [account, "\0", row.message_ref()].concat(),
    };
    (row.target, text)
}
