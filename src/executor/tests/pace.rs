//! Pace as the provider sees it: lanes, the strict bucket, a key shared by two targets, the
//! windows of a long run and a fault soak, on the simulated provider ([`sim`]) under paused
//! time. Here every gap, window and 429 is exact; the integration tests over the real binary
//! check only what a wall clock cannot break (rows, statuses, counts).
//!
//! Paused tokio timers fire on whole milliseconds, so a send scheduled at `k / 7` s leaves at
//! the next millisecond: gaps are the interval to within [`TICK`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::executor::rate::{RECOVER, SETTLE};
use crate::executor::sim::{self, per_sec, Fate, Log, Provider, RetryAfter};
use crate::executor::{ExecConfig, Lane};
use crate::outputs::report::Status;
use crate::plan::{Action, Rate, Row};

/// The paused clock's timer resolution.
const TICK: Duration = Duration::from_millis(1);

fn config(concurrency: usize) -> ExecConfig {
    ExecConfig {
        concurrency,
        ..ExecConfig::default()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every gap between arrivals in `log` is `interval` to within a timer tick.
fn assert_even(log: &Log, interval: Duration, what: &str) {
    for (i, gap) in log.gaps().into_iter().enumerate() {
        assert!(
            gap.abs_diff(interval) < TICK,
            "{what}: gap {i} is {gap:?}, not {interval:?}"
        );
    }
}

/// 70 Kommo rows (7/s) interleaved with 10 Ogmma rows (60/min), default settings: each lane
/// runs at its own limit, evenly, and Ogmma's pace holds Kommo's back in no way.
#[tokio::test(start_paused = true)]
async fn mixed_plan_runs_each_provider_at_its_own_limit() {
    let provider = Arc::new(
        Provider::new()
            .kommo_rate(per_sec(7), 2)
            .ogmma_rate(Rate::parse("60/min").expect("rate"), 2),
    );
    let mut rows = Vec::new();
    for i in 0..70 {
        rows.push(Row::test(0).on(0).message(format!("k-{i}")).emoji("👍"));
        if i % 7 == 3 {
            rows.push(Row::test(0).on(1).message(format!("o-{i}")).emoji("👍"));
        }
    }
    let rows = (1..).zip(rows).map(|(n, r)| Row { number: n, ..r });
    let targets = vec![
        sim::kommo("k", "s1", per_sec(7)),
        sim::ogmma("o", "ch", "key", Rate::parse("60/min").expect("rate")),
    ];
    let run = sim::run(&provider, config(16), targets, Vec::new(), rows).await;
    assert_eq!(run.count(Status::Ok), 80);
    assert_eq!(run.log.counts(), BTreeMap::from([(Fate::Status(200), 80)]));
    let kommo = run.log.scope("s1");
    let ogmma = run.log.filter(|a| a.scope != "s1");
    assert_eq!(
        (kommo.len(), ogmma.len()),
        (70, 10),
        "no request was retried"
    );
    assert_even(&kommo, secs(1) / 7, "kommo");
    assert_even(&ogmma, secs(1), "ogmma");
    // Kommo's 70 rows took 69 intervals from the first: 9.857 s, at 7/s; at most 7 in any
    // second, 1 in any 1/7 s.
    let span = kommo.times()[69] - kommo.times()[0];
    assert!(span.abs_diff(secs(69) / 7) < TICK, "kommo took {span:?}");
    assert_eq!(kommo.max_in_window(secs(1)), 7);
    assert_eq!(kommo.max_in_window(secs(1) / 7 - TICK), 1);
    assert_eq!(ogmma.max_in_window(secs(1)), 1);
    let rate = kommo.achieved_rate().expect("kommo rate");
    assert!((6.99..=7.0).contains(&rate), "kommo at {rate}/s");
    assert_eq!(ogmma.achieved_rate(), Some(1.0));
    // The summary says the same of each lane.
    assert_eq!(run.lanes[0].achieved_rate, Some(rate));
    assert_eq!(run.lanes[1].achieved_rate, Some(1.0));
    assert_eq!((run.lanes[0].max_in_1s, run.lanes[1].max_in_1s), (7, 1));
    // And of each target, alone in its lane.
    for (target, lane) in run.targets.iter().zip(&run.lanes) {
        assert_eq!(target.name, lane.name);
        assert_eq!(
            (target.requests, target.achieved_rate, target.max_in_1s),
            (lane.requests, lane.achieved_rate, lane.max_in_1s)
        );
    }
}

/// A strict 7/s bucket (burst 1), plan at 7/s: the one send that the timer puts a fraction
/// of a millisecond early by the provider's count is answered 429; the lane slows once, climbs
/// back and settles at its new ceiling, [`SETTLE`] × 7/s, with no other 429.
#[tokio::test(start_paused = true)]
async fn strict_bucket_at_the_plan_rate_settles_just_under_it() {
    let provider = Arc::new(Provider::new().kommo_rate(per_sec(7), 1));
    let targets = vec![sim::kommo("k", "s1", per_sec(7))];
    let run = sim::run(
        &provider,
        config(16),
        targets,
        Vec::new(),
        sim::rows(105, 0, "s-"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), 105);
    assert_eq!(
        run.log.counts(),
        BTreeMap::from([(Fate::Status(200), 105), (Fate::Status(429), 1)])
    );
    let lane = &run.lanes[0];
    assert_eq!((lane.requests, lane.rate_limited), (106, 1));
    assert_eq!((lane.pace.slowdowns, lane.pace.pauses), (1, 0));
    // Never faster than the bucket: no gap shorter than 1/7 s, less the tick.
    let gaps = run.log.gaps();
    assert!(gaps.iter().all(|g| *g + TICK > secs(1) / 7), "{gaps:?}");
    // Settled: the last 60 gaps are the ceiling's interval, which recovers by RECOVER × 7/s
    // a second, to within a tick.
    let ceiling = SETTLE * 7.0;
    let slowest = Duration::from_secs_f64(1.0 / ceiling);
    let fastest = Duration::from_secs_f64(1.0 / (ceiling + RECOVER * 7.0 * run.took.as_secs_f64()));
    for gap in &gaps[gaps.len() - 60..] {
        assert!(
            *gap + TICK > fastest && *gap < slowest + TICK,
            "gap {gap:?} outside {fastest:?}..{slowest:?}"
        );
    }
    // Over the whole run (the slow climb included), 93.5% of the plan rate.
    let achieved = run.log.accepted().achieved_rate().expect("rate");
    assert!((6.54..6.56).contains(&achieved), "achieved {achieved}/s");
}

/// A 20/s plan against a 7/s provider that sends no Retry-After: the lane slows down, once
/// per 429, until it is answered no more; rows keep their place, none is lost, and the summary
/// counts the provider's every 429. A `retry_after` in a 429's body is the provider's
/// instruction: the lane pauses for it instead.
#[tokio::test(start_paused = true)]
async fn a_plan_faster_than_the_provider_slows_down_and_loses_no_row() {
    for retry_after in [RetryAfter::None, RetryAfter::Body(1)] {
        let provider = Arc::new(
            Provider::new()
                .kommo_rate(per_sec(7), 1)
                .retry_after(retry_after),
        );
        let targets = vec![sim::kommo("k", "s1", per_sec(20))];
        let run = sim::run(
            &provider,
            config(16),
            targets,
            Vec::new(),
            sim::rows(70, 0, "f-"),
        )
        .await;
        assert_eq!(run.count(Status::Ok), 70, "{retry_after:?}");
        let limited = run.log.count(429);
        let lane = &run.lanes[0];
        assert!(limited > 0, "the provider did limit");
        assert_eq!(lane.rate_limited, limited as u64);
        assert_eq!(lane.requests, 70 + limited as u64);
        // The bucket was never beaten.
        assert!(run.log.accepted().max_in_window(secs(1)) <= 7);
        if retry_after == RetryAfter::Body(1) {
            // Every 429 paused the lane; none slowed it.
            assert_eq!((lane.pace.slowdowns, lane.pace.pauses), (0, limited as u64));
            continue;
        }
        assert_eq!((lane.pace.slowdowns, lane.pace.pauses), (limited as u64, 0));
        assert!(lane.pace.slowest_rate.is_some_and(|r| r < 7.0));
        // After the last 429, no gap is under 1/7 s.
        let last = run.log.filter(|a| a.fate == Fate::Status(429)).times()[limited - 1];
        let after = run.log.filter(|a| a.at >= last);
        assert!(after.len() > 35, "the 429s stopped halfway: {last:?}");
        assert!(after.gaps().iter().all(|g| *g + TICK > secs(1) / 7));
    }
}

/// Two Ogmma targets (two channels) on one API key share one lane: the key's limit (10/s,
/// burst 2) holds in every window, with no 429.
#[tokio::test(start_paused = true)]
async fn two_targets_on_one_key_stay_within_the_keys_limit() {
    let provider = Arc::new(Provider::new().ogmma_rate(per_sec(10), 2));
    let rows = (1..=40).map(|i| {
        Row::test(i)
            .on(usize::from(i % 2 == 0))
            .message(format!("c-{i}"))
            .emoji("👍")
    });
    let targets = vec![
        sim::ogmma("o1", "ch_1", "key", per_sec(10)),
        sim::ogmma("o2", "ch_2", "key", per_sec(10)),
    ];
    let lanes = vec![Lane::new("o1+1".into(), vec![0, 1], per_sec(10), 1)];
    let run = sim::run(&provider, config(16), targets, lanes, rows).await;
    assert_eq!(run.count(Status::Ok), 40);
    assert_eq!(run.log.counts(), BTreeMap::from([(Fate::Status(200), 40)]));
    let scopes: std::collections::BTreeSet<&str> =
        run.log.0.iter().map(|a| a.scope.as_str()).collect();
    assert_eq!(scopes.len(), 1, "one key");
    assert_eq!(run.log.max_in_window(secs(1)), 10);
    assert_even(&run.log, secs(1) / 10, "the key");
    assert_eq!(run.lanes.len(), 1);
    assert_eq!((run.lanes[0].requests, run.lanes[0].max_in_1s), (40, 10));
    // Each target, alternating on the key, has half of it.
    let each: Vec<(u64, usize)> = run
        .targets
        .iter()
        .map(|t| (t.requests, t.max_in_1s))
        .collect();
    assert_eq!(each, vec![(20, 5), (20, 5)]);
}

/// 1 500 rows at 150/s (burst 1, concurrency 16) take 10 s: no window of 100 ms, 1, 2 or 5 s
/// holds more than the rate allows, and the run is spread over (rows − burst) / rate.
#[tokio::test(start_paused = true)]
async fn pacing_never_exceeds_the_rate_and_spreads_over_the_planned_time() {
    const ROWS: u64 = 1500;
    const RATE: u32 = 150;
    let provider = Arc::new(Provider::new().latency(Duration::from_millis(2)));
    let targets = vec![sim::ogmma("o", "ch", "key", per_sec(RATE))];
    let run = sim::run(
        &provider,
        config(16),
        targets,
        Vec::new(),
        sim::rows(ROWS, 0, "p-"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), ROWS as usize);
    assert_eq!(run.log.len() as u64, ROWS, "one request per row");
    for (window, most) in [
        (Duration::from_millis(100), 15),
        (secs(1), 150),
        (secs(2), 300),
        (secs(5), 750),
    ] {
        assert_eq!(run.log.max_in_window(window), most, "in {window:?}");
    }
    assert_eq!(run.lanes[0].max_in_1s, 150);
    let times = run.log.times();
    let span = times[times.len() - 1] - times[0];
    let planned = Duration::from_secs_f64((ROWS - 1) as f64 / f64::from(RATE));
    assert!(
        span.abs_diff(planned) < TICK,
        "{span:?}, planned {planned:?}"
    );
}

/// Fault soak: 5 000 rows across both providers that answer 10% 5xx, drop 5% of connections,
/// take 20 ms and limit below the plan's pace (Kommo with `Retry-After: 1`, Ogmma without).
/// Every row ends ok exactly once, and no window holds more than the executor's guard allows:
/// `rate + burst - 1` in a second, `rate / 10 + burst` in 100 ms.
#[tokio::test(start_paused = true)]
async fn soak_every_row_once_and_every_window_within_the_rate() {
    const ROWS: u64 = 5000;
    const PLAN_RATE: u32 = 400;
    const BURST: u32 = 10;
    let provider = Arc::new(
        Provider::new()
            .kommo_rate(per_sec(PLAN_RATE - 10), 20)
            .kommo_retry_after(RetryAfter::Header(1))
            .ogmma_rate(per_sec(PLAN_RATE * 3 / 4), 10)
            .faults(ROWS, 0.10, 0.05)
            .latency(Duration::from_millis(20)),
    );
    // Alternating targets over 1 000 messages, every seventh row an unreact.
    let rows = (1..=ROWS).map(|n| {
        let i = n - 1;
        let row = Row::test(n)
            .on(usize::from(i % 2 == 1))
            .message(format!("m-{}", (i / 2) % (ROWS / 5)))
            .emoji("👍");
        if i % 7 == 3 {
            row.action(Action::Unreact)
        } else {
            row
        }
    });
    let config = ExecConfig {
        concurrency: 256,
        retries: 30,
        timeout: secs(2),
        burst: BURST,
        ..ExecConfig::default()
    };
    let targets = vec![
        sim::kommo("k", "s1", per_sec(PLAN_RATE)),
        sim::ogmma("o", "ch", "key", per_sec(PLAN_RATE)),
    ];
    let run = sim::run(&provider, config, targets, Vec::new(), rows).await;
    let numbers: Vec<u64> = run.results.iter().map(|r| r.row).collect();
    assert_eq!(
        numbers,
        (1..=ROWS).collect::<Vec<_>>(),
        "one row per plan row"
    );
    assert_eq!(run.count(Status::Ok), ROWS as usize);
    for (lane, log) in [
        (&run.lanes[0], run.log.scope("s1")),
        (&run.lanes[1], run.log.filter(|a| a.scope != "s1")),
    ] {
        let counts = log.counts();
        let errors = [500, 502, 503].map(|s| counts.get(&Fate::Status(s)).copied().unwrap_or(0));
        assert!(
            errors.iter().sum::<usize>() > 0 && counts.contains_key(&Fate::Dropped),
            "{}: {counts:?}",
            lane.name
        );
        assert!(log.count(429) > 0, "{}: no 429 provoked", lane.name);
        assert_eq!(lane.rate_limited, log.count(429) as u64);
        assert_eq!(lane.requests, log.len() as u64);
        // Sent and arrived alike (the latency is the same for every request).
        assert!(
            lane.max_in_1s <= (PLAN_RATE + BURST - 1) as usize,
            "{lane:?}"
        );
        assert_eq!(log.max_in_window(secs(1)), lane.max_in_1s, "{}", lane.name);
        let in_100ms = log.max_in_window(Duration::from_millis(100));
        assert!(
            in_100ms <= (PLAN_RATE / 10 + BURST) as usize,
            "{}: {in_100ms} in 100 ms",
            lane.name
        );
    }
    // Kommo's 429s carried Retry-After, which pauses the lane; Ogmma's did not, which slows it.
    assert!(run.lanes[0].pace.pauses > 0 && run.lanes[0].pace.slowdowns == 0);
    assert!(run.lanes[1].pace.slowdowns > 0 && run.lanes[1].pace.pauses == 0);
}
