//! Sending: resolve credentials (or start the in-process sandbox), create the report and emit
//! files, build the targets' lanes, run the executor, and hand back what happened as data
//! ([`Executed`]) for [`super::outcome`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::executor::progress::{Counters, Progress, ProgressMode};
use crate::executor::transport::Trust;
use crate::executor::{
    self, Admission, Cancel, HttpTransport, Lane, OutputSender, OutputThread, RunContext,
    TargetRuntime,
};
use crate::identity::Identities;
use crate::outputs::emit::EmitWriter;
use crate::outputs::report::{ReportWriter, Status};
use crate::plan::pace::LaneMap;
use crate::plan::spool::{LaneRows, SpoolRows};
use crate::plan::{Plan, ProviderKind, Shard, Target};
use crate::resume::DoneSet;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::secret::Secret;
use crate::signals::Stop;

use super::config::RunConfig;
use super::error::{RunError, RunErrorKind};
use super::preflight::Work;
use super::signals::watch_signals;

/// What a run did, for the exit code and the summary.
pub(crate) struct Executed {
    pub counters: Arc<Counters>,
    pub tally: executor::Tally,
    /// Rows copied from the earlier report (`--resume`).
    pub copied: u64,
    /// Rows of the earlier report kept as `not_in_plan` (`--resume`), not counted in `copied`.
    pub not_in_plan: u64,
    pub elapsed: Duration,
    pub targets: Vec<TargetRuntime>,
    pub lanes: Vec<Lane>,
    /// The signal that stopped the run, if one did.
    pub stopped_by: Option<Stop>,
    /// Per pace group: rows the outline counted that an earlier report shows done (not sent).
    pub not_sent: Vec<u64>,
}

/// Resolves credentials (or the in-process sandbox), builds the targets and runs.
pub(crate) async fn execute(
    plan: &Plan,
    config: &RunConfig,
    work: Work,
) -> Result<Executed, RunError> {
    if config.sandbox {
        return execute_on_sandbox(plan, config, work).await;
    }
    let secrets: Vec<Secret> = plan
        .resolve_secrets()
        .map_err(|problems| RunError::with_problems(RunErrorKind::Credentials, problems))?;
    run_with_targets(
        plan,
        config,
        &config.trust,
        plan.targets.clone(),
        secrets,
        work,
    )
    .await
}

/// `--sandbox`: start the emulator in-process, point every target at it with its own
/// credentials (no environment needed), run, stop it. Unless `--rate` overrides the pace, the
/// sandbox enforces the providers' documented limits, as the real APIs would.
async fn execute_on_sandbox(
    plan: &Plan,
    config: &RunConfig,
    work: Work,
) -> Result<Executed, RunError> {
    let mut sandbox_config = SandboxConfig::new().tls(config.sandbox_tls);
    if config.rate.is_none() {
        // A little tolerance over the client's even pacing, for scheduling jitter on loopback.
        sandbox_config = sandbox_config
            .kommo_rate(ProviderKind::Kommo.default_rate(), 3)
            .ogmma_rate(ProviderKind::Ogmma.default_rate(), 3);
    }
    let sandbox = Sandbox::start(sandbox_config)
        .await
        .map_err(RunErrorKind::Sandbox)?;
    if !config.quiet {
        crate::outputs::log::info(&format!(
            "reactbatch: sandbox listening on {} (in-process); every target points at it with its credentials",
            sandbox.base_url()
        ));
    }
    let targets: Vec<_> = plan
        .targets
        .iter()
        .map(|t| Target {
            base_url: sandbox.base_url(),
            ..t.clone()
        })
        .collect();
    let secrets = targets
        .iter()
        .map(|t| sandbox.credential(t.provider()).clone())
        .collect();
    let mut trust = config.trust.clone();
    if let Some(pem) = sandbox.ca_pem() {
        // Its own certificate, for this run only.
        let own = Trust::from_pem(pem.as_bytes()).map_err(RunErrorKind::SandboxCertificate)?;
        trust.extra_roots.extend(own.extra_roots);
    }
    let executed = run_with_targets(plan, config, &trust, targets, secrets, work).await;
    if !config.quiet {
        crate::outputs::log::info(&format!(
            "reactbatch: sandbox now holds {} reaction(s); stopping it",
            sandbox.reactions().len()
        ));
    }
    sandbox.shutdown().await;
    executed
}

/// The run proper, in steps: the report (with the rows an earlier report shows done), the
/// emit file, the HTTP client, the lanes and targets, the executor over the spooled rows, and
/// what is left to settle once it is done.
async fn run_with_targets(
    plan: &Plan,
    config: &RunConfig,
    trust: &Trust,
    targets: Vec<Target>,
    secrets: Vec<Secret>,
    work: Work,
) -> Result<Executed, RunError> {
    let started = tokio::time::Instant::now();
    let report = start_report(plan, config, &work)?;
    let rows = RowsToRun::open(&work.spool, config.dry_run)?;
    let emit = create_emit(config, &targets)?;
    let transport = HttpTransport::new(config.concurrency, config.timeout, trust)
        .map_err(|e| RunErrorKind::Transport(e.to_string()))?
        .with_clock(config.exec_config().clock);
    if !config.dry_run {
        transport
            .ready_for(targets.iter().map(|t| t.base_url.as_str()))
            .await
            .map_err(|e| RunErrorKind::Transport(e.to_string()))?;
    }
    let lanes = build_lanes(plan, config, &work.lanes);
    // Ceilings by the base URLs requests go to (the sandbox's, with `--sandbox`).
    let hosts = executor::host::HostCeilings::new(
        &targets,
        &plan.settings.host_rate,
        config.shard.map_or(1, |s| s.count),
        true,
    );
    let runtimes: Vec<TargetRuntime> = targets
        .into_iter()
        .zip(secrets)
        .map(|(t, secret)| {
            let rate = config.target_rate(&t);
            TargetRuntime::new(t, secret, rate)
        })
        .collect();
    let counters = Arc::new(Counters::default());
    for _ in 0..report.copied {
        counters.record(Status::Skipped);
    }
    let (out, writer) = OutputThread::start(report.writer, emit, Arc::clone(&counters))
        .map_err(RunErrorKind::ReportWriter)?;
    let cancel = Cancel::new();
    let watcher = Watcher {
        cancel: cancel.clone(),
        out: out.clone(),
    };
    let ctx = RunContext::new(
        executor_config(config),
        runtimes,
        lanes,
        transport,
        out,
        cancel,
    )
    .with_host_ceilings(hosts);
    let Work {
        spool: _,
        total_rows,
        identities,
        done,
        pace,
        lanes: lane_map,
    } = work;
    let ctx = Arc::new(ctx.with_lane_map(lane_map));
    let pace = pace.without(&report.not_sent);
    let sent = Dispatch {
        ctx,
        watcher,
        config,
        counters: &counters,
        total_rows,
        identities,
        done,
        pace,
    }
    .run(rows)
    .await?;
    let tally = writer.join().await;
    if !report.kept.is_empty() && tally.io_error.is_none() {
        if let Err(e) = move_to_end(&config.report, &report.kept) {
            crate::outputs::log::error(&format!(
                "reactbatch run: the earlier rows kept as not_in_plan stay before this run's \
                 rows in {}: {e}",
                config.report.display()
            ));
        }
    }
    Ok(Executed {
        not_sent: report.not_sent,
        counters,
        tally,
        copied: report.copied,
        not_in_plan: report.kept.rows,
        elapsed: started.elapsed(),
        targets: sent.targets,
        lanes: sent.lanes,
        stopped_by: sent.stopped_by,
    })
}

/// The executor's settings for a run on the wall clock, where fast lanes pace with
/// sub-millisecond wake-ups.
fn executor_config(config: &RunConfig) -> executor::ExecConfig {
    executor::ExecConfig {
        precise_pacing: true,
        ..config.exec_config()
    }
}

/// One lane per pace group (and per account the rows name), at the lowest of its members'
/// rates.
fn build_lanes(plan: &Plan, config: &RunConfig, lane_map: &LaneMap) -> Vec<Lane> {
    lane_map
        .lanes
        .iter()
        .zip(&lane_map.rows)
        .map(|(g, &planned)| {
            Lane::new(
                g.name.clone(),
                g.members.clone(),
                config.pace(g.rate(&plan.targets)),
                config.burst,
            )
            .with_planned_rows(planned)
        })
        .collect()
}

/// `--emit FILE`: the audit trail of what is sent, created before the first request.
fn create_emit(config: &RunConfig, targets: &[Target]) -> Result<Option<EmitWriter>, RunError> {
    let Some(path) = &config.emit else {
        return Ok(None);
    };
    EmitWriter::create(path, config.emit_format, &bearer_credentials(targets))
        .map(Some)
        .map_err(|source| {
            RunErrorKind::CreateEmit {
                path: path.clone(),
                source,
            }
            .into()
        })
}

/// The spooled rows as the executor reads them: a live run reads every lane's rows on its own
/// (a plan sorted by account runs its lanes side by side); a dry run reads in plan order, as
/// its output goes.
enum RowsToRun {
    InOrder(SpoolRows),
    ByLane(LaneRows),
}

impl RowsToRun {
    fn open(spool: &SpoolRows, dry_run: bool) -> Result<RowsToRun, RunError> {
        let rows = spool.again().map_err(RunErrorKind::SpoolReread)?;
        if dry_run {
            return Ok(RowsToRun::InOrder(rows));
        }
        let lanes = rows.by_lane().map_err(RunErrorKind::SpoolReread)?;
        Ok(RowsToRun::ByLane(lanes))
    }
}

/// What the executor's run hands back to settle.
struct Sent {
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    stopped_by: Option<Stop>,
}

/// What the signal watcher needs of the run: a way to cancel it and to write to the report.
struct Watcher {
    cancel: Cancel,
    out: OutputSender,
}

/// The executor over the rows, with the signal watcher and the progress line beside it.
struct Dispatch<'a> {
    ctx: Arc<RunContext<HttpTransport>>,
    watcher: Watcher,
    config: &'a RunConfig,
    counters: &'a Arc<Counters>,
    total_rows: u64,
    identities: Identities,
    done: Option<DoneSet>,
    pace: crate::outputs::audit::PaceModel,
}

impl Dispatch<'_> {
    async fn run(self, rows: RowsToRun) -> Result<Sent, RunError> {
        let Dispatch {
            ctx,
            watcher,
            config,
            counters,
            total_rows,
            mut identities,
            done,
            pace,
        } = self;
        let stopped = Arc::new(OnceLock::new());
        let signals = tokio::spawn(watch_signals(
            watcher.cancel,
            watcher.out,
            Arc::clone(&stopped),
            super::signals::next_step(config),
        ));
        let run = Arc::downgrade(&ctx);
        let progress = Progress::start(
            ProgressMode::detect(config.no_progress || config.quiet),
            total_rows,
            Arc::clone(counters),
            Box::new(move || {
                let ctx = run.upgrade()?;
                Some(crate::executor::progress::time_left(&ctx.lanes, &pace))
            }),
        );
        let names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
        let shard = config.shard;
        let admit_names = names.clone();
        let admit = move |row: &crate::plan::Row, key: &str| {
            let mine = shard.is_none_or(|s| s.owns(&admit_names[row.target], row));
            // A row done earlier is already in the report, copied from the earlier one.
            let done_earlier = done.as_ref().is_some_and(|d| d.contains(key));
            if mine && !done_earlier {
                Admission::Run
            } else {
                Admission::Exclude
            }
        };
        // The dispatcher asks for the key of every row it reads, once, as it reads it.
        let key_of =
            Box::new(move |row: &crate::plan::Row| identities.key(row, &names[row.target]));
        // The dispatcher runs as a task on the runtime, beside the lanes' senders: a finished
        // row then wakes it as a task on the same threads, not the main thread parked in
        // `block_on`.
        let dispatcher = match rows {
            RowsToRun::InOrder(rows) => {
                tokio::spawn(executor::execute(Arc::clone(&ctx), rows, key_of, admit))
            }
            RowsToRun::ByLane(lanes) => {
                tokio::spawn(executor::execute(Arc::clone(&ctx), lanes, key_of, admit))
            }
        };
        if dispatcher.await.is_err() {
            crate::outputs::log::error(
                "reactbatch run: internal error: the dispatcher stopped unexpectedly",
            );
        }
        signals.abort();
        // Wait until the signal watcher (which holds a report sender) is really gone.
        let _ = signals.await;
        progress.finish().await;
        let ctx = Arc::try_unwrap(ctx)
            .map_err(|_| RunErrorKind::Internal("row tasks outlived the run"))?;
        let RunContext { targets, lanes, .. } = ctx;
        Ok(Sent {
            targets,
            lanes,
            stopped_by: stopped.get().copied(),
        })
    }
}

/// The report as the run starts it: created empty, or holding the rows an earlier report
/// shows done (`--resume`).
struct StartedReport {
    writer: ReportWriter,
    /// Rows copied from the earlier report.
    copied: u64,
    kept: KeptBlock,
    /// Per lane: rows done earlier that this run would otherwise send (not deferred). They are
    /// not sent: the estimate and the ETA leave them out.
    not_sent: Vec<u64>,
}

fn start_report(plan: &Plan, config: &RunConfig, work: &Work) -> Result<StartedReport, RunError> {
    let now = config.now.unwrap_or_else(chrono::Utc::now);
    let lane_map = &work.lanes;
    let done_by_lane = vec![std::cell::Cell::new(0u64); lane_map.lanes.len()];
    let count_done = |row: &crate::plan::Row| {
        let lane = lane_map.lane_of(row).and_then(|l| done_by_lane.get(l));
        if let (Some(n), true) = (lane, row.not_before.is_none_or(|at| at <= now)) {
            n.set(n.get() + 1);
        }
    };
    let (writer, copied, kept) = create_report(
        &config.report,
        work.done.as_ref(),
        plan,
        || work.spool.again().map_err(RunErrorKind::SpoolReread),
        &work.identities,
        config.shard,
        count_done,
    )?;
    Ok(StartedReport {
        writer,
        copied,
        kept,
        not_sent: done_by_lane.iter().map(std::cell::Cell::get).collect(),
    })
}

/// Where a resumed run's report holds the earlier rows kept as `not_in_plan`: bytes
/// `start..end`, written before sending so that no instant loses them, and moved after this
/// run's rows at the end ([`move_to_end`]).
#[derive(Debug, Default)]
struct KeptBlock {
    start: u64,
    end: u64,
    rows: u64,
}

impl KeptBlock {
    fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// Creates the report. With an earlier report to resume, its done rows (those still in the
/// plan, numbered as the plan is now) and then its rows that match no plan row (`not_in_plan`)
/// are copied into a temporary file that is renamed over the report path before anything is
/// sent, so the file on disk always holds every confirmed row (see [`crate::resume`]). Each
/// row copied (of this run's shard) is handed to `count_done`.
fn create_report(
    path: &Path,
    done: Option<&DoneSet>,
    plan: &Plan,
    rows: impl Fn() -> Result<SpoolRows, RunErrorKind>,
    identities: &Identities,
    shard: Option<Shard>,
    count_done: impl Fn(&crate::plan::Row),
) -> Result<(ReportWriter, u64, KeptBlock), RunErrorKind> {
    let create = |path: &Path| {
        ReportWriter::create(path).map_err(|source| RunErrorKind::CreateReport {
            path: path.to_path_buf(),
            source,
        })
    };
    let Some(done) = done else {
        return Ok((create(path)?, 0, KeptBlock::default()));
    };
    let tmp = temporary_beside(path);
    let mut w = create(&tmp)?;
    // In the plan's current numbering, only the rows of this run's shard.
    let mine = |row: &crate::plan::Row| {
        let mine = shard.is_none_or(|s| s.owns(&plan.targets[row.target].name, row));
        if mine {
            count_done(row);
        }
        mine
    };
    let (copied, plan_keys) = done
        .copy_done(&mut w, plan, rows()?, identities.clone(), mine)
        .map_err(RunErrorKind::CopyEarlier)?;
    let synced_len = |w: &mut ReportWriter| {
        w.sync()
            .and_then(|()| std::fs::metadata(&tmp).map(|m| m.len()))
            .map_err(|source| RunErrorKind::WriteReport {
                path: tmp.clone(),
                source,
            })
    };
    let start = synced_len(&mut w)?;
    let kept = done
        .keep_not_in_plan(&mut w, &plan_keys)
        .map_err(RunErrorKind::CopyEarlier)?;
    drop(plan_keys);
    let end = synced_len(&mut w)?;
    if !kept.is_empty() {
        // Said before anything is sent (a dry run says it too).
        crate::outputs::log::warn(&kept.describe(&done.report, plan, rows()?));
    }
    std::fs::rename(&tmp, path).map_err(|source| RunErrorKind::MoveReport {
        from: tmp.clone(),
        to: path.to_path_buf(),
        source,
    })?;
    let kept = KeptBlock {
        start,
        end,
        rows: kept.len(),
    };
    Ok((w, copied, kept))
}

/// A temporary file next to the report, to be renamed over it: `REPORT.<pid>.tmp.<ext>`,
/// keeping the report's extension, which chooses its format (CSV or JSON Lines).
fn temporary_beside(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    if let Some(ext) = path.extension() {
        tmp.push(".");
        tmp.push(ext);
    }
    PathBuf::from(tmp)
}

/// Moves the report's bytes `kept.start..kept.end` (the earlier rows kept as `not_in_plan`)
/// after everything else, through a temporary file renamed over the report: at every instant
/// the report on disk holds every row.
fn move_to_end(path: &Path, kept: &KeptBlock) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut from = std::fs::File::open(path)?;
    let len = from.metadata()?.len();
    if kept.end > len || kept.start > kept.end {
        return Err(std::io::Error::other(
            "the report is shorter than when it was created",
        ));
    }
    let tmp = temporary_beside(path);
    let mut copy = || -> std::io::Result<()> {
        let mut to = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for (at, n) in [
            (0, kept.start),
            (kept.end, len - kept.end),
            (kept.start, kept.end - kept.start),
        ] {
            from.seek(SeekFrom::Start(at))?;
            let copied = std::io::copy(&mut (&mut from).take(n), &mut to)?;
            if copied != n {
                return Err(std::io::Error::other(
                    "the report changed while it was read",
                ));
            }
        }
        to.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// The credentials sent as bearer keys (Ogmma's), which a curl script reads at run time;
/// Kommo requests carry their signature instead.
fn bearer_credentials(targets: &[Target]) -> Vec<crate::secret::SecretRef> {
    targets
        .iter()
        .filter(|t| t.provider() == ProviderKind::Ogmma)
        .map(|t| t.credential.clone())
        .collect()
}
