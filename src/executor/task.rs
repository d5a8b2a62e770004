//! One row's life in its lane: a [`Job`] carries the row and its retry state between
//! attempts. [`attempt`] signs afresh, sends, classifies the answer and either finishes the row
//! (its [`RowOutcome`] rendered for the writer) or puts it back at the front of its lane.
//!
//! - 429 without `Retry-After` slows the lane ([`super::rate::RateLimiter::rate_limited`]),
//!   whatever its configured rate; with `Retry-After` (a header, or `retry_after` /
//!   `retryAfter` seconds in a JSON body) the lane pauses. Either way the row keeps its place
//!   and uses no retry, as long as it has been rate limited for less than the run's
//!   `rate_limit_budget`; after that a 429 counts as an ordinary retry.
//! - An answer other than 429 is an acceptance the lane's pace is measured from; the outcome
//!   also feeds the origin's breaker ([`super::target::OriginHealth`]): failures to establish
//!   a connection count, an answer or a drop on an established connection starts again.
//! - A sent row's concurrency slot goes to the writer with it (see [`finish`]).
//! - 5xx, timeouts and connection errors use `--retries`, with backoff and jitter.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::outputs::emit::{EmitRecord, EmitWriter};
use crate::outputs::report::{with_row_view, RowView, Status};
use crate::plan::{EmitFormat, Row};
use crate::provider::SignedRequest;

use super::context::RunContext;
use super::job::{Job, RowOutcome};
use super::lane::{Done, Lane};
use super::message::MessageId;
use super::output::Batch;
use super::retry::{backoff, classify, AttemptOutcome, Verdict};
use super::target::TargetRuntime;
use super::transport::Transport;

/// Dry run: build and sign with the run's clock, record the request, report `planned`;
/// both rendered into `batch`.
pub(super) fn plan_row<T: Transport>(ctx: &RunContext<T>, row: &Row, key: &str, batch: &mut Batch) {
    let target = &ctx.targets[row.target];
    let prepared = target.endpoint.prepare(row);
    let now = ctx.config.clock.now();
    let signed = target.signer.sign(&prepared, now);
    if let Some(format) = ctx.config.emit_format {
        render_emit(
            ctx,
            format,
            row,
            ctx.lane_of(row),
            1,
            &signed,
            &mut batch.emit,
        );
    }
    with_row_view(
        &target.spec,
        row,
        key,
        (Status::Planned, "", "dry run: not sent"),
        now,
        |v| ctx.out.push(batch, v),
    );
}

/// The emit record of `row`'s attempt, for a row of lane `lane`.
fn render_emit<T: Transport>(
    ctx: &RunContext<T>,
    format: EmitFormat,
    row: &Row,
    lane: usize,
    attempt: u32,
    signed: &SignedRequest,
    out: &mut Vec<u8>,
) {
    let credential = &ctx.targets[row.target].spec.credential;
    EmitWriter::render_into(
        format,
        &EmitRecord {
            row: row.number,
            attempt,
            request: signed,
            credential,
            // The pace of the row's lane: targets sharing a pace share it in the script too.
            pace: ctx.lanes[lane].rate.interval(),
        },
        out,
    );
}

async fn emit<T: Transport>(
    ctx: &RunContext<T>,
    row: &Row,
    lane: usize,
    attempt: u32,
    signed: &SignedRequest,
) {
    if let Some(format) = ctx.config.emit_format {
        let mut line = Vec::with_capacity(512);
        render_emit(ctx, format, row, lane, attempt, signed, &mut line);
        ctx.out.emit(line).await;
    }
}

/// Hands a finished row to the writer (rendered with the same view builder as every other
/// row), waiting only when the writer has fallen a whole inbox behind. A row that was sent
/// hands its record permit (`permit`) on with it: the writer frees the permit once the
/// report holds the row, so rows sent and not recorded never outnumber the record window
/// ([`super::context::RECORD_WINDOW`] times `concurrency`).
/// `lane` is the row's lane, which its sender knows.
async fn finish<T: Transport>(
    ctx: &RunContext<T>,
    lane: usize,
    job: &Job,
    outcome: RowOutcome,
    permit: Option<OwnedSemaphorePermit>,
) -> MessageId {
    ctx.lanes[lane].count_finished(outcome.status);
    let full = with_row_view(
        &ctx.targets[job.row.target].spec,
        &job.row,
        &job.key,
        (outcome.status, &outcome.code, &outcome.message),
        ctx.config.wire_clock.now(),
        |settled| {
            ctx.out.finished(
                &RowView {
                    http_status: outcome.http_status,
                    attempts: outcome.attempts,
                    duration_ms: outcome.duration.as_millis() as u64,
                    ..*settled
                },
                outcome.latency,
                permit,
            )
        },
    );
    if full {
        ctx.out.room().await;
    }
    job.message_id()
}

/// A row its lane (`lane`) will not send: its target was stopped, or the run was interrupted.
pub(super) async fn finish_unsent<T: Transport>(
    ctx: &RunContext<T>,
    lane: usize,
    job: Job,
    done: &Done,
) {
    let target = &ctx.targets[job.row.target];
    let outcome = match target.stopped() {
        Some(reason) => job.outcome(
            Status::Skipped,
            None,
            target.stop_code(),
            reason.to_string(),
        ),
        None => job.outcome(
            Status::Cancelled,
            None,
            "cancelled",
            if job.attempts == 0 {
                "interrupted before sending".into()
            } else {
                "interrupted before retrying".into()
            },
        ),
    };
    let id = finish(ctx, lane, &job, outcome, None).await;
    done.push(id, true);
}

/// What became of an attempt.
pub(super) enum Attempted {
    /// The row is finished (its result is with the writer): its message is free.
    Finished(MessageId),
    /// The row goes back to the front of its lane after this backoff (zero: at once).
    Again(Duration),
}

/// One attempt of `job`, holding a concurrency slot while on the wire and, until the report
/// holds the row, a permit of the rows sent and not recorded (`permits`: slot, record).
/// `hard` resolves on a hard cancel: the sender's own watch, kept from attempt to attempt
/// (a new one per attempt registered with the cancel channel and left it again every time).
pub(super) async fn attempt<T: Transport>(
    ctx: &RunContext<T>,
    session: &mut T::Session,
    lane_index: usize,
    job: &mut Job,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    hard: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
) -> Attempted {
    let (slot, permit) = permits;
    let target = &ctx.targets[job.row.target];
    let lane = &ctx.lanes[lane_index];
    job.attempts += 1;
    let sent_at = Instant::now();
    job.started.get_or_insert(sent_at);
    target.sends.record(sent_at);
    if !std::sync::Arc::ptr_eq(&lane.sends, &target.sends) {
        lane.sends.record(sent_at);
    }
    let prepared = job
        .prepared
        .get_or_insert_with(|| target.endpoint.prepare(&job.row));
    // Signed at send time, on every attempt: a retry with an old Date would be rejected.
    let signed = target.signer.sign(prepared, ctx.config.wire_clock.now());
    emit(ctx, &job.row, lane_index, job.attempts, &signed).await;
    // Pinned where it is made: moving the request's future (several KiB) into `select!`
    // copied it on every attempt.
    let send = std::pin::pin!(ctx.transport.send(session, signed, ctx.config.timeout));
    let outcome = tokio::select! {
        outcome = send => Some(outcome),
        _ = hard => None,
    };
    let Some(outcome) = outcome else {
        let o = job.outcome(
            Status::Cancelled,
            None,
            "cancelled",
            "interrupted while the request was in flight; it may have been applied".into(),
        );
        return Attempted::Finished(finish(ctx, lane_index, job, o, Some(permit)).await);
    };
    job.latency = Some(sent_at.elapsed());
    drop(slot);
    heed(target, lane, &outcome);
    let (http_status, code, message) = describe(&outcome, ctx.config.timeout);
    let verdict = classify(&outcome);
    lane.series.record(&crate::outputs::series::Attempt {
        sent_at,
        latency: job.latency.unwrap_or_default(),
        ok: matches!(verdict, Verdict::Success),
        rate_limited: http_status == Some(429),
        retry: job.attempts > 1,
    });
    // A finished row hands its slot to the writer; one that goes again frees it on return.
    let o = match verdict {
        Verdict::Success => {
            target.record_auth(false, 0, "");
            job.outcome(Status::Ok, http_status, &code, message)
        }
        Verdict::Fail { auth } => {
            if auth {
                target.record_auth(true, http_status.unwrap_or(0), &code);
            }
            job.outcome(Status::Failed, http_status, &code, message)
        }
        Verdict::Retry { retry_after } => {
            match again(ctx, lane, job, sent_at, http_status, retry_after) {
                Ok(wait) => return Attempted::Again(wait),
                Err(why) => job.outcome(
                    Status::Failed,
                    http_status,
                    &code,
                    format!("{message} ({why})").trim_start().to_string(),
                ),
            }
        }
    };
    Attempted::Finished(finish(ctx, lane_index, job, o, Some(permit)).await)
}

/// What an answer tells the origin's breaker and the lane's pace.
fn heed(target: &TargetRuntime, lane: &Lane, outcome: &AttemptOutcome) {
    // The origin's breaker: failures to establish a connection in a row stop its targets.
    match outcome {
        AttemptOutcome::Unreachable {
            origin, message, ..
        } => {
            // The origin's own message names it: the cause alone.
            let prefix = format!("{origin}: ");
            target
                .origin
                .failed(message.strip_prefix(&prefix).unwrap_or(message))
        }
        AttemptOutcome::Answered { .. } | AttemptOutcome::Connection(_) => {
            target.origin.connected()
        }
        AttemptOutcome::Timeout => {}
    }
    if let AttemptOutcome::Answered { status, .. } = outcome {
        if *status != 429 {
            // Taken under the provider's rate limit: what a 429's slowdown is measured from.
            lane.limiter.accepted(Instant::now());
        }
    }
}

/// An attempt's outcome as the report shows it: HTTP status, code and message.
fn describe(outcome: &AttemptOutcome, timeout: Duration) -> (Option<u16>, String, String) {
    match outcome {
        AttemptOutcome::Answered {
            status,
            code,
            message,
            ..
        } => (
            Some(*status),
            if code.is_empty() && !(200..300).contains(status) {
                format!("http_{status}")
            } else {
                code.clone()
            },
            message.clone(),
        ),
        AttemptOutcome::Timeout => (
            None,
            "timeout".to_string(),
            format!("no answer within {timeout:?}"),
        ),
        AttemptOutcome::Connection(e) => (None, "connection".to_string(), e.clone()),
        AttemptOutcome::Unreachable { code, message, .. } => (None, code.clone(), message.clone()),
    }
}

/// A retryable outcome of the attempt sent at `sent_at`: how long the row waits before it
/// goes back to the front of its lane (zero: at once), or why it gives up.
fn again<T: Transport>(
    ctx: &RunContext<T>,
    lane: &Lane,
    job: &mut Job,
    sent_at: Instant,
    http_status: Option<u16>,
    retry_after: Option<Duration>,
) -> Result<Duration, String> {
    let limited = http_status == Some(429);
    if limited {
        lane.rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match retry_after {
            // The provider asked the whole lane to wait, not just this row.
            Some(ra) => lane.limiter.pause_until(Instant::now() + ra),
            None => lane.limiter.rate_limited(sent_at),
        }
    } else {
        job.limited_since = None;
    }
    let within_budget = limited && {
        let since = *job.limited_since.get_or_insert(sent_at);
        since.elapsed() <= ctx.config.rate_limit_budget
    };
    if within_budget {
        // Rate limited within the budget: back to the front of its lane at once; the lane's
        // pace (slowed or paused for the 429) decides when it goes again.
        return Ok(Duration::ZERO);
    }
    job.retries += 1;
    if job.retries > ctx.config.retries {
        return Err(if limited {
            format!(
                "still rate limited after {}s and {} attempts",
                job.limited_since.map_or(0, |s| s.elapsed().as_secs()),
                job.attempts
            )
        } else {
            format!("gave up after {} attempts", job.attempts)
        });
    }
    if let (false, Some(ra)) = (limited, retry_after) {
        lane.limiter.pause_until(Instant::now() + ra);
    }
    // Back to the front of its lane once the backoff is over: the lane's pace decides when it
    // goes again. The lane's sender finishes it if the run was interrupted meanwhile.
    Ok(backoff(
        job.retries,
        ctx.config.backoff_base,
        ctx.config.backoff_cap,
        retry_after,
        &mut job.rng,
    ))
}
