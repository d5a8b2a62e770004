//! `reactbatch undo`: the inverse plan of the rows a report shows done.

use crate::cli::UndoArgs;
use crate::exit::Exit;

pub fn run(_args: &UndoArgs) -> Exit {
    Exit::Invalid
}
