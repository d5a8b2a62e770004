//! A good citizen under refusal, on the simulated provider under paused time: a 429 slows
//! every lane whatever its configured rate, and an origin that cannot be reached stops its
//! targets after a few attempts.

use std::sync::Arc;
use std::time::Duration;

use super::sim::{self, Provider, RetryAfter};
use super::*;
use crate::outputs::report::Status;
use crate::plan::{Rate, Row};

fn config(concurrency: usize) -> ExecConfig {
    ExecConfig {
        concurrency,
        ..ExecConfig::default()
    }
}

/// 100 rows at `rate` with 16 in flight, against a provider that takes 7/s (burst 1) and
/// answers 429 without `Retry-After` above that.
async fn flood_check(rate: Rate) {
    let provider = Arc::new(
        Provider::new()
            .rate(sim::per_sec(7), 1)
            .latency(Duration::from_millis(20))
            .jitter(Duration::from_millis(5), 7),
    );
    let run = sim::run(
        &provider,
        config(16),
        vec![sim::kommo("k", "s1", rate)],
        Vec::new(),
        sim::rows(100, 0, "m"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), 100, "every row ok ({rate})");
    let requests = run.log.len();
    assert!(requests <= 200, "{requests} requests for 100 rows ({rate})");
    let busiest = run.log.max_in_window(Duration::from_secs(1));
    assert!(busiest <= 50, "{busiest} requests in one second ({rate})");
    let lane = &run.lanes[0];
    assert!(lane.pace.slowdowns >= 1, "{rate}: {:?}", lane.pace);
    let settled = lane.pace.settled_rate.expect("a settled pace");
    // Settled just under what the provider takes, not at a fraction of it.
    assert!(
        (5.0..=7.0).contains(&settled),
        "{rate}: settled at {settled}"
    );
    // Most of the provider's rate was used once the pace was found (100 rows at 7/s: 14 s).
    assert!(
        run.took <= Duration::from_secs(30),
        "{rate}: 100 rows took {:?}",
        run.took
    );
}

#[tokio::test(start_paused = true)]
async fn an_unlimited_lane_slows_to_what_a_refusing_provider_accepts() {
    flood_check(Rate::Unlimited).await;
}

#[tokio::test(start_paused = true)]
async fn a_1000_per_second_lane_slows_to_what_a_refusing_provider_accepts() {
    flood_check(sim::per_sec(1000)).await;
}

#[tokio::test(start_paused = true)]
async fn refusals_in_a_row_hold_the_lane_back_exponentially() {
    // The provider refuses the first 12 requests whatever the pace, then takes everything.
    let provider = Arc::new(Provider::new().script(|r| {
        (r.n < 12).then(|| {
            (
                AttemptOutcome::Answered {
                    status: 429,
                    retry_after: None,
                    code: "rate_limited".into(),
                    message: String::new(),
                },
                Duration::from_millis(10),
            )
        })
    }));
    let run = sim::run(
        &provider,
        config(1),
        vec![sim::kommo("k", "s1", Rate::Unlimited)],
        Vec::new(),
        sim::rows(3, 0, "m"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), 3);
    let gaps: Vec<Duration> = run
        .log
        .0
        .windows(2)
        .map(|w| w[1].sent - w[0].sent)
        .collect();
    // Each refusal in a row at least doubles the wait before the next request, up to the cap.
    for pair in gaps[..11].windows(2) {
        assert!(
            pair[1] >= pair[0] * 19 / 10 || pair[1] >= rate::MAX_REFUSAL_WAIT,
            "{gaps:?}"
        );
    }
    assert!(
        gaps.iter().all(|g| *g <= rate::MAX_REFUSAL_WAIT * 2),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_hint_in_the_body_pauses_the_lane() {
    let provider = Arc::new(
        Provider::new()
            .rate(sim::per_sec(2), 1)
            .retry_after(RetryAfter::Body(3)),
    );
    let run = sim::run(
        &provider,
        config(4),
        vec![sim::kommo("k", "s1", Rate::Unlimited)],
        Vec::new(),
        sim::rows(10, 0, "m"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), 10);
    let lane = &run.lanes[0];
    assert!(lane.pace.pauses >= 1, "{:?}", lane.pace);
    // After each refusal nothing is sent for the 3 s the body asked for.
    let log = &run.log.0;
    for (i, a) in log.iter().enumerate() {
        if a.fate == sim::Fate::Status(429) {
            let next = log[i + 1..].iter().find(|b| b.sent > a.done);
            if let Some(next) = next {
                assert!(
                    next.sent >= a.done + Duration::from_secs(3),
                    "sent {:?} after a 429 answered at {:?}",
                    next.sent,
                    a.done
                );
            }
        }
    }
}

/// 300 rows on two targets at an origin that refuses connections, eight in flight.
#[tokio::test(start_paused = true)]
async fn an_origin_that_refuses_connections_stops_its_targets_after_ten() {
    let provider = Arc::new(Provider::new().refuse("127.0.0.1:9"));
    let rows = sim::rows(150, 0, "k")
        .into_iter()
        .chain(sim::rows(150, 1, "o").into_iter().map(|r| Row {
            number: r.number + 150,
            ..r
        }));
    let run = sim::run(
        &provider,
        config(8),
        vec![
            sim::kommo("k", "s1", Rate::Unlimited),
            sim::ogmma("o", "ch", "key", Rate::Unlimited),
        ],
        Vec::new(),
        rows,
    )
    .await;
    assert_eq!(run.results.len(), 300);
    assert!(
        run.log.len() <= UNREACHABLE_TO_STOP as usize + 8,
        "{} connection attempts",
        run.log.len()
    );
    assert_eq!(run.count(Status::Skipped), 300);
    assert!(run.results.iter().all(|r| r.code == "unreachable"));
    // Both targets, one origin: stopped together, for the same reason.
    let why: Vec<&str> = run
        .targets
        .iter()
        .filter_map(|t| t.stopped.as_deref())
        .collect();
    assert_eq!(why.len(), 2, "{why:?}");
    assert_eq!(why[0], why[1]);
    assert!(
        why[0].contains("origin 127.0.0.1:9 unreachable"),
        "{}",
        why[0]
    );
}

/// Rows that failed for good before the stop keep their code; a connection made between
/// failures starts the count again; drops on established connections never count.
#[tokio::test(start_paused = true)]
async fn only_failures_to_connect_in_a_row_stop_an_origin() {
    let refused = |code: &str| AttemptOutcome::Unreachable {
        origin: "127.0.0.1:9".into(),
        code: code.into(),
        message: "127.0.0.1:9: TLS handshake: handshake failed".into(),
    };
    // Nine TLS failures (final), an answer, nine more, an answer... never ten in a row.
    let provider = Arc::new(
        Provider::new()
            .faults(3, 0.0, 0.5)
            .script(move |r| (r.n % 10 != 9).then(|| (refused("tls"), Duration::from_millis(5)))),
    );
    let run = sim::run(
        &provider,
        config(1),
        vec![sim::kommo("k", "s1", Rate::Unlimited)],
        Vec::new(),
        sim::rows(60, 0, "m"),
    )
    .await;
    assert!(
        run.targets[0].stopped.is_none(),
        "{:?}",
        run.targets[0].stopped
    );
    assert_eq!(run.count(Status::Skipped), 0);
    let tls = run.results.iter().filter(|r| r.code == "tls").count();
    assert!(tls >= 50, "{tls} rows failed with tls");
    assert!(run
        .results
        .iter()
        .filter(|r| r.code == "tls")
        .all(|r| r.status == Status::Failed));

    // Ten in a row: the rows failed before the stop keep `tls`, the rest are skipped.
    let provider =
        Arc::new(Provider::new().script(move |_| Some((refused("tls"), Duration::from_millis(5)))));
    let run = sim::run(
        &provider,
        config(1),
        vec![sim::kommo("k", "s1", Rate::Unlimited)],
        Vec::new(),
        sim::rows(60, 0, "m"),
    )
    .await;
    assert_eq!(run.log.len(), 10);
    assert_eq!(run.count(Status::Failed), 10);
    assert_eq!(run.count(Status::Skipped), 50);
    assert!(run.results[..10].iter().all(|r| r.code == "tls"));
    assert!(run.results[10..].iter().all(|r| r.code == "unreachable"));
}

/// Refusals that came while a lane was still finding its pace (a start-up burst beyond the
/// provider's, then one request that arrived bunched with others) do not hold a lane
/// configured far above them there for the rest of the run: once the provider has accepted
/// for a while, the ceiling grows again, up to the configured rate.
#[tokio::test(start_paused = true)]
async fn a_lane_held_far_below_its_rate_by_early_refusals_grows_back() {
    let refused = || AttemptOutcome::Answered {
        status: 429,
        retry_after: None,
        code: "rate_limited".into(),
        message: String::new(),
    };
    let provider = Arc::new(
        Provider::new()
            .latency(Duration::from_millis(2))
            .script(move |r| (r.n < 5 || r.n == 40).then(|| (refused(), Duration::from_millis(2)))),
    );
    let run = sim::run(
        &provider,
        config(16),
        vec![sim::kommo("k", "s1", per_sec(400))],
        Vec::new(),
        sim::rows(6000, 0, "m"),
    )
    .await;
    assert_eq!(run.count(Status::Ok), 6000);
    let lane = &run.lanes[0];
    assert_eq!(lane.rate_limited, 6);
    // Held where the refusals left it (under 10/s with the ceiling frozen), 6 000 rows would
    // take over ten minutes; grown back, they take 70 s of the paused clock.
    assert!(
        lane.pace.slowest_rate.is_some_and(|r| r < 50.0),
        "{:?}",
        lane.pace
    );
    assert!(
        lane.pace.settled_rate.is_some_and(|r| r >= 399.0),
        "{:?}",
        lane.pace
    );
    assert!(run.took < Duration::from_secs(90), "took {:?}", run.took);
}

fn per_sec(count: u32) -> Rate {
    sim::per_sec(count)
}
