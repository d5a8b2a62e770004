//! The end-of-run summary: counts by status, achieved rate per target, latency percentiles,
//! retries. Printed to stderr and, with `--summary-json`, written as JSON for monitors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Status;

#[derive(Debug, Serialize)]
pub struct TargetSummary {
    pub name: String,
    pub provider: String,
    /// Configured pace, e.g. `7/s` or `unlimited`.
    pub rate: String,
    /// Requests put on the wire (attempts, retries included).
    pub requests: u64,
    /// Requests per second between the first and the last send.
    pub achieved_rate: Option<f64>,
    /// The most requests sent within any one-second window.
    pub max_requests_in_1s: usize,
    /// Why the target was stopped (authentication failures), if it was.
    pub stopped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// How many sent rows the percentiles cover (the last attempt of each).
    pub samples: u64,
}

/// The JSON document of `--summary-json`; its fields are documented in `docs/summary-schema.md`
/// (a test keeps the two in step).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub plan: String,
    pub report: String,
    pub dry_run: bool,
    pub rows: u64,
    pub counts: BTreeMap<&'static str, u64>,
    pub attempts: u64,
    pub retries: u64,
    pub elapsed_ms: u64,
    pub rows_per_second: f64,
    pub targets: Vec<TargetSummary>,
    pub latency: Option<LatencySummary>,
    /// The plan digest (see `run --dry-run` and `--expect-digest`).
    pub digest: Option<String>,
    pub interrupted: bool,
    pub exit_code: u8,
}

impl Summary {
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(status.as_str()).copied().unwrap_or(0)
    }

    /// Human-readable lines for stderr.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let counts: Vec<String> = Status::ALL
            .iter()
            .filter(|st| self.count(**st) > 0)
            .map(|st| format!("{} {}", self.count(*st), st))
            .collect();
        let secs = self.elapsed_ms as f64 / 1000.0;
        let _ = writeln!(
            s,
            "reactbatch: {} rows in {secs:.2}s ({:.1} rows/s): {}",
            self.rows,
            self.rows_per_second,
            if counts.is_empty() {
                "nothing to do".to_string()
            } else {
                counts.join(", ")
            }
        );
        if !self.dry_run {
            let _ = write!(s, "  requests {} (retries {})", self.attempts, self.retries);
            if let Some(l) = &self.latency {
                let _ = write!(
                    s,
                    ", latency p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
                    l.p50_ms, l.p95_ms, l.max_ms
                );
            }
            s.push('\n');
            for t in &self.targets {
                let achieved = t
                    .achieved_rate
                    .map_or("-".to_string(), |r| format!("{r:.1}/s"));
                let _ = writeln!(
                    s,
                    "  target {} ({}): {} requests, achieved {achieved}, busiest second {} (limit {})",
                    t.name, t.provider, t.requests, t.max_requests_in_1s, t.rate
                );
                if let Some(why) = &t.stopped {
                    let _ = writeln!(s, "  {why}");
                }
            }
        }
        if let Some(d) = &self.digest {
            let _ = writeln!(s, "  plan digest {d}");
        }
        let _ = writeln!(s, "  report {}", self.report);
        s
    }
}
