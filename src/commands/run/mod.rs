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

pub use config::{default_report_path, RunConfig};

pub fn run(args: RunArgs) -> Exit {
    crate::outputs::log::init(args.log_format);
    // `-q` from the command line already quiets loading; the plan's `settings:` may add it.
    crate::outputs::log::set_quiet(args.quiet);
    let pre = match preflight::preflight(&args) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crate::signals::block_sigpipe_in_thread)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::outputs::log::error(&format!(
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
    let executed = runtime.block_on(execute::execute(&plan, &config, work));
    let exit = match executed {
        Ok(executed) => outcome::outcome(&plan, &config, digest, audit, executed),
        Err(exit) => exit,
    };
    drop(lock);
    exit
}
