//! Row fields as a closed set, raw (unvalidated) rows as read from YAML or CSV, the hard limits
//! on input sizes, and the "did you mean" helper.
//!
//! # Limits
//! Plans come from users and from scripts; these bounds turn abuse or accidents into located
//! errors (never a panic, a hang or an unbounded allocation). This is the one list of them:
//! - a row field value: at most [`MAX_FIELD_BYTES`] (4096) bytes; `emoji`/`previous_emoji` at
//!   most [`MAX_EMOJI_BYTES`] (64); no field may hold a NUL, and `target`, `action` and the
//!   emoji fields no control character at all; a `scope_id`/`channel_id` (a target's or a
//!   row's) at most [`MAX_ACCOUNT_BYTES`] (256) bytes of `A-Z a-z 0-9 . _ ~ -`, target names at
//!   most 128;
//! - a YAML file (plan, include or `--targets`): at most [`MAX_YAML_BYTES`] (16 MiB), UTF-8
//!   (a BOM is accepted), no NUL byte; nesting at most [`super::yaml::MAX_DEPTH`] (32) levels;
//!   one document; aliases are refused outright (no "billion laughs" expansion to bound); parsing
//!   stops after [`super::yaml::MAX_PARSE_PROBLEMS`] (100) aliases or duplicate keys;
//! - a CSV file is streamed record by record, never held whole; a record is at most
//!   [`MAX_CSV_RECORD_BYTES`] (64 KiB: an unclosed quote cannot swallow the file);
//! - includes nest at most [`MAX_INCLUDE_DEPTH`] (16) levels and a plan has at most
//!   [`MAX_INCLUDES`] (10 000) include entries in all; loops are errors naming the cycle. There
//!   is no cap on rows per include (CSV is streamed); memory per row is bounded instead (an
//!   explicit `key` costs a 64-bit hash, see [`super::keys`]);
//! - includes and `{ file: }` secrets must be regular files (no directory, FIFO, socket or
//!   device) and, when relative, stay inside the directory of the file naming them (see
//!   [`super::paths`]);
//! - a secret file: at most [`MAX_SECRET_BYTES`] (64 KiB);
//! - settings: `concurrency` 1..=4096, `retries` 0..=100, `burst` 1..=100 000, `timeout`
//!   1ms..=10m, `rate` at most 100 000/s (or `unlimited`); zero, negative, fractional and
//!   out-of-range values are errors (see [`super::settings`]);
//! - `check` lists at most [`MAX_ERRORS`] (1000) structural errors, [`MAX_ERRORS`] row errors
//!   and [`MAX_WARNINGS`] (1000) warnings, each followed by a count of the rest; a source line is
//!   shown only up to 1 MiB long and cut to a window around the column.

use std::fmt;
use std::sync::Arc;

use super::source::Pos;
// Also reached as `plan::fields::shorten` from outside the plan.
pub use super::source::shorten;

pub const MAX_FIELD_BYTES: usize = 4096;
pub const MAX_EMOJI_BYTES: usize = 64;
/// A `scope_id`/`channel_id`, on a target or a row: it goes into the request path.
pub const MAX_ACCOUNT_BYTES: usize = 256;
/// Large row sets belong in CSV, which is streamed; a YAML file is held in memory as a tree.
pub const MAX_YAML_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_CSV_RECORD_BYTES: u64 = 64 * 1024;
pub const MAX_INCLUDE_DEPTH: usize = 16;
pub const MAX_INCLUDES: usize = 10_000;
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
pub const MAX_ERRORS: usize = 1000;
pub const MAX_WARNINGS: usize = 1000;

/// The fields a row (and `defaults:`) may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Target,
    Action,
    Emoji,
    MessageId,
    Msgid,
    ConversationId,
    ConversationRefId,
    UserId,
    UserRefId,
    NotBefore,
    PreviousEmoji,
    Key,
    ScopeId,
    ChannelId,
}

impl Field {
    pub const ALL: [Field; 14] = [
        Field::Target,
        Field::Action,
        Field::Emoji,
        Field::MessageId,
        Field::Msgid,
        Field::ConversationId,
        Field::ConversationRefId,
        Field::UserId,
        Field::UserRefId,
        Field::NotBefore,
        Field::PreviousEmoji,
        Field::Key,
        Field::ScopeId,
        Field::ChannelId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Target => "target",
            Field::Action => "action",
            Field::Emoji => "emoji",
            Field::MessageId => "message_id",
            Field::Msgid => "msgid",
            Field::ConversationId => "conversation_id",
            Field::ConversationRefId => "conversation_ref_id",
            Field::UserId => "user_id",
            Field::UserRefId => "user_ref_id",
            Field::NotBefore => "not_before",
            Field::PreviousEmoji => "previous_emoji",
            Field::Key => "key",
            Field::ScopeId => "scope_id",
            Field::ChannelId => "channel_id",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Field::ALL.into_iter().map(Field::name)
    }

    /// The field's position in [`Field::ALL`], for arrays indexed by field.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub fn max_bytes(self) -> usize {
        match self {
            Field::Emoji | Field::PreviousEmoji => MAX_EMOJI_BYTES,
            Field::ScopeId | Field::ChannelId => MAX_ACCOUNT_BYTES,
            _ => MAX_FIELD_BYTES,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field value as written, with where it was written (column `None` for CSV cells).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    pub text: String,
    pub line: u32,
    pub col: Option<u32>,
}

/// A row before validation: the fields it sets, where it starts, and structural problems
/// already found while reading it (unknown keys, wrong types, bad bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRow {
    pub file: Arc<str>,
    pub line: u32,
    pub col: Option<u32>,
    values: [Option<RawValue>; 14],
    pub problems: Vec<super::Problem>,
}

impl RawRow {
    pub fn new(file: Arc<str>, pos: Pos) -> Self {
        RawRow {
            file,
            line: pos.line,
            col: Some(pos.col),
            ..RawRow::default()
        }
    }

    pub fn get(&self, field: Field) -> Option<&RawValue> {
        self.values[field.index()].as_ref()
    }

    pub fn set(&mut self, field: Field, value: RawValue) {
        self.values[field.index()] = Some(value);
    }

    pub fn clear(&mut self, field: Field) {
        self.values[field.index()] = None;
    }

    /// Moves the value out (validation hands it on to the row without a copy).
    pub fn take(&mut self, field: Field) -> Option<RawValue> {
        self.values[field.index()].take()
    }
}

/// "did you mean `x`?" for the candidate closest to `word`, if any is close enough.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&word.to_ascii_lowercase(), c);
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, c));
        }
    }
    match best {
        Some((score, c)) if score >= 0.8 => Some(format!("did you mean `{c}`?")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("emoij", Field::names()).as_deref(),
            Some("did you mean `emoji`?")
        );
        assert_eq!(
            suggest("mesage_id", Field::names()).as_deref(),
            Some("did you mean `message_id`?")
        );
        assert_eq!(suggest("zzzz", Field::names()), None);
    }

    #[test]
    fn field_names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
            assert_eq!(Field::ALL[f.index()], f);
        }
    }
}
