//! After sending: the exit code ([`Exit::of_run`]), the failed rows named on stderr, and the
//! summary (stderr, `--summary-json`), built from what [`super::execute`] handed back; both
//! are returned for the run's monitors (`--metrics-file`, `--ping`).
//!
//! `-q` keeps only what needs a human: when the exit code is not 0, the failed rows, each
//! stopped target's reason and the summary's first line; nothing when all is well.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::digest::Digests;
use crate::executor::host::HostLoad;
use crate::executor::progress::Counters;
use crate::executor::{Lane, Tally, TargetRuntime};
use crate::exit::{Exit, RunOutcome};
use crate::outputs::audit::Audit;
use crate::outputs::report::Status;
use crate::outputs::summary::{HostSummary, LaneSummary, LatencySummary, Summary, TargetSummary};
use crate::plan::Plan;
use crate::signals::Stop;

use super::config::RunConfig;
use super::execute::Executed;

pub(crate) fn outcome(
    plan: &Plan,
    config: &RunConfig,
    digest: Digests,
    mut audit: Audit,
    executed: Executed,
) -> (Exit, Summary) {
    let Executed {
        counters,
        tally,
        copied,
        not_in_plan,
        elapsed,
        targets,
        lanes,
        stopped_by,
        not_sent,
    } = executed;
    audit.without(&not_sent);
    let stopped: Vec<(String, String)> = targets
        .iter()
        .filter_map(|t| {
            t.auth_stopped()
                .map(|why| (t.spec.name.clone(), why.to_string()))
        })
        .collect();
    // Each unreachable origin once, however many targets it has.
    let mut unreachable: Vec<&str> = targets
        .iter()
        .filter_map(|t| t.origin().unreachable())
        .collect();
    unreachable.sort_unstable();
    unreachable.dedup();
    let exit = Exit::of_run(&RunOutcome {
        stopped_by,
        auth_stopped: !stopped.is_empty(),
        unreachable: !unreachable.is_empty(),
        rows_failed: counters.get(Status::Failed) + counters.get(Status::Cancelled) > 0,
        output_failed: tally.io_error.is_some(),
    });
    let rows = tally.rows + copied;
    // What each host's lanes add up to; `--sandbox` points them all at one loopback host,
    // with no ceiling, so the plan's hosts say nothing of that run.
    let loads = if config.sandbox {
        Vec::new()
    } else {
        crate::executor::host::host_loads(
            &plan.targets,
            lanes.iter().map(|l| (&l.members[..], l.rate)),
            &plan.settings.host_rate,
            config.shard.map_or(1, |s| s.count),
        )
    };
    let summary = Summary {
        plan: plan.path.display().to_string(),
        report: config.report.display().to_string(),
        dry_run: config.dry_run,
        rows,
        not_in_plan,
        counts: status_counts(&counters),
        attempts: tally.attempts,
        retries: tally.retries,
        elapsed_ms: elapsed.as_millis() as u64,
        // Rows sent, not rows settled: cancelled and skipped rows took no time on the wire.
        rows_per_second: if config.dry_run {
            tally.rows
        } else {
            tally.latency.len()
        } as f64
            / elapsed.as_secs_f64().max(1e-9),
        estimated_ms: audit.estimated_ms,
        targets: target_summaries(&targets, &audit),
        lanes: lane_summaries(&lanes, &targets),
        hosts: host_summaries(&loads),
        latency: latency_summary(&tally),
        digest: Some(digest.plan),
        files: digest.files,
        interrupted: stopped_by.is_some(),
        not_recorded: tally.unrecorded_sent,
        exit_code: exit.code(),
    };
    if let Some(err) = &tally.io_error {
        output_failed(err, &tally, plan, config);
    }
    if config.dry_run {
        let hosts =
            crate::executor::host::host_lines(&loads, crate::outputs::audit::LISTED_TARGETS);
        crate::outputs::log::info(
            crate::outputs::audit::render(&audit, &plan.targets, &hosts).trim_end(),
        );
    }
    for why in &unreachable {
        crate::outputs::log::error(&format!("reactbatch run: {why}"));
    }
    tell_failures(&summary, &counters, &tally, &stopped, stopped_by, config);
    if !config.quiet {
        crate::outputs::log::summary(&summary);
    } else if exit != Exit::Success {
        crate::outputs::log::summary_headline(&summary);
    }
    write_page(&summary, config);
    if !write_summary(&summary, config) && stopped_by.is_none() {
        // An output the run could not write: 74, unless a signal's code comes first.
        return (Exit::OutputFailed, summary);
    }
    (exit, summary)
}

/// Rows per status, the statuses no row has left out.
fn status_counts(counters: &Counters) -> BTreeMap<&'static str, u64> {
    Status::ALL
        .into_iter()
        .map(|st| (st.as_str(), counters.get(st)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The requests' latency in milliseconds, when any was measured.
fn latency_summary(tally: &Tally) -> Option<LatencySummary> {
    (!tally.latency.is_empty()).then(|| LatencySummary {
        p50_ms: tally.latency.value_at_quantile(0.5) as f64 / 1000.0,
        p95_ms: tally.latency.value_at_quantile(0.95) as f64 / 1000.0,
        max_ms: tally.latency.max() as f64 / 1000.0,
        samples: tally.latency.len(),
    })
}

/// Per target: what it sent, how fast, why it stopped, and what the plan had for it.
fn target_summaries(targets: &[TargetRuntime], audit: &Audit) -> Vec<TargetSummary> {
    targets
        .iter()
        .zip(&audit.targets)
        .map(|(t, plan_audit)| TargetSummary {
            name: t.spec.name.clone(),
            provider: t.spec.provider().to_string(),
            rate: t.rate.to_string(),
            requests: t.requests(),
            achieved_rate: t.achieved_rate(),
            max_requests_in_1s: t.max_sent_in_1s(),
            // An unreachable origin is named once, below, not on each of its targets.
            stopped: t.auth_stopped().map(str::to_string).or_else(|| {
                t.origin()
                    .unreachable()
                    .map(|_| format!("target {} stopped: its origin is unreachable", t.spec.name))
            }),
            plan: plan_audit.clone(),
        })
        .collect()
}

/// Per lane: its pace as set and as it went.
fn lane_summaries(lanes: &[Lane], targets: &[TargetRuntime]) -> Vec<LaneSummary> {
    lanes
        .iter()
        .map(|l| {
            let pace = l.pace_stats();
            LaneSummary {
                name: l.name.clone(),
                provider: l
                    .members
                    .first()
                    .map(|&m| targets[m].spec.provider().to_string())
                    .unwrap_or_default(),
                targets: l
                    .members
                    .iter()
                    .map(|&m| targets[m].spec.name.clone())
                    .collect(),
                rate: l.rate.to_string(),
                requests: l.requests(),
                achieved_rate: l.achieved_rate(),
                max_requests_in_1s: l.max_sent_in_1s(),
                rate_limited: l.rate_limited.load(Ordering::Relaxed),
                slowdowns: pace.slowdowns,
                slowest_rate: pace.slowest_rate,
                pauses: pace.pauses,
                settled_rate: pace.settled_rate,
                failed: l.failed(),
                series: l.series.snapshot(),
            }
        })
        .collect()
}

/// Per host: what its lanes add up to, against its ceiling.
fn host_summaries(loads: &[HostLoad]) -> Vec<HostSummary> {
    loads
        .iter()
        .map(|l| HostSummary {
            host: crate::executor::host::host_name(&l.base_url).to_string(),
            base_url: l.base_url.clone(),
            lanes: l.lanes,
            rate_sum: l.total_per_second.is_finite().then_some(l.total_per_second),
            ceiling: l.ceiling.map(crate::executor::host::rate_text),
        })
        .collect()
}

/// The report could not be written: how far the run got, and the command that goes on once
/// it can be. The resume reads the report as it is: the rows it holds are done.
fn output_failed(err: &impl std::fmt::Display, tally: &Tally, plan: &Plan, config: &RunConfig) {
    let report = config.report.display();
    crate::outputs::log::error(&format!(
        "reactbatch run: {err}; sending stopped: {} row(s) sent and recorded, {} sent and not \
         recorded{}; once the report can be written, go on with: reactbatch run {} --report \
         {report} --resume {report} (it sends the rows not recorded again)",
        tally.recorded_sent,
        tally.unrecorded_sent,
        if tally.unrecorded_sent > 0 {
            " (listed above as report lines)"
        } else {
            ""
        },
        plan.path.display(),
    ));
}

/// The failed rows, and the stopped targets' reasons; after a signal, its one line first.
fn tell_failures(
    summary: &Summary,
    counters: &Counters,
    tally: &Tally,
    stopped: &[(String, String)],
    stopped_by: Option<Stop>,
    config: &RunConfig,
) {
    let report = config.report.display().to_string();
    // Cancelled rows are not named one by one: the report has them, and after a signal they
    // are most of the plan. Failed rows are, but under -q an interrupt says only its one line.
    let failed: Vec<_> = tally
        .failed_rows
        .iter()
        .filter(|r| r.status != Status::Cancelled.as_str())
        .cloned()
        .collect();
    let failed_more = counters
        .get(Status::Failed)
        .saturating_sub(failed.len() as u64);
    if let Some(stop) = stopped_by {
        crate::outputs::log::error(&interrupted_line(stop, summary, config));
        if !config.quiet {
            crate::outputs::log::failed_rows(&failed, failed_more, &report, stopped);
        }
    } else {
        crate::outputs::log::failed_rows(&failed, failed_more, &report, stopped);
    }
}

/// `--report-html FILE`. The page is for people: one that cannot be written is a warning, the
/// run's outcome stands.
fn write_page(summary: &Summary, config: &RunConfig) {
    let Some(path) = &config.report_html else {
        return;
    };
    let page = crate::outputs::html::page_of_run(summary, &config.report);
    if let Err(e) = crate::outputs::html::write_page(path, &page) {
        crate::outputs::log::warn(&format!(
            "reactbatch run: cannot write the HTML page {}: {e}",
            path.display()
        ));
    }
}

/// `--summary-json FILE`; whether it was written (a failure is said here).
fn write_summary(summary: &Summary, config: &RunConfig) -> bool {
    let Some(path) = &config.summary_json else {
        return true;
    };
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    let json = crate::outputs::series::compact_number_arrays(&json);
    match write_synced(path, json.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            crate::outputs::log::error(&format!(
                "reactbatch run: cannot write summary {}: {e}",
                path.display()
            ));
            false
        }
    }
}

/// The one line a run stopped by a signal ends with: what was done and cancelled, and the
/// exact command that goes on from the report (a dry run: the same command again).
fn interrupted_line(stop: Stop, summary: &Summary, config: &RunConfig) -> String {
    let count = |st: Status| summary.count(st);
    let mut parts = vec![format!("{} ok", count(Status::Ok))];
    for st in [
        Status::Failed,
        Status::Skipped,
        Status::Planned,
        Status::Deferred,
    ] {
        if count(st) > 0 {
            parts.push(format!("{} {st}", count(st)));
        }
    }
    let next = super::signals::next_step(config);
    format!(
        "reactbatch: {}: {} of {} rows settled ({}), {} cancelled (in {}); {next}",
        stop.describe(),
        summary.rows.saturating_sub(count(Status::Cancelled)),
        summary.rows,
        parts.join(", "),
        count(Status::Cancelled),
        summary.report,
    )
}

/// Writes `bytes` to `path` and puts them on disk: an `fsync` error is a write error too.
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}
