//! A located problem in a plan: `file:line:col: error: message`, with an optional hint and a
//! stable machine [`code`](Problem::code) (`unknown_field`, `missing_emoji`, ...; the list is
//! in `docs/check-json.md`). Validation collects these instead of stopping at the first one.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The file as the user named it (relative paths stay relative).
    pub file: String,
    /// 1-based; `None` when the problem is about the file as a whole.
    pub line: Option<u32>,
    /// 1-based.
    pub column: Option<u32>,
    pub message: String,
    /// What kind of problem this is, for scripts (`check --format json`, `--log-format json`):
    /// stable across releases, unlike the message. Generic (`invalid`, `warning`) only where
    /// no more precise code was given.
    pub code: &'static str,
    /// e.g. "did you mean `emoji`?"
    pub hint: Option<String>,
    /// The line may hold a secret (a literal secret, a password in a URL): diagnostics must not
    /// show it, nor any other problem's snippet of the same line.
    pub hide_source: bool,
}

impl Problem {
    pub fn error(
        file: impl Into<String>,
        line: Option<u32>,
        column: Option<u32>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Error,
            file: file.into(),
            line,
            column,
            message: message.into(),
            code: "invalid",
            hint: None,
            hide_source: false,
        }
    }

    pub fn warning(
        file: impl Into<String>,
        line: Option<u32>,
        column: Option<u32>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            code: "warning",
            ..Problem::error(file, line, column, message)
        }
    }

    /// Sets the machine code (see [`Problem::code`]).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Marks the line as possibly holding a secret (see [`Problem::hide_source`]).
    pub fn hiding_source(mut self) -> Self {
        self.hide_source = true;
        self
    }

    /// `file:line:col`, `file:line` or `file`.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }
}

/// One line: `file:line:col: error: message (hint)`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {level}: {}", self.location(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}
