//! Process signals, in one place for every command: which signal stopped us, and how a closed
//! stdout/stderr pipe ends the process. What a signal means for the exit code is
//! [`crate::exit`]'s to say.

/// A signal that asks the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C at a terminal.
    Interrupt,
    /// SIGTERM: `kill`, systemd, a container runtime, a CI timeout.
    Terminate,
}

impl Stop {
    /// How a notice names the signal: "interrupted (Ctrl-C)" / "terminated (SIGTERM)".
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Interrupt => "interrupted (Ctrl-C)",
            Stop::Terminate => "terminated (SIGTERM)",
        }
    }

    /// What a second signal of the same kind does, for the notice after the first: only Ctrl-C
    /// is something a person presses again; a supervisor sending SIGTERM escalates on its own.
    pub fn again_hint(self) -> &'static str {
        match self {
            Stop::Interrupt => " (Ctrl-C again to exit now)",
            Stop::Terminate => " (a second SIGTERM exits now)",
        }
    }
}

/// The command that continues a run stopped by a signal: its own arguments (`args`, the
/// program first) with `--resume REPORT`, shell-quoted so it can be pasted. An earlier
/// `--resume` is replaced and `--overwrite` dropped: the report now holds this run's rows,
/// and replacing it would send them again.
pub(crate) fn continue_command(args: &[String], report: &str) -> String {
    let mut words: Vec<&str> = Vec::with_capacity(args.len() + 2);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--resume" => {
                rest.next();
            }
            "--overwrite" => {}
            a if a.starts_with("--resume=") => {}
            a => words.push(a),
        }
    }
    words.extend(["--resume", report]);
    // Quoting fails only on a NUL byte, which no argument can hold.
    shlex::try_join(words.iter().copied()).unwrap_or_else(|_| words.join(" "))
}

/// Listens for SIGINT and SIGTERM (SIGINT only off Unix).
pub(crate) struct Signals {
    // Both streams live as long as the watcher: a signal that arrives between two `next()`
    // calls is buffered in them, where a `ctrl_c()` future made afresh per call would miss it
    // (a second Ctrl-C sent right after the first was reported was sometimes lost).
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a tokio runtime.
    pub(crate) fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            int: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Waits for the next stop signal.
    pub(crate) async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => Stop::Interrupt,
                _ = self.term.recv() => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}

/// Lets a closed stdout/stderr pipe end the process quietly, as it does for `cat` or `grep`.
///
/// Rust ignores SIGPIPE, so `check --format json | head -c1` would see EPIPE in `println!`,
/// which panics ("internal error", exit 101). With the default action the process ends at that
/// write with SIGPIPE (the shell shows 141) and prints nothing. Sockets must stay unaffected:
/// the runtime's threads, which do all the network I/O, block SIGPIPE
/// ([`block_sigpipe_in_thread`]).
pub(crate) fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at the start of `main`, before any thread is spawned; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Blocks SIGPIPE in the calling thread (a runtime's `on_thread_start`). Rust's plain socket
/// writes ask for `MSG_NOSIGNAL`, but vectored writes (`writev`, what HTTP/2 and TLS use)
/// cannot: a peer that closed its end would end the process. Blocked, the write fails with
/// EPIPE, an I/O error on that connection, as it should.
pub(crate) fn block_sigpipe_in_thread() {
    #[cfg(unix)]
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only changes
    // the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_continue_command_resumes_from_the_report() {
        assert_eq!(
            continue_command(
                &args(&["reactbatch", "run", "p.yaml", "-q"]),
                "p.report.csv"
            ),
            "reactbatch run p.yaml -q --resume p.report.csv"
        );
        assert_eq!(
            continue_command(
                &args(&[
                    "reactbatch",
                    "run",
                    "my plan.yaml",
                    "--resume",
                    "old.csv",
                    "--report",
                    "it's.csv",
                    "--overwrite",
                    "--resume=x.csv",
                ]),
                "it's.csv"
            ),
            r#"reactbatch run 'my plan.yaml' --report "it's.csv" --resume "it's.csv""#
        );
    }
}
