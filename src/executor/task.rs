//! One row's life: wait for the target's slot, sign afresh, send, classify, retry or finish.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::emit::{EmitRecord, EmitWriter};
use crate::plan::{EmitFormat, Row};
use crate::provider::{self, PreparedRequest, SignedRequest};
use crate::report::{with_timestamp, RowView, Status};

use super::output::{Batch, RowDone};
use super::retry::{backoff, classify, AttemptOutcome, Verdict};
use super::{settled_view, with_settled, RunContext, Transport};

/// Dry run: build and sign with the run's clock, record the request, report `planned`;
/// both rendered into `batch`.
pub(super) fn plan_row<T: Transport>(ctx: &RunContext<T>, row: &Row, key: &str, batch: &mut Batch) {
    let target = &ctx.targets[row.target];
    let prepared = provider::prepare(&target.spec, row);
    let now = ctx.config.clock.now();
    let signed = provider::sign(&prepared, &target.secret, now);
    if let Some(format) = ctx.config.emit_format {
        render_emit(ctx, format, row, 1, &signed, &mut batch.emit);
    }
    with_settled(
        &ctx.targets,
        row,
        key,
        Status::Planned,
        "",
        "dry run: not sent",
        now,
        |v| ctx.out.push(batch, v),
    );
}

fn render_emit<T: Transport>(
    ctx: &RunContext<T>,
    format: EmitFormat,
    row: &Row,
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
            pace: ctx.targets[row.target].rate.interval(),
        },
        out,
    );
}

async fn emit<T: Transport>(ctx: &RunContext<T>, row: &Row, attempt: u32, signed: &SignedRequest) {
    if let Some(format) = ctx.config.emit_format {
        let mut line = Vec::with_capacity(512);
        render_emit(ctx, format, row, attempt, signed, &mut line);
        ctx.out.emit(line).await;
    }
}

/// The last answer (or failure) seen, for the report row.
struct Last {
    http_status: Option<u16>,
    code: String,
    message: String,
}

/// Runs one row to its final status. Returns its report row, rendered, with the last
/// attempt's latency.
pub(super) async fn run_row<T: Transport>(ctx: &RunContext<T>, row: &Row, key: &str) -> RowDone {
    let (done, latency) = drive_row(ctx, row).await;
    let last = &done.last;
    with_timestamp(chrono::Utc::now(), |finished_at| {
        let settled = settled_view(
            &ctx.targets,
            row,
            key,
            done.status,
            &last.code,
            &last.message,
            finished_at,
        );
        ctx.out.render(
            &RowView {
                http_status: last.http_status,
                attempts: done.attempts,
                duration_ms: done.started.map_or(0, |s| s.elapsed().as_millis() as u64),
                ..settled
            },
            latency,
        )
    })
}

/// How a row ended, before it is rendered.
struct Finished {
    status: Status,
    attempts: u32,
    started: Option<Instant>,
    last: Last,
}

async fn drive_row<T: Transport>(ctx: &RunContext<T>, row: &Row) -> (Finished, Option<Duration>) {
    let target = &ctx.targets[row.target];
    let prepared = provider::prepare(&target.spec, row);
    let mut rng = SmallRng::seed_from_u64(row.number ^ 0x9e37_79b9_7f4a_7c15);
    let mut attempts = 0u32;
    let mut started: Option<Instant> = None;
    let mut latency = None;
    let mut last = Last {
        http_status: None,
        code: String::new(),
        message: String::new(),
    };
    let finish = |status: Status, attempts: u32, started: Option<Instant>, last: Last| Finished {
        status,
        attempts,
        started,
        last,
    };
    loop {
        if let Some(reason) = target.stopped() {
            last.code = "auth_stopped".into();
            last.message = reason.to_string();
            return (finish(Status::Skipped, attempts, started, last), latency);
        }
        if ctx.cancel.is_soft() {
            last.code = "cancelled".into();
            last.message = if attempts == 0 {
                "interrupted before sending".into()
            } else {
                "interrupted before retrying".into()
            };
            return (finish(Status::Cancelled, attempts, started, last), latency);
        }
        tokio::select! {
            _ = target.limiter.until_ready() => {}
            _ = ctx.cancel.soft() => continue,
        }
        // The target may have been stopped while this row waited for its slot.
        if target.stopped().is_some() {
            continue;
        }
        attempts += 1;
        let sent_at = Instant::now();
        started.get_or_insert(sent_at);
        target.record_send(sent_at);
        let outcome = attempt(ctx, row, &prepared, attempts).await;
        let Some(outcome) = outcome else {
            last.code = "cancelled".into();
            last.message =
                "interrupted while the request was in flight; it may have been applied".into();
            return (finish(Status::Cancelled, attempts, started, last), latency);
        };
        latency = Some(sent_at.elapsed());
        last = match &outcome {
            AttemptOutcome::Answered {
                status,
                code,
                message,
                ..
            } => Last {
                http_status: Some(*status),
                code: if code.is_empty() && !(200..300).contains(status) {
                    format!("http_{status}")
                } else {
                    code.clone()
                },
                message: message.clone(),
            },
            AttemptOutcome::Timeout => Last {
                http_status: None,
                code: "timeout".into(),
                message: format!("no answer within {:?}", ctx.config.timeout),
            },
            AttemptOutcome::Connection(e) => Last {
                http_status: None,
                code: "connection".into(),
                message: e.clone(),
            },
            AttemptOutcome::Refused { code, message } => Last {
                http_status: None,
                code: code.clone(),
                message: message.clone(),
            },
        };
        match classify(&outcome) {
            Verdict::Success => {
                target.record_auth(false, 0, "");
                return (finish(Status::Ok, attempts, started, last), latency);
            }
            Verdict::Fail { auth } => {
                if auth {
                    target.record_auth(true, last.http_status.unwrap_or(0), &last.code);
                }
                return (finish(Status::Failed, attempts, started, last), latency);
            }
            Verdict::Retry { retry_after } => {
                if attempts > ctx.config.retries {
                    last.message = format!("{} (gave up after {attempts} attempts)", last.message)
                        .trim_start()
                        .to_string();
                    return (finish(Status::Failed, attempts, started, last), latency);
                }
                if let Some(ra) = retry_after {
                    // The provider asked the whole target to slow down, not just this row.
                    target.limiter.pause_until(Instant::now() + ra);
                }
                let wait = backoff(
                    attempts,
                    ctx.config.backoff_base,
                    ctx.config.backoff_cap,
                    retry_after,
                    &mut rng,
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.cancel.soft() => {}
                }
            }
        }
    }
}

/// Signs and sends one attempt. `None` when a hard cancel abandoned it in flight.
async fn attempt<T: Transport>(
    ctx: &RunContext<T>,
    row: &Row,
    prepared: &PreparedRequest,
    n: u32,
) -> Option<AttemptOutcome> {
    let target = &ctx.targets[row.target];
    // Signed at send time, on every attempt: a retry with an old Date would be rejected.
    let signed = provider::sign(prepared, &target.secret, chrono::Utc::now());
    emit(ctx, row, n, &signed).await;
    tokio::select! {
        outcome = ctx.transport.send(&signed, ctx.config.timeout) => Some(outcome),
        _ = ctx.cancel.hard() => None,
    }
}
