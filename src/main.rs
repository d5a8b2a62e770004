use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything opens a file: connections, the spool and the sandbox all count.
    reactbatch::fdlimit::raise();
    reactbatch::main_entry()
}
