//! A report row: its status, the owned [`RowResult`] read back from a report, and the
//! borrowed [`RowView`] a run renders, with the constructors every report row of a plan row
//! is built by.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::{Problem, ProviderKind, Row, Source, Target};

/// The final state of one plan row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
    Deferred,
    Planned,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Failed,
        Status::Skipped,
        Status::Deferred,
        Status::Planned,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Deferred => "deferred",
            Status::Planned => "planned",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// One report row. Field order is the report's column order (README, "Report"), plus `key`, the
/// row's stable identity that `--resume` matches on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowResult {
    pub row: u64,
    /// `file:line`
    pub source: String,
    pub target: String,
    pub provider: String,
    pub action: String,
    pub message_id: String,
    pub emoji: String,
    pub status: Status,
    /// Empty when no answer was received.
    pub http_status: Option<u16>,
    /// Provider's error code, or ours (`timeout`, `connection`, `auth_stopped`, ...).
    pub code: String,
    pub message: String,
    pub attempts: u32,
    pub duration_ms: u64,
    /// RFC 3339, UTC, milliseconds.
    pub finished_at: String,
    pub key: String,
    /// Kommo: the account the row went to (the row's `scope_id`, else its target's); empty
    /// otherwise, and in reports written before the column existed.
    #[serde(default)]
    pub scope_id: String,
    /// Ogmma: the channel the row went to; empty otherwise.
    #[serde(default)]
    pub channel_id: String,
}

/// Formats a timestamp the way the report does.
pub fn timestamp(at: DateTime<Utc>) -> String {
    with_timestamp(at, str::to_string)
}

/// Calls `f` with the timestamp formatted the way the report does, without allocating or
/// formatting the date again when the second is the last one formatted on this thread.
pub fn with_timestamp<R>(at: DateTime<Utc>, f: impl FnOnce(&str) -> R) -> R {
    // Rows finishing in the same second (every row of a dry run with `--now`) share the text:
    // remember the last one, and only write a new millisecond into its last digits.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let milli = at.timestamp_millis();
    let (second, ms) = (milli.div_euclid(1000), milli.rem_euclid(1000));
    LAST.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *text = at.to_rfc3339_opts(SecondsFormat::Millis, true);
            *cached = second;
        }
        // "….mmmZ": the three digits before the final `Z`.
        let digits = [
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ];
        let end = text.len() - 1;
        if let Ok(digits) = std::str::from_utf8(&digits) {
            text.replace_range(end - 3..end, digits);
        }
        f(text)
    })
}

/// A row's `source` column: a plan row's [`Source`], or the text a report already holds.
#[derive(Clone, Copy, Debug)]
pub enum SourceRef<'a> {
    Plan(&'a Source),
    Text(&'a str),
}

impl SourceRef<'_> {
    /// Appends `file:line` as [`Source`] displays it, without the formatting machinery (a
    /// report row is rendered for every row of a run).
    pub(super) fn push(&self, out: &mut Vec<u8>) {
        match self {
            SourceRef::Plan(source) => {
                out.extend_from_slice(source.file.as_bytes());
                out.push(b':');
                out.extend_from_slice(itoa::Buffer::new().format(source.line).as_bytes());
            }
            SourceRef::Text(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

impl fmt::Display for SourceRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Plan(source) => source.fmt(f),
            SourceRef::Text(text) => f.write_str(text),
        }
    }
}

/// A report row borrowed from wherever its parts live, so the executor can render a row
/// without building a [`RowResult`] of owned strings. Serialises to exactly the bytes a
/// [`RowResult`] with the same values does (CSV and JSON Lines).
#[derive(Clone, Copy)]
pub struct RowView<'a> {
    pub row: u64,
    /// `file:line`, written straight into the output.
    pub source: SourceRef<'a>,
    pub target: &'a str,
    pub provider: &'a str,
    pub action: &'a str,
    pub message_id: &'a str,
    pub emoji: &'a str,
    pub status: Status,
    pub http_status: Option<u16>,
    pub code: &'a str,
    pub message: &'a str,
    pub attempts: u32,
    pub duration_ms: u64,
    pub finished_at: &'a str,
    pub key: &'a str,
    pub scope_id: &'a str,
    pub channel_id: &'a str,
}

impl RowResult {
    pub fn view(&self) -> RowView<'_> {
        RowView {
            row: self.row,
            source: SourceRef::Text(&self.source),
            target: &self.target,
            provider: &self.provider,
            action: &self.action,
            message_id: &self.message_id,
            emoji: &self.emoji,
            status: self.status,
            http_status: self.http_status,
            code: &self.code,
            message: &self.message,
            attempts: self.attempts,
            duration_ms: self.duration_ms,
            finished_at: &self.finished_at,
            key: &self.key,
            scope_id: &self.scope_id,
            channel_id: &self.channel_id,
        }
    }
}

/// The report row of `row` on `target`, as settled with nothing sent: the fields a row and
/// its target decide, with no attempts. Callers that sent something (or, for `--resume`, that
/// copy an earlier outcome) override the rest. Every report row of a plan row is built here.
pub fn row_view<'a>(
    target: &'a Target,
    row: &'a Row,
    key: &'a str,
    status: Status,
    code: &'a str,
    message: &'a str,
    finished_at: &'a str,
) -> RowView<'a> {
    let provider = target.provider();
    RowView {
        row: row.number,
        source: SourceRef::Plan(&row.source),
        target: &target.name,
        provider: provider.as_str(),
        action: row.action.as_str(),
        message_id: row.message_ref(),
        emoji: crate::provider::sent_emoji(provider, row),
        status,
        http_status: None,
        code,
        message,
        attempts: 0,
        duration_ms: 0,
        finished_at,
        key,
        scope_id: match provider {
            ProviderKind::Kommo => row.account(target),
            ProviderKind::Ogmma => "",
        },
        channel_id: match provider {
            ProviderKind::Ogmma => row.account(target),
            ProviderKind::Kommo => "",
        },
    }
}

/// [`row_view`] settled `(status, code, message)` at `at`, handed to `f` with its timestamp
/// rendered.
pub fn with_row_view<R>(
    target: &Target,
    row: &Row,
    key: &str,
    (status, code, message): (Status, &str, &str),
    at: DateTime<Utc>,
    f: impl FnOnce(&RowView<'_>) -> R,
) -> R {
    with_timestamp(at, |finished_at| {
        f(&row_view(
            target,
            row,
            key,
            status,
            code,
            message,
            finished_at,
        ))
    })
}

/// The report row, handed to `f`, of row `number` that the run could not use (the plan no
/// longer reads as it was validated): `failed`, code `invalid_row`, with the problem.
pub fn with_unusable_view<R>(
    number: u64,
    problem: &Problem,
    at: DateTime<Utc>,
    f: impl FnOnce(&RowView<'_>) -> R,
) -> R {
    let source = Source {
        file: problem.file.clone().into(),
        line: problem.line.unwrap_or(0),
    };
    with_timestamp(at, |finished_at| {
        f(&RowView {
            row: number,
            source: SourceRef::Plan(&source),
            target: "",
            provider: "",
            action: "",
            message_id: "",
            emoji: "",
            status: Status::Failed,
            http_status: None,
            code: "invalid_row",
            message: &problem.message,
            attempts: 0,
            duration_ms: 0,
            finished_at,
            key: "",
            scope_id: "",
            channel_id: "",
        })
    })
}

impl Serialize for RowView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RowResult", 17)?;
        st.serialize_field("row", &self.row)?;
        st.serialize_field("source", &Collect(&self.source))?;
        st.serialize_field("target", self.target)?;
        st.serialize_field("provider", self.provider)?;
        st.serialize_field("action", self.action)?;
        st.serialize_field("message_id", self.message_id)?;
        st.serialize_field("emoji", self.emoji)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("http_status", &self.http_status)?;
        st.serialize_field("code", self.code)?;
        st.serialize_field("message", self.message)?;
        st.serialize_field("attempts", &self.attempts)?;
        st.serialize_field("duration_ms", &self.duration_ms)?;
        st.serialize_field("finished_at", self.finished_at)?;
        st.serialize_field("key", self.key)?;
        st.serialize_field("scope_id", self.scope_id)?;
        st.serialize_field("channel_id", self.channel_id)?;
        st.end()
    }
}

/// Serialises a `Display` value as a string, without an intermediate `String`.
struct Collect<'a>(&'a dyn fmt::Display);

impl Serialize for Collect<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}
