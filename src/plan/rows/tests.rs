//! `check_row` against the rules of the module doc, stated plainly in [`expect`]: over every
//! combination of own / empty / default / invalid values for the fields that interact, and
//! over random rows setting every field at once; plus the places problems point at and the
//! values that are moved rather than copied.

use proptest::prelude::*;

use super::*;
use crate::secret::SecretRef;

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

/// What a row comes to, by the rules.
#[derive(Debug)]
enum Expected {
    Row(Box<Row>),
    /// The codes of its problems, sorted.
    Invalid(Vec<&'static str>),
    /// The code of the one problem that stands for it.
    Suppressed(&'static str),
}

/// What a row setting `sets` (as [`build`] writes them; row 7, at line 10 of `plan.yaml`)
/// comes to in `ctx`, stated from the rules of the module doc:
/// - a field's value is the row's own when non-empty; else `defaults:`', unless the row gives
///   the other field of its pair;
/// - every own value `check_value` refuses is a problem (the samples' bad values are refused,
///   but for `target`, whose bad value is a name no target has);
/// - the target: named and known; named and broken (suppressed); named and unknown; unnamed
///   with the plan's one target; unnamed with no valid target (suppressed); else missing;
/// - `react` (the default action) needs an emoji;
/// - Kommo: a message, a conversation, an account (the target's or the row's), a user (the
///   row's pair, else the target's); no `channel_id` of the row's own;
/// - Ogmma: a `message_id` and an account; none of the Kommo-only fields of the row's own;
/// - a valid row carries each provider's own fields only.
fn expect(sets: &[(Field, Set)], ctx: &RowContext, own_target: &str) -> Expected {
    let state = |f: Field| {
        sets.iter()
            .rev()
            .find(|(g, _)| *g == f)
            .map_or(Set::Absent, |&(_, s)| s)
    };
    let own = |f: Field| {
        let (own, _, bad) = samples(f, own_target);
        match state(f) {
            Set::Own | Set::OwnAndDefault => Some(own),
            Set::OwnInvalid => Some(bad),
            _ => None,
        }
    };
    let default = |f: Field| match state(f) {
        Set::Default | Set::OwnAndDefault | Set::OwnEmptyAndDefault => {
            Some(samples(f, own_target).1)
        }
        _ => None,
    };
    let value = |f: Field| {
        own(f).or_else(|| match partner(f) {
            Some(p) if own(p).is_some() => None,
            _ => default(f),
        })
    };
    let mut codes = Vec::new();
    for f in Field::ALL {
        if f != Field::Target && matches!(state(f), Set::OwnInvalid) {
            codes.push(match f {
                Field::Emoji | Field::PreviousEmoji => "invalid_emoji",
                Field::Action => "invalid_action",
                Field::NotBefore => "invalid_time",
                _ => "invalid_value",
            });
        }
    }
    let target = match value(Field::Target) {
        Some(name) => match ctx.targets.iter().position(|t| t.name == name) {
            Some(i) => Some(i),
            None if ctx.broken_targets.contains(&name) => {
                return Expected::Suppressed("invalid_target")
            }
            None => {
                codes.push("unknown_target");
                None
            }
        },
        None if ctx.targets.len() == 1 && ctx.broken_targets.is_empty() => Some(0),
        None if ctx.targets.len() + ctx.broken_targets.len() <= 1 => {
            return Expected::Suppressed("invalid_target")
        }
        None => {
            codes.push("missing_target");
            None
        }
    };
    let action = match value(Field::Action).as_deref() {
        Some("unreact") => Action::Unreact,
        _ => Action::React,
    };
    if action == Action::React && value(Field::Emoji).is_none() {
        codes.push("missing_emoji");
    }
    let either = |a: Field, b: Field| value(a).is_some() || value(b).is_some();
    let t = target.map(|i| &ctx.targets[i]);
    let kommo_users = match t.map(|t| &t.kind) {
        Some(TargetKind::Kommo {
            user_id,
            user_ref_id,
            ..
        }) => Some((user_id.clone(), user_ref_id.clone())),
        _ => None,
    };
    if let (Some(t), Some((user_id, user_ref_id))) = (t, &kommo_users) {
        if !either(Field::MessageId, Field::Msgid) {
            codes.push("missing_message_id");
        }
        if !either(Field::ConversationId, Field::ConversationRefId) {
            codes.push("missing_conversation");
        }
        if own(Field::ChannelId).is_some() {
            codes.push("field_not_for_provider");
        }
        if t.account().is_none() && value(Field::ScopeId).is_none() {
            codes.push("missing_account");
        }
        if !either(Field::UserId, Field::UserRefId) && user_id.is_none() && user_ref_id.is_none() {
            codes.push("missing_user");
        }
    } else if let Some(t) = t {
        for f in KOMMO_ONLY {
            if own(f).is_some() {
                codes.push("field_not_for_provider");
            }
        }
        if value(Field::MessageId).is_none() {
            codes.push("missing_message_id");
        }
        if t.account().is_none() && value(Field::ChannelId).is_none() {
            codes.push("missing_account");
        }
    }
    if !codes.is_empty() {
        codes.sort_unstable();
        return Expected::Invalid(codes);
    }
    let sent_emoji = |text: String| match emoji::resolve("emoji", &text) {
        Ok(resolved) => resolved.into_owned(),
        Err(_) => text,
    };
    let kommo = |f: Field| kommo_users.as_ref().and(value(f));
    let (mut user_id, mut user_ref_id) = (kommo(Field::UserId), kommo(Field::UserRefId));
    if let (Some(target_users), None, None) = (&kommo_users, &user_id, &user_ref_id) {
        (user_id, user_ref_id) = target_users.clone();
    }
    Expected::Row(Box::new(Row {
        number: 7,
        source: Source {
            file: "plan.yaml".into(),
            line: 10,
        },
        target: target.unwrap_or(0),
        action,
        emoji: value(Field::Emoji).map(sent_emoji),
        message_id: value(Field::MessageId),
        msgid: kommo(Field::Msgid),
        conversation_id: kommo(Field::ConversationId),
        conversation_ref_id: kommo(Field::ConversationRefId),
        user_id,
        user_ref_id,
        not_before: value(Field::NotBefore).map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .expect("the samples' own and default times are valid")
                .with_timezone(&Utc)
        }),
        previous_emoji: value(Field::PreviousEmoji).map(sent_emoji),
        key: value(Field::Key),
        scope_id: kommo(Field::ScopeId),
        channel_id: kommo_users
            .is_none()
            .then(|| value(Field::ChannelId))
            .flatten(),
    }))
}

/// Whether `got` is what the rules say; every problem points at the row or at one of its
/// values (`lines`: where the row's own values and the defaults are written).
fn agrees(got: &Checked, want: &Expected, lines: &[u32]) -> bool {
    match (got, want) {
        (Checked::Row(got), Expected::Row(want)) => got == &**want,
        (Checked::Invalid(got), Expected::Invalid(want)) => {
            let mut codes: Vec<&str> = got.iter().map(|p| p.code).collect();
            codes.sort_unstable();
            let placed = got.iter().all(|p| {
                p.file == "plan.yaml" && p.line.is_some_and(|l| l == 10 || lines.contains(&l))
            });
            codes == *want && placed
        }
        (Checked::Suppressed(got), Expected::Suppressed(want)) => got.code == *want,
        _ => false,
    }
}

/// Checks one row built from `sets` against the rules; whether it was a valid row.
fn check_against_rules(
    sets: &[(Field, Set)],
    ctx: &RowContext,
    own_target: &str,
    csv: bool,
) -> bool {
    let (raw, defaults) = build(sets, own_target, csv);
    let ctx = RowContext {
        defaults,
        targets: ctx.targets.clone(),
        broken_targets: ctx.broken_targets.clone(),
        target_index: ctx.target_index.clone(),
        targets_unread: ctx.targets_unread,
        emoji_notes: Default::default(),
    };
    let lines: Vec<u32> = Field::ALL
        .iter()
        .flat_map(|&f| [raw.get(f), ctx.defaults.get(f)])
        .flatten()
        .map(|v| v.line)
        .collect();
    let want = expect(sets, &ctx, own_target);
    let got = check_row(&ctx, raw, 7);
    assert!(
        agrees(&got, &want, &lines),
        "{sets:?} (target `{own_target}`, csv {csv}):\n got {got:?}\nwant {want:?}"
    );
    matches!(got, Checked::Row(_))
}

/// The states whose every combination is swept (the full product of [`SETS`] over six fields
/// is too slow for a unit test); [`every_state_of_every_field`] covers the rest one by one.
const CROSSED: [Set; 4] = [Set::Absent, Set::Own, Set::Default, Set::OwnEmptyAndDefault];

/// Checks every combination of `states` over `fields` (the rest as in `fixed`) against the
/// rules, for each context and own target name; returns how many outcomes were rows.
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
                rows += check_against_rules(&sets, ctx, own_target, csv) as usize;
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
fn pairs_follow_the_rules_for_both_providers() {
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
fn other_fields_follow_the_rules() {
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
fn accounts_follow_the_rules() {
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

/// The targets a random row may name, and whether the plan has a broken one.
fn any_context() -> impl Strategy<Value = (usize, bool)> {
    (0..6usize, any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Rows setting every field at once, each in any state (too many combinations to sweep).
    #[test]
    fn any_row_follows_the_rules(
        states in proptest::collection::vec(proptest::sample::select(SETS.to_vec()), Field::ALL.len()),
        (named, broken) in any_context(),
        csv in any::<bool>(),
    ) {
        let mut targets = three_targets();
        targets.push(kommo("kommo-ref", None, Some("target-ref")));
        let mut bare = ogmma("ogmma-accounts");
        bare.kind = TargetKind::Ogmma { channel_id: None };
        targets.push(bare);
        let names = ["kommo-user", "kommo-bare", "ogmma-main", "kommo-ref", "ogmma-accounts", "broken"];
        let ctx = context(targets, if broken { &["broken"] } else { &[] }, RawRow::default());
        let sets: Vec<(Field, Set)> = Field::ALL.into_iter().zip(states).collect();
        check_against_rules(&sets, &ctx, names[named], csv);
    }

    /// The same on a plan with one target, where a row may leave `target` out.
    #[test]
    fn any_row_of_a_one_target_plan_follows_the_rules(
        states in proptest::collection::vec(proptest::sample::select(SETS.to_vec()), Field::ALL.len()),
        ogmma_target in any::<bool>(),
    ) {
        let (t, name) = if ogmma_target {
            (ogmma("ogmma-main"), "ogmma-main")
        } else {
            (kommo("kommo-user", Some("target-user"), None), "kommo-user")
        };
        let ctx = context(vec![t], &[], RawRow::default());
        let sets: Vec<(Field, Set)> = Field::ALL.into_iter().zip(states).collect();
        check_against_rules(&sets, &ctx, name, false);
    }
}
