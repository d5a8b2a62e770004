//! `reactbatch undo REPORT --plan PLAN`: the inverse plan of the rows a report shows done, in
//! reverse plan order. A react becomes an unreact (recording the emoji as `previous_emoji`, so
//! undoing the undo restores it) — or, when the plan recorded in `previous_emoji` the reaction
//! the react replaced, the react that puts it back; an unreact becomes the react it removed
//! when the plan recorded `previous_emoji`, and is otherwise left out with a warning. Targets are copied from
//! PLAN with their secret *references*; the output passes `reactbatch check`.
//!
//! Done rows of the report that match no row of PLAN (the plan was edited since, or a resumed
//! run kept them as `not_in_plan`) cannot be reversed from it: the report does not hold the
//! whole request. They are named on stderr and in the output's header comment.
//! `-o PLAN_OUT` never replaces an existing file without `--force`: it may be the plan itself.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::cli::UndoArgs;
use crate::exit::Exit;
use crate::identity::{Identities, IdentityScan};
use crate::plan::spool::{Spool, SpoolRows};
use crate::plan::{Action, Plan, Row, Target, TargetKind};
use crate::resume::DoneSet;
use crate::secret::SecretRef;

pub(crate) fn run(args: &UndoArgs) -> Exit {
    match undo(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("reactbatch undo: {message}");
            Exit::Invalid
        }
    }
}

/// Done rows not in the plan named one by one on stderr, at most; the rest are counted.
const MAX_NAMED: usize = 10;

fn undo(args: &UndoArgs) -> Result<Exit, String> {
    if let Some(path) = &args.output {
        if !args.force && path.symlink_metadata().is_ok() {
            return Err(format!(
                "{} exists; add --force to replace it, or give -o a new file",
                path.display()
            ));
        }
    }
    let (plan, rows, mut ids) = spool_plan(&args.plan)?;
    let done = DoneSet::load(&args.report, &plan)?;
    let mut inverse = Vec::new();
    let mut unrestorable = Vec::new();
    let mut plan_keys = std::collections::HashSet::new();
    for row in rows {
        let row = row.map_err(|problem| problem.to_string())?;
        let key = ids.key(&row, &plan.targets[row.target].name);
        plan_keys.insert(crate::resume::key_hash(&key));
        if !done.contains(&key) {
            continue;
        }
        match invert(&row) {
            Some(inv) => inverse.push(row_yaml(&inv, &plan.targets[row.target])),
            None => unrestorable.push(row.source.to_string()),
        }
    }
    inverse.reverse();
    let mut not_in_plan = Vec::new();
    let mut not_in_plan_count = 0u64;
    crate::resume::done_rows_not_in_plan(&args.report, &plan_keys, |row| {
        not_in_plan_count += 1;
        if not_in_plan.len() < MAX_NAMED {
            not_in_plan.push(format!(
                "report row {} ({}) target {} message {}{}",
                row.row,
                row.source,
                row.target,
                row.message_id,
                if row.emoji.is_empty() {
                    String::new()
                } else {
                    format!(" emoji {}", row.emoji)
                }
            ));
        }
    })?;

    let out_dir = args
        .output
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut doc = Mapping::new();
    doc.insert("version".into(), 1.into());
    let mut targets = Mapping::new();
    for t in &plan.targets {
        targets.insert(t.name.clone().into(), target_yaml(t, out_dir));
    }
    doc.insert("targets".into(), Value::Mapping(targets));
    let n = inverse.len();
    doc.insert("rows".into(), Value::Sequence(inverse));
    let body = serde_yaml::to_string(&Value::Mapping(doc))
        .map_err(|e| format!("cannot render the plan: {e}"))?;
    let mut text = header(args, n, &unrestorable, &not_in_plan, not_in_plan_count);
    text.push_str(&body);
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "reactbatch undo: {n} row(s) to undo, {} not restorable, {not_in_plan_count} not in the plan",
        unrestorable.len()
    );
    Ok(Exit::Success)
}

/// Loads and validates the plan, spooling its rows, which the inverse is then built from, as
/// `run` does: one pass reads the plan files (it also finds repeated rows, for identities).
fn spool_plan(path: &Path) -> Result<(Plan, SpoolRows, Identities), String> {
    let plan = Plan::load(path, None).map_err(|problems| {
        crate::diagnostic::eprint(&problems);
        format!("{} is invalid", path.display())
    })?;
    let mut scan = IdentityScan::new();
    let mut spool = Spool::create().map_err(|e| format!("cannot create a spool file: {e}"))?;
    let mut spool_error = None;
    let validation = plan.validate_with(|row| {
        let content_id = scan.observe(row, &plan.targets[row.target].name);
        if spool_error.is_none() {
            spool_error = spool.push(row, content_id).err();
        }
    });
    if !validation.errors.is_empty() {
        crate::diagnostic::eprint(&validation.errors);
        return Err(format!("{} is invalid", path.display()));
    }
    if let Some(e) = spool_error {
        return Err(format!("cannot write the spool file: {e}"));
    }
    let rows = spool
        .into_rows()
        .map_err(|e| format!("cannot read the spool file back: {e}"))?;
    let ids = scan.finish().linked_to(rows.content_ids());
    Ok((plan, rows, ids))
}

/// The undo plan's header comment: where it comes from, and each row it cannot undo (said on
/// stderr too).
fn header(
    args: &UndoArgs,
    n: usize,
    unrestorable: &[String],
    not_in_plan: &[String],
    not_in_plan_count: u64,
) -> String {
    let mut text = format!(
        "# Undo plan written by reactbatch from {} (plan {}): {n} row(s), in reverse order.\n",
        args.report.display(),
        args.plan.display()
    );
    for source in unrestorable {
        let warning = format!("{source}: unreact without previous_emoji: the removed reaction is unknown, so it cannot be restored");
        eprintln!("reactbatch undo: warning: {warning}");
        text.push_str(&format!("# not undone: {warning}\n"));
    }
    if not_in_plan_count > 0 {
        let what = format!(
            "{not_in_plan_count} done row(s) of {} match no row of {}, so they cannot be reversed from this plan (undo them with the plan they were run from)",
            args.report.display(),
            args.plan.display()
        );
        eprintln!("reactbatch undo: warning: {what}");
        text.push_str(&format!("# not undone: {what}:\n"));
        for row in not_in_plan {
            eprintln!("reactbatch undo:   {row}");
            text.push_str(&format!("#   {row}\n"));
        }
        let more = not_in_plan_count - not_in_plan.len() as u64;
        if more > 0 {
            eprintln!("reactbatch undo:   … and {more} more (code not_in_plan or a changed plan row in the report)");
            text.push_str(&format!("#   … and {more} more\n"));
        }
    }
    text
}

/// The row that reverses `row`, if it can be known.
fn invert(row: &Row) -> Option<Row> {
    let mut inv = row.clone();
    inv.not_before = None;
    inv.key = None;
    match row.action {
        // A react that replaced a reaction (the plan recorded which) puts it back; one that
        // added a reaction removes it. Either way the inverse records the emoji it takes away,
        // so undoing the undo redoes the row.
        Action::React => match &row.previous_emoji {
            Some(replaced) => {
                inv.emoji = Some(replaced.clone());
                inv.previous_emoji = row.emoji.clone();
            }
            None => {
                inv.action = Action::Unreact;
                inv.previous_emoji = row.emoji.clone();
            }
        },
        Action::Unreact => {
            inv.action = Action::React;
            inv.emoji = Some(row.previous_emoji.clone()?);
            inv.previous_emoji = None;
        }
    }
    Some(inv)
}

fn row_yaml(row: &Row, target: &Target) -> Value {
    let mut m = Mapping::new();
    m.insert("target".into(), target.name.clone().into());
    m.insert("action".into(), row.action.as_str().into());
    let fields = [
        ("emoji", &row.emoji),
        ("message_id", &row.message_id),
        ("msgid", &row.msgid),
        ("conversation_id", &row.conversation_id),
        ("conversation_ref_id", &row.conversation_ref_id),
        ("user_id", &row.user_id),
        ("user_ref_id", &row.user_ref_id),
        ("previous_emoji", &row.previous_emoji),
        // The row's own account: the inverse goes to the account the row went to.
        ("scope_id", &row.scope_id),
        ("channel_id", &row.channel_id),
    ];
    for (name, value) in fields {
        // Ogmma rows carry no Kommo-only fields; an Ogmma unreact needs no emoji.
        let kommo_only = !matches!(
            name,
            "emoji" | "message_id" | "previous_emoji" | "channel_id"
        );
        if target.provider() == crate::plan::ProviderKind::Ogmma && kommo_only {
            continue;
        }
        if let Some(v) = value {
            m.insert(name.into(), v.clone().into());
        }
    }
    Value::Mapping(m)
}

fn secret_yaml(r: &SecretRef, out_dir: &Path) -> Value {
    let mut m = Mapping::new();
    match r {
        SecretRef::Env(name) => {
            m.insert("env".into(), name.clone().into());
        }
        SecretRef::File(path) => {
            // Absolute, so the reference holds wherever the undo plan is written.
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| out_dir.join(path));
            m.insert("file".into(), abs.display().to_string().into());
        }
    }
    Value::Mapping(m)
}

fn target_yaml(t: &Target, out_dir: &Path) -> Value {
    let mut m = Mapping::new();
    m.insert("provider".into(), t.provider().as_str().into());
    match &t.kind {
        TargetKind::Kommo {
            scope_id,
            user_id,
            user_ref_id,
        } => {
            if let Some(scope_id) = scope_id {
                m.insert("scope_id".into(), scope_id.clone().into());
            }
            m.insert("secret".into(), secret_yaml(&t.credential, out_dir));
            if let Some(u) = user_id {
                m.insert("user_id".into(), u.clone().into());
            }
            if let Some(u) = user_ref_id {
                m.insert("user_ref_id".into(), u.clone().into());
            }
        }
        TargetKind::Ogmma { channel_id } => {
            if let Some(channel_id) = channel_id {
                m.insert("channel_id".into(), channel_id.clone().into());
            }
            m.insert("api_key".into(), secret_yaml(&t.credential, out_dir));
        }
    }
    m.insert("base_url".into(), t.base_url.clone().into());
    if let Some(rate) = t.rate {
        m.insert("rate".into(), rate.to_string().into());
    }
    Value::Mapping(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: Action, emoji: Option<&str>, previous: Option<&str>) -> Row {
        Row {
            emoji: emoji.map(Into::into),
            previous_emoji: previous.map(Into::into),
            key: Some("k".into()),
            ..Row::test(1).action(action).message("m1")
        }
    }

    fn shape(r: &Row) -> (Action, Option<&str>, Option<&str>) {
        (r.action, r.emoji.as_deref(), r.previous_emoji.as_deref())
    }

    #[test]
    fn each_row_is_inverted_and_the_inverse_inverts_back() {
        let cases = [
            // Added a reaction: remove it.
            (
                row(Action::React, Some("👍"), None),
                Some((Action::Unreact, Some("👍"), Some("👍"))),
            ),
            // Replaced ❤️: put ❤️ back.
            (
                row(Action::React, Some("🔥"), Some("❤️")),
                Some((Action::React, Some("❤️"), Some("🔥"))),
            ),
            // Removed 👍: react 👍 again.
            (
                row(Action::Unreact, None, Some("👍")),
                Some((Action::React, Some("👍"), None)),
            ),
            // Removed something unknown: cannot be restored.
            (row(Action::Unreact, None, None), None),
        ];
        for (original, expected) in cases {
            let inv = invert(&original);
            assert_eq!(inv.as_ref().map(shape), expected, "{original:?}");
            if let Some(inv) = inv {
                assert_eq!(inv.key, None);
                let back = invert(&inv).expect("an inverse is invertible");
                assert_eq!(back.action, original.action, "{original:?}");
                if original.action == Action::React {
                    assert_eq!(back.emoji, original.emoji, "{original:?}");
                }
            }
        }
    }
}
