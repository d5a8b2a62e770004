//! YAML row mappings (`rows:` entries and `defaults:`) read into [`RawRow`]s, as CSV records
//! are by [`super::csv_rows`]; checking them against the targets is [`super::rows`]' work.

use std::sync::Arc;

use super::doc::DocReader;
use super::fields::{Field, RawRow, RawValue};
use super::problem::Problem;
use super::rows::check_value;
use super::source::shorten;
use super::yaml::{Node, NodeKind, Value};

/// Reads one YAML row mapping into a [`RawRow`]; structural problems go into `row.problems`.
pub(super) fn read_yaml_row(file: &Arc<str>, node: &Node, within: &str) -> RawRow {
    let mut row = RawRow::new(file.clone(), node.pos);
    let mut problems = Vec::new();
    let mut r = DocReader {
        file: file.clone(),
        problems: &mut problems,
    };
    if let Value::Map(entries) = &node.value {
        for (key, value) in entries {
            let Some(field) = Field::from_name(&key.text) else {
                let names: Vec<&str> = Field::names().collect();
                r.unknown_key(key, within, &names);
                continue;
            };
            match (&value.value, value.kind()) {
                (_, NodeKind::Null) => {}
                (Value::Scalar { text, .. }, _) => row.set(
                    field,
                    RawValue {
                        text: text.clone(),
                        line: value.pos.line,
                        col: Some(value.pos.col),
                    },
                ),
                (_, found) => {
                    r.error(
                        value.pos,
                        format!("`{field}` must be a single value, found {found}"),
                    )
                    .code = "wrong_type";
                }
            }
        }
    } else {
        r.error(
            node.pos,
            format!(
                "a row must be a mapping like `{{ message_id: ..., emoji: ... }}`, found {}",
                node.kind()
            ),
        );
    }
    row.problems = problems;
    row
}

/// Reads `defaults:`: each value is checked on its own now (so a bad default is reported once,
/// at its own line, not on every row) and dropped if bad.
pub(super) fn read_defaults(r: &mut DocReader<'_>, node: &Node, targets: &[String]) -> RawRow {
    if node.is_null() {
        return RawRow::default();
    }
    if r.map(node, "defaults").is_none() {
        return RawRow::default();
    }
    let mut row = read_yaml_row(&r.file, node, "defaults");
    r.problems.append(&mut row.problems);
    for f in Field::ALL {
        let Some(v) = row.get(f) else { continue };
        let mut bad = check_value(f, &v.text).err();
        if f == Field::Target && bad.is_none() && !targets.contains(&v.text) {
            bad = Some(format!("unknown target `{}` in defaults", shorten(&v.text)).into());
        }
        if let Some(bad) = bad {
            let mut p = Problem::error(&*r.file, Some(v.line), v.col, bad.message);
            p.hint = bad.hint;
            r.problems.push(p);
            row.clear(f);
        }
    }
    row
}
