//! Sending: resolve credentials (or start the in-process sandbox), create the report and emit
//! files, build the targets' lanes, run the executor, and hand back what happened as data
//! ([`Executed`]) for [`super::outcome`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::emit::EmitWriter;
use crate::executor::progress::{Counters, Progress, ProgressMode};
use crate::executor::transport::Trust;
use crate::executor::{
    self, Admission, Cancel, HttpTransport, Lane, OutputThread, RunContext, TargetRuntime,
};
use crate::exit::Exit;
use crate::identity::Identities;
use crate::plan::spool::SpoolRows;
use crate::plan::{Plan, ProviderKind, Shard, Target};
use crate::report::{ReportWriter, Status};
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
    pub elapsed: Duration,
    pub targets: Vec<TargetRuntime>,
    pub lanes: Vec<Lane>,
    /// The signal that stopped the run, if one did.
    pub stopped_by: Option<Stop>,
    /// The outline's replacing counts, settled by the run's read of the rows.
    pub replacing: crate::audit::Replacing,
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
            crate::log::error(
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
            crate::log::error(&format!("reactbatch run: cannot start the sandbox: {e}"));
            return Err(Exit::Invalid);
        }
    };
    if !config.quiet {
        crate::log::info(&format!(
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
                eprintln!("reactbatch run: the sandbox's certificate: {e}");
                return Err(Exit::Invalid);
            }
        }
    }
    let executed = run_with_targets(plan, config, &trust, targets, secrets, work).await;
    if !config.quiet {
        crate::log::info(&format!(
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
        estimated,
        replacing,
        lanes: lane_map,
    } = work;
    let started = tokio::time::Instant::now();
    let fail = |e: String| {
        crate::log::error(&format!("reactbatch run: {e}"));
        Exit::Invalid
    };
    let spooled = spool;
    // Read twice, one after the other: done rows to copy (`--resume`), then the rows to run.
    let again = || {
        spooled
            .again()
            .map_err(|e| format!("cannot read the spool file back: {e}"))
    };
    let (report, copied) = create_report(
        &config.report,
        done.as_ref(),
        plan,
        again,
        &identities,
        config.shard,
    )
    .map_err(fail)?;
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
    let transport =
        HttpTransport::new(config.concurrency, trust).map_err(|e| fail(e.to_string()))?;
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
    ));
    let progress = Progress::start(
        ProgressMode::detect(config.no_progress || config.quiet),
        total_rows,
        Arc::clone(&counters),
        estimated,
    );

    // On the wall clock, fast lanes pace with sub-millisecond wake-ups.
    let exec_config = executor::ExecConfig {
        precise_pacing: true,
        ..config.exec_config()
    };
    let ctx = Arc::new(
        RunContext::new(exec_config, runtimes, lanes, transport, out, cancel)
            .with_lane_map(lane_map),
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
        crate::log::error("reactbatch run: internal error: the dispatcher stopped unexpectedly");
    }

    signals.abort();
    // Wait until the signal watcher (which holds a report sender) is really gone.
    let _ = signals.await;
    progress.finish();
    let elapsed = started.elapsed();
    let Ok(ctx) = Arc::try_unwrap(ctx) else {
        crate::log::error("reactbatch run: internal error: row tasks outlived the run");
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
    let mut replacing = match Arc::try_unwrap(replacing) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => {
            crate::log::error("reactbatch run: internal error: the row reader outlived the run");
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
        replacing,
        counters,
        tally,
        copied,
        elapsed,
        targets,
        lanes,
        stopped_by: stopped.get().copied(),
    })
}

/// Creates the report. With an earlier report to resume, its done rows (those still in the
/// plan, numbered as the plan is now) are copied into a temporary file that is renamed over the
/// report path before anything is sent, so the file on disk always holds every confirmed row
/// (see [`crate::resume`]).
fn create_report(
    path: &Path,
    done: Option<&DoneSet>,
    plan: &Plan,
    rows: impl FnOnce() -> Result<SpoolRows, String>,
    identities: &Identities,
    shard: Option<Shard>,
) -> Result<(ReportWriter, u64), String> {
    let Some(done) = done else {
        let w = ReportWriter::create(path)
            .map_err(|e| format!("cannot create report {}: {e}", path.display()))?;
        return Ok((w, 0));
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut w = ReportWriter::create(&tmp)
        .map_err(|e| format!("cannot create report {}: {e}", tmp.display()))?;
    // In the plan's current numbering, only the rows of this run's shard.
    let mine = |row: &crate::plan::Row| {
        shard.is_none_or(|s| {
            let name = &plan.targets[row.target].name;
            crate::identity::row_shard(name, row, s.count) == s.index
        })
    };
    let copied = done.copy_done(&mut w, plan, rows()?, identities.clone(), mine)?;
    w.sync()
        .map_err(|e| format!("cannot write report {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), path.display()))?;
    Ok((w, copied))
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
