//! `reactbatch run`: load and validate the plan (nothing is sent if any row is invalid), then
//! execute it — or, with `--dry-run`, build and sign every request and send none — writing
//! the report as rows finish and a summary at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cli::{EmitFormatArg, RunArgs};
use crate::digest::PlanDigest;
use crate::emit::EmitWriter;
use crate::executor::progress::{Counters, Progress, ProgressMode};
use crate::executor::{
    self, Admission, Cancel, Clock, ExecConfig, HttpTransport, OutputThread, RunContext,
    TargetRuntime,
};
use crate::exit::Exit;
use crate::identity::{Identities, IdentityScan};
use crate::lock::{LockError, RunLock};
// Every notice of this file becomes a log event (plain text, or JSON with --log-format json).
use crate::log::eprintln;
use crate::plan::{parse_duration, EmitFormat, Plan, Problem, ProviderKind, Rate, Shard, Target};
use crate::report::{ReportWriter, Status};
use crate::resume::DoneSet;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::secret::Secret;
use crate::summary::{LatencySummary, Summary, TargetSummary};

/// Bounds on numeric settings, shared with the plan's `settings:` checks.
pub const MAX_CONCURRENCY: usize = 4096;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_BURST: u32 = 100_000;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Every run setting, resolved: command line, then the plan's `settings:`, then defaults.
#[derive(Debug)]
pub struct RunOptions {
    pub report: PathBuf,
    pub emit: Option<PathBuf>,
    pub emit_format: EmitFormat,
    /// Overrides every target's rate.
    pub rate: Option<Rate>,
    pub burst: u32,
    pub concurrency: usize,
    pub retries: u32,
    pub timeout: Duration,
    pub resume: Option<PathBuf>,
    pub lock: Option<PathBuf>,
    pub shard: Option<Shard>,
    pub now: Option<DateTime<Utc>>,
    pub dry_run: bool,
    pub sandbox: bool,
    pub no_progress: bool,
    pub quiet: bool,
    pub summary_json: Option<PathBuf>,
    pub expect_digest: Option<String>,
    /// With `resume`: run rows whose earlier result was a final failure again.
    pub retry_failed: bool,
}

impl RunOptions {
    pub fn resolve(args: &RunArgs, plan: &Plan) -> Result<RunOptions, String> {
        let s = &plan.settings;
        let rate = match &args.rate {
            Some(r) => Some(Rate::parse(r).map_err(|e| format!("--rate: {e}"))?),
            None => s.rate,
        };
        let timeout = match &args.timeout {
            Some(t) => parse_duration(t).map_err(|e| format!("--timeout: {e}"))?,
            None => s.timeout.unwrap_or(Duration::from_secs(10)),
        };
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(format!(
                "--timeout must be between 1ms and {}s",
                MAX_TIMEOUT.as_secs()
            ));
        }
        let shard = match &args.shard {
            Some(text) => Some(Shard::parse(text).map_err(|e| format!("--shard: {e}"))?),
            None => s.shard,
        };
        let now = match &args.now {
            Some(text) => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("--now `{text}` is not an RFC 3339 time ({e}), e.g. 2026-12-01T09:00:00Z"))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let concurrency = args.concurrency.or(s.concurrency).unwrap_or(16);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(format!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}"
            ));
        }
        let retries = args.retries.or(s.retries).unwrap_or(5);
        if retries > MAX_RETRIES {
            return Err(format!("--retries must be at most {MAX_RETRIES}"));
        }
        let burst = args.burst.or(s.burst).unwrap_or(1);
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(format!("--burst must be between 1 and {MAX_BURST}"));
        }
        let emit = args.emit.clone().or_else(|| s.emit.clone());
        let emit_format = match args.emit_format {
            Some(EmitFormatArg::Curl) => EmitFormat::Curl,
            Some(EmitFormatArg::Jsonl) => EmitFormat::Jsonl,
            None => s.emit_format.unwrap_or_default(),
        };
        if args.emit_format.is_some() && emit.is_none() {
            return Err("--emit-format needs --emit FILE".into());
        }
        let report = args
            .report
            .clone()
            .or_else(|| s.report.clone())
            .unwrap_or_else(|| default_report_path(&plan.path));
        Ok(RunOptions {
            report,
            emit,
            emit_format,
            rate,
            burst,
            concurrency,
            retries,
            timeout,
            resume: args.resume.clone().or_else(|| s.resume.clone()),
            lock: args.lock.clone().or_else(|| s.lock.clone()),
            shard,
            now,
            dry_run: args.dry_run || s.dry_run.unwrap_or(false),
            sandbox: args.sandbox,
            no_progress: args.no_progress || s.no_progress.unwrap_or(false),
            quiet: args.quiet || s.quiet.unwrap_or(false),
            summary_json: args.summary_json.clone().or_else(|| s.summary_json.clone()),
            expect_digest: args.expect_digest.clone(),
            retry_failed: args.retry_failed || s.retry_failed.unwrap_or(false),
        })
    }
}

/// Whether `path` is a report with rows that went (or were to go) on the wire: anything but
/// `planned`. Unreadable or foreign files count as not holding results.
fn holds_live_results(path: &Path) -> bool {
    let mut live = false;
    let _ = crate::report::for_each_report_row(path, |row| live |= row.status != Status::Planned);
    live
}

/// `<plan-stem>.report.csv` in the current directory.
pub fn default_report_path(plan: &Path) -> PathBuf {
    let stem = plan
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    PathBuf::from(format!("{stem}.report.csv"))
}

fn print_problems(problems: &[Problem]) {
    crate::log::problems(problems);
}

pub fn run(args: RunArgs) -> Exit {
    crate::log::init(args.log_format);
    let plan = match Plan::load(&args.plan, args.targets.as_deref()) {
        Ok(plan) => plan,
        Err(problems) => {
            print_problems(&problems);
            eprintln!(
                "reactbatch run: {} is invalid; nothing was sent",
                args.plan.display()
            );
            return Exit::Invalid;
        }
    };
    let opts = match RunOptions::resolve(&args, &plan) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("reactbatch run: {message}");
            return Exit::Invalid;
        }
    };

    if !opts.sandbox {
        let insecure = plan.insecure_http();
        if !insecure.is_empty() && !args.allow_insecure_http {
            print_problems(&insecure);
            eprintln!(
                "reactbatch run: refusing plain http:// to a non-loopback host; nothing was sent"
            );
            return Exit::Invalid;
        }
        if !opts.quiet {
            print_problems(&plan.secret_warnings());
        }
    }

    // One pass validates every row before any is sent and, on the way, finds repeated rows
    // (for identities) and digests what would be sent.
    let mut scan = IdentityScan::new();
    let mut digest = PlanDigest::new(&plan);
    let validation = plan.validate_with(|row| {
        scan.observe(row, &plan.targets[row.target].name);
        digest.row(row);
    });
    if !opts.quiet {
        print_problems(&validation.warnings);
    }
    if !validation.errors.is_empty() {
        print_problems(&validation.errors);
        eprintln!(
            "reactbatch run: {} has {} error(s); nothing was sent",
            plan.path.display(),
            validation.errors.len()
        );
        return Exit::Invalid;
    }
    // Held for the whole run; the OS frees it however the process ends.
    let _lock = match &opts.lock {
        Some(path) => match RunLock::acquire(path) {
            Ok(lock) => Some(lock),
            Err(LockError::Held(holder)) => {
                eprintln!(
                    "reactbatch run: lock {} is held by another run ({holder}); not starting",
                    path.display()
                );
                return Exit::Locked;
            }
            Err(LockError::Io(e)) => {
                eprintln!(
                    "reactbatch run: cannot open lock file {}: {e}",
                    path.display()
                );
                return Exit::Invalid;
            }
        },
        None => None,
    };

    let identities = scan.finish();
    let digest = digest.finish();
    if let Some(expected) = &opts.expect_digest {
        if expected.trim() != digest {
            eprintln!(
                "reactbatch run: plan digest is {digest}, expected {}: the plan or its includes changed since the audit; nothing was sent",
                expected.trim()
            );
            return Exit::Invalid;
        }
    }
    if opts.dry_run && holds_live_results(&opts.report) {
        eprintln!(
            "reactbatch run: {} holds the results of a live run, which a dry run would overwrite \
             (and a later --resume needs them); give the dry run its own --report FILE",
            opts.report.display()
        );
        return Exit::Invalid;
    }
    let done = match &opts.resume {
        None => None,
        Some(path) if !path.exists() && *path == opts.report => {
            if !opts.quiet {
                crate::log::message(
                    crate::log::Level::Info,
                    &format!(
                        "reactbatch run: no earlier report at {}; starting from the first row",
                        path.display()
                    ),
                );
            }
            None
        }
        Some(path) => match DoneSet::load_for_resume(path, &plan, opts.retry_failed) {
            Ok(set) => Some(set),
            Err(e) => {
                eprintln!("reactbatch run: --resume: {e}");
                return Exit::Invalid;
            }
        },
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reactbatch run: cannot start the async runtime: {e}");
            return Exit::Invalid;
        }
    };
    let prepared = Prepared {
        total_rows: validation.rows,
        identities,
        digest,
        done,
    };
    runtime.block_on(execute_plan(plan, opts, prepared))
}

/// What the passes before sending produced.
struct Prepared {
    total_rows: u64,
    identities: Identities,
    digest: String,
    done: Option<DoneSet>,
}

/// Resolves credentials (or the in-process sandbox), builds the targets and runs.
async fn execute_plan(plan: Plan, opts: RunOptions, prepared: Prepared) -> Exit {
    if opts.sandbox {
        return execute_on_sandbox(plan, opts, prepared).await;
    }
    let secrets: Vec<Secret> = match plan.resolve_secrets() {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems);
            eprintln!("reactbatch run: cannot read the targets' credentials; nothing was sent");
            return Exit::Invalid;
        }
    };
    let targets: Vec<_> = plan.targets.clone();
    run_with_targets(&plan, &opts, targets, secrets, prepared).await
}

/// `--sandbox`: start the emulator in-process, point every target at it with its own
/// credentials (no environment needed), run, stop it. Unless `--rate` overrides the pace, the
/// sandbox enforces the providers' documented limits, as the real APIs would.
async fn execute_on_sandbox(plan: Plan, opts: RunOptions, prepared: Prepared) -> Exit {
    let mut config = SandboxConfig::new();
    if opts.rate.is_none() {
        // A little tolerance over the client's even pacing, for scheduling jitter on loopback.
        config = config
            .kommo_rate(ProviderKind::Kommo.default_rate(), 3)
            .ogmma_rate(ProviderKind::Ogmma.default_rate(), 3);
    }
    let sandbox = match Sandbox::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reactbatch run: cannot start the sandbox: {e}");
            return Exit::Invalid;
        }
    };
    if !opts.quiet {
        eprintln!(
            "reactbatch: sandbox listening on {} (in-process); every target points at it with its credentials",
            sandbox.base_url()
        );
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
    let exit = run_with_targets(&plan, &opts, targets, secrets, prepared).await;
    if !opts.quiet {
        eprintln!(
            "reactbatch: sandbox now holds {} reaction(s); stopping it",
            sandbox.reactions().len()
        );
    }
    sandbox.shutdown().await;
    exit
}

async fn run_with_targets(
    plan: &Plan,
    opts: &RunOptions,
    targets: Vec<Target>,
    secrets: Vec<Secret>,
    prepared: Prepared,
) -> Exit {
    let Prepared {
        total_rows,
        mut identities,
        digest,
        done,
    } = prepared;
    let started = tokio::time::Instant::now();
    let (report, copied) =
        match create_report(&opts.report, done.as_ref(), plan, &identities, opts.shard) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("reactbatch run: {e}");
                return Exit::Invalid;
            }
        };
    let emit = match &opts.emit {
        Some(path) => match EmitWriter::create(path, opts.emit_format) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!(
                    "reactbatch run: cannot create emit file {}: {e}",
                    path.display()
                );
                return Exit::Invalid;
            }
        },
        None => None,
    };
    let transport = match HttpTransport::new(opts.concurrency) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reactbatch run: {e}");
            return Exit::Invalid;
        }
    };
    let shard_count = opts.shard.map_or(1, |s| s.count);
    let runtimes: Vec<TargetRuntime> = targets
        .into_iter()
        .zip(secrets)
        .map(|(t, secret)| {
            let rate = opts
                .rate
                .unwrap_or_else(|| t.effective_rate().divided(shard_count));
            TargetRuntime::new(t, secret, rate, opts.burst)
        })
        .collect();

    let counters = Arc::new(Counters::default());
    for _ in 0..copied {
        counters.record(Status::Skipped);
    }
    let (out, writer) = OutputThread::start(report, emit, Arc::clone(&counters));
    let cancel = Cancel::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn(watch_signals(
        cancel.clone(),
        out.clone(),
        Arc::clone(&interrupted),
        opts.quiet,
    ));
    let progress = Progress::start(
        ProgressMode::detect(opts.no_progress || opts.quiet),
        total_rows,
        Arc::clone(&counters),
    );

    let config = ExecConfig {
        concurrency: opts.concurrency,
        retries: opts.retries,
        timeout: opts.timeout,
        burst: opts.burst,
        dry_run: opts.dry_run,
        clock: match opts.now {
            Some(t) => Clock::Fixed(t),
            None => Clock::System,
        },
        emit_format: opts.emit.as_ref().map(|_| opts.emit_format),
        ..ExecConfig::default()
    };
    let ctx = Arc::new(RunContext {
        config,
        targets: runtimes,
        transport,
        out,
        cancel,
    });
    let names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
    let key_of = Box::new(move |row: &crate::plan::Row| identities.key(row, &names[row.target]));
    let shard = opts.shard;
    let shard_names: Vec<String> = ctx.targets.iter().map(|t| t.spec.name.clone()).collect();
    let admit = move |row: &crate::plan::Row, key: &str| {
        let mine = shard.is_none_or(|s| {
            crate::identity::shard_of(&shard_names[row.target], row.message_ref(), s.count)
                == s.index
        });
        // A row done earlier is already in the report, copied from the earlier one.
        let done_earlier = done.as_ref().is_some_and(|d| d.contains(key));
        if mine && !done_earlier {
            Admission::Run
        } else {
            Admission::Exclude
        }
    };
    executor::execute(Arc::clone(&ctx), plan.rows(), key_of, admit).await;

    signals.abort();
    // Wait until the signal watcher (which holds a report sender) is really gone.
    let _ = signals.await;
    progress.finish();
    let elapsed = started.elapsed();
    let ctx = match Arc::try_unwrap(ctx) {
        Ok(ctx) => ctx,
        Err(_) => {
            eprintln!("reactbatch run: internal error: row tasks outlived the run");
            return Exit::RowsFailed;
        }
    };
    let RunContext { targets, out, .. } = ctx;
    drop(out);
    let tally = tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap_or_else(|_| executor::Tally::lost("the report writer stopped unexpectedly"));

    let mut counts = BTreeMap::new();
    for st in Status::ALL {
        let n = counters.get(st);
        if n > 0 {
            counts.insert(st.as_str(), n);
        }
    }
    let was_interrupted = interrupted.load(Ordering::Relaxed);
    let auth_stopped = targets.iter().any(|t| t.stopped().is_some());
    let failed = counters.get(Status::Failed) + counters.get(Status::Cancelled) > 0;
    let exit = if was_interrupted {
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
        report: opts.report.display().to_string(),
        dry_run: opts.dry_run,
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
                requests: t.sent.load(Ordering::Relaxed),
                achieved_rate: t.achieved_rate(),
                max_requests_in_1s: t.max_sent_in_1s(),
                stopped: t.stopped().map(str::to_string),
            })
            .collect(),
        latency,
        digest: Some(digest),
        interrupted: was_interrupted,
        exit_code: exit.code(),
    };
    if let Some(err) = &tally.io_error {
        eprintln!("reactbatch run: {err}");
    }
    if !opts.quiet {
        crate::log::summary(&summary);
    }
    if let Some(path) = &opts.summary_json {
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

/// Creates the report. With an earlier report to resume, its done rows (those still in the
/// plan, numbered as the plan is now) are copied into a temporary file that is renamed over the
/// report path before anything is sent, so the file on disk always holds every confirmed row
/// (see [`crate::resume`]).
fn create_report(
    path: &Path,
    done: Option<&DoneSet>,
    plan: &Plan,
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
            crate::identity::shard_of(name, row.message_ref(), s.count) == s.index
        })
    };
    let copied = done.copy_done(&mut w, plan, identities.clone(), mine)?;
    w.sync()
        .map_err(|e| format!("cannot write report {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), path.display()))?;
    Ok((w, copied))
}

/// First SIGINT/SIGTERM: stop dispatching and let in-flight requests finish for a short grace
/// (then abandon them); the report and summary are still written. A second signal makes the
/// writer flush what it has and exit at once.
async fn watch_signals(
    cancel: Cancel,
    out: executor::OutputSender,
    interrupted: Arc<AtomicBool>,
    quiet: bool,
) {
    let grace = ExecConfig::default().grace;
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reactbatch run: cannot watch for signals: {e}");
            return;
        }
    };
    signals.next().await;
    interrupted.store(true, Ordering::Relaxed);
    if !quiet {
        eprintln!(
            "reactbatch: interrupted; finishing requests in flight (Ctrl-C again to exit now)"
        );
    }
    cancel.cancel_soft();
    tokio::select! {
        _ = tokio::time::sleep(grace) => cancel.cancel_hard(),
        _ = signals.next() => {
            out.abort().await;
            return;
        }
    }
    signals.next().await;
    out.abort().await;
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
