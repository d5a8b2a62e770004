//! The optional JSON-lines request log: one line per request (time, arrival time in µs,
//! provider, method, HTTP version, path, status, outcome, message id, latency). It never holds a secret, a
//! signature or a body.
//! Lines go through a channel to one writer task, so request handlers never wait on the disk;
//! the writer flushes whenever the channel runs dry, so `tail -f` follows along.

use std::path::Path;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Serialize)]
pub(crate) struct LogLine {
    /// RFC 3339 UTC, milliseconds, when the answer was sent.
    pub(crate) time: String,
    /// When the request arrived, in microseconds since the Unix epoch: precise enough to count
    /// requests in 100 ms windows (`scripts/bench` checks the client's pacing with it).
    pub(crate) arrived_us: i64,
    /// `kommo`, `ogmma` or `other`.
    pub(crate) provider: &'static str,
    pub(crate) method: String,
    /// `HTTP/1.1`, `HTTP/2`, ...: what the client and the sandbox agreed on.
    pub(crate) version: &'static str,
    pub(crate) path: String,
    /// `null` when the connection was dropped without an answer.
    pub(crate) status: Option<u16>,
    /// `ok`, an error name (`invalid_signature`, `rate_limit_exceeded`, ...) or `dropped`.
    pub(crate) outcome: &'static str,
    pub(crate) message_id: Option<String>,
    /// The request's `Accept` and `User-Agent` headers, when sent (what a client asked back,
    /// and who it was; neither holds a secret).
    pub(crate) accept: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) latency_ms: f64,
}

pub(crate) struct RequestLog {
    tx: mpsc::UnboundedSender<String>,
}

/// The writer task; [`LogWriter::finish`] writes what is queued and flushes.
pub(crate) struct LogWriter {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl LogWriter {
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl RequestLog {
    /// Creates (truncates) the file and starts the writer task.
    pub(crate) async fn open(path: &Path) -> std::io::Result<(RequestLog, LogWriter)> {
        let file = tokio::fs::File::create(path).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            let mut healthy = true;
            loop {
                let first = tokio::select! {
                    line = rx.recv() => line,
                    _ = &mut stopped => None,
                };
                let done = first.is_none();
                let mut batch: Vec<String> = first.into_iter().collect();
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                for line in batch {
                    healthy &= out.write_all(line.as_bytes()).await.is_ok();
                }
                healthy &= out.flush().await.is_ok();
                if !healthy {
                    eprintln!("reactbatch sandbox: cannot write the request log; stopping it");
                    return;
                }
                if done {
                    return;
                }
            }
        });
        Ok((RequestLog { tx }, LogWriter { task, stop }))
    }

    pub(crate) fn write(&self, line: &LogLine) {
        if let Ok(mut text) = serde_json::to_string(line) {
            text.push('\n');
            // The writer is gone only after a write error, which it already reported.
            let _ = self.tx.send(text);
        }
    }
}
