//! Two-stage cancellation. `soft`: stop dispatching and start no new attempt (Ctrl-C);
//! `hard`: abandon attempts in flight (the grace period ran out). Rows stopped either way are
//! reported `cancelled`.

use std::future::Future;
use std::task::Poll;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Running,
    Soft,
    Hard,
}

#[derive(Clone, Debug)]
pub(crate) struct Cancel {
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
    pub(crate) fn new() -> Cancel {
        Cancel::default()
    }

    pub(crate) fn cancel_soft(&self) {
        self.tx.send_if_modified(|l| raise(l, Level::Soft));
    }

    pub(crate) fn cancel_hard(&self) {
        self.tx.send_if_modified(|l| raise(l, Level::Hard));
    }

    pub(crate) fn is_soft(&self) -> bool {
        *self.rx.borrow() >= Level::Soft
    }

    /// Resolves once a soft (or hard) cancel was requested.
    pub(crate) async fn soft(&self) {
        let mut rx = self.rx.clone();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|l| *l >= Level::Soft).await;
    }

    /// Resolves once a hard cancel was requested, for one waiter to keep across many waits (a
    /// sender, across its attempts): it registers with the channel once, not once per wait,
    /// and once a hard cancel came it is ready every time it is polled (the level never goes
    /// down).
    pub(crate) fn hard_watch(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        let mut wait = Box::pin(async move {
            let _ = rx.wait_for(|l| *l >= Level::Hard).await;
        });
        let mut fired = false;
        std::future::poll_fn(move |cx| {
            fired = fired || wait.as_mut().poll(cx).is_ready();
            if fired {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
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
