//! Row validation: a [`RawRow`] (from YAML or CSV) plus `defaults:` and the targets → a [`Row`]
//! or every problem found in it.
//!
//! Rules (the README's plan format and what each field becomes on the wire):
//! - `target` may be omitted when the plan has exactly one target.
//! - `action` is `react` (default) or `unreact`; `react` needs a non-empty `emoji`.
//! - Kommo rows need one of `message_id`/`msgid`, one of `conversation_id`/`conversation_ref_id`,
//!   and a user. Each of these pairs is taken as a unit: if the row gives either field of a
//!   pair, `defaults:` does not fill in the other, and for the user, the target's
//!   `user_id`/`user_ref_id` apply only when neither the row nor `defaults:` names a user.
//!   Mixing a row's `conversation_ref_id` with a default `conversation_id` (or a row's
//!   `user_ref_id` with the target's `user_id`) would name two different things.
//! - Ogmma rows need `message_id`; the Kommo-only fields (`msgid`, conversation ids, users) are
//!   errors when the row itself sets them, and ignored when they come from `defaults:` (a plan
//!   mixing providers may set Kommo defaults).
//! - A row's `scope_id` (Kommo) / `channel_id` (Ogmma) is its account, over its target's; a
//!   target that names none needs it on every row (or in `defaults:`). The other provider's
//!   field is an error when the row itself sets it, and ignored from `defaults:`.
//! - Values are at most [`super::fields::MAX_FIELD_BYTES`] bytes (emojis
//!   [`super::fields::MAX_EMOJI_BYTES`]); an empty value counts as absent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::emoji::{self, Invalid};
use super::fields::{suggest, Field, RawRow, RawValue};
use super::model::{Action, ProviderKind, Row, Source, Target, TargetKind};
use super::problem::Problem;
use super::source::shorten;

/// What validating one row produced.
// A row is moved out at once, for every row of the plan: boxing it would add an allocation
// per row to the validation pass for a value that never sits in memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Checked {
    Row(Row),
    /// Every problem in the row, in field order.
    Invalid(Vec<Problem>),
    /// The row names a target that is itself invalid (already reported at the target); `check`
    /// does not repeat it for every row, but [`super::Plan::rows`] yields it as an error.
    Suppressed(Problem),
}

/// What rows are checked against.
#[derive(Debug, Default)]
pub(super) struct RowContext {
    pub targets: Vec<Target>,
    /// Targets that were written but had errors: rows naming them are [`Checked::Suppressed`].
    pub broken_targets: HashSet<String>,
    /// Target name → index in `targets`: a lookup per row must not scan every target (a
    /// hostile plan can declare a hundred thousand).
    pub target_index: HashMap<String, usize>,
    /// `defaults:`, already checked (invalid values were dropped and reported at load).
    pub defaults: RawRow,
    /// The targets could not be read as written (the targets file is invalid, or targets are
    /// given both by the plan and by `--targets`): that error is reported once, and a row naming
    /// a target not known is [`Checked::Suppressed`] rather than one more `unknown target`.
    pub targets_unread: bool,
    /// Emojis written in another form than the fully-qualified one they are sent in: (file,
    /// as written) → where first seen (line, column) and the form sent. Filled by
    /// [`check_row`] for [`super::Plan::emoji_notes`]; at most one entry per spelling and
    /// file, so its size is bounded by the emoji data, not the plan.
    pub emoji_notes: std::sync::Mutex<EmojiNotes>,
}

/// See [`RowContext::emoji_notes`].
pub(super) type EmojiNotes =
    std::collections::BTreeMap<(Arc<str>, String), ((u32, Option<u32>), String)>;

/// Where a value was written: file, and line and column.
type WrittenAt = (Arc<str>, (u32, Option<u32>));

/// The code of a [`check_value`] failure for `field`.
fn invalid_code(field: Field) -> &'static str {
    match field {
        Field::Emoji | Field::PreviousEmoji => "invalid_emoji",
        Field::Action => "invalid_action",
        Field::NotBefore => "invalid_time",
        _ => "invalid_value",
    }
}

/// Checks a value on its own (length, syntax); the error message if it is bad.
pub(super) fn check_value(field: Field, text: &str) -> Result<(), Invalid> {
    if text.len() > field.max_bytes() {
        return Err(Invalid::from(format!(
            "`{field}` is {} bytes long; the maximum is {}",
            text.len(),
            field.max_bytes()
        )));
    }
    let single_line = matches!(
        field,
        Field::Target | Field::Action | Field::Emoji | Field::PreviousEmoji
    );
    // Ids and keys may hold line breaks (a quoted CSV cell can), but never a NUL: it is
    // always corruption, and some providers cut strings at it.
    if text.contains('\0') {
        return Err(format!("`{field}` contains a NUL character").into());
    }
    if single_line && text.chars().any(char::is_control) {
        return Err(format!("`{field}` contains a control character").into());
    }
    match field {
        Field::Action => parse_action(text).map(|_| ()).map_err(Invalid::from),
        Field::NotBefore => parse_not_before(text).map(|_| ()).map_err(Invalid::from),
        // Empty means absent (the react-needs-an-emoji rule reports it).
        Field::Emoji | Field::PreviousEmoji if text.is_empty() => Ok(()),
        Field::Emoji | Field::PreviousEmoji => emoji::resolve(field.name(), text).map(|_| ()),
        Field::MessageId
        | Field::Msgid
        | Field::ConversationId
        | Field::ConversationRefId
        | Field::UserId
        | Field::UserRefId => emoji::check_id(field.name(), text),
        // Empty means absent (the target's applies).
        Field::ScopeId | Field::ChannelId if text.is_empty() => Ok(()),
        Field::ScopeId | Field::ChannelId if !super::targets::is_path_safe(text) => {
            Err(Invalid::from(format!(
                "`{field}` must be made of `A-Z a-z 0-9 . _ ~ -` only (it goes into the request \
                 path unescaped), found `{}`",
                shorten(text)
            )))
        }
        _ => Ok(()),
    }
}

/// The emoji a checked `emoji`/`previous_emoji` value stands for (a `:shortcode:`'s emoji, the
/// fully-qualified form of any other), so what is sent, reported and emitted is that; an emoji
/// written in another form than the one sent is recorded in `ctx.emoji_notes` (a shortcode
/// is not: it says what it stands for). The common case, an emoji sent as written, is the
/// remembered last emoji of [`emoji::resolve`].
fn noted_emoji(ctx: &RowContext, at: Option<WrittenAt>, text: String) -> String {
    let sent = match emoji::resolve("emoji", &text) {
        Ok(resolved) if *resolved == *text => return text,
        Ok(resolved) => resolved.into_owned(),
        // Only checked values get here; an unchecked one stays as written.
        Err(_) => return text,
    };
    if let (Some((file, pos)), false) = (at, text.starts_with(':')) {
        if let Ok(mut notes) = ctx.emoji_notes.lock() {
            notes.entry((file, text)).or_insert((pos, sent.clone()));
        }
    }
    sent
}

fn parse_action(text: &str) -> Result<Action, String> {
    match text {
        "react" => Ok(Action::React),
        "unreact" => Ok(Action::Unreact),
        other => Err(format!(
            "unknown action `{}`: expected `react` or `unreact`",
            shorten(other)
        )),
    }
}

fn parse_not_before(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "invalid not_before `{}`: {e}; expected RFC 3339 like `2026-12-01T09:00:00Z`",
                shorten(text)
            )
        })
}

fn problem_at(row: &RawRow, value: Option<&RawValue>, message: impl Into<String>) -> Problem {
    match value {
        Some(v) => Problem::error(&*row.file, Some(v.line), v.col, message),
        None => Problem::error(&*row.file, Some(row.line), row.col, message),
    }
}

/// The other field of an identifying pair: the row's own pair is taken, or else the defaults'.
fn partner(f: Field) -> Option<Field> {
    match f {
        Field::MessageId => Some(Field::Msgid),
        Field::Msgid => Some(Field::MessageId),
        Field::ConversationId => Some(Field::ConversationRefId),
        Field::ConversationRefId => Some(Field::ConversationId),
        Field::UserId => Some(Field::UserRefId),
        Field::UserRefId => Some(Field::UserId),
        _ => None,
    }
}

/// Where a row's value for a field comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The row's own, non-empty value.
    Own,
    /// `defaults:` (the row leaves the field, and the other field of its pair, unset or empty).
    Default,
    Absent,
}

fn origin(ctx: &RowContext, raw: &RawRow, f: Field) -> Origin {
    let own = |f: Field| raw.get(f).is_some_and(|v| !v.text.is_empty());
    if own(f) {
        Origin::Own
    } else if partner(f).is_some_and(own) {
        Origin::Absent
    } else if ctx.defaults.get(f).is_some_and(|v| !v.text.is_empty()) {
        Origin::Default
    } else {
        Origin::Absent
    }
}

/// The nearest target name, or the list of them: bounded work per row, so only for a
/// plan-sized set, and never an empty list.
fn unknown_target_hint(ctx: &RowContext, name: &str) -> Option<String> {
    const LISTED: usize = 20;
    if ctx.targets.is_empty() || ctx.targets.len() > LISTED {
        return None;
    }
    let names = ctx.targets.iter().map(|t| t.name.as_str());
    suggest(name, names).or_else(|| {
        let all: Vec<&str> = ctx.targets.iter().map(|t| t.name.as_str()).collect();
        Some(format!("targets are: {}", all.join(", ")))
    })
}

/// Validates one raw row as row `number` of the plan.
///
/// Two phases: every problem is found first, from shared borrows of `raw` (a problem points at
/// a value's position); then, only for a valid row, the row's own values are moved into the
/// [`Row`] and only `defaults:` are cloned. This runs once per row before the first request,
/// so no field is copied twice.
pub(super) fn check_row(ctx: &RowContext, raw: RawRow, number: u64) -> Checked {
    // A row that could not be read as written (unknown key, ragged, bad bytes) is reported as
    // that alone: the "missing field" errors that would follow are its echoes.
    if !raw.problems.is_empty() {
        return Checked::Invalid(raw.problems);
    }
    let fields = RowFields { ctx, raw: &raw };
    let mut problems = fields.check_values();
    let target = match fields.target(&mut problems) {
        Ok(target) => target,
        Err(suppressed) => return Checked::Suppressed(suppressed),
    };
    let action = fields
        .value(Field::Action)
        .and_then(|v| parse_action(&v.text).ok())
        .unwrap_or(Action::React);
    let not_before = fields
        .value(Field::NotBefore)
        .and_then(|v| parse_not_before(&v.text).ok());
    if action == Action::React {
        problems.extend(fields.missing_emoji());
    }
    let target = target.map(|i| (i, &ctx.targets[i]));
    if let Some((_, t)) = target {
        match &t.kind {
            TargetKind::Kommo { .. } => fields.check_kommo(t, &mut problems),
            TargetKind::Ogmma { .. } => fields.check_ogmma(t, &mut problems),
        }
    }
    if !problems.is_empty() {
        return Checked::Invalid(problems);
    }
    Checked::Row(build_row(ctx, raw, number, target, action, not_before))
}

/// A raw row read against its context: which value each field takes (see [`Origin`]).
struct RowFields<'a> {
    ctx: &'a RowContext,
    raw: &'a RawRow,
}

impl<'a> RowFields<'a> {
    /// The row's own, non-empty value.
    fn own(&self, f: Field) -> Option<&'a RawValue> {
        self.raw.get(f).filter(|v| !v.text.is_empty())
    }

    /// The value the row takes: its own, or `defaults:`'.
    fn value(&self, f: Field) -> Option<&'a RawValue> {
        match origin(self.ctx, self.raw, f) {
            Origin::Own => self.raw.get(f),
            Origin::Default => self.ctx.defaults.get(f),
            Origin::Absent => None,
        }
    }

    fn error(&self, at: Option<&RawValue>, message: impl Into<String>) -> Problem {
        problem_at(self.raw, at, message)
    }

    /// Each of the row's own values checked on its own (`defaults:` were checked at load).
    fn check_values(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for f in Field::ALL {
            let Some(v) = self.own(f) else { continue };
            if let Err(bad) = check_value(f, &v.text) {
                let mut p = self.error(Some(v), bad.message).with_code(invalid_code(f));
                p.hint = bad.hint;
                problems.push(p);
            }
        }
        problems
    }

    /// The row's target (`None` with a problem pushed), or the one problem that stands for
    /// the row when its target is broken or the targets could not be read.
    fn target(&self, problems: &mut Vec<Problem>) -> Result<Option<usize>, Problem> {
        let ctx = self.ctx;
        let total_targets = ctx.targets.len() + ctx.broken_targets.len();
        let Some(v) = self.value(Field::Target) else {
            return match total_targets {
                1 if ctx.targets.len() == 1 => Ok(Some(0)),
                0 | 1 => Err(self
                    .error(
                        None,
                        "the plan has no valid target (see the targets' errors)",
                    )
                    .with_code("invalid_target")),
                _ => {
                    problems.push(
                        self.error(
                            None,
                            format!("row has no `target` and the plan has {total_targets} targets"),
                        )
                        .with_code("missing_target")
                        .with_hint("add `target:` to the row or set `defaults: { target: ... }`"),
                    );
                    Ok(None)
                }
            };
        };
        if let Some(&i) = ctx.target_index.get(&v.text) {
            return Ok(Some(i));
        }
        if ctx.broken_targets.contains(&v.text) {
            return Err(self
                .error(
                    Some(v),
                    format!("target `{}` is invalid (see its errors)", v.text),
                )
                .with_code("invalid_target"));
        }
        if ctx.targets_unread {
            return Err(self
                .error(
                    Some(v),
                    format!(
                        "unknown target `{}` (the targets could not be read; see their errors)",
                        shorten(&v.text)
                    ),
                )
                .with_code("unknown_target"));
        }
        let mut p = self
            .error(Some(v), format!("unknown target `{}`", shorten(&v.text)))
            .with_code("unknown_target");
        p.hint = unknown_target_hint(ctx, &v.text);
        problems.push(p);
        Ok(None)
    }

    /// A react row needs an emoji; an empty one written on the row is its own mistake.
    fn missing_emoji(&self) -> Option<Problem> {
        if self.value(Field::Emoji).is_some() {
            return None;
        }
        let written_empty = self.raw.get(Field::Emoji).filter(|v| v.text.is_empty());
        let msg = if written_empty.is_some() {
            "`emoji` is empty: a react row needs an emoji"
        } else {
            "a react row needs an `emoji`"
        };
        Some(self.error(written_empty, msg).with_code("missing_emoji"))
    }

    /// A Kommo row: a message, a conversation, an account and a user; no Ogmma `channel_id`.
    fn check_kommo(&self, t: &Target, problems: &mut Vec<Problem>) {
        let TargetKind::Kommo {
            user_id,
            user_ref_id,
            ..
        } = &t.kind
        else {
            return;
        };
        let missing = |a: Field, b: Field| self.value(a).is_none() && self.value(b).is_none();
        if missing(Field::MessageId, Field::Msgid) {
            problems.push(
                self.error(
                    None,
                    format!(
                        "Kommo row (target `{}`) needs `message_id` or `msgid`",
                        t.name
                    ),
                )
                .with_code("missing_message_id"),
            );
        }
        if missing(Field::ConversationId, Field::ConversationRefId) {
            problems.push(
                self.error(
                    None,
                    format!(
                        "Kommo row (target `{}`) needs `conversation_id` or `conversation_ref_id`",
                        t.name
                    ),
                )
                .with_code("missing_conversation"),
            );
        }
        if let Some(v) = self.own(Field::ChannelId) {
            problems.push(
                self.error(
                    Some(v),
                    format!(
                        "`channel_id` is Ogmma-only; target `{}` is {}: a Kommo row's account is its `scope_id`",
                        t.name,
                        ProviderKind::Kommo
                    ),
                )
                .with_code("field_not_for_provider"),
            );
        }
        if t.account().is_none() && self.value(Field::ScopeId).is_none() {
            problems.push(missing_account(self.raw, t, Field::ScopeId));
        }
        // The row's (or defaults') pair, else the target's: see the module doc.
        if missing(Field::UserId, Field::UserRefId) && user_id.is_none() && user_ref_id.is_none() {
            problems.push(
                self.error(
                    None,
                    format!(
                        "Kommo row (target `{}`) needs a user: `user_id` or `user_ref_id`",
                        t.name
                    ),
                )
                .with_hint("set it on the row, in `defaults:`, or on the target")
                .with_code("missing_user"),
            );
        }
    }

    /// An Ogmma row: a `message_id` and an account; none of the Kommo-only fields of its own.
    fn check_ogmma(&self, t: &Target, problems: &mut Vec<Problem>) {
        for f in KOMMO_ONLY {
            if let Some(v) = self.own(f) {
                problems.push(
                    self.error(
                        Some(v),
                        format!(
                            "`{f}` is Kommo-only; target `{}` is {}",
                            t.name,
                            ProviderKind::Ogmma
                        ),
                    )
                    .with_code("field_not_for_provider"),
                );
            }
        }
        if self.value(Field::MessageId).is_none() {
            problems.push(
                self.error(
                    None,
                    format!("Ogmma row (target `{}`) needs `message_id`", t.name),
                )
                .with_code("missing_message_id"),
            );
        }
        if t.account().is_none() && self.value(Field::ChannelId).is_none() {
            problems.push(missing_account(self.raw, t, Field::ChannelId));
        }
    }
}

/// The fields an Ogmma row may not set itself.
const KOMMO_ONLY: [Field; 6] = [
    Field::Msgid,
    Field::ConversationId,
    Field::ConversationRefId,
    Field::UserId,
    Field::UserRefId,
    Field::ScopeId,
];

/// The [`Row`] of a row without problems: its own values moved in, `defaults:` cloned.
fn build_row(
    ctx: &RowContext,
    mut raw: RawRow,
    number: u64,
    target: Option<(usize, &Target)>,
    action: Action,
    not_before: Option<DateTime<Utc>>,
) -> Row {
    // Every origin is decided before the first value is moved out: taking one field of a pair
    // must not make `defaults:` fill in the other.
    let origins = Field::ALL.map(|f| origin(ctx, &raw, f));
    // Where each emoji was written, should it be sent in another form (see `emoji_notes`).
    let emoji_at = [Field::Emoji, Field::PreviousEmoji].map(|f| {
        let (file, v) = match origins[f.index()] {
            Origin::Own => (&raw.file, raw.get(f)),
            Origin::Default => (&ctx.defaults.file, ctx.defaults.get(f)),
            Origin::Absent => return None,
        };
        v.map(|v| (file.clone(), (v.line, v.col)))
    });
    let mut text = |f: Field| match origins[f.index()] {
        Origin::Own => raw.take(f).map(|v| v.text),
        Origin::Default => ctx.defaults.get(f).map(|v| v.text.clone()),
        Origin::Absent => None,
    };
    let [emoji_at, previous_at] = emoji_at;
    let emoji = text(Field::Emoji).map(|t| noted_emoji(ctx, emoji_at, t));
    let message_id = text(Field::MessageId);
    let previous_emoji = text(Field::PreviousEmoji).map(|t| noted_emoji(ctx, previous_at, t));
    let key = text(Field::Key);
    // Each provider's own fields only: a default for the other provider is ignored.
    let (mut msgid, mut conversation_id, mut conversation_ref_id) = (None, None, None);
    let (mut user_id, mut user_ref_id) = (None, None);
    let (mut scope_id, mut channel_id) = (None, None);
    match target.map(|(_, t)| &t.kind) {
        Some(TargetKind::Kommo {
            user_id: target_user_id,
            user_ref_id: target_user_ref_id,
            ..
        }) => {
            scope_id = text(Field::ScopeId);
            msgid = text(Field::Msgid);
            conversation_id = text(Field::ConversationId);
            conversation_ref_id = text(Field::ConversationRefId);
            (user_id, user_ref_id) = (text(Field::UserId), text(Field::UserRefId));
            if user_id.is_none() && user_ref_id.is_none() {
                (user_id, user_ref_id) = (target_user_id.clone(), target_user_ref_id.clone());
            }
        }
        _ => channel_id = text(Field::ChannelId),
    }
    Row {
        number,
        source: Source {
            file: raw.file,
            line: raw.line,
        },
        // Always `Some` here: a row without a target has a problem.
        target: target.map_or(0, |(i, _)| i),
        action,
        emoji,
        message_id,
        msgid,
        conversation_id,
        conversation_ref_id,
        user_id,
        user_ref_id,
        not_before,
        previous_emoji,
        key,
        scope_id,
        channel_id,
    }
}

/// A row for a target that names no account, giving none itself (nor in `defaults:`).
fn missing_account(raw: &RawRow, t: &Target, field: Field) -> Problem {
    problem_at(
        raw,
        None,
        format!(
            "{} row (target `{}`) needs `{field}`: the target gives none, so every row for it must",
            match t.provider() {
                ProviderKind::Kommo => "Kommo",
                ProviderKind::Ogmma => "Ogmma",
            },
            t.name
        ),
    )
    .with_hint(format!(
        "set `{field}` on the row, in `defaults:`, or on target `{}`",
        t.name
    ))
    .with_code("missing_account")
}

#[cfg(test)]
mod tests;
