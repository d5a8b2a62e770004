//! Before anything is sent: load the plan, resolve the [`RunConfig`], validate every row (one
//! pass that also finds identities and the digest), take the lock, check the digest and the
//! earlier report to resume. Every refusal here is exit 2 (or 4 for a held lock) with nothing
//! sent.

use std::path::Path;

use crate::cli::RunArgs;
use crate::digest::PlanDigest;
use crate::exit::Exit;
use crate::identity::{Identities, IdentityScan};
use crate::lock::{LockError, RunLock};
// Every notice of this file becomes a log event (plain text, or JSON with --log-format json).
use crate::log::eprintln;
use crate::plan::spool::Spool;
use crate::plan::{Plan, Problem};
use crate::report::Status;
use crate::resume::DoneSet;

use super::config::RunConfig;

/// What the passes before sending produced.
pub struct Preflight {
    pub plan: Plan,
    pub config: RunConfig,
    pub digest: String,
    /// Held for the whole run; the OS frees it however the process ends.
    pub lock: Option<RunLock>,
    pub work: Work,
}

/// What the executor consumes: the rows to run and how to know them.
pub struct Work {
    /// The validated rows, in plan order.
    pub spool: Spool,
    pub total_rows: u64,
    pub identities: Identities,
    /// Rows an earlier report shows done (`--resume`).
    pub done: Option<DoneSet>,
}

pub(super) fn print_problems(problems: &[Problem]) {
    crate::log::problems(problems);
}

/// Whether `path` is a report with rows that went (or were to go) on the wire: anything but
/// `planned`. Unreadable or foreign files count as not holding results.
fn holds_live_results(path: &Path) -> bool {
    let mut live = false;
    let _ = crate::report::for_each_report_row(path, |row| live |= row.status != Status::Planned);
    live
}

pub fn preflight(args: &RunArgs) -> Result<Preflight, Exit> {
    let plan = match Plan::load(&args.plan, args.targets.as_deref()) {
        Ok(plan) => plan,
        Err(problems) => {
            print_problems(&problems);
            eprintln!(
                "reactbatch run: {} is invalid; nothing was sent",
                args.plan.display()
            );
            return Err(Exit::Invalid);
        }
    };
    let config = match RunConfig::resolve(args, &plan) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("reactbatch run: {message}");
            return Err(Exit::Invalid);
        }
    };

    if !config.sandbox {
        let insecure = plan.insecure_http();
        if !insecure.is_empty() && !args.allow_insecure_http {
            print_problems(&insecure);
            eprintln!(
                "reactbatch run: refusing plain http:// to a non-loopback host; nothing was sent"
            );
            return Err(Exit::Invalid);
        }
        if !config.quiet {
            print_problems(&plan.secret_warnings());
        }
    }

    // One pass validates every row before any is sent and, on the way, finds repeated rows
    // (for identities) and digests what would be sent.
    // The rows it validated are spooled: the executor reads them, never the plan files again.
    let mut scan = IdentityScan::new();
    let mut digest = PlanDigest::new(&plan);
    let mut spool = match Spool::create() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reactbatch run: cannot create a spool file in the temp directory: {e}");
            return Err(Exit::Invalid);
        }
    };
    let mut spool_error = None;
    let validation = plan.validate_with(|row| {
        scan.observe(row, &plan.targets[row.target].name);
        digest.row(row);
        if spool_error.is_none() {
            if let Err(e) = spool.push(row) {
                spool_error = Some(e);
            }
        }
    });
    if let Some(e) = spool_error {
        eprintln!("reactbatch run: cannot write the spool file in the temp directory: {e}; nothing was sent");
        return Err(Exit::Invalid);
    }
    if !config.quiet {
        print_problems(&plan.pace_warnings);
        print_problems(&validation.warnings);
    }
    if !validation.errors.is_empty() {
        print_problems(&validation.errors);
        eprintln!(
            "reactbatch run: {} has {} error(s); nothing was sent",
            plan.path.display(),
            validation.errors.len()
        );
        return Err(Exit::Invalid);
    }
    let lock = match &config.lock {
        Some(path) => match RunLock::acquire(path) {
            Ok(lock) => Some(lock),
            Err(LockError::Held(holder)) => {
                eprintln!(
                    "reactbatch run: lock {} is held by another run ({holder}); not starting",
                    path.display()
                );
                return Err(Exit::Locked);
            }
            Err(LockError::Io(e)) => {
                eprintln!(
                    "reactbatch run: cannot open lock file {}: {e}",
                    path.display()
                );
                return Err(Exit::Invalid);
            }
        },
        None => None,
    };

    let identities = scan.finish();
    let digest = digest.finish();
    if let Some(expected) = &config.expect_digest {
        if expected.trim() != digest {
            eprintln!(
                "reactbatch run: plan digest is {digest}, expected {}: the plan or its includes changed since the audit; nothing was sent",
                expected.trim()
            );
            return Err(Exit::Invalid);
        }
    }
    if config.dry_run && holds_live_results(&config.report) {
        eprintln!(
            "reactbatch run: {} holds the results of a live run, which a dry run would overwrite \
             (and a later --resume needs them); give the dry run its own --report FILE",
            config.report.display()
        );
        return Err(Exit::Invalid);
    }
    let done = match &config.resume {
        None => None,
        Some(path) if !path.exists() && *path == config.report => {
            if !config.quiet {
                crate::log::message(
                    crate::log::Level::Info,
                    &format!(
                        "reactbatch run: no earlier report at {}; starting from the first row",
                        path.display()
                    ),
                );
            }
            None
        }
        Some(path) => match DoneSet::load(path, &plan) {
            Ok(set) => Some(set),
            Err(e) => {
                eprintln!("reactbatch run: --resume: {e}");
                return Err(Exit::Invalid);
            }
        },
    };
    Ok(Preflight {
        plan,
        config,
        digest,
        lock,
        work: Work {
            spool,
            total_rows: validation.rows,
            identities,
            done,
        },
    })
}
