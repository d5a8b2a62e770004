//! `check_row` moves a row's own values into the [`Row`] and clones only `defaults:`; these
//! tests hold it to the result of the straightforward version that cloned every value, over
//! every combination of own / empty / default values for the fields that interact.

use super::*;
use crate::secret::SecretRef;

/// `check_row` as it was before it moved values (it cloned every one): the behaviour to keep.
fn reference_check_row(ctx: &RowContext, raw: RawRow, number: u64) -> Checked {
    // A row that could not be read as written (unknown key, ragged, bad bytes) is reported as
    // that alone: the "missing field" errors that would follow are its echoes.
    if !raw.problems.is_empty() {
        return Checked::Invalid(raw.problems);
    }
    let mut problems = Vec::new();
    // A field's value: the row's own if non-empty, else the default's. `own` tells which.
    let own = |f: Field| raw.get(f).filter(|v| !v.text.is_empty());
    // Fields that identify one thing together: the row's own pair, or else the defaults' pair.
    let partner = |f: Field| match f {
        Field::MessageId => Some(Field::Msgid),
        Field::Msgid => Some(Field::MessageId),
        Field::ConversationId => Some(Field::ConversationRefId),
        Field::ConversationRefId => Some(Field::ConversationId),
        Field::UserId => Some(Field::UserRefId),
        Field::UserRefId => Some(Field::UserId),
        _ => None,
    };
    let value = |f: Field| {
        if own(f).is_some() || partner(f).is_some_and(|p| own(p).is_some()) {
            return own(f);
        }
        ctx.defaults.get(f).filter(|v| !v.text.is_empty())
    };
    let text = |f: Field| value(f).map(|v| v.text.clone());

    for f in Field::ALL {
        if let Some(v) = own(f) {
            if let Err(bad) = check_value(f, &v.text) {
                let mut p = problem_at(&raw, Some(v), bad.message).with_code(invalid_code(f));
                p.hint = bad.hint;
                problems.push(p);
            }
        }
    }

    // The target.
    let total_targets = ctx.targets.len() + ctx.broken_targets.len();
    let target = match value(Field::Target) {
        Some(v) => match ctx.target_index.get(&v.text) {
            Some(&i) => Some(i),
            None if ctx.broken_targets.contains(&v.text) => {
                return Checked::Suppressed(
                    problem_at(
                        &raw,
                        Some(v),
                        format!("target `{}` is invalid (see its errors)", v.text),
                    )
                    .with_code("invalid_target"),
                );
            }
            None => {
                let mut p = problem_at(
                    &raw,
                    Some(v),
                    format!("unknown target `{}`", shorten(&v.text)),
                )
                .with_code("unknown_target");
                p.hint = unknown_target_hint(ctx, &v.text);
                problems.push(p);
                None
            }
        },
        None if ctx.targets.len() == 1 && total_targets == 1 => Some(0),
        None if total_targets <= 1 => {
            return Checked::Suppressed(
                problem_at(
                    &raw,
                    None,
                    "the plan has no valid target (see the targets' errors)",
                )
                .with_code("invalid_target"),
            );
        }
        None => {
            problems.push(
                problem_at(
                    &raw,
                    None,
                    format!("row has no `target` and the plan has {total_targets} targets"),
                )
                .with_code("missing_target")
                .with_hint("add `target:` to the row or set `defaults: { target: ... }`"),
            );
            None
        }
    };

    let action = value(Field::Action)
        .and_then(|v| parse_action(&v.text).ok())
        .unwrap_or(Action::React);
    let not_before = value(Field::NotBefore).and_then(|v| parse_not_before(&v.text).ok());

    let mut row = Row {
        number,
        source: Source {
            file: raw.file.clone(),
            line: raw.line,
        },
        target: target.unwrap_or(0),
        action,
        emoji: None,
        message_id: text(Field::MessageId),
        msgid: None,
        conversation_id: None,
        conversation_ref_id: None,
        user_id: None,
        user_ref_id: None,
        not_before,
        previous_emoji: text(Field::PreviousEmoji).map(canonical_emoji),
        key: text(Field::Key),
        scope_id: None,
        channel_id: None,
    };

    // Emoji: `react` needs one; an empty one written on the row is its own mistake.
    match (action, value(Field::Emoji)) {
        (_, Some(v)) => row.emoji = Some(canonical_emoji(v.text.clone())),
        (Action::React, None) => {
            let written_empty = raw.get(Field::Emoji).filter(|v| v.text.is_empty());
            let msg = if written_empty.is_some() {
                "`emoji` is empty: a react row needs an emoji"
            } else {
                "a react row needs an `emoji`"
            };
            problems.push(problem_at(&raw, written_empty, msg).with_code("missing_emoji"));
        }
        (Action::Unreact, None) => {}
    }

    if let Some(t) = target.map(|i| &ctx.targets[i]) {
        match &t.kind {
            TargetKind::Kommo {
                user_id,
                user_ref_id,
                ..
            } => {
                row.msgid = text(Field::Msgid);
                row.conversation_id = text(Field::ConversationId);
                row.conversation_ref_id = text(Field::ConversationRefId);
                if row.message_id.is_none() && row.msgid.is_none() {
                    problems.push(
                        problem_at(
                            &raw,
                            None,
                            format!(
                                "Kommo row (target `{}`) needs `message_id` or `msgid`",
                                t.name
                            ),
                        )
                        .with_code("missing_message_id"),
                    );
                }
                if row.conversation_id.is_none() && row.conversation_ref_id.is_none() {
                    problems.push(
                        problem_at(
                            &raw,
                            None,
                            format!(
                                "Kommo row (target `{}`) needs `conversation_id` or `conversation_ref_id`",
                                t.name
                            ),
                        )
                        .with_code("missing_conversation"),
                    );
                }
                row.scope_id = text(Field::ScopeId);
                if let Some(v) = own(Field::ChannelId) {
                    problems.push(
                        problem_at(
                            &raw,
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
                if t.account().is_none() && row.scope_id.is_none() {
                    problems.push(missing_account(&raw, t, Field::ScopeId));
                }
                let (uid, uref) = (text(Field::UserId), text(Field::UserRefId));
                if uid.is_some() || uref.is_some() {
                    (row.user_id, row.user_ref_id) = (uid, uref);
                } else {
                    (row.user_id, row.user_ref_id) = (user_id.clone(), user_ref_id.clone());
                }
                if row.user_id.is_none() && row.user_ref_id.is_none() {
                    problems.push(
                        problem_at(
                            &raw,
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
            TargetKind::Ogmma { .. } => {
                for f in [
                    Field::Msgid,
                    Field::ConversationId,
                    Field::ConversationRefId,
                    Field::UserId,
                    Field::UserRefId,
                    Field::ScopeId,
                ] {
                    if let Some(v) = own(f) {
                        problems.push(
                            problem_at(
                                &raw,
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
                if row.message_id.is_none() {
                    problems.push(
                        problem_at(
                            &raw,
                            None,
                            format!("Ogmma row (target `{}`) needs `message_id`", t.name),
                        )
                        .with_code("missing_message_id"),
                    );
                }
                row.channel_id = text(Field::ChannelId);
                if t.account().is_none() && row.channel_id.is_none() {
                    problems.push(missing_account(&raw, t, Field::ChannelId));
                }
            }
        }
    }

    if problems.is_empty() {
        Checked::Row(row)
    } else {
        Checked::Invalid(problems)
    }
}

fn target(name: &str, kind: TargetKind) -> Target {
    Target {
        name: name.to_string(),
        kind,
        base_url: "http://127.0.0.1:9".to_string(),
        rate: None,
        credential: SecretRef::Env("SECRET".to_string()),
        source: Source {
            file: "t.yaml".into(),
            line: 1,
        },
    }
}

fn kommo(name: &str, user_id: Option<&str>, user_ref_id: Option<&str>) -> Target {
    target(
        name,
        TargetKind::Kommo {
            scope_id: Some("scope".to_string()),
            user_id: user_id.map(str::to_string),
            user_ref_id: user_ref_id.map(str::to_string),
        },
    )
}

fn ogmma(name: &str) -> Target {
    target(
        name,
        TargetKind::Ogmma {
            channel_id: Some("channel".to_string()),
        },
    )
}

fn context(targets: Vec<Target>, broken: &[&str], defaults: RawRow) -> RowContext {
    RowContext {
        target_index: targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect(),
        targets,
        broken_targets: broken.iter().map(|s| s.to_string()).collect(),
        defaults,
        targets_unread: false,
        emoji_notes: Default::default(),
    }
}

/// How a test row sets one field.
#[derive(Clone, Copy, Debug)]
enum Set {
    Absent,
    Own,
    OwnEmpty,
    Default,
    OwnAndDefault,
    OwnEmptyAndDefault,
    /// An own value `check_value` refuses.
    OwnInvalid,
}

const SETS: [Set; 7] = [
    Set::Absent,
    Set::Own,
    Set::OwnEmpty,
    Set::Default,
    Set::OwnAndDefault,
    Set::OwnEmptyAndDefault,
    Set::OwnInvalid,
];

/// Values for `field`: (own, default, invalid).
fn samples(field: Field, own_target: &str) -> (String, String, String) {
    let (own, default, bad) = match field {
        Field::Target => (own_target, "kommo-user", "kommo-usr"),
        Field::Action => ("unreact", "react", "remove"),
        Field::Emoji => (":thumbsup:", "❤️", ":thumbsupp:"),
        Field::PreviousEmoji => ("👍", ":heart:", "nope"),
        Field::NotBefore => ("2026-12-01T09:00:00Z", "2026-01-01T00:00:00+02:00", "soon"),
        Field::Key => ("own-key", "default-key", "bad\0key"),
        _ => ("", "", "bad\0id"),
    };
    let name = field.name();
    let pick = |s: &str, prefix: &str| {
        if s.is_empty() {
            format!("{prefix}-{name}")
        } else {
            s.to_string()
        }
    };
    (pick(own, "own"), pick(default, "def"), bad.to_string())
}

/// A raw row and the defaults for `sets`; positions differ per field so problems' places show.
fn build(sets: &[(Field, Set)], own_target: &str, csv: bool) -> (RawRow, RawRow) {
    let file: Arc<str> = "plan.yaml".into();
    let mut raw = RawRow::new(file.clone(), super::super::source::Pos { line: 10, col: 3 });
    if csv {
        raw.col = None;
    }
    let mut defaults = RawRow::new(file, super::super::source::Pos { line: 2, col: 5 });
    for (i, &(field, set)) in sets.iter().enumerate() {
        let (own, default, bad) = samples(field, own_target);
        let at = |text: String| RawValue {
            text,
            line: 11 + i as u32,
            col: (!csv).then_some(7 + i as u32),
        };
        match set {
            Set::Absent | Set::Default => {}
            Set::Own | Set::OwnAndDefault => raw.set(field, at(own)),
            Set::OwnEmpty | Set::OwnEmptyAndDefault => raw.set(field, at(String::new())),
            Set::OwnInvalid => raw.set(field, at(bad)),
        }
        if matches!(
            set,
            Set::Default | Set::OwnAndDefault | Set::OwnEmptyAndDefault
        ) {
            defaults.set(
                field,
                RawValue {
                    text: default,
                    line: 3 + i as u32,
                    col: Some(9),
                },
            );
        }
    }
    (raw, defaults)
}

fn same(a: &Checked, b: &Checked) -> bool {
    match (a, b) {
        (Checked::Row(a), Checked::Row(b)) => a == b,
        (Checked::Invalid(a), Checked::Invalid(b)) => a == b,
        (Checked::Suppressed(a), Checked::Suppressed(b)) => a == b,
        _ => false,
    }
}

/// The states whose every combination is swept (the full product of [`SETS`] over six fields
/// is too slow for a unit test); [`every_state_of_every_field`] covers the rest one by one.
const CROSSED: [Set; 4] = [Set::Absent, Set::Own, Set::Default, Set::OwnEmptyAndDefault];

/// Checks every combination of `states` over `fields` (the rest as in `fixed`) against the
/// reference, for each context and own target name; returns how many outcomes were rows.
fn sweep(
    fields: &[Field],
    states: &[Set],
    fixed: &[(Field, Set)],
    contexts: &[(RowContext, &str)],
) -> usize {
    let mut rows = 0;
    let n = fields.len() as u32;
    for csv in [false, true] {
        for combo in 0..states.len().pow(n) {
            let mut sets: Vec<(Field, Set)> = fixed.to_vec();
            let mut c = combo;
            for &f in fields {
                sets.push((f, states[c % states.len()]));
                c /= states.len();
            }
            for (ctx, own_target) in contexts {
                let (raw, defaults) = build(&sets, own_target, csv);
                let ctx = RowContext {
                    defaults,
                    targets: ctx.targets.clone(),
                    broken_targets: ctx.broken_targets.clone(),
                    target_index: ctx.target_index.clone(),
                    targets_unread: ctx.targets_unread,
                    emoji_notes: Default::default(),
                };
                let want = reference_check_row(&ctx, raw.clone(), 7);
                let got = check_row(&ctx, raw, 7);
                assert!(
                    same(&got, &want),
                    "{sets:?} (target `{own_target}`, csv {csv}):\n got {got:?}\nwant {want:?}"
                );
                rows += matches!(got, Checked::Row(_)) as usize;
            }
        }
    }
    rows
}

fn three_targets() -> Vec<Target> {
    vec![
        kommo("kommo-user", Some("target-user"), None),
        kommo("kommo-bare", None, None),
        ogmma("ogmma-main"),
    ]
}

#[test]
fn pairs_match_the_cloning_version_for_both_providers() {
    // Every own/empty/default/invalid combination of the three identifying pairs, on a Kommo
    // target with a user, one without, an Ogmma target, and a Kommo target whose user is a
    // `ref_id`.
    let mut targets = three_targets();
    targets.push(kommo("kommo-ref", None, Some("target-ref")));
    let contexts: Vec<(RowContext, &str)> = ["kommo-user", "kommo-bare", "ogmma-main", "kommo-ref"]
        .into_iter()
        .map(|name| (context(targets.clone(), &[], RawRow::default()), name))
        .collect();
    let pairs = [
        Field::MessageId,
        Field::Msgid,
        Field::ConversationId,
        Field::ConversationRefId,
        Field::UserId,
        Field::UserRefId,
    ];
    let fixed = [(Field::Target, Set::Own), (Field::Emoji, Set::Own)];
    let rows = sweep(&pairs, &CROSSED, &fixed, &contexts);
    // The sweep reaches valid rows, not only errors (a comparison of errors alone would not
    // show the moves).
    assert!(rows > 1000, "{rows} valid rows");
}

#[test]
fn other_fields_match_the_cloning_version() {
    // Target, action, emoji, not_before, previous_emoji and key, over a plan with one target
    // (a row may omit it), several, and several with a broken one.
    let one = vec![kommo("kommo-user", Some("target-user"), None)];
    let contexts = vec![
        (context(one, &[], RawRow::default()), "kommo-user"),
        (
            context(three_targets(), &[], RawRow::default()),
            "ogmma-main",
        ),
        (
            context(three_targets(), &["broken"], RawRow::default()),
            "broken",
        ),
        (
            context(three_targets(), &[], RawRow::default()),
            "kommo-bare",
        ),
    ];
    let fields = [
        Field::Target,
        Field::Action,
        Field::Emoji,
        Field::NotBefore,
        Field::PreviousEmoji,
        Field::Key,
    ];
    // message_id own, conversation_id only from defaults: valid for Kommo and Ogmma alike.
    let fixed = [
        (Field::MessageId, Set::Own),
        (Field::ConversationId, Set::Default),
    ];
    let rows = sweep(&fields, &CROSSED, &fixed, &contexts);
    assert!(rows > 1000, "{rows} valid rows");
}

#[test]
fn every_state_of_every_field() {
    // Each field in each of the seven states, alone and with its pair partner in each state.
    let mut targets = three_targets();
    targets.push(kommo("kommo-ref", None, Some("target-ref")));
    let contexts: Vec<(RowContext, &str)> = ["kommo-user", "kommo-bare", "ogmma-main"]
        .into_iter()
        .map(|name| (context(targets.clone(), &[], RawRow::default()), name))
        .collect();
    let base = [
        (Field::Target, Set::Own),
        (Field::Emoji, Set::Own),
        (Field::MessageId, Set::Own),
        (Field::ConversationId, Set::Default),
    ];
    let mut rows = 0;
    for f in Field::ALL {
        let fixed: Vec<(Field, Set)> = base.iter().filter(|(b, _)| *b != f).copied().collect();
        match partner(f) {
            Some(p) => {
                let fixed: Vec<(Field, Set)> = fixed.into_iter().filter(|(b, _)| *b != p).collect();
                rows += sweep(&[f, p], &SETS, &fixed, &contexts);
            }
            None => rows += sweep(&[f], &SETS, &fixed, &contexts),
        }
    }
    assert!(rows > 100, "{rows} valid rows");
}

#[test]
fn accounts_match_the_cloning_version() {
    // `scope_id` and `channel_id` in every state, on targets that name their account and on
    // targets that leave it to their rows.
    let mut targets = three_targets();
    let mut bare_kommo = kommo("kommo-accounts", Some("target-user"), None);
    bare_kommo.kind = TargetKind::Kommo {
        scope_id: None,
        user_id: Some("target-user".into()),
        user_ref_id: None,
    };
    let mut bare_ogmma = ogmma("ogmma-accounts");
    bare_ogmma.kind = TargetKind::Ogmma { channel_id: None };
    targets.extend([bare_kommo, bare_ogmma]);
    let contexts: Vec<(RowContext, &str)> = [
        "kommo-user",
        "ogmma-main",
        "kommo-accounts",
        "ogmma-accounts",
    ]
    .into_iter()
    .map(|name| (context(targets.clone(), &[], RawRow::default()), name))
    .collect();
    let fixed = [
        (Field::Target, Set::Own),
        (Field::Emoji, Set::Own),
        (Field::MessageId, Set::Own),
        (Field::ConversationId, Set::Default),
    ];
    let rows = sweep(
        &[Field::ScopeId, Field::ChannelId],
        &SETS,
        &fixed,
        &contexts,
    );
    assert!(rows > 50, "{rows} valid rows");
}

#[test]
fn a_target_without_an_account_needs_it_on_every_row() {
    let mut t = kommo("k", Some("u"), None);
    t.kind = TargetKind::Kommo {
        scope_id: None,
        user_id: Some("u".into()),
        user_ref_id: None,
    };
    let ctx = context(vec![t], &[], RawRow::default());
    let (raw, _) = build(
        &[
            (Field::Emoji, Set::Own),
            (Field::MessageId, Set::Own),
            (Field::ConversationId, Set::Own),
        ],
        "k",
        false,
    );
    let Checked::Invalid(problems) = check_row(&ctx, raw, 1) else {
        panic!("a row without an account for a target without one is invalid");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p.code, "missing_account");
    // Located at the row itself: file, line and column.
    assert_eq!(
        (p.file.as_str(), p.line, p.column),
        ("plan.yaml", Some(10), Some(3))
    );
    assert!(p.message.contains("needs `scope_id`"), "{}", p.message);

    let (raw, _) = build(
        &[
            (Field::Emoji, Set::Own),
            (Field::MessageId, Set::Own),
            (Field::ConversationId, Set::Own),
            (Field::ScopeId, Set::Own),
            (Field::ChannelId, Set::Own),
        ],
        "k",
        false,
    );
    let Checked::Invalid(problems) = check_row(&ctx, raw, 1) else {
        panic!("`channel_id` on a Kommo row is an error");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "field_not_for_provider");
    assert_eq!((problems[0].line, problems[0].column), (Some(15), Some(11)));
}

#[test]
fn own_values_are_moved_and_defaults_cloned() {
    let (mut raw, mut defaults) = build(
        &[
            (Field::MessageId, Set::Own),
            (Field::ConversationRefId, Set::OwnAndDefault),
            (Field::ConversationId, Set::Default),
            (Field::Emoji, Set::Default),
            (Field::Key, Set::Own),
            (Field::UserRefId, Set::Own),
            (Field::UserId, Set::Default),
        ],
        "",
        true,
    );
    raw.set(
        Field::Emoji,
        RawValue {
            text: "👍".to_string(),
            line: 10,
            col: None,
        },
    );
    defaults.set(
        Field::Target,
        RawValue {
            text: "kommo-user".to_string(),
            line: 2,
            col: Some(11),
        },
    );
    let ptr = |r: &RawRow, f: Field| r.get(f).map(|v| v.text.as_ptr());
    let own = [
        Field::MessageId,
        Field::ConversationRefId,
        Field::Key,
        Field::UserRefId,
        Field::Emoji,
    ]
    .map(|f| ptr(&raw, f));
    let ctx = context(three_targets(), &[], defaults);
    let Checked::Row(row) = check_row(&ctx, raw, 4) else {
        panic!("a valid row");
    };
    let text_ptr = |t: &Option<String>| t.as_deref().map(str::as_ptr);
    // The row's own strings are the Row's strings: no copy was made.
    assert_eq!(
        [
            text_ptr(&row.message_id),
            text_ptr(&row.conversation_ref_id),
            text_ptr(&row.key),
            text_ptr(&row.user_ref_id),
            text_ptr(&row.emoji),
        ],
        own
    );
    assert_eq!(row.message_id.as_deref(), Some("own-message_id"));
    assert_eq!(
        row.conversation_ref_id.as_deref(),
        Some("own-conversation_ref_id")
    );
    // The pairs are units: the row's `conversation_ref_id` and `user_ref_id` keep the defaults'
    // `conversation_id` and `user_id` (and the target's user) out.
    assert_eq!(row.conversation_id, None);
    assert_eq!(
        (row.user_id, row.user_ref_id.as_deref()),
        (None, Some("own-user_ref_id"))
    );
    assert_eq!(row.emoji.as_deref(), Some("👍"));
    assert_eq!(row.target, 0);
    assert_eq!(
        (&*row.source.file, row.source.line, row.number),
        ("plan.yaml", 10, 4)
    );
    // `defaults:` stay whole for the next row.
    assert_eq!(
        ctx.defaults
            .get(Field::ConversationId)
            .map(|v| v.text.as_str()),
        Some("def-conversation_id")
    );
}
