//! `reactbatch schema`, `reactbatch completions SHELL` and `reactbatch man`: documents generated
//! from the program's own definitions (the plan types, the clap definitions), printed on
//! stdout, so they cannot drift from what the program accepts.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;

/// Prints the plan's JSON Schema ([`crate::plan::schema`]).
pub fn schema() -> Exit {
    write_stdout("schema", crate::plan::schema::plan_schema_json().as_bytes())
}

/// Prints a completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Exit {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "reactbatch", &mut script);
    write_stdout("completions", &script)
}

/// Prints the man page, `reactbatch(1)`, as roff.
pub fn man() -> Exit {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("reactbatch man: {e}");
        return Exit::Invalid;
    }
    write_stdout("man", &page)
}

/// A closed pipe (`reactbatch man | head`) is not an error worth a message.
fn write_stdout(command: &str, bytes: &[u8]) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Exit::Success,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => {
            eprintln!("reactbatch {command}: cannot write to standard output: {e}");
            Exit::Invalid
        }
    }
}
