//! Ctrl-C / SIGTERM during a run (the signals themselves: [`crate::signals`]).

use std::sync::{Arc, OnceLock};

use crate::executor::{self, Cancel, ExecConfig};
use crate::signals::{Signals, Stop};

/// First SIGINT/SIGTERM: stop dispatching and let in-flight requests finish for a short grace
/// (then abandon them); the report and summary are still written, and `stopped` says which
/// signal it was (for the exit code). A second signal has the writer put what it has on disk,
/// then ends the process at once with the first signal's exit code: the one place a run exits
/// without returning, because waiting is exactly what the user asked us not to do.
pub(super) async fn watch_signals(
    cancel: Cancel,
    out: executor::OutputSender,
    stopped: Arc<OnceLock<Stop>>,
) {
    let grace = ExecConfig::default().grace;
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            crate::log::error(&format!("reactbatch run: cannot watch for signals: {e}"));
            return;
        }
    };
    let stop = signals.next().await;
    let _ = stopped.set(stop);
    crate::log::warn(&format!(
        "reactbatch: {}; finishing requests in flight{}",
        stop.describe(),
        stop.again_hint()
    ));
    cancel.cancel_soft();
    tokio::select! {
        _ = tokio::time::sleep(grace) => cancel.cancel_hard(),
        _ = signals.next() => exit_now(&out, stop).await,
    }
    signals.next().await;
    exit_now(&out, stop).await;
}

async fn exit_now(out: &executor::OutputSender, stop: Stop) {
    out.flush_now().await;
    std::process::exit(i32::from(stop.exit().code()));
}
