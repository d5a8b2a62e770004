//! Ctrl-C / SIGTERM during a run (the signals themselves: [`crate::signals`]).

use std::sync::{Arc, OnceLock};

use crate::executor::{self, Cancel, ExecConfig};
use crate::signals::{Signals, Stop};

use super::config::RunConfig;

/// First SIGINT/SIGTERM: stop dispatching and let in-flight requests finish for a short grace
/// (then abandon them); the report and summary are still written, and `stopped` says which
/// signal it was (for the exit code). A second signal has the writer put what it has on disk,
/// then ends the process at once with the first signal's exit code: the one place a run exits
/// without returning, because waiting is exactly what the user asked us not to do.
pub(super) async fn watch_signals(
    cancel: Cancel,
    out: executor::OutputSender,
    stopped: Arc<OnceLock<Stop>>,
    next: String,
) {
    let grace = ExecConfig::default().grace;
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            crate::outputs::log::error(&format!("reactbatch run: cannot watch for signals: {e}"));
            return;
        }
    };
    let stop = signals.next().await;
    let _ = stopped.set(stop);
    crate::outputs::log::warn(&format!(
        "reactbatch: {}; finishing requests in flight{}",
        stop.describe(),
        stop.again_hint()
    ));
    cancel.cancel_soft();
    tokio::select! {
        _ = tokio::time::sleep(grace) => cancel.cancel_hard(),
        _ = signals.next() => exit_now(&out, stop, &next).await,
    }
    signals.next().await;
    exit_now(&out, stop, &next).await;
}

async fn exit_now(out: &executor::OutputSender, stop: Stop, next: &str) {
    out.flush_now().await;
    crate::outputs::log::error(&format!(
        "reactbatch: {}, then stopped at once; the report holds every finished row; {next}",
        stop.describe()
    ));
    std::process::exit(i32::from(crate::exit::Exit::from(stop).code()));
}

/// What to do after a run a signal stopped: `to continue: <the same command with --resume
/// REPORT>` (shell-quoted), or for a dry run `run it again: <the command>`.
pub(super) fn next_step(config: &RunConfig) -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if config.dry_run {
        let command =
            shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "));
        format!("run it again: {command}")
    } else {
        let report = config.report.display().to_string();
        format!(
            "to continue: {}",
            crate::signals::continue_command(&args, &report)
        )
    }
}
