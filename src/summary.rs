//! The end-of-run summary: counts by status, achieved rate per target, latency percentiles,
//! retries. Printed to stderr and, with `--summary-json`, written as JSON for monitors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Status;

/// Rates are shown only over at least this much time.
pub const MIN_RATE_SPAN_MS: u64 = 1000;

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
    /// What the plan does on this target, and the estimate for its lane.
    #[serde(flatten)]
    pub plan: crate::audit::TargetAudit,
}

/// One pace group's lane: the targets that share a pace, and what their provider's 429s did
/// to it.
#[derive(Debug, Serialize)]
pub struct LaneSummary {
    pub name: String,
    pub provider: String,
    /// Names of the targets in this pace group.
    pub targets: Vec<String>,
    /// Configured pace (the lowest of the members' rates, or `--rate`).
    pub rate: String,
    pub requests: u64,
    pub achieved_rate: Option<f64>,
    pub max_requests_in_1s: usize,
    /// Requests answered 429 (rate limited), with or without `Retry-After`.
    pub rate_limited: u64,
    /// 429s without `Retry-After` that slowed the lane (adaptive pace).
    pub slowdowns: u64,
    /// The slowest pace the lane was set to after a 429, requests per second; `null` if never.
    pub slowest_rate: Option<f64>,
    /// `Retry-After` pauses.
    pub pauses: u64,
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
    /// How long the live run takes at the lanes' pace (see [`crate::audit`]).
    pub estimated_ms: u64,
    pub targets: Vec<TargetSummary>,
    /// One per pace group.
    pub lanes: Vec<LaneSummary>,
    pub latency: Option<LatencySummary>,
    /// The plan digest (see `run --dry-run` and `--expect-digest`).
    pub digest: Option<String>,
    /// One digest per file of the plan (see [`crate::digest`]); give this file to
    /// `--expect-digest` and a mismatch names the files that changed.
    pub files: Vec<crate::digest::FileDigest>,
    pub interrupted: bool,
    pub exit_code: u8,
}

impl Summary {
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(status.as_str()).copied().unwrap_or(0)
    }

    /// The first line of [`Summary::render`] and where the report is: what `-q` prints when
    /// the run did not go well.
    pub fn headline(&self) -> String {
        let first = self.render().lines().next().unwrap_or_default().to_string();
        format!("{first} (report {})\n", self.report)
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
        // A rate over less than a second is noise ("2303 rows/s" for 4 rows): shown only once
        // the run lasted long enough to have one.
        let rate = if self.elapsed_ms >= MIN_RATE_SPAN_MS {
            format!(" ({:.1} rows/s)", self.rows_per_second)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "reactbatch: {} rows in {secs:.2}s{rate}: {}",
            self.rows,
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
                // A target whose rows name their accounts runs a lane per account: its
                // total is many limits, not one.
                let limit = match t.plan.lanes {
                    0 | 1 => format!("limit {}", t.rate),
                    n => format!("{n} lanes, limit {} each", t.rate),
                };
                let _ = writeln!(
                    s,
                    "  target {} ({}): {} requests, achieved {achieved}, busiest second {} ({limit})",
                    t.name, t.provider, t.requests, t.max_requests_in_1s
                );
                if let Some(why) = &t.stopped {
                    let _ = writeln!(s, "  {why}");
                }
            }
            for l in &self.lanes {
                if l.targets.len() < 2 && l.rate_limited == 0 {
                    continue;
                }
                let achieved = l
                    .achieved_rate
                    .map_or("-".to_string(), |r| format!("{r:.1}/s"));
                let _ = write!(
                    s,
                    "  pace group {} ({}: {}): {} requests, achieved {achieved}, busiest second {} (limit {})",
                    l.name,
                    l.provider,
                    if l.targets.len() > 10 {
                        format!("{} and {} more", l.targets[..10].join(", "), l.targets.len() - 10)
                    } else {
                        l.targets.join(", ")
                    },
                    l.requests,
                    l.max_requests_in_1s,
                    l.rate
                );
                if l.rate_limited > 0 {
                    let _ = write!(s, "; {} answered 429", l.rate_limited);
                    if let Some(slowest) = l.slowest_rate {
                        let _ = write!(
                            s,
                            ", slowed {} time(s), down to {slowest:.2}/s",
                            l.slowdowns
                        );
                    }
                    if l.pauses > 0 {
                        let _ = write!(s, ", paused {} time(s) for Retry-After", l.pauses);
                    }
                }
                s.push('\n');
            }
        }
        if let Some(d) = &self.digest {
            let _ = writeln!(s, "  plan digest {d}");
        }
        let _ = writeln!(s, "  report {}", self.report);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(elapsed_ms: u64, achieved: Option<f64>) -> Summary {
        Summary {
            plan: "p.yaml".into(),
            report: "r.csv".into(),
            dry_run: false,
            rows: 4,
            counts: [("ok", 4)].into_iter().collect(),
            attempts: 4,
            retries: 0,
            elapsed_ms,
            rows_per_second: 4.0 / (elapsed_ms as f64 / 1000.0),
            estimated_ms: 0,
            targets: vec![TargetSummary {
                name: "k".into(),
                provider: "kommo".into(),
                rate: "7/s".into(),
                requests: 4,
                achieved_rate: achieved,
                max_requests_in_1s: 4,
                stopped: None,
                plan: Default::default(),
            }],
            lanes: vec![],
            latency: None,
            digest: None,
            files: vec![],
            interrupted: false,
            exit_code: 0,
        }
    }

    #[test]
    fn rates_only_over_a_second_or_more() {
        let short = summary(2, None).render();
        assert!(
            short.starts_with("reactbatch: 4 rows in 0.00s: 4 ok\n"),
            "{short}"
        );
        assert!(short.contains("achieved -,"), "{short}");
        let long = summary(2000, Some(2.0)).render();
        assert!(
            long.starts_with("reactbatch: 4 rows in 2.00s (2.0 rows/s): 4 ok\n"),
            "{long}"
        );
        assert!(long.contains("achieved 2.0/s,"), "{long}");
        assert!(long.contains("busiest second 4 (limit 7/s)"), "{long}");
    }

    #[test]
    fn a_target_with_a_lane_per_account_shows_the_limit_per_lane() {
        let mut s = summary(2000, Some(2.0));
        s.targets[0].plan.lanes = 3;
        let text = s.render();
        assert!(
            text.contains("busiest second 4 (3 lanes, limit 7/s each)"),
            "{text}"
        );
    }
}
