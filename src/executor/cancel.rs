//! Two-stage cancellation. `soft`: stop dispatching and start no new attempt (Ctrl-C);
//! `hard`: abandon attempts in flight (the grace period ran out). Rows stopped either way are
//! reported `cancelled`.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Running,
    Soft,
    Hard,
}

#[derive(Clone, Debug)]
pub struct Cancel {
    tx: watch::Sender<Level>,
    rx: watch::Receiver<Level>,
}

impl Default for Cancel {
    fn default() -> Self {
        let (tx, rx) = watch::channel(Level::Running);
        Cancel { tx, rx }
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel_soft(&self) {
        self.tx.send_if_modified(|l| raise(l, Level::Soft));
    }

    pub fn cancel_hard(&self) {
        self.tx.send_if_modified(|l| raise(l, Level::Hard));
    }

    pub fn is_soft(&self) -> bool {
        *self.rx.borrow() >= Level::Soft
    }

    /// Resolves once a soft (or hard) cancel was requested.
    pub async fn soft(&self) {
        let mut rx = self.rx.clone();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|l| *l >= Level::Soft).await;
    }

    /// Resolves once a hard cancel was requested.
    pub async fn hard(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|l| *l >= Level::Hard).await;
    }
}

fn raise(level: &mut Level, to: Level) -> bool {
    if *level < to {
        *level = to;
        true
    } else {
        false
    }
}
