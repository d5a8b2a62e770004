//! reactbatch: apply emoji reactions to chat messages in bulk.
//!
//! Data flows one way:
//!
//! ```text
//! plan files ──plan::Plan::load──▶ one validation pass ──▶ validated rows, spooled
//!     (plan::spool: the plan files are read once) ──executor: a lane per pace group──▶
//!     provider::prepare ──▶ exact body bytes ──provider::sign (clock as a value)──▶
//!     signed request ──▶ send | render ──▶ row outcome ──report──▶ CSV / JSON Lines + summary
//! ```
//!
//! - [`audit`]: what a plan will do per target and how long the live run takes (dry run).
//! - [`cli`]: clap types for every command (raw values, validated by the commands).
//! - [`plan`]: the plan model, YAML/CSV loading with source positions, validation (emoji
//!   values and `:shortcodes:` in `plan::emoji`).
//! - [`provider`]: Kommo and Ogmma request building; [`sign`]: Kommo's HMAC signature.
//! - [`executor`]: lanes (one per pace group, and per Kommo account that rows name:
//!   `plan::pace::LaneMap`, made by the validation pass) with adaptive rate limiting,
//!   per-message ordering, bounded requests in flight, retries.
//! - [`report`]: row results → report files and the end-of-run summary; [`emit`]: the audit
//!   trail of signed requests (JSON Lines or curl); `json`: JSON strings written as
//!   `serde_json` writes them, for what is rendered on every row.
//! - [`sandbox`]: the local emulator of both providers, used by tests and `run --sandbox`.
//! - [`commands`]: one module per subcommand, gluing the above together.
//! - [`identity`]: stable row identities for `--resume`, and shard assignment.
//! - [`lock`]: the `--lock` advisory lock for cron safety.
//! - [`digest`]: the plan digest for audited runs; [`resume`]: rows an earlier report shows done.
//! - [`summary`]: the end-of-run summary (stderr and `--summary-json`).
//! - [`secret`]: secrets as a type that cannot be printed.
//! - [`diagnostic`]: plan problems rendered with the source line and a caret (`--color`).
//! - [`signals`]: SIGINT/SIGTERM and SIGPIPE for every command; [`exit`]: the exit codes;
//!   [`fdlimit`]: the open-file limit, raised at start, and the connection bound fitted under it.
//! - [`log`]: `run`'s stderr events: timestamped off a terminal, JSON with `--log-format json`.
//! - [`outputs`]: what cron monitors read of a live run: `--metrics-file`, `--ping`.

pub mod audit;
pub mod cli;
pub mod commands;
pub mod diagnostic;
pub mod digest;
pub mod emit;
pub mod executor;
pub mod exit;
pub mod fdlimit;
pub mod identity;
pub(crate) mod json;
pub mod lock;
pub mod log;
pub mod outputs;
pub mod plan;
pub mod provider;
pub mod report;
pub mod resume;
pub mod sandbox;
pub mod secret;
pub mod sign;
pub mod signals;
pub mod summary;

use std::process::ExitCode;

/// The version `--version` prints: the crate version, and the git commit when built from a
/// checkout (see `build.rs`), e.g. `0.1.0 (1a2b3c4)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), env!("REACTBATCH_VERSION_SUFFIX"));

use clap::Parser;

use crate::cli::{Cli, Command};

/// The binary's whole body: parse the command line, run the command, map to an exit code.
pub fn main_entry() -> ExitCode {
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
        Command::Sandbox(args) => sandbox::run_command(args),
        Command::Emoji(args) => commands::emoji::run(&args),
        Command::Schema => commands::docs::schema(),
        Command::Completions(args) => commands::docs::completions(args.shell),
        Command::Man(args) => commands::docs::man(&args),
    };
    exit.into()
}
