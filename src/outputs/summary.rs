//! The end-of-run summary: counts by status, achieved rate per target, latency percentiles,
//! retries. Printed to stderr and, with `--summary-json`, written as JSON for monitors.
//!
//! On stderr, a run of a few lanes gets a line per target (and per shared or limited lane);
//! beyond [`LISTED_LANES`] lanes or targets, a thousand-account run would print a thousand
//! lines, so the lanes are aggregated in a bounded number of lines: how many, the range of
//! their achieved rates, the slowest by name, each lane with failures, 429s or a stopped
//! target by name (up to [`NAMED_LANES`]), and how many more. The JSON keeps every lane.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::outputs::report::Status;

/// Rates are shown only over at least this much time.
pub const MIN_RATE_SPAN_MS: u64 = 1000;

/// Lanes (or targets) listed one a line on stderr, at most; beyond, they are aggregated.
pub const LISTED_LANES: usize = 10;

/// Lanes named for their failures, 429s or stopped targets in the aggregated summary, at most.
pub const NAMED_LANES: usize = 5;

/// The slowest lanes named in the aggregated summary.
pub const SLOWEST_LANES: usize = 3;

/// `1 request`, `2 requests`.
fn requests(n: u64) -> String {
    format!("{n} request{}", if n == 1 { "" } else { "s" })
}

/// The achieved rate as the summary line shows it; without one, why there is none.
fn achieved(rate: Option<f64>, requests: u64) -> String {
    match rate {
        Some(r) => format!("achieved {r:.1}/s"),
        None if requests == 0 => "no rate (nothing sent)".to_string(),
        None => "no rate (sent over less than 1 s)".to_string(),
    }
}

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
    pub plan: crate::outputs::audit::TargetAudit,
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
    /// The pace the lane settled at after 429s (requests per second at the end); `null` if
    /// no 429 without `Retry-After` slowed it.
    pub settled_rate: Option<f64>,
    /// Rows of the lane that failed.
    pub failed: u64,
    /// Its sends, 429s, retries and latency over time; `null` when it sent nothing.
    pub series: Option<crate::outputs::series::Series>,
}

/// What the lanes to one host add up to, and its ceiling (the executor's `host` ceilings).
#[derive(Debug, Serialize)]
pub struct HostSummary {
    /// `amojo.kommo.com`, `127.0.0.1:8080`.
    pub host: String,
    pub base_url: String,
    /// Lanes sending to it.
    pub lanes: usize,
    /// The sum of their paces, requests per second; `null` when one is unlimited.
    pub rate_sum: Option<f64>,
    /// The host's ceiling, e.g. `50/s`; `null` when it has none.
    pub ceiling: Option<String>,
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
    /// Rows of the `--resume` report that match no row of the plan, kept after the plan's
    /// rows with code `not_in_plan` (counted apart: not in `rows` nor `counts`).
    pub not_in_plan: u64,
    pub counts: BTreeMap<&'static str, u64>,
    pub attempts: u64,
    pub retries: u64,
    pub elapsed_ms: u64,
    pub rows_per_second: f64,
    /// How long the live run takes at the lanes' pace (see [`crate::outputs::audit`]).
    pub estimated_ms: u64,
    pub targets: Vec<TargetSummary>,
    /// One per pace group.
    pub lanes: Vec<LaneSummary>,
    /// One per host the plan's targets send to.
    pub hosts: Vec<HostSummary>,
    pub latency: Option<LatencySummary>,
    /// The plan digest (see `run --dry-run` and `--expect-digest`).
    pub digest: Option<String>,
    /// One digest per file of the plan (see [`crate::digest`]); give this file to
    /// `--expect-digest` and a mismatch names the files that changed.
    pub files: Vec<crate::digest::FileDigest>,
    pub interrupted: bool,
    /// Rows sent whose outcome the report could not take (a write error): listed on stderr,
    /// in none of `counts`.
    pub not_recorded: u64,
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
        if self.not_in_plan > 0 {
            let _ = writeln!(
                s,
                "  {} earlier row(s) of the resumed report match no row of the plan: kept in the report (code not_in_plan), not sent",
                self.not_in_plan
            );
        }
        if !self.dry_run {
            let _ = write!(
                s,
                "  {} (retries {})",
                requests(self.attempts),
                self.retries
            );
            if let Some(l) = &self.latency {
                let _ = write!(
                    s,
                    ", latency p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
                    l.p50_ms, l.p95_ms, l.max_ms
                );
            }
            s.push('\n');
            if self.lanes.len() > LISTED_LANES || self.targets.len() > LISTED_LANES {
                self.render_lanes_aggregated(&mut s);
            } else {
                self.render_each_lane(&mut s);
            }
        }
        if let Some(d) = &self.digest {
            let _ = writeln!(s, "  plan digest {d}");
        }
        let _ = writeln!(s, "  report {}", self.report);
        s
    }

    /// A line per target, and per lane that is shared or was answered 429.
    fn render_each_lane(&self, s: &mut String) {
        for t in &self.targets {
            // A target whose rows name their accounts runs a lane per account: its
            // total is many limits, not one.
            let limit = match t.plan.lanes {
                0 | 1 => format!("limit {}", t.rate),
                n => format!("{n} lanes, limit {} each", t.rate),
            };
            let _ = writeln!(
                s,
                "  target {} ({}): {}, {}, busiest second {} ({limit})",
                t.name,
                t.provider,
                requests(t.requests),
                achieved(t.achieved_rate, t.requests),
                t.max_requests_in_1s,
            );
            if let Some(why) = &t.stopped {
                let _ = writeln!(s, "  {why}");
            }
        }
        for l in &self.lanes {
            if l.targets.len() < 2 && l.rate_limited == 0 {
                continue;
            }
            let _ = write!(
                s,
                "  pace group {} ({}: {}): {}, {}, busiest second {} (limit {})",
                l.name,
                l.provider,
                if l.targets.len() > 10 {
                    format!(
                        "{} and {} more",
                        l.targets[..10].join(", "),
                        l.targets.len() - 10
                    )
                } else {
                    l.targets.join(", ")
                },
                requests(l.requests),
                achieved(l.achieved_rate, l.requests),
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
                if let Some(settled) = l.settled_rate {
                    let _ = write!(s, ", settled at {settled:.2}/s");
                }
                if l.pauses > 0 {
                    let _ = write!(s, ", paused {} time(s) for Retry-After", l.pauses);
                }
            }
            s.push('\n');
        }
    }

    /// Many lanes in a bounded number of lines (see the module's notes): the whole, the
    /// slowest, the troubled by name, how many more, and why a target stopped.
    fn render_lanes_aggregated(&self, s: &mut String) {
        let rated: Vec<(&LaneSummary, f64)> = self
            .lanes
            .iter()
            .filter_map(|l| l.achieved_rate.map(|r| (l, r)))
            .collect();
        self.render_lanes_overall(s, &rated);
        render_slowest_lanes(s, &rated);
        let stopped: Vec<&TargetSummary> = self
            .targets
            .iter()
            .filter(|t| t.stopped.is_some())
            .collect();
        let troubled: Vec<&LaneSummary> = self
            .lanes
            .iter()
            .filter(|l| {
                l.failed > 0
                    || l.rate_limited > 0
                    || stopped.iter().any(|t| l.targets.contains(&t.name))
            })
            .collect();
        for l in troubled.iter().take(NAMED_LANES) {
            render_troubled_lane(s, l, &stopped);
        }
        self.render_lanes_not_named(s, troubled.len());
        render_stopped_targets(s, &stopped);
    }

    /// The aggregate's first line: how many lanes and targets, their requests, the range of
    /// the achieved rates (`rated`, the lanes that have one) and the distinct limits.
    fn render_lanes_overall(&self, s: &mut String, rated: &[(&LaneSummary, f64)]) {
        let mut limits: Vec<&str> = Vec::new();
        for l in &self.lanes {
            if !limits.contains(&l.rate.as_str()) {
                limits.push(&l.rate);
            }
        }
        let limits = if limits.len() > 3 {
            format!("{} and {} more", limits[..3].join(", "), limits.len() - 3)
        } else {
            limits.join(", ")
        };
        let targets = match self.targets.len() {
            1 => "1 target".to_string(),
            n => format!("{n} targets"),
        };
        let _ = write!(
            s,
            "  {} lanes ({targets}), {}",
            self.lanes.len(),
            requests(self.lanes.iter().map(|l| l.requests).sum::<u64>())
        );
        let lowest = rated.iter().map(|(_, r)| *r).fold(f64::INFINITY, f64::min);
        let highest = rated.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        if rated.is_empty() {
            let _ = writeln!(s, "; limits {limits}");
        } else {
            let _ = writeln!(
                s,
                "; achieved {lowest:.1}/s to {highest:.1}/s over {} lanes (limits {limits})",
                rated.len()
            );
        }
    }

    /// The line that counts the lanes not named: troubled ones beyond [`NAMED_LANES`], and
    /// the quiet ones (or that no lane had trouble).
    fn render_lanes_not_named(&self, s: &mut String, troubled: usize) {
        let unnamed_troubled = troubled.saturating_sub(NAMED_LANES);
        let quiet = self.lanes.len() - troubled;
        let mut more = Vec::new();
        if unnamed_troubled > 0 {
            more.push(format!(
                "{unnamed_troubled} more lane(s) with failures, 429s or a stopped target"
            ));
        }
        if troubled == 0 {
            more.push("no lane with failures or 429s".to_string());
        } else if quiet > 0 {
            more.push(format!("{quiet} more lane(s) without failures or 429s"));
        }
        if !more.is_empty() {
            let and = if troubled == 0 { "" } else { "and " };
            let _ = writeln!(
                s,
                "  {and}{} (every lane in --summary-json)",
                more.join(", ")
            );
        }
    }
}

/// The [`SLOWEST_LANES`] slowest of the `rated` lanes by name, when there are more than that.
fn render_slowest_lanes(s: &mut String, rated: &[(&LaneSummary, f64)]) {
    if rated.len() <= SLOWEST_LANES {
        return;
    }
    let mut slowest = rated.to_vec();
    slowest.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.name.cmp(&b.0.name)));
    let named: Vec<String> = slowest
        .iter()
        .take(SLOWEST_LANES)
        .map(|(l, r)| format!("{} {r:.1}/s (limit {})", l.name, l.rate))
        .collect();
    let _ = writeln!(s, "  slowest: {}", named.join(", "));
}

/// A lane with failures, 429s or a stopped target (one of `stopped`), on its own line.
fn render_troubled_lane(s: &mut String, l: &LaneSummary, stopped: &[&TargetSummary]) {
    let _ = write!(
        s,
        "  lane {} ({}): {}, {} (limit {})",
        l.name,
        l.provider,
        requests(l.requests),
        achieved(l.achieved_rate, l.requests),
        l.rate
    );
    if l.failed > 0 {
        let _ = write!(s, "; {} failed", l.failed);
    }
    if l.rate_limited > 0 {
        let _ = write!(s, "; {} answered 429", l.rate_limited);
        if let Some(slowest) = l.slowest_rate {
            let _ = write!(s, ", slowed down to {slowest:.2}/s");
        }
    }
    if let Some(t) = stopped.iter().find(|t| l.targets.contains(&t.name)) {
        let _ = write!(s, "; target {} stopped", t.name);
    }
    s.push('\n');
}

/// Why the first stopped target stopped, and how many more did.
fn render_stopped_targets(s: &mut String, stopped: &[&TargetSummary]) {
    if let Some(t) = stopped.first() {
        if let Some(why) = &t.stopped {
            let _ = writeln!(s, "  {why}");
        }
        if stopped.len() > 1 {
            let _ = writeln!(s, "  and {} more stopped target(s)", stopped.len() - 1);
        }
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
            not_in_plan: 0,
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
            hosts: vec![],
            latency: None,
            digest: None,
            files: vec![],
            interrupted: false,
            not_recorded: 0,
            exit_code: 0,
        }
    }

    fn lane(i: usize, achieved: f64) -> LaneSummary {
        LaneSummary {
            name: format!("k{i:02}"),
            provider: "kommo".into(),
            targets: vec![format!("k{i:02}")],
            rate: "10/s".into(),
            requests: 10,
            achieved_rate: Some(achieved),
            max_requests_in_1s: 10,
            rate_limited: 0,
            slowdowns: 0,
            slowest_rate: None,
            pauses: 0,
            settled_rate: None,
            failed: 0,
            series: None,
        }
    }

    #[test]
    fn many_lanes_are_aggregated_in_a_few_lines_naming_the_slowest_and_the_troubled() {
        let mut s = summary(3000, Some(9.0));
        s.targets = (0..30)
            .map(|i| TargetSummary {
                name: format!("k{i:02}"),
                ..summary(3000, Some(9.0)).targets.remove(0)
            })
            .collect();
        s.lanes = (0..30).map(|i| lane(i, 9.0 + i as f64 / 100.0)).collect();
        s.lanes[7].achieved_rate = Some(4.5);
        for i in [3, 11, 25] {
            s.lanes[i].rate_limited = 4;
            s.lanes[i].slowest_rate = Some(6.4);
        }
        s.lanes[19].failed = 2;
        s.targets[19].stopped = Some("target k19 stopped: 3 authentication failures".into());
        let text = s.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() <= 12, "{text}");
        assert!(
            text.contains("  30 lanes (30 targets), 300 requests; achieved 4.5/s to 9.3/s over 30 lanes (limits 10/s)\n"),
            "{text}"
        );
        assert!(
            text.contains("  slowest: k07 4.5/s (limit 10/s), k00 9.0/s"),
            "{text}"
        );
        for name in ["k03", "k11", "k25"] {
            assert!(
                text.contains(&format!("  lane {name} (kommo): 10 requests, achieved")),
                "{text}"
            );
        }
        assert!(
            text.contains("; 4 answered 429, slowed down to 6.40/s"),
            "{text}"
        );
        assert!(text.contains("; 2 failed; target k19 stopped"), "{text}");
        assert!(
            text.contains(
                "  and 26 more lane(s) without failures or 429s (every lane in --summary-json)"
            ),
            "{text}"
        );
        assert!(!text.contains("  target k00 (kommo)"), "{text}");
        // With no lane in trouble, the last line says so.
        for l in &mut s.lanes {
            (l.rate_limited, l.failed) = (0, 0);
        }
        s.targets[19].stopped = None;
        let calm = s.render();
        assert!(
            calm.contains("\n  no lane with failures or 429s (every lane in --summary-json)\n"),
            "{calm}"
        );
        assert!(calm.lines().count() <= 6, "{calm}");
        // Ten lanes still get a line each.
        s.targets.truncate(10);
        s.lanes.truncate(10);
        let few = s.render();
        assert_eq!(few.matches(" (kommo): 4 requests").count(), 10, "{few}");
    }

    #[test]
    fn rates_only_over_a_second_or_more() {
        let short = summary(2, None).render();
        assert!(
            short.starts_with("reactbatch: 4 rows in 0.00s: 4 ok\n"),
            "{short}"
        );
        assert!(
            short.contains("4 requests, no rate (sent over less than 1 s),"),
            "{short}"
        );
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
