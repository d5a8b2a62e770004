//! A target while a run goes on ([`TargetRuntime`]): its credential, its lane, its
//! authentication health, its origin's reachability ([`OriginHealth`]); and [`SendLog`], the
//! send counts and windows that targets and lanes report in the summary.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::Instant;

use crate::plan::{Rate, Target};
use crate::provider::{Endpoint, Signer};
use crate::secret::Secret;

/// 401/403 answers in a row (no success between) after which a target is stopped.
pub(crate) const AUTH_FAILURES_TO_STOP: u32 = 3;

/// Failures in a row to establish a connection to one origin (no connection made between)
/// after which the origin's targets are stopped.
pub(crate) const UNREACHABLE_TO_STOP: u32 = 10;

/// One origin (`host:port`) of the run's targets, shared by every target there: its failures
/// in a row to establish a connection (refused, DNS, connect timeout, TLS handshake), and
/// why it was given up once it was. A reset or a 5xx on a connection that was made does not
/// count: the origin is there.
#[derive(Debug, Default)]
pub(crate) struct OriginHealth {
    /// `host:port`.
    pub name: String,
    failures: AtomicU32,
    stopped: AtomicBool,
    reason: OnceLock<String>,
}

impl OriginHealth {
    pub(crate) fn new(name: String) -> OriginHealth {
        OriginHealth {
            name,
            ..OriginHealth::default()
        }
    }

    /// Why the origin was given up (naming it and the last cause), if it was.
    pub(crate) fn unreachable(&self) -> Option<&str> {
        if self.stopped.load(Ordering::Acquire) {
            self.reason.get().map(String::as_str)
        } else {
            None
        }
    }

    /// A connection was made (an answer came, or an established connection dropped).
    pub(super) fn connected(&self) {
        // Read first: most answers find it at zero, and a store would bounce the cache line
        // between the senders of every lane on this origin.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A failure to establish a connection, `cause` in one line; stops the origin at the
    /// [`UNREACHABLE_TO_STOP`]th in a row.
    pub(super) fn failed(&self, cause: &str) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= UNREACHABLE_TO_STOP && !self.stopped.load(Ordering::Acquire) {
            let _ = self.reason.set(format!(
                "origin {} unreachable: {n} attempts in a row to connect failed (last: {cause}); \
                 its targets were stopped",
                self.name
            ));
            self.stopped.store(true, Ordering::Release);
        }
    }
}

/// The `host:port` a base URL's connections go to (empty for a URL without one).
pub(crate) fn origin_of(base_url: &str) -> String {
    url::Url::parse(base_url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_default()
}

/// A target while a run goes on: its credential, lane and authentication health.
pub(crate) struct TargetRuntime {
    pub spec: Target,
    /// The path and URL every request to it shares, made once.
    pub endpoint: Endpoint,
    /// The credential, ready to sign (the HMAC key state made once).
    pub signer: Signer,
    /// The target's own rate (its lane may run slower: the lowest of its members').
    pub rate: Rate,
    /// Index of its lane in [`RunContext::lanes`].
    pub lane: usize,
    auth_failures: AtomicU32,
    stopped: AtomicBool,
    stop_reason: OnceLock<String>,
    /// Shared with its lane when it is the lane's only member.
    pub(crate) sends: Arc<SendLog>,
    /// Its origin's health, shared with every target there (see `RunContext::new`).
    pub(crate) origin: Arc<OriginHealth>,
}

/// When requests went out: how many, first, last, and the busiest one-second window.
#[derive(Debug, Default)]
pub(crate) struct SendLog {
    sent: AtomicU64,
    inner: Mutex<SendWindow>,
}

#[derive(Debug, Default)]
struct SendWindow {
    first: Option<Instant>,
    last: Option<Instant>,
    /// Sends within the last second, in microseconds since `first`; never longer than what
    /// one second holds. Eight bytes a send, not an `Instant`'s sixteen: at tens of
    /// thousands of requests a second this is one of the run's largest buffers.
    window: VecDeque<u64>,
    max_in_1s: usize,
}

/// One second in the window's unit.
const SECOND_US: u64 = 1_000_000;

impl SendLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, SendWindow> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, at: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut log = self.lock();
        let first = *log.first.get_or_insert(at);
        log.last = Some(at);
        let now =
            u64::try_from(at.saturating_duration_since(first).as_micros()).unwrap_or(u64::MAX);
        while log
            .window
            .front()
            // Saturating: a send recorded a moment after a later one (two senders racing for
            // the lock) is a few microseconds "ahead", not a second old.
            .is_some_and(|&t| now.saturating_sub(t) >= SECOND_US)
        {
            log.window.pop_front();
        }
        log.window.push_back(now);
        log.max_in_1s = log.max_in_1s.max(log.window.len());
    }

    pub(crate) fn count(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Achieved send rate (attempts/s) between the first and last send.
    pub(crate) fn achieved_rate(&self) -> Option<f64> {
        let log = self.lock();
        let (first, last) = (log.first?, log.last?);
        let n = self.count();
        let secs = (last - first).as_secs_f64();
        // Over less than a second a rate is noise ("2303/s" for 4 requests).
        (n > 1 && secs >= crate::outputs::summary::MIN_RATE_SPAN_MS as f64 / 1000.0)
            .then(|| (n - 1) as f64 / secs)
    }

    /// The most requests sent within any one-second window.
    pub(crate) fn max_in_1s(&self) -> usize {
        self.lock().max_in_1s
    }
}

impl TargetRuntime {
    pub(crate) fn new(spec: Target, secret: Secret, rate: Rate) -> TargetRuntime {
        let spec_base_url = spec.base_url.clone();
        TargetRuntime {
            endpoint: Endpoint::new(&spec),
            signer: Signer::new(&secret),
            spec,
            rate,
            lane: 0,
            auth_failures: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
            stop_reason: OnceLock::new(),
            sends: Arc::default(),
            origin: Arc::new(OriginHealth::new(origin_of(&spec_base_url))),
        }
    }

    /// Why this target was stopped (authentication, or its origin unreachable), if it was.
    pub(crate) fn stopped(&self) -> Option<&str> {
        self.auth_stopped().or_else(|| self.origin.unreachable())
    }

    /// Why this target was stopped on authentication failures, if it was.
    pub(crate) fn auth_stopped(&self) -> Option<&str> {
        if self.stopped.load(Ordering::Acquire) {
            self.stop_reason.get().map(String::as_str)
        } else {
            None
        }
    }

    /// Its origin's health (shared with the other targets there).
    pub(crate) fn origin(&self) -> &OriginHealth {
        &self.origin
    }

    /// The code of its rows not sent because it was stopped.
    pub(super) fn stop_code(&self) -> &'static str {
        if self.auth_stopped().is_some() {
            "auth_stopped"
        } else {
            "unreachable"
        }
    }

    /// Attempts put on the wire.
    pub(crate) fn requests(&self) -> u64 {
        self.sends.count()
    }

    /// Achieved send rate (attempts/s) between the first and last send.
    pub(crate) fn achieved_rate(&self) -> Option<f64> {
        self.sends.achieved_rate()
    }

    /// The most requests this target sent within any one-second window.
    pub(crate) fn max_sent_in_1s(&self) -> usize {
        self.sends.max_in_1s()
    }

    pub(super) fn record_auth(&self, failed: bool, status: u16, code: &str) {
        if !failed {
            self.auth_failures.store(0, Ordering::Relaxed);
            return;
        }
        let n = self.auth_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= AUTH_FAILURES_TO_STOP {
            let _ = self.stop_reason.set(format!(
                "target {} stopped after {n} authentication failures in a row (last: HTTP {status} {code})",
                self.spec.name
            ));
            self.stopped.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn busiest_second_counts_sends_less_than_a_second_apart() {
        let log = SendLog::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for ms in [0, 500, 900, 999] {
            log.record(at(ms));
        }
        assert_eq!(log.max_in_1s(), 4);
        // 1 000 ms after the first: the first is a second old and leaves the window.
        log.record(at(1000));
        assert_eq!(log.max_in_1s(), 4);
        // Recorded after a later send (senders racing for the lock): still in the window,
        // and it pushes nothing out.
        log.record(at(1200));
        log.record(at(1199));
        assert_eq!(log.max_in_1s(), 6, "500, 900, 999, 1000, 1200 and 1199");
        // After an hour's pause the window starts again from one send.
        for ms in [3_600_000, 3_600_001] {
            log.record(at(ms));
        }
        assert_eq!(log.max_in_1s(), 6);
        assert_eq!(log.count(), 9);
        let rate = log.achieved_rate().expect("sends over an hour");
        assert!((rate - 8.0 / 3600.001).abs() < 1e-9, "{rate}");
    }
}
