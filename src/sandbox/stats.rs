//! Counters behind `GET /_sandbox/stats` and [`super::SandboxHandle::stats`]: requests by
//! provider, status and HTTP version, faults injected, connections (open now and at most at
//! once), current reactions. Lock-free atomics on the hot path; a [`Stats`] value is a
//! snapshot built on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::plan::ProviderKind;

/// Who a request was for: one of the two providers, or neither (an unknown path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Kommo,
    Ogmma,
    Other,
}

impl Route {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Route::Kommo => "kommo",
            Route::Ogmma => "ogmma",
            Route::Other => "other",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

impl From<ProviderKind> for Route {
    fn from(p: ProviderKind) -> Route {
        match p {
            ProviderKind::Kommo => Route::Kommo,
            ProviderKind::Ogmma => Route::Ogmma,
        }
    }
}

const ROUTES: [Route; 3] = [Route::Kommo, Route::Ogmma, Route::Other];
/// Every status the sandbox answers with; anything else lands in the last slot.
const STATUSES: [u16; 11] = [200, 400, 401, 403, 404, 405, 413, 429, 500, 502, 503];
const SLOTS: usize = STATUSES.len() + 1;

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len())
}

/// The HTTP versions the sandbox serves, as their counts are named.
const VERSIONS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];

fn version_slot(version: hyper::Version) -> Option<usize> {
    match version {
        hyper::Version::HTTP_10 => Some(0),
        hyper::Version::HTTP_11 => Some(1),
        hyper::Version::HTTP_2 => Some(2),
        _ => None,
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    by_status: [[AtomicU64; SLOTS]; 3],
    by_version: [AtomicU64; VERSIONS.len()],
    connections: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    dropped: [AtomicU64; 3],
    server_errors: AtomicU64,
    delayed: AtomicU64,
    not_found: AtomicU64,
    rate_limited: AtomicU64,
}

impl Counters {
    pub(crate) fn answered(&self, route: Route, status: u16) {
        self.by_status[route.index()][status_slot(status)].fetch_add(1, Relaxed);
    }
    /// A request arrived over `version` (control endpoints included: they share the
    /// connections).
    pub(crate) fn version(&self, version: hyper::Version) {
        if let Some(slot) = version_slot(version) {
            self.by_version[slot].fetch_add(1, Relaxed);
        }
    }
    /// A connection was accepted; it is open until [`Counters::closed`].
    pub(crate) fn opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(now, Relaxed);
    }
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn dropped(&self, route: Route) {
        self.dropped[route.index()].fetch_add(1, Relaxed);
    }
    pub(crate) fn server_error(&self) {
        self.server_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn delayed(&self) {
        self.delayed.fetch_add(1, Relaxed);
    }
    pub(crate) fn not_found(&self) {
        self.not_found.fetch_add(1, Relaxed);
    }
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, reactions: usize) -> Stats {
        let mut stats = Stats {
            reactions,
            faults: FaultStats {
                server_errors: self.server_errors.load(Relaxed),
                dropped: self.dropped.iter().map(|d| d.load(Relaxed)).sum(),
                delayed: self.delayed.load(Relaxed),
                not_found: self.not_found.load(Relaxed),
            },
            rate_limited: self.rate_limited.load(Relaxed),
            connections: ConnectionStats {
                accepted: self.connections.load(Relaxed),
                open: self.open.load(Relaxed),
                peak_open: self.peak_open.load(Relaxed),
            },
            ..Stats::default()
        };
        for (name, counter) in VERSIONS.iter().zip(&self.by_version) {
            let n = counter.load(Relaxed);
            if n > 0 {
                stats.by_version.insert((*name).to_string(), n);
            }
        }
        for route in ROUTES {
            let mut p = ProviderStats {
                dropped: self.dropped[route.index()].load(Relaxed),
                ..ProviderStats::default()
            };
            for (slot, counter) in self.by_status[route.index()].iter().enumerate() {
                let n = counter.load(Relaxed);
                if n > 0 {
                    let key = STATUSES
                        .get(slot)
                        .map_or_else(|| "other".to_string(), u16::to_string);
                    p.by_status.insert(key, n);
                    p.requests += n;
                }
            }
            p.requests += p.dropped;
            stats.requests += p.requests;
            if p.requests > 0 || route != Route::Other {
                stats.by_provider.insert(route.as_str().to_string(), p);
            }
        }
        stats
    }
}

/// A snapshot of the sandbox's counters (`GET /_sandbox/stats`).
///
/// ```json
/// {"requests":12,"by_provider":{"kommo":{"requests":10,"by_status":{"200":9,"403":1},"dropped":0},
///  "ogmma":{"requests":2,"by_status":{"429":1},"dropped":1}},"rate_limited":1,
///  "faults":{"server_errors":0,"dropped":1,"delayed":0,"not_found":0},"reactions":9,
///  "by_version":{"HTTP/1.1":12},"connections":{"accepted":2,"open":1,"peak_open":2}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every request to a provider path or an unknown path (not the `/_sandbox/` endpoints),
    /// answered or dropped.
    pub requests: u64,
    /// `kommo`, `ogmma`, and `other` (unknown paths) when there were any.
    pub by_provider: BTreeMap<String, ProviderStats>,
    /// Requests answered 429.
    pub rate_limited: u64,
    pub faults: FaultStats,
    /// Reactions currently set, over both providers.
    pub reactions: usize,
    /// Requests (the `/_sandbox/` endpoints included) by HTTP version: `HTTP/1.0`,
    /// `HTTP/1.1`, `HTTP/2`; only versions that occurred.
    #[serde(default)]
    pub by_version: BTreeMap<String, u64>,
    #[serde(default)]
    pub connections: ConnectionStats,
}

/// Client connections (TCP, TLS included once accepted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Accepted since the start.
    pub accepted: u64,
    /// Open now.
    pub open: u64,
    /// The most that were open at once.
    pub peak_open: u64,
}

impl Stats {
    /// Requests to `provider` answered with `status` (0 when none).
    pub fn count(&self, provider: ProviderKind, status: u16) -> u64 {
        self.by_provider
            .get(provider.as_str())
            .and_then(|p| p.by_status.get(&status.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// Answered plus dropped.
    pub requests: u64,
    /// Status code (as a string, for JSON) → count; only statuses that occurred.
    pub by_status: BTreeMap<String, u64>,
    /// Connections closed without an answer.
    pub dropped: u64,
}

/// Faults injected so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// Injected 500/502/503 answers.
    pub server_errors: u64,
    /// Connections closed without an answer.
    pub dropped: u64,
    /// Requests that waited the configured latency.
    pub delayed: u64,
    /// 404s from the not-found prefix.
    pub not_found: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_by_provider_and_status() {
        let c = Counters::default();
        c.answered(Route::Kommo, 200);
        c.answered(Route::Kommo, 200);
        c.answered(Route::Ogmma, 429);
        c.rate_limited();
        c.dropped(Route::Ogmma);
        c.answered(Route::Other, 404);
        let s = c.snapshot(2);
        assert_eq!(s.requests, 5);
        assert_eq!(s.count(ProviderKind::Kommo, 200), 2);
        assert_eq!(s.count(ProviderKind::Ogmma, 429), 1);
        assert_eq!(s.by_provider["ogmma"].requests, 2);
        assert_eq!(s.faults.dropped, 1);
        assert_eq!(s.by_provider["other"].by_status["404"], 1);
        assert_eq!(s.reactions, 2);
        assert!(s.by_version.is_empty());
    }

    #[test]
    fn connections_count_the_peak_open_at_once_and_versions_by_name() {
        let c = Counters::default();
        c.opened();
        c.opened();
        c.closed();
        c.opened();
        c.closed();
        c.version(hyper::Version::HTTP_2);
        c.version(hyper::Version::HTTP_11);
        c.version(hyper::Version::HTTP_2);
        let s = c.snapshot(0);
        assert_eq!(
            s.connections,
            ConnectionStats {
                accepted: 3,
                open: 1,
                peak_open: 2
            }
        );
        assert_eq!(s.by_version["HTTP/2"], 2);
        assert_eq!(s.by_version["HTTP/1.1"], 1);
        c.closed();
        assert_eq!(c.snapshot(0).connections.open, 0);
    }
}
