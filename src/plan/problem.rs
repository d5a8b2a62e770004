//! A located problem in a plan: `file:line:col: error: message`, with an optional hint and a
//! stable machine [`code`](Problem::code) (`unknown_field`, `missing_emoji`, ...; the list is
//! in `docs/check-json.md`). Validation collects these instead of stopping at the first one.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    /// Not a problem: what the program does with a value as written (`❤` is sent as `❤️`).
    Note,
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
    /// Further occurrences of this same problem that were not listed (past the listing cap),
    /// counted here so one mistake on a million rows still reads as one diagnostic with its
    /// true count. `None` for a problem listed on its own.
    pub folded: Option<Box<Folded>>,
}

/// Occurrences of a problem counted rather than listed (see [`Problem::folded`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub count: u64,
    /// Their lines, as inclusive ranges in the order met, at most [`Folded::MAX_RANGES`].
    pub lines: Vec<(u32, u32)>,
    /// Lines not kept in `lines` once it was full.
    pub lines_dropped: bool,
}

impl Folded {
    pub const MAX_RANGES: usize = 64;

    /// Counts one more occurrence, at `line` if known.
    pub fn add(&mut self, line: Option<u32>) {
        self.count += 1;
        let Some(line) = line else { return };
        if let Some((_, end)) = self.lines.last_mut() {
            if line == *end || line == end.saturating_add(1) {
                *end = line;
                return;
            }
        }
        if self.lines.len() < Self::MAX_RANGES {
            self.lines.push((line, line));
        } else {
            self.lines_dropped = true;
        }
    }
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
            folded: None,
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

    pub fn note(
        file: impl Into<String>,
        line: Option<u32>,
        column: Option<u32>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Note,
            code: "note",
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

    /// Whether `other` is the same problem (same severity, code, file, message and hint),
    /// wherever it is: such problems are shown as one diagnostic with a count.
    pub fn same_as(&self, other: &Problem) -> bool {
        self.severity == other.severity
            && self.code == other.code
            && self.file == other.file
            && self.message == other.message
            && self.hint == other.hint
    }

    /// A hash agreeing with [`Problem::same_as`].
    pub fn same_hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        self.severity.hash(&mut h);
        self.code.hash(&mut h);
        self.file.hash(&mut h);
        self.message.hash(&mut h);
        self.hint.hash(&mut h);
        h.finish()
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
            Severity::Note => "note",
        };
        write!(f, "{}: {level}: {}", self.location(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}
