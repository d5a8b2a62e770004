//! `reactbatch run`: load and validate the plan (nothing is sent if any row is invalid), then
//! execute it — or, with `--dry-run`, build and sign every request and send none — writing
//! the report as rows finish and a summary at the end.
//!
//! Three stages, each its own module: [`preflight`] (plan, [`config::RunConfig`], validation,
//! lock, digest, resume; every refusal is exit 2 with nothing sent; its pass over the rows,
//! on two threads, is [`row_pass`]), [`execute`] (credentials or the sandbox, report, lanes,
//! the executor; returns what happened as data) and [`outcome`] (exit code and summary from
//! that data). The first two return a [`RunError`] when the run cannot go on; it is printed
//! once, by [`run`].

pub mod config;
pub mod error;
pub mod execute;
pub mod outcome;
pub mod preflight;
mod row_pass;
mod signals;

use crate::cli::RunArgs;
use crate::exit::Exit;

pub use config::{default_report_path, RunConfig};
pub use error::{RunError, RunErrorKind};

/// The command's edge: a run that could not start prints its error here, once.
pub fn run(args: RunArgs) -> Exit {
    crate::outputs::log::init(args.log_format);
    // `-q` from the command line already quiets loading; the plan's `settings:` may add it.
    crate::outputs::log::set_quiet(args.quiet);
    match preflight_and_run(&args) {
        Ok(exit) => exit,
        Err(error) => {
            error.print();
            error.exit()
        }
    }
}

/// Checks everything before sending, then sends: what [`run`] reports.
fn preflight_and_run(args: &RunArgs) -> Result<Exit, RunError> {
    let pre = preflight::preflight(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crate::signals::block_sigpipe_in_thread)
        .enable_all()
        .build()
        .map_err(RunErrorKind::Runtime)?;
    let preflight::Preflight {
        plan,
        config,
        digest,
        audit,
        lock,
        work,
    } = pre;
    let executed = runtime.block_on(execute::execute(&plan, &config, work))?;
    let exit = outcome::outcome(&plan, &config, digest, audit, executed);
    drop(lock);
    Ok(exit)
}
