//! After sending: the exit code and the summary (stderr, `--summary-json`), built from what
//! [`super::execute`] handed back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::exit::Exit;
use crate::log::eprintln;
use crate::plan::Plan;
use crate::report::Status;
use crate::summary::{LaneSummary, LatencySummary, Summary, TargetSummary};

use super::config::RunConfig;
use super::execute::Executed;

pub fn outcome(plan: &Plan, config: &RunConfig, digest: String, executed: Executed) -> Exit {
    let Executed {
        counters,
        tally,
        copied,
        elapsed,
        targets,
        lanes,
        interrupted,
    } = executed;
    let mut counts = BTreeMap::new();
    for st in Status::ALL {
        let n = counters.get(st);
        if n > 0 {
            counts.insert(st.as_str(), n);
        }
    }
    let auth_stopped = targets.iter().any(|t| t.stopped().is_some());
    let failed = counters.get(Status::Failed) + counters.get(Status::Cancelled) > 0;
    let exit = if interrupted {
        Exit::Interrupted
    } else if auth_stopped {
        Exit::AuthStopped
    } else if failed || tally.io_error.is_some() {
        Exit::RowsFailed
    } else {
        Exit::Success
    };
    let latency = (!tally.latency.is_empty()).then(|| LatencySummary {
        p50_ms: tally.latency.value_at_quantile(0.5) as f64 / 1000.0,
        p95_ms: tally.latency.value_at_quantile(0.95) as f64 / 1000.0,
        max_ms: tally.latency.max() as f64 / 1000.0,
        samples: tally.latency.len(),
    });
    let rows = tally.rows + copied;
    let summary = Summary {
        plan: plan.path.display().to_string(),
        report: config.report.display().to_string(),
        dry_run: config.dry_run,
        rows,
        counts,
        attempts: tally.attempts,
        retries: tally.retries,
        elapsed_ms: elapsed.as_millis() as u64,
        rows_per_second: tally.rows as f64 / elapsed.as_secs_f64().max(1e-9),
        targets: targets
            .iter()
            .map(|t| TargetSummary {
                name: t.spec.name.clone(),
                provider: t.spec.provider().to_string(),
                rate: t.rate.to_string(),
                requests: t.requests(),
                achieved_rate: t.achieved_rate(),
                max_requests_in_1s: t.max_sent_in_1s(),
                stopped: t.stopped().map(str::to_string),
            })
            .collect(),
        lanes: lanes
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
                }
            })
            .collect(),
        latency,
        digest: Some(digest),
        interrupted,
        exit_code: exit.code(),
    };
    if let Some(err) = &tally.io_error {
        eprintln!("reactbatch run: {err}");
    }
    if !config.quiet {
        crate::log::summary(&summary);
    }
    if let Some(path) = &config.summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            eprintln!(
                "reactbatch run: cannot write summary {}: {e}",
                path.display()
            );
        }
    }
    exit
}
