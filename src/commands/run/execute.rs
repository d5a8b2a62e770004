//! Sending: resolve credentials (or start the in-process sandbox), create the report and emit
//! files, build the targets' lanes, run the executor, and hand back what happened as data
//! ([`Executed`]) for [`super::outcome`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::executor::progress::{Counters, Progress, ProgressMode};
use crate::executor::transport::Trust;
use crate::executor::{
    self, Admission, Cancel, HttpTransport, Lane, OutputThread, RunContext, TargetRuntime,
};
use crate::exit::Exit;
use crate::identity::Identities;
use crate::outputs::emit::EmitWriter;
use crate::outputs::report::{ReportWriter, Status};
use crate::plan::spool::SpoolRows;
use crate::plan::{Plan, ProviderKind, Shard, Target};
use crate::resume::DoneSet;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::secret::Secret;
use crate::signals::Stop;

use super::config::RunConfig;
use super::preflight::{print_problems, Work};
use super::signals::watch_signals;

/// What a run did, for the exit code and the summary.
pub struct Executed {
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
    /// The outline's replacing counts, settled by the run's read of the rows.
    pub replacing: crate::outputs::audit::Replacing,
    /// Per pace group: rows the outline counted that an earlier report shows done (not sent).
    pub not_sent: Vec<u64>,
}

/// Resolves credentials (or the in-process sandbox), builds the targets and runs.
pub async fn execute(plan: &Plan, config: &RunConfig, work: Work) -> Result<Executed, Exit> {
    if config.sandbox {
        return execute_on_sandbox(plan, config, work).await;
    }
    let secrets: Vec<Secret> = match plan.resolve_secrets() {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems);
            crate::outputs::log::error(
                "reactbatch run: cannot read the targets' credentials; nothing was sent",
            );
            return Err(Exit::Invalid);
        }
    };
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
async fn execute_on_sandbox(plan: &Plan, config: &RunConfig, work: Work) -> Result<Executed, Exit> {
    let mut sandbox_config = SandboxConfig::new().tls(config.sandbox_tls);
    if config.rate.is_none() {
        // A little tolerance over the client's even pacing, for scheduling jitter on loopback.
        sandbox_config = sandbox_config
            .kommo_rate(ProviderKind::Kommo.default_rate(), 3)
            .ogmma_rate(ProviderKind::Ogmma.default_rate(), 3);
    }
    let sandbox = match Sandbox::start(sandbox_config).await {
        Ok(s) => s,
        Err(e) => {
            crate::outputs::log::error(&format!("reactbatch run: cannot start the sandbox: {e}"));
            return Err(Exit::Invalid);
        }
    };
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
        match Trust::from_pem(pem.as_bytes()) {
            Ok(own) => trust.extra_roots.extend(own.extra_roots),
            Err(e) => {
                crate::outputs::log::error(&format!(
                    "reactbatch run: the sandbox's certificate: {e}"
                ));
                return Err(Exit::Invalid);
            }
        }
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

async fn run_with_targets(
    plan: &Plan,
    config: &RunConfig,
    trust: &Trust,
    targets: Vec<Target>,
    secrets: Vec<Secret>,
    work: Work,
) -> Result<Executed, Exit> {
    let Work {
        spool,
        total_rows,
        mut identities,
        done,
        pace,
        replacing,
        lanes: lane_map,
    } = work;
    let started = tokio::time::Instant::now();
    let fail = |e: String| {
        crate::outputs::log::error(&format!("reactbatch run: {e}"));
        Exit::Invalid
    };
    let spooled = spool;
    // Read one pass after another: done rows to copy (`--resume`) and, when earlier rows match
    // none of the plan's, what the plan holds at their lines; then the rows to run.
    let again = || {
        spooled
            .again()
            .map_err(|e| format!("cannot read the spool file back: {e}"))
    };
    // Per lane: rows done earlier that this run would otherwise send (not deferred). They are
    // not sent: the estimate and the ETA leave them out.
    let now = config.now.unwrap_or_else(chrono::Utc::now);
    let done_by_lane = vec![std::cell::Cell::new(0u64); lane_map.lanes.len()];
    let count_done = |row: &crate::plan::Row| {
        let lane = lane_map.lane_of(row).and_then(|l| done_by_lane.get(l));
        if let (Some(n), true) = (lane, row.not_before.is_none_or(|at| at <= now)) {
            n.set(n.get() + 1);
        }
    };
    let (report, copied, kept) = create_report(
        &config.report,
        done.as_ref(),
        plan,
        again,
        &identities,
        config.shard,
        count_done,
    )
    .map_err(fail)?;
    let not_sent: Vec<u64> = done_by_lane.iter().map(std::cell::Cell::get).collect();
    let pace = pace.without(&not_sent);
    let rows = again().map_err(fail)?;
    // A live run reads every lane's rows on its own (a plan sorted by account runs its lanes
    // side by side); a dry run reads in plan order, as its output goes.
    let by_lane = if config.dry_run {
        None
    } else {
        Some(
            rows.by_lane()
                .map_err(|e| fail(format!("cannot read the spool file back: {e}")))?,
        )
    };
    let emit = match &config.emit {
        Some(path) => Some(
            EmitWriter::create(path, config.emit_format, &bearer_credentials(&targets))
                .map_err(|e| fail(format!("cannot create emit file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let transport = HttpTransport::new(config.concurrency, config.timeout, trust).map_err(fail)?;
    if !config.dry_run {
        transport.ready().await.map_err(fail)?;
    }
    // One lane per pace group (and per account the rows name), at the lowest of its
    // members' rates.
    let lanes: Vec<Lane> = lane_map
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
        .collect();
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
    for _ in 0..copied {
        counters.record(Status::Skipped);
    }
    let (out, writer) = OutputThread::start(report, emit, Arc::clone(&counters))
        .map_err(|e| fail(format!("cannot start the report writer: {e}")))?;
    let cancel = Cancel::new();
    let stopped = Arc::new(OnceLock::new());
    let signals = tokio::spawn(watch_signals(
        cancel.clone(),
        out.clone(),
        Arc::clone(&stopped),
        super::signals::next_step(config),
    ));
    // On the wall clock, fast lanes pace with sub-millisecond wake-ups.
    let exec_config = executor::ExecConfig {
        precise_pacing: true,
        ..config.exec_config()
    };
    let ctx = Arc::new(
        RunContext::new(exec_config, runtimes, lanes, transport, out, cancel)
            .with_lane_map(lane_map)
            .with_host_ceilings(hosts),
    );
    let run = Arc::downgrade(&ctx);
    let progress = Progress::start(
        ProgressMode::detect(config.no_progress || config.quiet),
        total_rows,
        Arc::clone(&counters),
        Box::new(move || {
            let ctx = run.upgrade()?;
            Some(crate::executor::progress::time_left(&ctx.lanes, &pace))
        }),
    );
    let names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
    let shard = config.shard;
    let shard_names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
    let admit = move |row: &crate::plan::Row, key: &str| {
        let mine = shard.is_none_or(|s| {
            crate::identity::row_shard(&shard_names[row.target], row, s.count) == s.index
        });
        // A row done earlier is already in the report, copied from the earlier one.
        let done_earlier = done.as_ref().is_some_and(|d| d.contains(key));
        if mine && !done_earlier {
            Admission::Run
        } else {
            Admission::Exclude
        }
    };
    // The dispatcher runs as a task on the runtime, beside the lanes' senders: a finished row
    // then wakes it as a task on the same threads, not the main thread parked in `block_on`
    // (a thread wake-up per row showed as context switches in profiles).
    // The outline's second pass sees every row the dispatcher reads (this run's shard counted).
    let replacing = Arc::new(std::sync::Mutex::new(replacing));
    let pass = Arc::clone(&replacing);
    let pass_names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
    let counted = move |row: &crate::plan::Row| {
        shard.is_none_or(|s| {
            crate::identity::row_shard(&pass_names[row.target], row, s.count) == s.index
        })
    };
    let counted_again = counted.clone();
    // The dispatcher asks for the key of every row it reads, once, as it reads it.
    let key_of = Box::new(move |row: &crate::plan::Row| {
        if let Ok(mut pass) = pass.lock() {
            pass.row(row, counted(row));
        }
        identities.key(row, &names[row.target])
    });
    let dispatcher = match by_lane {
        None => tokio::spawn(executor::execute(Arc::clone(&ctx), rows, key_of, admit)),
        Some(lanes) => tokio::spawn(executor::execute(Arc::clone(&ctx), lanes, key_of, admit)),
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
    let elapsed = started.elapsed();
    let Ok(ctx) = Arc::try_unwrap(ctx) else {
        crate::outputs::log::error("reactbatch run: internal error: row tasks outlived the run");
        return Err(Exit::RowsFailed);
    };
    let RunContext {
        targets,
        lanes,
        out,
        ..
    } = ctx;
    drop(out);
    let tally = writer.join().await;
    if !kept.is_empty() && tally.io_error.is_none() {
        if let Err(e) = move_to_end(&config.report, &kept) {
            crate::outputs::log::error(&format!(
                "reactbatch run: the earlier rows kept as not_in_plan stay before this run's \
                 rows in {}: {e}",
                config.report.display()
            ));
        }
    }
    let mut replacing = match Arc::try_unwrap(replacing) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => {
            crate::outputs::log::error(
                "reactbatch run: internal error: the row reader outlived the run",
            );
            return Err(Exit::RowsFailed);
        }
    };
    if replacing.seen() < total_rows {
        // The run stopped reading early (interrupted): the outline's pass reads the rest.
        replacing.restart();
        if let Ok(rows) = spooled.again() {
            for row in rows.flatten() {
                let counted = counted_again(&row);
                replacing.row(&row, counted);
            }
        }
    }
    Ok(Executed {
        not_sent,
        replacing,
        counters,
        tally,
        copied,
        not_in_plan: kept.rows,
        elapsed,
        targets,
        lanes,
        stopped_by: stopped.get().copied(),
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
    rows: impl Fn() -> Result<SpoolRows, String>,
    identities: &Identities,
    shard: Option<Shard>,
    count_done: impl Fn(&crate::plan::Row),
) -> Result<(ReportWriter, u64, KeptBlock), String> {
    let Some(done) = done else {
        let w = ReportWriter::create(path)
            .map_err(|e| format!("cannot create report {}: {e}", path.display()))?;
        return Ok((w, 0, KeptBlock::default()));
    };
    let tmp = temporary_beside(path);
    let mut w = ReportWriter::create(&tmp)
        .map_err(|e| format!("cannot create report {}: {e}", tmp.display()))?;
    // In the plan's current numbering, only the rows of this run's shard.
    let mine = |row: &crate::plan::Row| {
        let mine = shard.is_none_or(|s| {
            let name = &plan.targets[row.target].name;
            crate::identity::row_shard(name, row, s.count) == s.index
        });
        if mine {
            count_done(row);
        }
        mine
    };
    let (copied, plan_keys) = done.copy_done(&mut w, plan, rows()?, identities.clone(), mine)?;
    let synced_len = |w: &mut ReportWriter| -> Result<u64, String> {
        w.sync()
            .and_then(|()| std::fs::metadata(&tmp).map(|m| m.len()))
            .map_err(|e| format!("cannot write report {}: {e}", tmp.display()))
    };
    let start = synced_len(&mut w)?;
    let kept = done.keep_not_in_plan(&mut w, &plan_keys)?;
    drop(plan_keys);
    let end = synced_len(&mut w)?;
    if !kept.is_empty() {
        // Said before anything is sent (a dry run says it too).
        crate::outputs::log::warn(&kept.describe(&done.report, plan, rows()?));
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), path.display()))?;
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
