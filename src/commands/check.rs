//! `reactbatch check`: load and validate plans, print every problem, send nothing.

use crate::cli::CheckArgs;
use crate::exit::Exit;

pub fn run(_args: &CheckArgs) -> Exit {
    Exit::Invalid
}
