//! What a plan will do, per target, and how long the live run takes: the dry run's outline for
//! a reviewer, and `estimated_ms` in `--summary-json`.
//!
//! Per target: reacts, unreacts, *replacing* reacts (a react on a message that an earlier row
//! of the plan already reacted to, or one that gives `previous_emoji`: it replaces an emoji
//! rather than adding the first), rows deferred by `not_before` (and until when), and the five
//! most used emoji.
//!
//! The estimate: rows are sent through one lane per pace group ([`PaceGroup`]:
//! targets sharing a Kommo `scope_id`, an Ogmma API key reference, or a `limit_group`; the
//! group's pace is the slowest of its targets', or `--rate`, shared among shards). A lane needs `(rows − burst) / rate`: `burst` requests go at once, the
//! rest at the even pace. Lanes run at the same time, so the run takes as long as its slowest
//! lane. Deferred rows are not counted (they are not sent in this run), nor are rows of
//! another shard; rows an earlier report shows done (`--resume`) still are. Retries, 429s and
//! latency are not predicted: the estimate is the floor the providers' pace sets.
//!
//! Memory: one 64-bit hash per reacted message, and a count per distinct emoji.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plan::pace::PaceGroup;
use crate::plan::{Action, Rate, Row, Target};

/// Emoji listed per target, at most.
pub const TOP_EMOJI: usize = 5;

#[derive(Debug, Default)]
struct Tally {
    reacts: u64,
    unreacts: u64,
    replacing: u64,
    deferred: u64,
    deferred_from: Option<DateTime<Utc>>,
    deferred_until: Option<DateTime<Utc>>,
    emoji: HashMap<String, u64>,
}

/// Collects the outline row by row (pure: the clock is passed in).
pub struct AuditBuilder {
    now: DateTime<Utc>,
    targets: Vec<Tally>,
    reacted: HashSet<u64>,
}

/// An emoji and how many rows use it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EmojiCount {
    pub emoji: String,
    pub rows: u64,
}

/// What the plan does on one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetAudit {
    pub reacts: u64,
    pub unreacts: u64,
    pub replacing: u64,
    pub deferred: u64,
    pub deferred_from: Option<String>,
    pub deferred_until: Option<String>,
    pub top_emoji: Vec<EmojiCount>,
    /// The pace group this target is sent through (`lanes[].name`).
    pub lane: String,
    /// That group's pace in this run.
    pub lane_rate: String,
    /// How long its lane needs for the rows sent now (shared with the lane's other targets).
    pub estimated_ms: u64,
}

/// The whole outline: per target (index-aligned with the plan's targets) and the estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub targets: Vec<TargetAudit>,
    pub estimated_ms: u64,
}

impl AuditBuilder {
    pub fn new(targets: usize, now: DateTime<Utc>) -> AuditBuilder {
        AuditBuilder {
            now,
            targets: (0..targets).map(|_| Tally::default()).collect(),
            reacted: HashSet::new(),
        }
    }

    /// Counts one row (only rows this run covers: its shard's).
    pub fn row(&mut self, row: &Row) {
        let Some(t) = self.targets.get_mut(row.target) else {
            return;
        };
        if let Some(at) = row.not_before.filter(|at| *at > self.now) {
            t.deferred += 1;
            t.deferred_from = Some(t.deferred_from.map_or(at, |f| f.min(at)));
            t.deferred_until = Some(t.deferred_until.map_or(at, |u| u.max(at)));
            return;
        }
        match row.action {
            Action::React => {
                t.reacts += 1;
                let mut h = std::hash::DefaultHasher::new();
                row.target.hash(&mut h);
                row.message_ref().hash(&mut h);
                let first = self.reacted.insert(h.finish());
                if !first || row.previous_emoji.is_some() {
                    t.replacing += 1;
                }
                if let Some(e) = &row.emoji {
                    match t.emoji.get_mut(e) {
                        Some(n) => *n += 1,
                        None => {
                            t.emoji.insert(e.clone(), 1);
                        }
                    }
                }
            }
            Action::Unreact => t.unreacts += 1,
        }
    }

    /// The outline, with the plan's pace groups and each group's pace in this run (`rates`,
    /// index-aligned with `groups`) and the burst.
    pub fn finish(self, groups: &[PaceGroup], rates: &[Rate], burst: u32) -> Audit {
        let mut lane_of = vec![None; self.targets.len()];
        let mut lane_ms = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let rows: u64 = group
                .members
                .iter()
                .filter_map(|&m| self.targets.get(m))
                .map(|t| t.reacts + t.unreacts)
                .sum();
            let rate = rates.get(g).copied().unwrap_or(Rate::Unlimited);
            lane_ms.push(estimate_ms(rows, rate, burst));
            for &m in &group.members {
                if let Some(slot) = lane_of.get_mut(m) {
                    *slot = Some(g);
                }
            }
        }
        let estimated_ms = lane_ms.iter().copied().max().unwrap_or(0);
        let targets = self
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut emoji: Vec<(String, u64)> = t.emoji.into_iter().collect();
                emoji.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let lane = lane_of[i];
                TargetAudit {
                    reacts: t.reacts,
                    unreacts: t.unreacts,
                    replacing: t.replacing,
                    deferred: t.deferred,
                    deferred_from: t.deferred_from.map(crate::report::timestamp),
                    deferred_until: t.deferred_until.map(crate::report::timestamp),
                    top_emoji: emoji
                        .into_iter()
                        .take(TOP_EMOJI)
                        .map(|(emoji, rows)| EmojiCount { emoji, rows })
                        .collect(),
                    lane: lane.map(|g| groups[g].name.clone()).unwrap_or_default(),
                    lane_rate: lane
                        .and_then(|g| rates.get(g))
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    estimated_ms: lane.map_or(0, |g| lane_ms[g]),
                }
            })
            .collect();
        Audit {
            targets,
            estimated_ms,
        }
    }
}

/// Milliseconds to send `rows` at `rate` with `burst` allowed ahead of the even schedule.
pub fn estimate_ms(rows: u64, rate: Rate, burst: u32) -> u64 {
    let Some(interval) = rate.interval() else {
        return 0;
    };
    let paced = rows.saturating_sub(u64::from(burst.max(1)));
    (interval.as_secs_f64() * paced as f64 * 1000.0).round() as u64
}

/// `1h 02m`, `1m 40s`, `12.5s`: a duration for people.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// The dry run's outline for stderr: one line per target, then the estimate.
pub fn render(audit: &Audit, targets: &[Target]) -> String {
    let mut out = String::new();
    for (t, a) in targets.iter().zip(&audit.targets) {
        let mut line = format!(
            "reactbatch: plan for target {} ({}): {} react(s) ({} replacing), {} unreact(s)",
            t.name,
            t.provider(),
            a.reacts,
            a.replacing,
            a.unreacts
        );
        if a.deferred > 0 {
            let from = a.deferred_from.as_deref().unwrap_or("");
            let until = a.deferred_until.as_deref().unwrap_or("");
            if from == until {
                line.push_str(&format!(", {} deferred until {until}", a.deferred));
            } else {
                line.push_str(&format!(
                    ", {} deferred (due from {from} to {until})",
                    a.deferred
                ));
            }
        }
        if !a.top_emoji.is_empty() {
            let top: Vec<String> = a
                .top_emoji
                .iter()
                .map(|e| format!("{} ×{}", e.emoji, e.rows))
                .collect();
            line.push_str(&format!("; top emoji {}", top.join(", ")));
        }
        line.push_str(&format!(
            "; its lane {} at {} needs ~{}\n",
            a.lane,
            a.lane_rate,
            human_ms(a.estimated_ms)
        ));
        out.push_str(&line);
    }
    out.push_str(&format!(
        "reactbatch: the live run takes ~{} ({} ms) at the providers' pace (lanes run side by side; retries and 429s not counted)\n",
        human_ms(audit.estimated_ms),
        audit.estimated_ms
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seven_hundred_rows_at_seven_a_second_take_a_hundred_seconds() {
        let rate = Rate::Limited {
            count: 7,
            per: Duration::from_secs(1),
        };
        assert_eq!(estimate_ms(700, rate, 1), 99_857);
        assert_eq!(estimate_ms(700, rate, 8), 98_857);
        assert_eq!(estimate_ms(1, rate, 1), 0);
        assert_eq!(estimate_ms(0, rate, 1), 0);
        assert_eq!(estimate_ms(10_000, Rate::Unlimited, 1), 0);
        let per_min = Rate::Limited {
            count: 60,
            per: Duration::from_secs(60),
        };
        assert_eq!(estimate_ms(61, per_min, 1), 60_000);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_ms(99_857), "1m 39s");
        assert_eq!(human_ms(12_500), "12.5s");
        assert_eq!(human_ms(3_720_000), "1h 02m");
    }
}
