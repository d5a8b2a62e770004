//! reactbatch: apply emoji reactions to chat messages in bulk.
//!
//! Data flows one way:
//!
//! ```text
//! plan files ──plan::Plan::load──▶ one validation pass ──▶ validated rows, spooled
//!     (plan::spool: the plan files are read once) ──executor: a lane per pace group──▶
//!     provider::prepare ──▶ exact body bytes ──provider::sign (clock as a value)──▶
//!     signed request ──▶ send | render ──▶ row outcome ──outputs──▶ CSV / JSON Lines + summary
//! ```
//!
//! - [`cli`]: clap types for every command (raw values, validated by the commands).
//! - [`plan`]: the plan model, YAML/CSV loading with source positions, validation (emoji
//!   values and `:shortcodes:` in `plan::emoji`).
//! - [`provider`]: Kommo and Ogmma request building; [`sign`]: Kommo's HMAC signature.
//! - [`executor`]: lanes (one per pace group, and per Kommo account that rows name:
//!   `plan::pace::LaneMap`, made by the validation pass) with adaptive rate limiting,
//!   per-message ordering, bounded requests in flight, retries.
//! - [`outputs`]: what a run writes, below the executor: report rows and files, the
//!   end-of-run summary, the emitted signed requests, the dry-run audit outline, the run's log, the
//!   lanes' time series and the HTML page of a run.
//! - [`monitor`]: a live run's monitors around the executor: the metrics textfile and
//!   healthchecks-style pings at the run's start and end.
//! - `json`: JSON strings written as `serde_json` writes them, for what is rendered on every row.
//! - [`sandbox`]: the local emulator of both providers, used by tests and `run --sandbox`.
//! - [`commands`]: one module per subcommand, gluing the above together.
//! - [`identity`]: stable row identities for `--resume`, and shard assignment.
//! - [`lock`]: the `--lock` advisory lock for cron safety.
//! - [`digest`]: the plan digest for audited runs; [`resume`]: rows an earlier report shows done.
//! - [`secret`]: secrets as a type that cannot be printed.
//! - [`diagnostic`]: plan problems rendered with the source line and a caret (`--color`).
//! - [`signals`]: SIGINT/SIGTERM and SIGPIPE for every command; [`exit`]: the exit codes;
//!   [`fdlimit`]: the open-file limit, raised at start, and the connection bound fitted under it.

#![warn(unreachable_pub)]

pub(crate) mod bloom;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod diagnostic;
pub mod digest;
pub(crate) mod executor;
pub(crate) mod exit;
pub(crate) mod fdlimit;
pub(crate) mod identity;
pub(crate) mod json;
pub mod lock;
pub mod monitor;
pub mod outputs;
pub mod plan;
pub mod provider;
pub(crate) mod resume;
pub mod sandbox;
pub mod secret;
pub mod sign;
pub(crate) mod signals;

use std::process::ExitCode;

pub use cli::VERSION;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The binary's whole body: parse the command line, run the command, map to an exit code.
pub fn main_entry() -> ExitCode {
    // Before anything opens a file: connections, the spool and the sandbox all count.
    fdlimit::raise();
    // A panic must never print data from the plan (it could hold a secret): report a fixed
    // message and exit 101, as Rust does, without the payload.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("reactbatch: internal error{at}; please report it (details withheld: they may contain plan data)");
    }));
    signals::default_sigpipe();
    let cli = Cli::parse();
    diagnostic::init_color(cli.color);
    let exit = match cli.command {
        Command::Check(args) => commands::check::run(&args),
        Command::Run(args) => commands::run::run(*args),
        Command::Sign(args) => commands::sign::run(&args),
        Command::Undo(args) => commands::undo::run(&args),
        Command::Report(args) => commands::report::run(&args),
        Command::Sandbox(args) => sandbox::run_command(args),
        Command::Emoji(args) => commands::emoji::run(&args),
        Command::Schema => commands::docs::schema(),
        Command::Completions(args) => commands::docs::completions(args.shell),
        Command::Man(args) => commands::docs::man(&args),
    };
    exit.into()
}
