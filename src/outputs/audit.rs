//! What a plan will do, per target, and how long the live run takes: the dry run's outline for
//! a reviewer, and `estimated_ms` in `--summary-json`.
//!
//! Per target: reacts, unreacts, *replacing* reacts (a react on a message that an earlier row
//! of the plan already reacted to, or one that gives `previous_emoji`: it replaces an emoji
//! rather than adding the first), rows deferred by `not_before` (and until when), and the five
//! most used emoji.
//!
//! The estimate: rows are sent through one lane per pace group ([`PaceGroup`]:
//! targets sharing a Kommo `scope_id`, an Ogmma API key reference, or a `limit_group`; and one
//! per Kommo `scope_id` that rows name themselves, [`crate::plan::pace::LaneMap`]; the
//! group's pace is the slowest of its targets', or `--rate`, shared among shards). A lane
//! needs `(rows − burst) / rate`: `burst` requests go at once, the rest at the even pace.
//! Lanes run at the same time, so the run takes as long as its slowest lane. Deferred rows are
//! not counted (they are not sent in this run), nor are rows of another shard; rows an earlier
//! report shows done (`--resume`) still are. Retries, 429s and latency are not predicted: the
//! estimate is the floor the providers' pace sets.
//!
//! Memory: flat. *Replacing* needs to know whether a message was reacted to by an earlier row;
//! instead of a hash per reacted message (tens of MiB at a million rows), the first pass keeps
//! a fixed Bloom filter and the hashes it may have seen before (repeats, and rare false
//! positives); [`Replacing`] settles those exactly in a second pass over the rows, which
//! tracks only them — `run` gives it the spooled rows once more before anything is sent, when
//! there are any, so the outline is whole before the first request. Plus a count per
//! distinct emoji.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bloom::Bloom;
use crate::plan::pace::PaceGroup;
use crate::plan::{Action, Rate, Row, Target};

mod pace;

pub use pace::{estimate_ms, LanePace, PaceModel};

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
    /// Rows per emoji (sorted when the outline is made; the hasher only has to be cheap).
    emoji: HashMap<String, u64, foldhash::fast::FixedState>,
}

/// Collects the outline row by row (pure: the clock is passed in).
pub struct AuditBuilder {
    now: DateTime<Utc>,
    targets: Vec<Tally>,
    /// Rows sent now, per lane ([`crate::plan::pace::LaneMap`]).
    lanes: Vec<u64>,
    /// Reacted messages so far (by [`message_hash`]), approximately.
    bloom: Bloom,
    /// Messages that may have been reacted to before one of their react rows.
    candidates: HashSet<u64>,
}

/// A (target, message, the row's own account) as one 64-bit hash.
fn message_hash(row: &Row) -> u64 {
    // A fixed-seed hasher: the second pass must agree. foldhash, not SipHash: every row.
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    row.target.hash(&mut h);
    row.message_ref().hash(&mut h);
    if let Some(account) = row.own_account() {
        account.hash(&mut h);
    }
    h.finish()
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
    /// The pace group this target is sent through (`lanes[].name`); with rows carrying
    /// their accounts, the slowest of its lanes.
    pub lane: String,
    /// How many lanes its rows go to (one per account when rows name theirs).
    #[serde(skip_serializing_if = "at_most_one")]
    pub lanes: usize,
    /// That lane's pace in this run.
    pub lane_rate: String,
    /// How long that lane needs for the rows sent now (shared with the lane's other targets).
    pub estimated_ms: u64,
    /// Its lane's index among the plan's pace groups.
    #[serde(skip)]
    pub lane_index: Option<usize>,
}

/// The whole outline: per target (index-aligned with the plan's targets) and the estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub targets: Vec<TargetAudit>,
    pub estimated_ms: u64,
    /// The lanes' rows and paces the estimate comes from (index-aligned with the plan's pace
    /// groups), kept for the live ETA and for rows found done at the start (`--resume`).
    pub model: PaceModel,
}

impl AuditBuilder {
    pub fn new(targets: usize, now: DateTime<Utc>) -> AuditBuilder {
        AuditBuilder {
            now,
            targets: (0..targets).map(|_| Tally::default()).collect(),
            lanes: Vec::new(),
            bloom: Bloom::default(),
            candidates: HashSet::new(),
        }
    }

    /// Counts one row (only rows this run covers: its shard's), sent through `lane`.
    pub fn row(&mut self, row: &Row, lane: usize) {
        let Some(t) = self.targets.get_mut(row.target) else {
            return;
        };
        if let Some(at) = row.not_before.filter(|at| *at > self.now) {
            t.deferred += 1;
            t.deferred_from = Some(t.deferred_from.map_or(at, |f| f.min(at)));
            t.deferred_until = Some(t.deferred_until.map_or(at, |u| u.max(at)));
            return;
        }
        if self.lanes.len() <= lane {
            self.lanes.resize(lane + 1, 0);
        }
        self.lanes[lane] += 1;
        match row.action {
            Action::React => {
                t.reacts += 1;
                let h = message_hash(row);
                // A react naming `previous_emoji` is counted as replacing here; any other that
                // the filter may have seen before is settled by the second pass (the answer comes
                // a react later: `Bloom::add`). A false repeat makes the outline read every row
                // again: the blocked filter keeps them rare (none among 200 000 distinct
                // messages, where two probes over the whole filter took 32 for repeats).
                let ask = match row.previous_emoji {
                    Some(_) => {
                        t.replacing += 1;
                        None
                    }
                    None => Some(h),
                };
                if let Some(seen) = self.bloom.add_hash(h, ask) {
                    self.candidates.insert(seen);
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

    /// The outline, with the plan's lanes (as given to [`AuditBuilder::row`]) and each one's
    /// pace in this run (`rates`, index-aligned with `groups`) and the burst; and the second
    /// pass that completes its *replacing* counts ([`Replacing::apply`]) once it has seen the
    /// rows again.
    pub fn finish(
        mut self,
        groups: &[PaceGroup],
        rates: &[Rate],
        burst: u32,
    ) -> (Audit, Replacing) {
        if let Some(seen) = self.bloom.finish() {
            self.candidates.insert(seen);
        }
        let replacing = Replacing {
            now: self.now,
            extra: vec![0; self.targets.len()],
            candidates: self.candidates,
            reacted: HashSet::new(),
            seen: 0,
        };
        let first = Finished {
            targets: self.targets,
            lanes: self.lanes,
        };
        (first.audit(groups, rates, burst), replacing)
    }
}

/// The first pass's tallies, for [`AuditBuilder::finish`].
struct Finished {
    targets: Vec<Tally>,
    lanes: Vec<u64>,
}

/// The second pass of the *replacing* counts: given every row of the plan again, in order
/// ([`Replacing::row`]), it settles the messages the first pass could not.
pub struct Replacing {
    now: DateTime<Utc>,
    /// Replacing reacts found by this pass, per target.
    extra: Vec<u64>,
    candidates: HashSet<u64>,
    /// Candidates reacted to so far.
    reacted: HashSet<u64>,
    /// Rows given to [`Replacing::row`].
    seen: u64,
}

impl Replacing {
    /// The next row of the plan; `counted` is whether the outline counts it (this run's shard).
    pub fn row(&mut self, row: &Row, counted: bool) {
        self.seen += 1;
        if self.candidates.is_empty() || !counted {
            return;
        }
        if row.target >= self.extra.len()
            || row.action != Action::React
            || row.not_before.is_some_and(|at| at > self.now)
        {
            return;
        }
        let h = message_hash(row);
        // The first react on a candidate message is not replacing (unless it names
        // `previous_emoji`, counted in the first pass), every later one is.
        if self.candidates.contains(&h) && !self.reacted.insert(h) && row.previous_emoji.is_none() {
            self.extra[row.target] += 1;
        }
    }

    /// Whether the rows are needed again: only messages the first pass may have seen before
    /// are left to settle (none in a plan whose messages are all distinct).
    pub fn needs_rows(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Rows given so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Starts over (to be given every row again from the first).
    pub fn restart(&mut self) {
        self.seen = 0;
        self.reacted.clear();
        self.extra.iter_mut().for_each(|n| *n = 0);
    }

    /// Adds what this pass found to `audit`'s replacing counts.
    pub fn apply(self, audit: &mut Audit) {
        for (t, n) in audit.targets.iter_mut().zip(self.extra) {
            t.replacing += n;
        }
    }
}

impl Finished {
    fn audit(self, groups: &[PaceGroup], rates: &[Rate], burst: u32) -> Audit {
        // Per target: its lane, or the slowest of its lanes and how many it has.
        let mut lane_of: Vec<Option<(usize, usize)>> = vec![None; self.targets.len()];
        let mut lane_ms = Vec::with_capacity(groups.len());
        let mut model = PaceModel {
            lanes: Vec::with_capacity(groups.len()),
            ceilings: Vec::new(),
            burst,
        };
        for (g, group) in groups.iter().enumerate() {
            let rows = self.lanes.get(g).copied().unwrap_or(0);
            let rate = rates.get(g).copied().unwrap_or(Rate::Unlimited);
            let ms = estimate_ms(rows, rate, burst);
            lane_ms.push(ms);
            model.lanes.push(LanePace {
                rows,
                rate,
                host: None,
            });
            for &m in &group.members {
                if let Some(slot) = lane_of.get_mut(m) {
                    *slot = Some(match *slot {
                        None => (g, 1),
                        Some((slowest, n)) if lane_ms[slowest] >= ms => (slowest, n + 1),
                        Some((_, n)) => (g, n + 1),
                    });
                }
            }
        }
        let estimated_ms = model.total_ms();
        let targets = self
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut emoji: Vec<(String, u64)> = t.emoji.into_iter().collect();
                emoji.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let lane = lane_of[i].map(|(g, _)| g);
                let lanes = lane_of[i].map_or(0, |(_, n)| n);
                TargetAudit {
                    reacts: t.reacts,
                    unreacts: t.unreacts,
                    replacing: t.replacing,
                    deferred: t.deferred,
                    deferred_from: t.deferred_from.map(crate::outputs::report::timestamp),
                    deferred_until: t.deferred_until.map(crate::outputs::report::timestamp),
                    top_emoji: emoji
                        .into_iter()
                        .take(TOP_EMOJI)
                        .map(|(emoji, rows)| EmojiCount { emoji, rows })
                        .collect(),
                    lane: lane.map(|g| groups[g].name.clone()).unwrap_or_default(),
                    lanes,
                    lane_rate: lane
                        .and_then(|g| rates.get(g))
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    estimated_ms: lane.map_or(0, |g| lane_ms[g]),
                    lane_index: lane,
                }
            })
            .collect();
        Audit {
            targets,
            estimated_ms,
            model,
        }
    }
}

impl Audit {
    /// Puts the lanes under their hosts' ceilings: `host_of[g]` is lane g's index into
    /// `ceilings`, if its host has one. The estimate then counts them.
    pub fn under_ceilings(&mut self, host_of: &[Option<usize>], ceilings: Vec<Rate>) {
        for (l, h) in self.model.lanes.iter_mut().zip(host_of) {
            l.host = *h;
        }
        self.model.ceilings = ceilings;
        self.estimated_ms = self.model.total_ms();
    }

    /// Leaves out rows that will not be sent after all (`not_sent`, per lane: rows an
    /// earlier report shows done), from the estimate and from each target's lane time.
    pub fn without(&mut self, not_sent: &[u64]) {
        self.model = self.model.without(not_sent);
        for t in &mut self.targets {
            if let Some(l) = t.lane_index.and_then(|g| self.model.lanes.get(g)) {
                t.estimated_ms = estimate_ms(l.rows, l.rate, self.model.burst);
            }
        }
        self.estimated_ms = self.model.total_ms();
    }
}

/// One lane (or none) goes without saying: the field appears for targets split by account.
fn at_most_one(n: &usize) -> bool {
    *n <= 1
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

/// Targets given a line each in the dry run's outline, at most; beyond, it aggregates.
pub const LISTED_TARGETS: usize = 10;

/// The lanes named as the longest in an aggregated outline.
const LONGEST_LANES: usize = 3;

/// The dry run's outline for stderr: one line per target (beyond [`LISTED_TARGETS`], one
/// line for them all and the longest lanes by name), what the lanes on each host add up to
/// (`hosts`, as the executor's `host::host_lines` renders them), then the estimate.
pub fn render(audit: &Audit, targets: &[Target], hosts: &[String]) -> String {
    let mut out = if targets.len() > LISTED_TARGETS {
        render_aggregated(audit, targets)
    } else {
        render_each(audit, targets)
    };
    for line in hosts {
        out.push_str(&format!("reactbatch: {line}\n"));
    }
    out.push_str(&format!(
        "reactbatch: the live run takes ~{} ({} ms) at the providers' pace (lanes run side by side; retries and 429s not counted)\n",
        human_ms(audit.estimated_ms),
        audit.estimated_ms
    ));
    out
}

/// `, 3 deferred until …` / `, 3 deferred (due from … to …)`, or nothing.
fn deferred(n: u64, from: Option<&str>, until: Option<&str>) -> String {
    if n == 0 {
        return String::new();
    }
    let (from, until) = (from.unwrap_or(""), until.unwrap_or(""));
    if from == until {
        format!(", {n} deferred until {until}")
    } else {
        format!(", {n} deferred (due from {from} to {until})")
    }
}

fn render_each(audit: &Audit, targets: &[Target]) -> String {
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
        line.push_str(&deferred(
            a.deferred,
            a.deferred_from.as_deref(),
            a.deferred_until.as_deref(),
        ));
        if !a.top_emoji.is_empty() {
            let top: Vec<String> = a
                .top_emoji
                .iter()
                .map(|e| format!("{} ×{}", e.emoji, e.rows))
                .collect();
            line.push_str(&format!("; top emoji {}", top.join(", ")));
        }
        if a.lanes > 1 {
            line.push_str(&format!(
                "; its {} lanes (one per account) at {} need ~{} (the slowest, {})\n",
                a.lanes,
                a.lane_rate,
                human_ms(a.estimated_ms),
                a.lane
            ));
        } else {
            line.push_str(&format!(
                "; its lane {} at {} needs ~{}\n",
                a.lane,
                a.lane_rate,
                human_ms(a.estimated_ms)
            ));
        }
        out.push_str(&line);
    }
    out
}

/// Many targets: their totals in one line, then the lanes that need longest.
fn render_aggregated(audit: &Audit, targets: &[Target]) -> String {
    let sum = |f: fn(&TargetAudit) -> u64| audit.targets.iter().map(f).sum::<u64>();
    let from = audit
        .targets
        .iter()
        .filter_map(|a| a.deferred_from.as_deref())
        .min();
    let until = audit
        .targets
        .iter()
        .filter_map(|a| a.deferred_until.as_deref())
        .max();
    let mut out = format!(
        "reactbatch: plan for {} targets in {} lanes: {} react(s) ({} replacing), {} unreact(s){}\n",
        targets.len(),
        audit.model.lanes.len(),
        sum(|a| a.reacts),
        sum(|a| a.replacing),
        sum(|a| a.unreacts),
        deferred(sum(|a| a.deferred), from, until)
    );
    // One target per lane named: the first of its members.
    let mut lanes: Vec<&TargetAudit> = Vec::new();
    for a in &audit.targets {
        if !lanes.iter().any(|l| l.lane == a.lane) {
            lanes.push(a);
        }
    }
    lanes.sort_by(|a, b| {
        b.estimated_ms
            .cmp(&a.estimated_ms)
            .then_with(|| a.lane.cmp(&b.lane))
    });
    let longest: Vec<String> = lanes
        .iter()
        .take(LONGEST_LANES)
        .map(|a| {
            format!(
                "{} at {} ~{}",
                a.lane,
                a.lane_rate,
                human_ms(a.estimated_ms)
            )
        })
        .collect();
    out.push_str(&format!(
        "reactbatch: the longest lanes: {}",
        longest.join(", ")
    ));
    if lanes.len() > longest.len() {
        out.push_str(&format!(
            " and {} more (per target in --summary-json)",
            lanes.len() - longest.len()
        ));
    }
    out.push('\n');
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

    fn per_second(count: u32) -> Rate {
        Rate::Limited {
            count,
            per: Duration::from_secs(1),
        }
    }

    fn lane(rows: u64, rate: u32, host: Option<usize>) -> LanePace {
        LanePace {
            rows,
            rate: per_second(rate),
            host,
        }
    }

    #[test]
    fn the_estimate_is_the_slowest_lane_or_host_ceiling() {
        // Two lanes side by side: the slower one decides.
        let mut model = PaceModel {
            lanes: vec![lane(71, 7, None), lane(141, 20, None)],
            ceilings: vec![],
            burst: 1,
        };
        assert_eq!(model.total_ms(), 10_000);
        // Both under a 10/s host ceiling: 212 rows take 21.1 s however the lanes go.
        model.lanes.iter_mut().for_each(|l| l.host = Some(0));
        model.ceilings = vec![per_second(10)];
        assert_eq!(model.total_ms(), 21_100);
        // Rows an earlier run did leave the estimate.
        let resumed = model.without(&[70, 140]);
        assert_eq!(resumed.lanes[0].rows, 1);
        assert_eq!(resumed.total_ms(), 100);
        assert_eq!(model.without(&[500, 0]).lanes[0].rows, 0);
    }

    #[test]
    fn time_left_goes_by_each_lanes_rows_left_at_the_pace_it_actually_goes() {
        let s = Duration::from_secs;
        let model = PaceModel {
            lanes: vec![lane(700, 7, None), lane(100, 50, None)],
            ceilings: vec![],
            burst: 1,
        };
        // Nothing done, no pace seen yet: the configured paces.
        assert_eq!(model.time_left(&[0, 0], &[None, None]), s(100));
        // Halfway, the first lane slowed to 3.5/s by 429s: its 350 rows left take 100 s,
        // however fast the run as a whole has gone so far.
        assert_eq!(
            model.time_left(&[350, 100], &[Some(3.5), Some(50.0)]),
            s(100)
        );
        // A pace above the configured one (a burst) does not shorten the estimate.
        assert_eq!(model.time_left(&[0, 0], &[Some(70.0), None]), s(100));
        // Done: nothing left.
        assert_eq!(model.time_left(&[700, 100], &[None, None]), Duration::ZERO);
        // A host ceiling of 5/s over both lanes' 800 rows.
        let capped = PaceModel {
            lanes: vec![lane(700, 7, Some(0)), lane(100, 50, Some(0))],
            ceilings: vec![per_second(5)],
            burst: 1,
        };
        assert_eq!(capped.time_left(&[0, 0], &[None, None]), s(160));
        assert_eq!(capped.time_left(&[600, 100], &[None, None]), s(20));
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_ms(99_857), "1m 39s");
        assert_eq!(human_ms(12_500), "12.5s");
        assert_eq!(human_ms(3_720_000), "1h 02m");
    }
}

#[cfg(test)]
mod replacing_tests {
    use super::*;

    fn row(n: u64, target: usize, message: u64, previous: bool, deferred: bool) -> Row {
        Row {
            conversation_id: Some("c".into()),
            not_before: deferred.then(|| "2030-01-01T00:00:00Z".parse().expect("time")),
            previous_emoji: previous.then(|| "❤️".into()),
            ..Row::test(n)
                .on(target)
                .message(format!("m-{message}"))
                .emoji("👍")
        }
    }

    /// A plan whose messages all differ is settled by the first pass: the rows are not read
    /// again. One message twice, and they are.
    #[test]
    fn distinct_messages_need_no_second_pass() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut builder = AuditBuilder::new(1, now);
        for n in 0..1000 {
            builder.row(&row(n, 0, n, n % 7 == 0, n % 5 == 0), 0);
        }
        let (audit, replacing) = builder.finish(&[], &[], 1);
        assert!(!replacing.needs_rows());
        // The rows with `previous_emoji` were counted in the first pass, the deferred not.
        let expected = (0..1000u64).filter(|n| n % 7 == 0 && n % 5 != 0).count() as u64;
        assert_eq!(audit.targets[0].replacing, expected);

        let mut builder = AuditBuilder::new(1, now);
        for n in 0..1000 {
            builder.row(&row(n, 0, n.min(998), false, false), 0);
        }
        let (_, replacing) = builder.finish(&[], &[], 1);
        assert!(replacing.needs_rows(), "message 998 comes twice");
    }

    /// The Bloom filter's false repeats are rare enough that a large plan of distinct
    /// messages is not read twice (each false repeat alone would make the second pass run).
    #[test]
    fn the_filter_finds_no_false_repeat_among_200_000_distinct_messages() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut builder = AuditBuilder::new(1, now);
        for n in 1..=200_000 {
            builder.row(&row(n, 0, n, false, false), 0);
        }
        assert_eq!(builder.candidates.len(), 0);
    }

    /// The two passes count exactly what one pass with every message remembered counts:
    /// repeats (on two targets), `previous_emoji`, deferred rows, and enough distinct messages
    /// that the Bloom filter has false positives to settle.
    #[test]
    fn two_passes_count_replacing_exactly() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let rows: Vec<Row> = (0..300_000u64)
            .map(|n| {
                let r = next();
                row(
                    n,
                    (r % 2) as usize,
                    (r >> 8) % 250_000,
                    r % 97 == 0,
                    r % 89 == 0,
                )
            })
            .collect();
        let mut expected = [0u64; 2];
        let mut seen = HashSet::new();
        for r in &rows {
            if r.not_before.is_some() {
                continue;
            }
            let first = seen.insert((r.target, r.message_id.clone()));
            if !first || r.previous_emoji.is_some() {
                expected[r.target] += 1;
            }
        }
        let mut builder = AuditBuilder::new(2, now);
        for r in &rows {
            builder.row(r, 0);
        }
        assert!(
            builder.candidates.len() > expected[0] as usize / 4,
            "the second pass is exercised"
        );
        let (mut audit, mut replacing) = builder.finish(&[], &[], 1);
        for r in &rows {
            replacing.row(r, true);
        }
        assert!(replacing.needs_rows());
        assert_eq!(replacing.seen(), rows.len() as u64);
        replacing.apply(&mut audit);
        let got: Vec<u64> = audit.targets.iter().map(|t| t.replacing).collect();
        assert_eq!(got, expected.to_vec());
        assert!(expected[0] > 1000 && expected[1] > 1000);
    }
}
