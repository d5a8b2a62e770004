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

pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod execute;
pub(crate) mod outcome;
pub(crate) mod preflight;
mod row_pass;
mod signals;

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::monitor::watch::Watch;
use crate::plan::PingUrl;

pub(crate) use error::{RunError, RunErrorKind};

/// The command's edge: a run that could not start prints its error here, once, and tells the
/// run's monitor (`--ping`) its exit code alone.
pub(crate) fn run(args: RunArgs) -> Exit {
    crate::outputs::log::init(args.log_format);
    // `-q` from the command line already quiets loading; the plan's `settings:` may add it.
    crate::outputs::log::set_quiet(args.quiet);
    let mut ping = None;
    match preflight_and_run(&args, &mut ping) {
        Ok(exit) => exit,
        Err(error) => {
            error.print();
            let exit = error.exit();
            crate::monitor::watch::refused(ping.as_ref(), exit);
            exit
        }
    }
}

/// Checks everything before sending, then sends: what [`run`] reports. Once sending may
/// start, the run's monitors (`--metrics-file`, `--ping`) hear of its start and its end,
/// whatever the end is.
fn preflight_and_run(args: &RunArgs, ping: &mut Option<PingUrl>) -> Result<Exit, RunError> {
    let pre = preflight::preflight(args, ping)?;
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
    let mut watch = Watch::new(
        config.metrics_file.clone(),
        config.ping.clone(),
        config.dry_run,
        config.sandbox,
        &plan,
    );
    watch.started(&runtime);
    let (exit, summary) = match runtime.block_on(execute::execute(&plan, &config, work)) {
        Ok(executed) => {
            let (exit, summary) = outcome::outcome(&plan, &config, digest, audit, executed);
            (exit, Some(summary))
        }
        Err(error) => {
            error.print();
            (error.exit(), None)
        }
    };
    watch.ended(&runtime, summary.as_ref(), exit);
    drop(lock);
    Ok(exit)
}
