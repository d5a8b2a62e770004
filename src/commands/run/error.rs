//! Why a run could not start (or could not get as far as sending), as one value: what went
//! wrong and with which file ([`RunErrorKind`]), the plan problems behind it, and how many
//! warnings were held back. The steps before sending return it; [`super::run`] prints it, once,
//! and ends with its exit code. Nothing below that prints a refusal itself.

use std::io;
use std::path::{Path, PathBuf};

use crate::exit::Exit;
use crate::plan::Problem;

/// A run refused or stopped before sending: printed as the problems it points at, then one
/// `reactbatch run: …` line, then how many warnings were not shown.
#[derive(Debug, thiserror::Error)]
#[error("reactbatch run: {kind}")]
pub(crate) struct RunError {
    kind: RunErrorKind,
    /// The plan problems that explain the refusal, shown above its line.
    problems: Vec<Problem>,
    /// Warnings found before the refusal and not shown (a refused run shows its one reason,
    /// not pages of warnings above it).
    untold: Option<Untold>,
}

#[derive(Debug)]
struct Untold {
    warnings: usize,
    plan: PathBuf,
}

/// What stopped the run, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunErrorKind {
    #[error("{} is invalid; nothing was sent", plan.display())]
    PlanInvalid { plan: PathBuf },
    /// A flag or setting that cannot be used as given (the text names it).
    #[error("{0}")]
    Usage(String),
    #[error("refusing plain http:// to a non-loopback host; nothing was sent")]
    InsecureHttp,
    #[error("cannot create a spool file in the temp directory: {0}")]
    SpoolCreate(io::Error),
    #[error("cannot write the spool file in the temp directory: {0}; nothing was sent")]
    SpoolWrite(io::Error),
    /// The spool read back before the run checks the rest.
    #[error("cannot read the spool file back: {0}; nothing was sent")]
    SpoolRead(io::Error),
    /// The spool read again by the run (to copy the rows an earlier report shows done).
    #[error("cannot read the spool file back: {0}")]
    SpoolReread(io::Error),
    #[error("{} has {count} error(s); nothing was sent", plan.display())]
    RowErrors { plan: PathBuf, count: u64 },
    #[error("lock {} is held by another run ({holder}); not starting", path.display())]
    LockHeld { path: PathBuf, holder: String },
    #[error("cannot open lock file {}: {source}", path.display())]
    LockOpen { path: PathBuf, source: io::Error },
    /// A curl script whose Kommo signatures would expire before its last request.
    #[error("--emit: {0}; nothing was sent")]
    CurlSpan(String),
    /// `--expect-digest` unreadable, or not the plan's digest.
    #[error("{0}; nothing was sent")]
    Digest(String),
    #[error("cannot write {what} {}: {source}; nothing was sent", path.display())]
    Unwritable {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{} holds the results of a live run, which this run would overwrite; nothing was sent. \
         To go on from it (skipping rows it shows done), add --resume {}; to replace it, add \
         --overwrite",
        path.display(),
        path.display()
    )]
    LiveReport { path: PathBuf },
    #[error(
        "{} holds the results of a live run, which a dry run would overwrite (and a later \
         --resume needs them); give the dry run its own --report FILE",
        path.display()
    )]
    DryRunOverLiveReport { path: PathBuf },
    /// The earlier report `--resume` names cannot be used with this plan.
    #[error("--resume: {0}")]
    Resume(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot read the targets' credentials; nothing was sent")]
    Credentials,
    #[error("cannot start the sandbox: {0}")]
    Sandbox(io::Error),
    #[error("the sandbox's certificate: {0}")]
    SandboxCertificate(String),
    #[error("cannot create report {}: {source}", path.display())]
    CreateReport { path: PathBuf, source: io::Error },
    #[error("cannot write report {}: {source}", path.display())]
    WriteReport { path: PathBuf, source: io::Error },
    #[error("cannot move {} to {}: {source}", from.display(), to.display())]
    MoveReport {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// Copying the earlier report's rows into the new one (`--resume`); the text names the file.
    #[error("{0}")]
    CopyEarlier(String),
    #[error("cannot create emit file {}: {source}", path.display())]
    CreateEmit { path: PathBuf, source: io::Error },
    /// The HTTP client could not be built or readied (the text says why).
    #[error("{0}")]
    Transport(String),
    #[error("cannot start the report writer: {0}")]
    ReportWriter(io::Error),
    /// A broken invariant of the run itself, not of its input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<RunErrorKind> for RunError {
    fn from(kind: RunErrorKind) -> RunError {
        RunError {
            kind,
            problems: Vec::new(),
            untold: None,
        }
    }
}

impl RunError {
    /// A refusal explained by plan problems, which are shown above its line.
    pub(crate) fn with_problems(kind: RunErrorKind, problems: Vec<Problem>) -> RunError {
        RunError {
            problems,
            ..RunError::from(kind)
        }
    }

    /// Notes that `warnings` warnings of `plan` were found and not shown.
    pub(crate) fn untold(mut self, warnings: usize, plan: &Path) -> RunError {
        if warnings > 0 {
            self.untold = Some(Untold {
                warnings,
                plan: plan.to_path_buf(),
            });
        }
        self
    }

    /// The exit code the run ends with: a held lock is 4 (another run is on it), a broken
    /// invariant of the run 1, anything else 2 (nothing was sent).
    pub(crate) fn exit(&self) -> Exit {
        match self.kind {
            RunErrorKind::LockHeld { .. } => Exit::Locked,
            RunErrorKind::Internal(_) => Exit::RowsFailed,
            _ => Exit::Invalid,
        }
    }

    /// Prints the problems, the error's line, then where the held-back warnings can be seen.
    pub(crate) fn print(&self) {
        if !self.problems.is_empty() {
            crate::outputs::log::problems(&self.problems);
        }
        crate::outputs::log::error(&self.to_string());
        if let Some(untold) = &self.untold {
            crate::outputs::log::info(&format!(
                "reactbatch run: {} warning(s) not shown; `reactbatch check {}` lists them",
                untold.warnings,
                untold.plan.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_file_and_the_exit_code_follows_the_kind() {
        let held = RunError::from(RunErrorKind::LockHeld {
            path: PathBuf::from("/run/x.lock"),
            holder: "pid 7".into(),
        });
        assert_eq!(
            held.to_string(),
            "reactbatch run: lock /run/x.lock is held by another run (pid 7); not starting"
        );
        assert_eq!(held.exit(), Exit::Locked);
        let unwritable = RunError::from(RunErrorKind::Unwritable {
            what: "the summary",
            path: PathBuf::from("out/s.json"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        assert_eq!(
            unwritable.to_string(),
            "reactbatch run: cannot write the summary out/s.json: permission denied; nothing was sent"
        );
        assert_eq!(unwritable.exit(), Exit::Invalid);
        let internal = RunError::from(RunErrorKind::Internal("row tasks outlived the run"));
        assert_eq!(internal.exit(), Exit::RowsFailed);
    }

    #[test]
    fn held_back_warnings_are_counted_only_when_there_are_some() {
        let e = RunError::from(RunErrorKind::InsecureHttp).untold(0, Path::new("p.yaml"));
        assert!(e.untold.is_none());
        let e = e.untold(3, Path::new("p.yaml"));
        assert_eq!(e.untold.as_ref().map(|u| u.warnings), Some(3));
    }
}
