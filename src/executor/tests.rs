//! Executor behaviour under paused tokio time, against the simulated provider ([`sim`]) with
//! scripted answers; `pace` has the rates and windows as the provider's bucket sees them. (The
//! same behaviours are also tested end to end over loopback against the sandbox in `tests/`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sim::{self, per_sec, Arrival, Provider, SimRun};
use super::*;
use crate::outputs::report::Status;
use crate::plan::pace::LaneMap;
use crate::plan::{Problem, Rate, Row, Target, TargetKind};

mod pace;

type Script = dyn Fn(&str, usize) -> (AttemptOutcome, Duration) + Send + Sync;

fn ok() -> AttemptOutcome {
    status(200)
}

fn status(status: u16) -> AttemptOutcome {
    AttemptOutcome::Answered {
        status,
        retry_after: None,
        code: String::new(),
        message: String::new(),
    }
}

/// Row n acts on message `m{n % messages}` with emoji `e{n}`.
fn rows(n: u64, messages: u64) -> Vec<Result<Row, Problem>> {
    (1..=n)
        .map(|i| {
            Ok(Row::test(i)
                .message(format!("m{}", i % messages))
                .emoji(format!("e{i}")))
        })
        .collect()
}

/// The row number in a request's emoji (`e{n}`).
fn number(call: &Arrival) -> u64 {
    call.emoji[1..].parse().unwrap_or(0)
}

/// One target `o`, in a lane of its own at `rate`, answered by `script`: (emoji of the row,
/// requests so far) → (outcome, latency).
async fn run(
    config: ExecConfig,
    rate: Rate,
    rows: Vec<Result<Row, Problem>>,
    script: Box<Script>,
    cancel: Cancel,
) -> SimRun {
    let burst = config.burst;
    run_on(
        config,
        vec![sim::ogmma("o", "ch", "k", rate)],
        vec![Lane::new("o".into(), vec![0], rate, burst)],
        rows,
        script,
        cancel,
    )
    .await
}

/// [`run`] with the run's own targets and lanes, and any rows.
async fn run_on(
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    rows: impl IntoIterator<Item = Result<Row, Problem>>,
    script: Box<Script>,
    cancel: Cancel,
) -> SimRun {
    let provider = Provider::new().script(move |r| Some(script(&r.emoji, r.n)));
    sim::run_with(&Arc::new(provider), config, targets, lanes, rows, cancel).await
}

fn config(concurrency: usize) -> ExecConfig {
    ExecConfig {
        concurrency,
        ..ExecConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn rows_on_one_message_run_in_plan_order_and_never_overlap() {
    // 200 rows over 7 messages, latencies that would reorder them if they overlapped.
    let script = Box::new(|emoji: &str, _n: usize| {
        let n: u64 = emoji[1..].parse().unwrap_or(0);
        (ok(), Duration::from_millis(1 + (n * 37) % 23))
    });
    let out = run(
        config(16),
        Rate::Unlimited,
        rows(200, 7),
        script,
        Cancel::new(),
    )
    .await;
    assert_eq!(out.results.len(), 200);
    assert!(out.results.iter().all(|r| r.status == Status::Ok));
    for m in 0..7 {
        let mut mine: Vec<&Arrival> = out
            .log
            .0
            .iter()
            .filter(|c| c.message == format!("m{m}"))
            .collect();
        mine.sort_by_key(|c| c.sent);
        for pair in mine.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.done <= b.sent, "overlap on m{m}: {a:?} / {b:?}");
            let (na, nb) = (number(a), number(b));
            assert!(na < nb, "m{m}: row {na} after {nb}");
        }
    }
    // Different messages did run concurrently.
    let calls = &out.log.0;
    let max_parallel = calls
        .iter()
        .map(|c| {
            calls
                .iter()
                .filter(|d| d.sent <= c.sent && c.sent < d.done)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(max_parallel >= 5, "only {max_parallel} at once");
}

#[tokio::test(start_paused = true)]
async fn retryable_answers_are_retried_then_succeed() {
    // Every row: 503, then 429, then 200.
    let seen = Arc::new(Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let script = Box::new(move |emoji: &str, _n: usize| {
        let mut seen = seen.lock().expect("lock");
        let k = seen.entry(emoji.to_string()).or_default();
        *k += 1;
        let outcome = match *k {
            1 => status(503),
            2 => status(429),
            _ => ok(),
        };
        (outcome, Duration::from_millis(1))
    });
    let out = run(
        config(4),
        Rate::Unlimited,
        rows(20, 20),
        script,
        Cancel::new(),
    )
    .await;
    assert_eq!(out.results.len(), 20);
    for r in &out.results {
        assert_eq!(
            (r.status, r.attempts, r.http_status),
            (Status::Ok, 3, Some(200)),
            "{r:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn final_answers_are_not_retried_and_retries_are_bounded() {
    let script = Box::new(|emoji: &str, _n: usize| match emoji {
        "e1" => (status(404), Duration::from_millis(1)),
        "e2" => (status(400), Duration::from_millis(1)),
        _ => (AttemptOutcome::Timeout, Duration::from_millis(1)),
    });
    let cfg = ExecConfig {
        retries: 2,
        ..config(2)
    };
    let out = run(cfg, Rate::Unlimited, rows(3, 3), script, Cancel::new()).await;
    let got: Vec<(Status, u32, &str)> = out
        .results
        .iter()
        .map(|r| (r.status, r.attempts, r.code.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Status::Failed, 1, "http_404"),
            (Status::Failed, 1, "http_400"),
            (Status::Failed, 3, "timeout")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_auth_failures_stop_the_target_and_skip_the_rest() {
    let script = Box::new(|_: &str, _n: usize| (status(401), Duration::from_millis(5)));
    let out = run(
        config(4),
        Rate::Unlimited,
        rows(500, 500),
        script,
        Cancel::new(),
    )
    .await;
    assert_eq!(out.results.len(), 500);
    let failed = out.count(Status::Failed);
    let skipped = out.count(Status::Skipped);
    assert_eq!(failed + skipped, 500);
    // At most the three that stop it plus what was already in flight.
    assert!(
        out.log.len() <= AUTH_FAILURES_TO_STOP as usize + 4,
        "{} requests",
        out.log.len()
    );
    assert!(out.targets[0].stopped.is_some());
    assert!(out
        .results
        .iter()
        .filter(|r| r.status == Status::Skipped)
        .all(|r| r.code == "auth_stopped"));
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_the_whole_target() {
    // The first call answers 429 with Retry-After 2s; nothing may be sent in the next 2 s.
    let script = Box::new(|_: &str, n: usize| {
        if n == 0 {
            let o = AttemptOutcome::Answered {
                status: 429,
                retry_after: Some(Duration::from_secs(2)),
                code: "RATE_LIMIT_EXCEEDED".into(),
                message: String::new(),
            };
            (o, Duration::ZERO)
        } else {
            (ok(), Duration::ZERO)
        }
    });
    let out = run(config(8), per_sec(10), rows(10, 10), script, Cancel::new()).await;
    assert!(out.results.iter().all(|r| r.status == Status::Ok));
    assert_eq!(out.log.0[0].sent, Duration::ZERO);
    for c in &out.log.0[1..] {
        assert!(c.sent >= Duration::from_secs(2), "sent at {:?}", c.sent);
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_reports_every_row_once_with_unsent_rows_cancelled() {
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let script = Box::new(move |_: &str, n: usize| {
        if n >= 30 {
            trigger.cancel_soft();
        }
        (ok(), Duration::from_millis(10))
    });
    let out = run(config(4), Rate::Unlimited, rows(1000, 1000), script, cancel).await;
    assert_eq!(out.results.len(), 1000);
    let mut numbers: Vec<u64> = out.results.iter().map(|r| r.row).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), 1000);
    let ok = out.count(Status::Ok);
    let cancelled = out.count(Status::Cancelled);
    assert!((30..=40).contains(&ok), "{ok} ok");
    assert_eq!(ok + cancelled, 1000);
}

/// A hard cancel abandons the requests in flight (each sender's kept watch fires), and every
/// row is still reported once: in flight ones as possibly applied, the rest as not sent.
#[tokio::test(start_paused = true)]
async fn a_hard_cancel_abandons_requests_in_flight_and_reports_them() {
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel_soft();
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel_hard();
    });
    // The first 8 answers come at once (each sender's watch outlives an attempt or two),
    // every later one would take a minute.
    let started = std::sync::atomic::AtomicUsize::new(0);
    let script = Box::new(move |_: &str, _: usize| {
        let n = started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let latency = if n < 8 { 10 } else { 60_000 };
        (ok(), Duration::from_millis(latency))
    });
    let out = run(config(4), Rate::Unlimited, rows(20, 20), script, cancel).await;
    assert!(out.took < Duration::from_secs(3), "{:?}", out.took);
    let answered = out.log.filter(|c| c.fate == sim::Fate::Status(200));
    assert_eq!(answered.len(), 8, "only the quick requests were answered");
    assert_eq!(out.results.len(), 20);
    let ok = out.count(Status::Ok);
    let cancelled = out.count(Status::Cancelled);
    assert_eq!((ok, cancelled), (8, 12));
    let in_flight = out
        .results
        .iter()
        .filter(|r| r.message.contains("in flight; it may have been applied"))
        .count();
    assert_eq!(in_flight, 4, "{:?}", out.results);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_rows_keep_their_place_without_using_retries_within_the_budget() {
    // The first 8 calls are answered 429 (no Retry-After), then every call succeeds.
    let script = Box::new(|_: &str, n: usize| {
        if n < 8 {
            (status(429), Duration::from_millis(1))
        } else {
            (ok(), Duration::from_millis(1))
        }
    });
    let cfg = ExecConfig {
        retries: 1,
        ..config(4)
    };
    let out = run(cfg, per_sec(20), rows(4, 4), script, Cancel::new()).await;
    assert!(
        out.results.iter().all(|r| r.status == Status::Ok),
        "{:?}",
        out.results
    );
    assert_eq!(out.log.len(), 12);
    // Row 1 was answered 429 first and stayed first in its lane.
    assert!(out.log.0.iter().filter(|c| c.emoji == "e1").count() >= 2);

    // With no budget, a 429 is an ordinary retry: bounded by --retries.
    let script = Box::new(|_: &str, _n: usize| (status(429), Duration::from_millis(1)));
    let cfg = ExecConfig {
        retries: 2,
        rate_limit_budget: Duration::ZERO,
        ..config(4)
    };
    let out = run(cfg, per_sec(20), rows(1, 1), script, Cancel::new()).await;
    let got: Vec<(Status, u32)> = out.results.iter().map(|r| (r.status, r.attempts)).collect();
    assert_eq!(got, vec![(Status::Failed, 3)]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_lane_holds_no_concurrency_slot_from_a_fast_one() {
    // Two targets with their own lanes: `slow` at 1/s, `fast` unlimited; one slot. Rows
    // waiting for the slow lane's pace must not keep the fast lane's rows from the wire.
    // Rows alternate: 5 on the slow target, 50 on the fast one.
    let rows = rows(55, 55).into_iter().map(|r| {
        r.map(|mut row| {
            row.target = usize::from(row.number % 11 != 1);
            row
        })
    });
    let out = run_on(
        config(1),
        vec![
            sim::ogmma("slow", "ch", "k", per_sec(1)),
            sim::ogmma("fast", "ch", "k", Rate::Unlimited),
        ],
        vec![
            Lane::new("slow".into(), vec![0], per_sec(1), 1),
            Lane::new("fast".into(), vec![1], Rate::Unlimited, 1),
        ],
        rows,
        Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(10))),
        Cancel::new(),
    )
    .await;
    let calls = out.log.0;
    assert_eq!(calls.len(), 55);
    // The 50 fast rows, 10 ms each one at a time, are done within the first second, while
    // the slow lane waits for its pace (5 rows at 1/s end at 4 s).
    let fast_done = calls
        .iter()
        .filter(|c| number(c) % 11 != 1)
        .map(|c| c.done)
        .max()
        .expect("fast calls");
    assert!(
        fast_done < Duration::from_millis(1000),
        "fast lane done at {fast_done:?}"
    );
    let last = calls.iter().map(|c| c.done).max().expect("calls");
    assert!(
        last >= Duration::from_secs(4),
        "slow lane kept its pace: {last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_lane_reads_no_further_ahead_than_it_can_use() {
    // 3 000 rows on one lane: the dispatcher keeps LANE_AHEAD rows waiting, not the whole
    // MAX_QUEUED (the rows' memory), and still never lets the senders run dry.
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let read = Arc::new(AtomicUsize::new(0));
    let most_ahead = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&read), Arc::clone(&most_ahead));
    let script = move |_: &str, n: usize| {
        m.fetch_max(r.load(Relaxed) - n, Relaxed);
        (ok(), Duration::from_millis(1))
    };
    let concurrency = 4;
    let counted = Arc::clone(&read);
    let rows = rows(3000, 3000).into_iter().inspect(move |_| {
        counted.fetch_add(1, Relaxed);
    });
    let out = run_on(
        config(concurrency),
        vec![sim::ogmma("o", "ch", "k", Rate::Unlimited)],
        vec![Lane::new("o".into(), vec![0], Rate::Unlimited, 1).with_planned_rows(3000)],
        rows,
        Box::new(script),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.log.len(), 3000);
    let most = most_ahead.load(Relaxed);
    // Waiting in the lane, in flight, and one batch of finished rows not yet handed back.
    assert!(
        (LANE_AHEAD..=LANE_AHEAD + concurrency + lane::DONE_BATCH + 1).contains(&most),
        "read {most} rows ahead of the requests"
    );
    assert_eq!(out.count(Status::Ok), 3000);
}

#[tokio::test(start_paused = true)]
async fn a_full_slow_lane_does_not_keep_a_fast_lanes_later_rows_waiting() {
    // The plan's first 1 100 rows are for a lane at 100/s, the last 50 for an unlimited one.
    // The slow lane fills up at LANE_AHEAD waiting; since the fast lane has rows still to
    // come, reading goes on and they are sent at once, not after the slow lane drains.
    let slow_rows = LANE_AHEAD as u64 + 76;
    let rows = rows(slow_rows + 50, slow_rows + 50)
        .into_iter()
        .map(move |r| {
            r.map(|mut row| {
                row.target = usize::from(row.number > slow_rows);
                row
            })
        });
    let out = run_on(
        config(4),
        vec![
            sim::ogmma("o", "ch", "k", per_sec(100)),
            sim::ogmma("o", "ch", "k", Rate::Unlimited),
        ],
        vec![
            Lane::new("slow".into(), vec![0], per_sec(100), 1).with_planned_rows(slow_rows),
            Lane::new("fast".into(), vec![1], Rate::Unlimited, 1).with_planned_rows(50),
        ],
        rows,
        Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(1))),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.log.len() as u64, slow_rows + 50);
    let fast_done = out
        .log
        .0
        .iter()
        .filter(|c| number(c) > slow_rows)
        .map(|c| c.done)
        .max()
        .expect("fast calls");
    // At 100/s the slow lane needs 11 s; it would have had to send 76 rows (0.76 s) before
    // the first fast row was read.
    assert!(
        fast_done < Duration::from_millis(300),
        "fast lane done at {fast_done:?}"
    );
}

/// Six lanes (targets `o0`..`o5` on one base URL) at `lane_rate` each, 240 rows dealt
/// round-robin, under `hosts`; every request answered after 30 ms.
async fn six_lanes_to_one_host(
    lane_rate: Rate,
    hosts: impl FnOnce(&[Target]) -> host::HostCeilings,
) -> SimRun {
    let targets: Vec<TargetRuntime> = (0..6)
        .map(|i| sim::ogmma(&format!("o{i}"), "ch", &format!("key-{i}"), lane_rate))
        .collect();
    let lanes: Vec<Lane> = (0..6)
        .map(|i| Lane::new(format!("o{i}"), vec![i], lane_rate, 1))
        .collect();
    let specs: Vec<Target> = targets.iter().map(|t| t.spec.clone()).collect();
    let rows = rows(240, 240).into_iter().map(|r| {
        r.map(|mut row| {
            row.target = (row.number as usize) % 6;
            row
        })
    });
    let provider = Provider::new().script(|_| Some((ok(), Duration::from_millis(30))));
    sim::run_under_ceilings(
        &Arc::new(provider),
        config(64),
        targets,
        lanes,
        hosts(&specs),
        rows,
        Cancel::new(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn lanes_to_one_host_stay_under_its_ceiling_together() {
    // Six lanes at 20/s each (120/s together) to one base URL whose ceiling is 30/s.
    let out = six_lanes_to_one_host(per_sec(20), |specs| {
        host::HostCeilings::new(specs, &[(specs[0].base_url.clone(), per_sec(30))], 1, false)
    })
    .await;
    assert_eq!(out.count(Status::Ok), 240);
    let busiest = out.log.max_in_window(Duration::from_secs(1));
    // Ceiling + burst (1); and it is the ceiling that holds them, not the lanes' own pace.
    assert!((28..=31).contains(&busiest), "busiest second {busiest}");
    // 240 requests at 30/s: about 8 s, where the lanes alone would take 2 s.
    let times = out.log.times();
    let span = times.iter().max().copied().unwrap_or_default()
        - times.iter().min().copied().unwrap_or_default();
    assert!(span >= Duration::from_millis(7900), "{span:?}");
    // Every lane got its share: none waited for the others to finish.
    let mut calls = out.log.0.clone();
    calls.sort_by_key(|c| c.sent);
    for lane in 0..6 {
        let early = calls[..60].iter().filter(|c| number(c) % 6 == lane).count();
        assert!(early >= 5, "lane {lane}: {early} of the first 60 requests");
    }
}

#[tokio::test(start_paused = true)]
async fn lanes_to_a_host_without_a_ceiling_run_at_their_own_pace() {
    let out = six_lanes_to_one_host(per_sec(10), |specs| {
        let hosts = host::HostCeilings::new(specs, &[], 1, false);
        assert!(hosts.hosts().is_empty());
        hosts
    })
    .await;
    assert_eq!(out.count(Status::Ok), 240);
    let busiest = out.log.max_in_window(Duration::from_secs(1));
    assert!((55..=60).contains(&busiest), "busiest second {busiest}");
}

/// Answers by a script of (emoji of the row, requests so far) → (outcome, latency); for tests
/// that read the run while it goes on (the simulated provider hands back only the end).
struct Scripted {
    script: Box<Script>,
    calls: std::sync::atomic::AtomicUsize,
}

impl Transport for Scripted {
    type Session = ();

    fn session(&self) {}

    async fn send(
        &self,
        _session: &mut (),
        request: crate::provider::SignedRequest,
        _timeout: Duration,
    ) -> AttemptOutcome {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let emoji = body["emoji"].as_str().unwrap_or_default();
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (outcome, latency) = (self.script)(emoji, n);
        tokio::time::sleep(latency).await;
        outcome
    }
}

/// Runs `rows` on one lane at `rate` and reads the live ETA ([`progress::time_left`]) after
/// `at`: the rows the lane finished by then, and the time left.
async fn eta_after(
    rate: Rate,
    rows: Vec<Result<Row, Problem>>,
    script: Box<Script>,
    at: Duration,
) -> (u64, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer =
        crate::outputs::report::ReportWriter::create(&dir.path().join("r.csv")).expect("report");
    let (out, thread) = OutputThread::start(writer, None, Arc::new(progress::Counters::default()))
        .expect("writer thread");
    let model = crate::outputs::audit::PaceModel {
        lanes: vec![crate::outputs::audit::LanePace {
            rows: rows.len() as u64,
            rate,
            host: None,
        }],
        ceilings: vec![],
        burst: 1,
    };
    let ctx = Arc::new(RunContext::new(
        config(16),
        vec![sim::ogmma("o", "ch", "k", rate)],
        vec![Lane::new("o".into(), vec![0], rate, 1)],
        Scripted {
            script,
            calls: Default::default(),
        },
        out,
        Cancel::new(),
    ));
    let run = tokio::spawn(execute(
        Arc::clone(&ctx),
        rows.into_iter(),
        Box::new(|r: &Row| format!("k{}", r.number)),
        |_: &Row, _: &str| Admission::Run,
    ));
    tokio::time::sleep(at).await;
    let seen = (
        ctx.lanes[0].finished(),
        progress::time_left(&ctx.lanes, &model),
    );
    run.await.expect("run");
    drop(ctx);
    thread.join().await;
    seen
}

#[tokio::test(start_paused = true)]
async fn the_eta_is_the_lanes_rows_left_at_the_pace_it_goes() {
    // 100 rows at 10/s: after 5 s about half are done, and the other half take about 5 s.
    let script = Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(20)));
    let (done, left) = eta_after(per_sec(10), rows(100, 100), script, Duration::from_secs(5)).await;
    assert!((48..=52).contains(&done), "{done} rows done");
    let expected = Duration::from_millis((100 - done) * 100);
    assert!(
        left.abs_diff(expected) <= Duration::from_millis(150),
        "{left:?}, expected {expected:?}"
    );

    // The same lane answered 429 a few times early on: it goes slower than its 10/s from then
    // (AIMD), and the ETA counts the rows left at that pace, not at 10/s.
    let script = Box::new(|_: &str, n: usize| {
        let answer = if (10..14).contains(&n) {
            status(429)
        } else {
            ok()
        };
        (answer, Duration::from_millis(20))
    });
    let (done, left) = eta_after(per_sec(10), rows(100, 100), script, Duration::from_secs(5)).await;
    let at_configured = Duration::from_millis((100 - done) * 100);
    assert!(
        left >= at_configured.mul_f64(1.1),
        "{left:?} for {} rows left, at the configured pace {at_configured:?}",
        100 - done
    );
    // And no slower than the rows it finished so far would say (with room for the slow
    // start): the pace it goes now, which is what the rows left will take.
    let at_average = Duration::from_secs_f64((100 - done) as f64 / (done as f64 / 5.0));
    assert!(
        left <= at_average.mul_f64(1.5),
        "{left:?}, at the average so far {at_average:?}"
    );
}

/// One Kommo target whose rows name two accounts, sorted by account (as exports come): a lane
/// per account, each at its own pace, side by side; each account's requests on its own path.
#[tokio::test(start_paused = true)]
async fn rows_naming_their_accounts_run_a_lane_per_account_side_by_side() {
    let mut integration = sim::kommo("integration", "unused", per_sec(10));
    integration.spec.kind = TargetKind::Kommo {
        scope_id: None,
        user_id: Some("u".into()),
        user_ref_id: None,
    };
    let rows: Vec<Row> = rows(40, 40)
        .into_iter()
        .flatten()
        .map(|mut row| {
            row.scope_id = Some(if row.number <= 20 { "acct-a" } else { "acct-b" }.into());
            row.conversation_id = Some("c".into());
            row
        })
        .collect();
    let targets = vec![integration.spec.clone()];
    let groups = crate::plan::pace::group(&targets, &[None], &mut Vec::new(), &mut Vec::new());
    let mut map = LaneMap::new(&groups, &targets);
    for row in &rows {
        map.route(row, &targets);
    }
    let lanes: Vec<Lane> = map
        .lanes
        .iter()
        .zip(&map.rows)
        .map(|(g, &n)| {
            Lane::new(g.name.clone(), g.members.clone(), per_sec(10), 1).with_planned_rows(n)
        })
        .collect();
    assert_eq!(lanes.len(), 2);
    let provider = Provider::new().latency(Duration::from_millis(5));
    let out = sim::run_routed(
        &Arc::new(provider),
        config(4),
        vec![integration],
        lanes,
        map,
        rows.into_iter().map(Ok),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), 40);
    for (account, first) in [("acct-a", 1u64), ("acct-b", 21)] {
        // The simulated provider reads the scope from the request's path.
        let mut starts: Vec<Duration> = out.log.scope(account).0.iter().map(|a| a.sent).collect();
        assert_eq!(starts.len(), 20, "{account}");
        starts.sort();
        // At its own 10/s from the start: 20 rows in 1.9 s, each 100 ms after the one before.
        assert!(
            starts[0] < Duration::from_millis(10),
            "{account}: {starts:?}"
        );
        assert!(
            starts[19] < Duration::from_millis(1950),
            "{account} ran side by side with the other: {starts:?}"
        );
        assert!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_millis(99)),
            "{account} kept its pace: {starts:?}"
        );
        // Its report rows carry the account.
        let reported = out
            .results
            .iter()
            .filter(|r| (first..first + 20).contains(&r.row))
            .all(|r| r.scope_id == account && r.channel_id.is_empty());
        assert!(reported, "{account}");
    }
}

/// The most calls on the wire at once.
fn most_in_flight(log: &sim::Log) -> usize {
    let calls = &log.0;
    calls
        .iter()
        .map(|c| {
            calls
                .iter()
                .filter(|o| o.sent <= c.sent && c.sent < o.done)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_paced_lane_keeps_two_senders_and_an_unlimited_one_grows_to_the_concurrency() {
    // 50 lanes at 10/s with quick answers: one sender on the wire, one at the pace, each.
    let lanes = 50;
    let targets: Vec<_> = (0..lanes)
        .map(|i| sim::ogmma(&format!("o{i}"), "ch", "k", per_sec(10)))
        .collect();
    let paced: Vec<_> = (0..lanes)
        .map(|i| Lane::new(format!("l{i}"), vec![i], per_sec(10), 1))
        .collect();
    let spread = rows(20 * lanes as u64, 20 * lanes as u64)
        .into_iter()
        .map(move |r| {
            r.map(|mut row| {
                row.target = (row.number % lanes as u64) as usize;
                row
            })
        });
    let out = run_on(
        config(64),
        targets,
        paced,
        spread,
        Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(5))),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), 20 * lanes);
    let senders: Vec<usize> = out.lanes.iter().map(|l| l.senders).collect();
    assert!(senders.iter().all(|&n| (1..=2).contains(&n)), "{senders:?}");
    // Every lane at its pace, side by side: 20 rows at 10/s end just before 2 s.
    let last = out.log.0.iter().map(|c| c.done).max().expect("calls");
    assert!(last < Duration::from_millis(2000), "done at {last:?}");

    // One unlimited lane whose answers take 100 ms: its senders grow to the concurrency,
    // and no more requests than that are ever in flight.
    let out = run(
        config(8),
        Rate::Unlimited,
        rows(80, 80),
        Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(100))),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), 80);
    assert_eq!(
        out.lanes.iter().map(|l| l.senders).collect::<Vec<_>>(),
        vec![8]
    );
    assert_eq!(most_in_flight(&out.log), 8);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_bounds_requests_in_flight_across_lanes_and_every_lane_gets_slots() {
    // 20 unlimited lanes, 30 rows each, slow answers, 8 slots for the whole run: never more
    // than 8 on the wire, and every lane has a row on the wire within the first few rounds
    // (the slots go round in the order senders asked for them, not lane by lane).
    let lanes = 20;
    let targets: Vec<_> = (0..lanes)
        .map(|i| sim::ogmma(&format!("o{i}"), "ch", "k", Rate::Unlimited))
        .collect();
    let all: Vec<_> = (0..lanes)
        .map(|i| Lane::new(format!("l{i}"), vec![i], Rate::Unlimited, 1))
        .collect();
    // Sorted by lane, as exports come.
    let sorted = rows(30 * lanes as u64, 30 * lanes as u64)
        .into_iter()
        .map(move |r| {
            r.map(|mut row| {
                row.target = ((row.number - 1) / 30) as usize;
                row
            })
        });
    let out = run_on(
        config(8),
        targets,
        all,
        sorted,
        Box::new(|_: &str, _n: usize| (ok(), Duration::from_millis(100))),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), 30 * lanes);
    assert_eq!(most_in_flight(&out.log), 8);
    // 600 rows, 8 at a time, 100 ms each: 7.5 s; each lane's first row within 20 rounds
    // (lanes × 100 ms ÷ 8 slots = 250 ms of fair share; 2 s is far from "after the others").
    for lane in 0..lanes as u64 {
        let first = out
            .log
            .0
            .iter()
            .filter(|c| (number(c) - 1) / 30 == lane)
            .map(|c| c.sent)
            .min()
            .expect("calls");
        assert!(
            first < Duration::from_secs(2),
            "lane {lane} first sent at {first:?}"
        );
    }
}

/// One Kommo integration whose rows name `accounts` accounts (`acct-00`, …), `per_account`
/// rows each, sorted by account (as exports come): its target, the lane map the validation
/// pass makes (a lane per account, at `rate`), the lanes, and each row with its lane.
fn sorted_by_account(
    accounts: u64,
    per_account: u64,
    rate: Rate,
) -> (TargetRuntime, LaneMap, Vec<Lane>, Vec<(Row, usize)>) {
    let mut integration = sim::kommo("integration", "unused", rate);
    integration.spec.kind = TargetKind::Kommo {
        scope_id: None,
        user_id: Some("u".into()),
        user_ref_id: None,
    };
    let targets = vec![integration.spec.clone()];
    let groups = crate::plan::pace::group(&targets, &[None], &mut Vec::new(), &mut Vec::new());
    let mut map = LaneMap::new(&groups, &targets);
    let rows: Vec<(Row, usize)> = (0..accounts * per_account)
        .map(|i| {
            let mut row = Row::test(i + 1)
                .message(format!("m{i}"))
                .emoji(format!("e{}", i + 1));
            row.scope_id = Some(format!("acct-{:02}", i / per_account));
            row.conversation_id = Some("c".into());
            let lane = map.route(&row, &targets).expect("a lane per account");
            (row, lane)
        })
        .collect();
    let lanes: Vec<Lane> = map
        .lanes
        .iter()
        .zip(&map.rows)
        .map(|(g, &n)| Lane::new(g.name.clone(), g.members.clone(), rate, 1).with_planned_rows(n))
        .collect();
    assert_eq!(lanes.len() as u64, accounts);
    (integration, map, lanes, rows)
}

/// 20 accounts × 600 rows sorted by account, each account's lane at 50/s: more rows than the
/// dispatcher keeps on their way at once, so reading in plan order would start the last
/// accounts only once the first had finished. Read lane by lane from the spool, every lane
/// paces at its limit from the start and the run takes what one lane takes.
#[tokio::test(start_paused = true)]
async fn a_plan_sorted_by_account_runs_every_lane_at_its_limit_from_the_start() {
    let (accounts, per_account) = (20u64, 600u64);
    assert!(accounts * per_account > MAX_QUEUED as u64);
    let (integration, map, lanes, rows) = sorted_by_account(accounts, per_account, per_sec(50));
    let provider = Provider::new().latency(Duration::from_millis(5));
    let out = sim::run_source(
        &Arc::new(provider),
        config(8),
        vec![integration],
        lanes,
        map,
        sim::spooled(&rows),
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), rows.len());
    for a in 0..accounts {
        let account = format!("acct-{a:02}");
        let log = out.log.scope(&account);
        assert_eq!(log.len() as u64, per_account, "{account}");
        let first = log.0.iter().map(|r| r.sent).min().expect("requests");
        assert!(
            first < Duration::from_secs(1),
            "{account} first sent at {first:?}"
        );
        let rate = log.achieved_rate().expect("a rate");
        assert!((49.0..=50.5).contains(&rate), "{account} at {rate}/s");
        // Each row of the account's lane in plan order (the messages differ: nothing waits).
        let numbers: Vec<u64> = log.0.iter().map(number).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{account}");
    }
    // One lane's 600 rows at 50/s: the last sent 11.98 s after the first.
    let ideal = Duration::from_millis((per_account - 1) * 20);
    assert!(
        out.took >= ideal && out.took <= ideal + Duration::from_millis(100),
        "took {:?}, one lane alone {ideal:?}",
        out.took
    );
}

/// Counts the rows read from a source.
struct Counted<S> {
    source: S,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: RowSource> RowSource for Counted<S> {
    fn lanes(&self) -> usize {
        self.source.lanes()
    }

    fn has_more(&self, lane: usize) -> bool {
        self.source.has_more(lane)
    }

    fn next_in(&mut self, lane: usize) -> Option<Result<Row, Problem>> {
        let row = self.source.next_in(lane);
        if row.is_some() {
            self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        row
    }
}

#[tokio::test(start_paused = true)]
async fn a_lane_reading_its_own_rows_keeps_only_its_read_ahead() {
    // 3 000 rows on one lane, read from the spool lane by lane: the dispatcher keeps the
    // lane's read-ahead on its way (waiting, in flight, or just finished), not the plan.
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let read = Arc::new(AtomicUsize::new(0));
    let most_ahead = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&read), Arc::clone(&most_ahead));
    let provider = Provider::new().script(move |req| {
        m.fetch_max(r.load(Relaxed) - req.n, Relaxed);
        Some((ok(), Duration::from_millis(1)))
    });
    let concurrency = 4;
    let rows: Vec<(Row, usize)> = rows(3000, 3000)
        .into_iter()
        .flatten()
        .map(|r| (r, 0))
        .collect();
    let source = Counted {
        source: sim::spooled(&rows),
        read: Arc::clone(&read),
    };
    let out = sim::run_source(
        &Arc::new(provider),
        config(concurrency),
        vec![sim::ogmma("o", "ch", "k", Rate::Unlimited)],
        vec![Lane::new("o".into(), vec![0], Rate::Unlimited, 1).with_planned_rows(3000)],
        LaneMap::default(),
        source,
        Cancel::new(),
    )
    .await;
    assert_eq!(out.count(Status::Ok), 3000);
    assert_eq!(read.load(Relaxed), 3000);
    let most = most_ahead.load(Relaxed);
    let bound = lane_read_ahead(1);
    // Rows finished and not yet handed back to the dispatcher are still counted as read.
    assert!(
        (bound..=bound + lane::DONE_BATCH + 1).contains(&most),
        "read {most} rows ahead of the requests (read-ahead {bound})"
    );
}

/// Rows read lane by lane from the spool, in a plan that mixes three accounts: rows on one
/// message still go in plan order without overlapping, a deferred row holds the rows behind
/// it on its message, and every row is reported once.
#[tokio::test(start_paused = true)]
async fn rows_read_lane_by_lane_keep_message_order_and_deferred_rows() {
    let (integration, mut map, _, _) = sorted_by_account(3, 1, per_sec(100));
    let targets = vec![integration.spec.clone()];
    // Row i: account i % 3, message i % 7 of that account, with latencies that would reorder
    // rows on one message if they overlapped; row 50 is deferred, and the later rows on its
    // message (account 2, message 1) wait behind it.
    let rows: Vec<(Row, usize)> = (1..=300u64)
        .map(|i| {
            let mut row = Row::test(i)
                .message(format!("m{}", i % 7))
                .emoji(format!("e{i}"));
            row.scope_id = Some(format!("acct-{:02}", i % 3));
            row.conversation_id = Some("c".into());
            if i == 50 {
                row.not_before = Some("2999-01-01T00:00:00Z".parse().expect("time"));
            }
            let lane = map.route(&row, &targets).expect("a lane per account");
            (row, lane)
        })
        .collect();
    let lanes: Vec<Lane> = map
        .lanes
        .iter()
        .zip(&map.rows)
        .map(|(g, &n)| {
            Lane::new(g.name.clone(), g.members.clone(), per_sec(100), 1).with_planned_rows(n)
        })
        .collect();
    let provider = Provider::new().script(|req| {
        let n: u64 = req.emoji[1..].parse().unwrap_or(0);
        Some((ok(), Duration::from_millis(1 + (n * 37) % 23)))
    });
    let out = sim::run_source(
        &Arc::new(provider),
        config(8),
        vec![integration],
        lanes,
        map,
        sim::spooled(&rows),
        Cancel::new(),
    )
    .await;
    let numbers: Vec<u64> = out.results.iter().map(|r| r.row).collect();
    assert_eq!(numbers, (1..=300).collect::<Vec<_>>());
    let held = |i: u64| i >= 50 && i % 3 == 50 % 3 && i % 7 == 50 % 7;
    for r in &out.results {
        let want = if held(r.row) {
            Status::Deferred
        } else {
            Status::Ok
        };
        assert_eq!(r.status, want, "row {}", r.row);
    }
    assert_eq!(
        out.count(Status::Deferred),
        (50..=300).filter(|&i| held(i)).count()
    );
    for a in 0..3 {
        for m in 0..7 {
            let log = out.log.scope(&format!("acct-{a:02}"));
            let on: Vec<&Arrival> = log
                .0
                .iter()
                .filter(|c| c.message == format!("m{m}"))
                .collect();
            let mut sent = on.clone();
            sent.sort_by_key(|c| c.sent);
            assert!(
                sent.windows(2)
                    .all(|w| number(w[0]) < number(w[1]) && w[0].done <= w[1].sent),
                "account {a} message {m}"
            );
        }
    }
}

/// A soft cancel while rows are read lane by lane: every row is reported once, those not sent
/// `cancelled`, whichever lane they were waiting in or not yet read from.
#[tokio::test(start_paused = true)]
async fn a_cancel_while_reading_lane_by_lane_reports_every_row_once() {
    let (integration, map, lanes, rows) = sorted_by_account(4, 500, per_sec(100));
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let provider = Provider::new().script(move |req| {
        if req.n >= 100 {
            trigger.cancel_soft();
        }
        Some((ok(), Duration::from_millis(5)))
    });
    let out = sim::run_source(
        &Arc::new(provider),
        config(4),
        vec![integration],
        lanes,
        map,
        sim::spooled(&rows),
        cancel,
    )
    .await;
    let numbers: Vec<u64> = out.results.iter().map(|r| r.row).collect();
    assert_eq!(numbers, (1..=2000).collect::<Vec<_>>());
    let ok = out.count(Status::Ok);
    assert!((100..=120).contains(&ok), "{ok} ok");
    assert_eq!(ok + out.count(Status::Cancelled), 2000);
    // The four lanes had all started.
    for a in 0..4 {
        assert!(
            out.log.scope(&format!("acct-{a:02}")).len() > 0,
            "acct-{a:02}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_sent_row_is_stamped_by_the_wire_clock_and_a_deferred_one_by_the_run_clock() {
    // `--now` fixes the run's decisions (`not_before`), not what happens on the wire: a sent
    // row's finish time comes from the wire clock, a deferred row's from the run's clock.
    use chrono::TimeZone;
    let run_now = chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let wire_now = chrono::Utc
        .with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
        .single()
        .expect("time");
    let provider = Arc::new(Provider::new());
    let config = ExecConfig {
        clock: Clock::Fixed(run_now),
        wire_clock: Clock::Fixed(wire_now),
        ..ExecConfig::default()
    };
    let mut later = Row::test(3).message("m3");
    later.not_before = Some(run_now + chrono::Duration::days(1));
    let rows = vec![
        Row::test(1).message("m1"),
        Row::test(2).message("m2"),
        later,
    ];
    let run = sim::run(
        &provider,
        config,
        vec![sim::kommo("k", "s1", per_sec(100))],
        Vec::new(),
        rows,
    )
    .await;
    let stamps: Vec<(Status, &str)> = run
        .results
        .iter()
        .map(|r| (r.status, r.finished_at.as_str()))
        .collect();
    assert_eq!(
        stamps,
        vec![
            (Status::Ok, "2030-06-01T12:00:00.000Z"),
            (Status::Ok, "2030-06-01T12:00:00.000Z"),
            (Status::Deferred, "2026-01-01T00:00:00.000Z"),
        ]
    );
}
