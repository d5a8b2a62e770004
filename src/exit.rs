//! The exit codes scripts depend on (SPEC "Exit codes").

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Every row `ok`, `planned`, `skipped` or `deferred`.
    Success = 0,
    /// Some row `failed` or `cancelled`.
    RowsFailed = 1,
    /// Invalid plan or usage; nothing was sent.
    Invalid = 2,
    /// A target was stopped on authentication failure.
    AuthStopped = 3,
    /// `--lock` is held by another run.
    Locked = 4,
    /// SIGINT/SIGTERM.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
