//! `reactbatch run`: load and validate the plan (nothing is sent if any row is invalid), then
//! execute it — or, with `--dry-run`, build and sign every request and send none — writing
//! the report as rows finish and a summary at the end.
//!
//! Three stages, each its own module: [`preflight`] (plan, [`config::RunConfig`], validation,
//! lock, digest, resume; every refusal is exit 2 with nothing sent; its pass over the rows,
//! on two threads, is [`row_pass`]), [`execute`] (credentials or the sandbox, report, lanes,
//! the executor; returns what happened as data) and [`outcome`] (exit code and summary from
//! that data).

pub mod config;
pub mod execute;
pub mod outcome;
pub mod preflight;
mod row_pass;
mod signals;

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::outputs::watch::Watch;

pub use config::{default_report_path, RunConfig};

pub fn run(args: RunArgs) -> Exit {
    crate::log::init(args.log_format);
    // `-q` from the command line already quiets loading; the plan's `settings:` may add it.
    crate::log::set_quiet(args.quiet);
    let mut ping = None;
    let pre = match preflight::preflight(&args, &mut ping) {
        Ok(p) => p,
        Err(exit) => {
            crate::outputs::watch::refused(ping.as_ref(), exit);
            return exit;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crate::signals::block_sigpipe_in_thread)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::log::error(&format!(
                "reactbatch run: cannot start the async runtime: {e}"
            ));
            return Exit::Invalid;
        }
    };
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
    let executed = runtime.block_on(execute::execute(&plan, &config, work));
    let (exit, summary) = match executed {
        Ok(executed) => {
            let (exit, summary) = outcome::outcome(&plan, &config, digest, audit, executed);
            (exit, Some(summary))
        }
        Err(exit) => (exit, None),
    };
    watch.ended(&runtime, summary.as_ref(), exit);
    drop(lock);
    exit
}
