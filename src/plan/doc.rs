//! Helpers to read a YAML [`Node`] tree into the model while collecting located problems.

use std::sync::Arc;

use super::fields::suggest;
use super::problem::Problem;
use super::source::Pos;
use super::yaml::{Key, Node, NodeKind, Value};

/// Reads nodes of one file, collecting problems instead of stopping at the first.
pub struct DocReader<'a> {
    pub file: Arc<str>,
    pub problems: &'a mut Vec<Problem>,
}

impl DocReader<'_> {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Problem {
        self.problems.push(Problem::error(
            &*self.file,
            Some(pos.line),
            Some(pos.col),
            message,
        ));
        let last = self.problems.len() - 1;
        &mut self.problems[last]
    }

    /// The entries of a mapping, or an error saying what was expected. `what` is a key name
    /// (`settings`, shown in backticks) or a description (`the plan`, shown as is).
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                let found = node.kind();
                let what = if what.contains(' ') {
                    what.to_string()
                } else {
                    format!("`{what}`")
                };
                self.error(
                    node.pos,
                    format!("{what} must be a mapping of `key: value`, found {found}"),
                )
                .code = "wrong_type";
                None
            }
        }
    }

    /// A scalar's text, or an error (`None`). A null is reported as missing.
    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match (&node.value, node.kind()) {
            (_, NodeKind::Null) => {
                self.error(node.pos, format!("`{what}` has no value")).code = "missing_value";
                None
            }
            (Value::Scalar { text, .. }, _) => Some(text),
            (_, found) => {
                self.error(node.pos, format!("`{what}` must be a value, found {found}"))
                    .code = "wrong_type";
                None
            }
        }
    }

    /// A scalar that is not null, or `None` without an error when null (the field is absent).
    pub fn optional_string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        if node.is_null() {
            None
        } else {
            self.string(node, what)
        }
    }

    /// Reports an unknown key with the closest known one as a hint.
    pub fn unknown_key(&mut self, key: &Key, within: &str, known: &[&str]) {
        let hint = suggest(&key.text, known.iter().copied());
        let p = self.error(key.pos, format!("unknown key `{}` in {within}", key.text));
        p.code = "unknown_field";
        if let Some(hint) = hint {
            p.hint = Some(hint);
        } else {
            p.hint = Some(format!("expected one of: {}", known.join(", ")));
        }
    }

    /// A plain `true`/`false`.
    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match self.string(node, what)? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                let other = super::source::shorten(other);
                self.error(
                    node.pos,
                    format!("`{what}` must be `true` or `false`, found `{other}`"),
                )
                .code = "invalid_value";
                None
            }
        }
    }

    /// A whole number within `range` (inclusive), documented in the message when violated.
    pub fn number<T>(&mut self, node: &Node, what: &str, min: T, max: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let text = self.string(node, what)?;
        match text.trim().parse::<T>() {
            Ok(n) if n >= min && n <= max => Some(n),
            _ => {
                let text = super::source::shorten(text);
                self.error(
                    node.pos,
                    format!("`{what}` must be a whole number from {min} to {max}, found `{text}`"),
                )
                .code = "invalid_value";
                None
            }
        }
    }
}
