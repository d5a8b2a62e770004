//! `reactbatch run`: validate, then execute (or dry-run) the plan and write the report.

use crate::cli::RunArgs;
use crate::exit::Exit;

pub fn run(_args: RunArgs) -> Exit {
    Exit::Invalid
}
