use std::process::ExitCode;

fn main() -> ExitCode {
    reactbatch::main_entry()
}
