//! The exit codes scripts depend on (the README lists them).

use std::process::ExitCode;

use crate::signals::Stop;

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
    /// An origin could not be reached (its targets were stopped).
    Unreachable = 5,
    /// The report (or the emit or summary file) could not be written; sending stopped.
    OutputFailed = 74,
    /// Interrupted by SIGINT (Ctrl-C).
    Interrupted = 130,
    /// Terminated by SIGTERM.
    Terminated = 143,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code of a run that got as far as sending, decided here and nowhere else: a
    /// stop signal wins (the run did not finish), then an output that could not be written
    /// (rows may be missing from the report: resume from it), then a target stopped on
    /// authentication (a human must fix a credential), then an unreachable origin, then
    /// failed or cancelled rows.
    pub fn of_run(outcome: &RunOutcome) -> Exit {
        if let Some(stop) = outcome.stopped_by {
            Exit::from(stop)
        } else if outcome.output_failed {
            Exit::OutputFailed
        } else if outcome.auth_stopped {
            Exit::AuthStopped
        } else if outcome.unreachable {
            Exit::Unreachable
        } else if outcome.rows_failed {
            Exit::RowsFailed
        } else {
            Exit::Success
        }
    }
}

/// What [`Exit::of_run`] decides from.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOutcome {
    /// The signal that stopped the run, if one did.
    pub stopped_by: Option<Stop>,
    /// Some target was stopped on repeated 401/403.
    pub auth_stopped: bool,
    /// Some origin was unreachable (its targets stopped).
    pub unreachable: bool,
    /// Some row ended `failed` or `cancelled`.
    pub rows_failed: bool,
    /// The report or emit file could not be written completely.
    pub output_failed: bool,
}

impl From<Stop> for Exit {
    /// A run stopped by a signal ends as the shell reports one: 128 + the signal's number.
    fn from(stop: Stop) -> Exit {
        match stop {
            Stop::Interrupt => Exit::Interrupted,
            Stop::Terminate => Exit::Terminated,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_wins_then_output_then_auth_then_unreachable_then_failures() {
        let all = RunOutcome {
            stopped_by: Some(Stop::Terminate),
            auth_stopped: true,
            unreachable: true,
            rows_failed: true,
            output_failed: true,
        };
        assert_eq!(Exit::of_run(&all).code(), 143);
        let int = RunOutcome {
            stopped_by: Some(Stop::Interrupt),
            ..all
        };
        assert_eq!(Exit::of_run(&int).code(), 130);
        let io = RunOutcome {
            stopped_by: None,
            ..all
        };
        assert_eq!(Exit::of_run(&io).code(), 74);
        let auth = RunOutcome {
            output_failed: false,
            ..io
        };
        assert_eq!(Exit::of_run(&auth), Exit::AuthStopped);
        let unreachable = RunOutcome {
            auth_stopped: false,
            ..auth
        };
        assert_eq!(Exit::of_run(&unreachable).code(), 5);
        let failed = RunOutcome {
            unreachable: false,
            ..unreachable
        };
        assert_eq!(Exit::of_run(&failed), Exit::RowsFailed);
        assert_eq!(Exit::of_run(&RunOutcome::default()), Exit::Success);
    }
}
