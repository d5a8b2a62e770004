//! Ctrl-C / SIGTERM during a run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::executor::{self, Cancel, ExecConfig};
use crate::log::eprintln;

/// First SIGINT/SIGTERM: stop dispatching and let in-flight requests finish for a short grace
/// (then abandon them); the report and summary are still written. A second signal makes the
/// writer flush what it has and exit at once.
pub(super) async fn watch_signals(
    cancel: Cancel,
    out: executor::OutputSender,
    interrupted: Arc<AtomicBool>,
    quiet: bool,
) {
    let grace = ExecConfig::default().grace;
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reactbatch run: cannot watch for signals: {e}");
            return;
        }
    };
    signals.next().await;
    interrupted.store(true, Ordering::Relaxed);
    if !quiet {
        eprintln!(
            "reactbatch: interrupted; finishing requests in flight (Ctrl-C again to exit now)"
        );
    }
    cancel.cancel_soft();
    tokio::select! {
        _ = tokio::time::sleep(grace) => cancel.cancel_hard(),
        _ = signals.next() => {
            out.abort().await;
            return;
        }
    }
    signals.next().await;
    out.abort().await;
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
