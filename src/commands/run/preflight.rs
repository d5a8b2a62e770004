//! Before anything is sent: load the plan, resolve the [`RunConfig`], validate every row (one
//! pass that also finds identities and the digest: [`RowPass`]), take the lock, check the
//! digest and the earlier report to resume. Every refusal here is exit 2 (or 4 for a held
//! lock) with nothing sent. Every file the run will write is tried here too (opened for
//! append, never truncated; removed again if the test created it), so a missing directory or
//! a read-only file is found before the first request, not after the last. A live run refuses a report
//! that already holds live results unless it resumes from it or `--overwrite` says to
//! replace it: a second cron tick without `--resume` must not send every row again.

use std::path::Path;

use crate::cli::RunArgs;
use crate::digest::{Digests, Expected};
use crate::identity::Identities;
use crate::lock::{LockError, RunLock};
use crate::monitor::watch::refusal_ping;
use crate::outputs::audit::{Audit, AuditBuilder};
use crate::plan::pace::{LaneMap, PaceGroup};
use crate::plan::spool::{Spool, SpoolRows};
use crate::plan::{EmitFormat, PingUrl, Plan, Problem, ProviderKind, Rate, Threads};
use crate::resume::DoneSet;

use super::config::RunConfig;
use super::error::{RunError, RunErrorKind};
use super::row_pass::RowPass;

/// What the passes before sending produced.
pub(crate) struct Preflight {
    pub plan: Plan,
    pub config: RunConfig,
    pub digest: Digests,
    /// What the plan does per target, and the estimate.
    pub audit: Audit,
    /// Held for the whole run; the OS frees it however the process ends.
    pub lock: Option<RunLock>,
    pub work: Work,
}

/// What the executor consumes: the rows to run and how to know them.
pub(crate) struct Work {
    /// The validated rows, in plan order.
    pub spool: SpoolRows,
    pub total_rows: u64,
    pub identities: Identities,
    /// Rows an earlier report shows done (`--resume`).
    pub done: Option<DoneSet>,
    /// The lanes' rows and paces behind the plan's estimate ([`Audit::model`]), for the
    /// progress ETA.
    pub pace: crate::outputs::audit::PaceModel,
    /// The lanes, one per pace group and per account the rows name, and each row's lane.
    pub lanes: LaneMap,
}

/// Warnings found before sending, printed once the run is sure to start.
#[derive(Default)]
struct Warnings(Vec<Problem>);

impl Warnings {
    fn add(&mut self, more: Vec<Problem>) {
        self.0.extend(more);
    }

    fn print(self) {
        crate::outputs::log::problems(&self.0);
    }
}

/// Whether `path` is a report with rows that went (or were to go) on the wire: anything but
/// `planned`. Unreadable or foreign files count as not holding results.
fn holds_live_results(path: &Path) -> bool {
    crate::outputs::report::holds_live_rows(path)
}

/// [`holds_live_results`] of a report, read on a thread of its own while the plan is
/// validated (inline if the OS refuses a thread). `None`: not needed; counts as `false`.
enum LiveCheck {
    Skip,
    Thread(std::thread::JoinHandle<bool>),
    Inline(std::path::PathBuf),
}

impl LiveCheck {
    fn start(report: Option<std::path::PathBuf>) -> LiveCheck {
        let Some(path) = report else {
            return LiveCheck::Skip;
        };
        let inline = path.clone();
        match std::thread::Builder::new()
            .name("reactbatch-report-check".into())
            .spawn(move || holds_live_results(&path))
        {
            Ok(handle) => LiveCheck::Thread(handle),
            Err(_) => LiveCheck::Inline(inline),
        }
    }

    fn finish(self) -> bool {
        match self {
            LiveCheck::Skip => false,
            // A check that panicked reads as the report holding results: nothing is overwritten.
            LiveCheck::Thread(handle) => handle.join().unwrap_or(true),
            LiveCheck::Inline(path) => holds_live_results(&path),
        }
    }
}

/// The files the run writes, and what each is called in an error.
fn outputs(config: &RunConfig) -> Vec<(&Path, &'static str)> {
    let mut out = vec![(config.report.as_path(), "the report")];
    if let Some(p) = &config.emit {
        out.push((p.as_path(), "the emit file"));
    }
    if let Some(p) = &config.summary_json {
        out.push((p.as_path(), "the summary"));
    }
    if let Some(p) = &config.report_html {
        out.push((p.as_path(), "the HTML page"));
    }
    if let Some(p) = config.metrics_file.as_ref().filter(|_| !config.dry_run) {
        out.push((p.as_path(), "the metrics file"));
    }
    out
}

/// Whether `path` can be written: opened for append (created if missing, then removed again),
/// so an existing file is never truncated by the test.
fn try_output(path: &Path) -> std::io::Result<()> {
    let existed = path.symlink_metadata().is_ok();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Whether `--resume` names `report` (the same file, however spelled).
fn resumes_from(config: &RunConfig, report: &Path) -> bool {
    let Some(resume) = &config.resume else {
        return false;
    };
    if resume == report {
        return true;
    }
    match (resume.canonicalize(), report.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The steps before sending, in order; the first refusal ends the run with nothing sent.
///
/// `ping`: the URL to tell of a refusal, set as soon as it is known (see
/// [`crate::monitor::watch::refusal_ping`]).
pub(crate) fn preflight(args: &RunArgs, ping: &mut Option<PingUrl>) -> Result<Preflight, RunError> {
    *ping = refusal_ping(args, None);
    let plan = load_plan(args)?;
    *ping = refusal_ping(args, Some(&plan.settings));
    let config = configure(args, &plan)?;
    refuse_insecure_http(args, &plan, &config)?;
    // Warnings wait until every refusal is past: a run that is refused shows its one reason
    // first, not under pages of warnings (it only counts them; `check` lists them).
    let mut warnings = Warnings::default();
    if !config.sandbox && !config.quiet {
        warnings.add(plan.secret_warnings());
    }
    // Whether the report already holds live results is read on another thread meanwhile: a
    // large earlier report costs as much to read as the plan does to validate.
    let live_check = LiveCheck::start(
        (config.dry_run || (!config.overwrite && !resumes_from(&config, &config.report)))
            .then(|| config.report.clone()),
    );
    let mut pass = validate(&plan, &config)?;
    if !config.quiet {
        warnings.add(plan.pace_warnings.clone());
        warnings.add(std::mem::take(&mut pass.validation.warnings));
    }
    let checked = check_rows(&plan, &config, pass, live_check)
        .map_err(|e| e.untold(warnings.0.len(), &plan.path))?;
    warnings.print();
    Ok(Preflight {
        plan,
        config,
        digest: checked.digest,
        audit: checked.audit,
        lock: checked.lock,
        work: checked.work,
    })
}

/// Reads and parses the plan files.
fn load_plan(args: &RunArgs) -> Result<Plan, RunError> {
    Plan::load(&args.plan, args.targets.as_deref()).map_err(|problems| {
        RunError::with_problems(
            RunErrorKind::PlanInvalid {
                plan: args.plan.clone(),
            },
            problems,
        )
    })
}

/// The run's settings, from the command line and the plan; fitted to the open-file limit for a
/// live run.
fn configure(args: &RunArgs, plan: &Plan) -> Result<RunConfig, RunError> {
    let mut config = RunConfig::resolve(args, plan).map_err(RunErrorKind::Usage)?;
    crate::outputs::log::set_quiet(config.quiet);
    if !config.dry_run {
        fit_open_files(&mut config);
    }
    Ok(config)
}

/// Plain `http://` to a host that is not loopback carries the credentials in the clear: only
/// `--allow-insecure-http` lets it through (the sandbox never needs it).
fn refuse_insecure_http(args: &RunArgs, plan: &Plan, config: &RunConfig) -> Result<(), RunError> {
    if config.sandbox || args.allow_insecure_http {
        return Ok(());
    }
    let insecure = plan.insecure_http();
    if insecure.is_empty() {
        return Ok(());
    }
    Err(RunError::with_problems(
        RunErrorKind::InsecureHttp,
        insecure,
    ))
}

/// The one pass over the rows ([`RowPass`]), spooling the valid ones.
fn validate(plan: &Plan, config: &RunConfig) -> Result<RowPass, RunError> {
    let spool = Spool::create().map_err(RunErrorKind::SpoolCreate)?;
    let now = config.now.unwrap_or_else(chrono::Utc::now);
    // Warnings are only printed without -q: quiet, the pass that only finds warnings is skipped.
    let mut pass = RowPass::run(
        plan,
        !config.quiet,
        config.shard,
        now,
        spool,
        Threads::available(),
    );
    match pass.spool_error.take() {
        Some(e) => Err(RunErrorKind::SpoolWrite(e).into()),
        None => Ok(pass),
    }
}

/// What the checks after the row pass hand on to [`Preflight`].
struct Checked {
    digest: Digests,
    audit: Audit,
    lock: Option<RunLock>,
    work: Work,
}

/// Everything decided from the validated rows: refuse row errors, take the lock, read the
/// spool back, make the outline, then check the emit script, the digest, the output files,
/// the report a live run would replace, and the report to resume from.
fn check_rows(
    plan: &Plan,
    config: &RunConfig,
    pass: RowPass,
    live_check: LiveCheck,
) -> Result<Checked, RunError> {
    let RowPass {
        validation,
        scan,
        digest,
        audit,
        lanes,
        spool,
        spool_error: _,
    } = pass;
    if !validation.errors.is_empty() {
        return Err(RunError::with_problems(
            RunErrorKind::RowErrors {
                plan: plan.path.clone(),
                count: validation.error_count(),
            },
            validation.errors,
        ));
    }
    let lock = take_lock(config)?;
    let spool = spool.into_rows().map_err(RunErrorKind::SpoolRead)?;
    // The run takes each row's identity hash from the spool instead of hashing it again.
    let identities = scan.finish().linked_to(spool.content_ids());
    let rates: Vec<_> = lanes
        .lanes
        .iter()
        .map(|g| config.pace(g.rate(&plan.targets)))
        .collect();
    let audit = outline(plan, config, audit, &lanes, &rates, &spool)?;
    check_curl_span(plan, config, &audit, &lanes, &rates)?;
    let digest = digest.finish_all();
    check_digest(config, &digest)?;
    check_outputs(config)?;
    refuse_replacing_live_results(config, live_check.finish())?;
    let done = load_done(plan, config)?;
    let pace = audit.model.clone();
    Ok(Checked {
        digest,
        audit,
        lock,
        work: Work {
            spool,
            total_rows: validation.rows,
            identities,
            done,
            pace,
            lanes,
        },
    })
}

/// `--lock FILE`: held for the whole run, or the run does not start.
fn take_lock(config: &RunConfig) -> Result<Option<RunLock>, RunError> {
    let Some(path) = &config.lock else {
        return Ok(None);
    };
    match RunLock::acquire(path) {
        Ok(lock) => Ok(Some(lock)),
        Err(LockError::Held(holder)) => Err(RunErrorKind::LockHeld {
            path: path.clone(),
            holder,
        }
        .into()),
        Err(LockError::Io(source)) => Err(RunErrorKind::LockOpen {
            path: path.clone(),
            source,
        }
        .into()),
    }
}

/// The outline of what the plan does per target and how long it takes, under the hosts'
/// ceilings. Its replacing counts are settled here, by a second read of the spooled rows
/// (this run's shard counted) when some message may have come twice, so the outline is whole
/// before anything is sent.
fn outline(
    plan: &Plan,
    config: &RunConfig,
    audit: AuditBuilder,
    lanes: &LaneMap,
    rates: &[Rate],
    spool: &SpoolRows,
) -> Result<Audit, RunError> {
    let (mut audit, mut replacing) = audit.finish(&lanes.lanes, rates, config.burst);
    let read_error = |e: String| RunErrorKind::SpoolRead(std::io::Error::other(e));
    if replacing.needs_rows() {
        for row in spool.again().map_err(RunErrorKind::SpoolRead)? {
            let row = row.map_err(|p| read_error(p.to_string()))?;
            let counted = config
                .shard
                .is_none_or(|s| s.owns(&plan.targets[row.target].name, &row));
            replacing.row(&row, counted);
        }
    }
    replacing.apply(&mut audit);
    if !config.sandbox {
        // The sandbox has no host ceiling; the real hosts may.
        let (host_of, ceilings) = crate::executor::host::lane_ceilings(
            &plan.targets,
            &lanes.lanes,
            &plan.settings.host_rate,
            config.shard.map_or(1, |s| s.count),
        );
        audit.under_ceilings(&host_of, ceilings);
    }
    Ok(audit)
}

/// A curl script (`--emit FILE.sh`) must end before its first Kommo signature expires.
fn check_curl_span(
    plan: &Plan,
    config: &RunConfig,
    audit: &Audit,
    lanes: &LaneMap,
    rates: &[Rate],
) -> Result<(), RunError> {
    if config.emit.is_none() || config.emit_format != EmitFormat::Curl {
        return Ok(());
    }
    let sent = |g: &PaceGroup| -> u64 {
        g.members
            .iter()
            .map(|&m| audit.targets[m].reacts + audit.targets[m].unreacts)
            .sum()
    };
    // A lane's requests: the rows routed to it, at most what its targets send (deferred
    // rows are not in the script).
    let sleeps = crate::outputs::emit::curl_sleeps(
        lanes
            .lanes
            .iter()
            .zip(&lanes.rows)
            .zip(rates)
            .map(|((g, &routed), r)| (routed.min(sent(g)), r.interval())),
    );
    let sending = || lanes.lanes.iter().filter(|g| sent(g) > 0);
    let has_kommo = sending().any(|g| g.provider == ProviderKind::Kommo);
    // The pace each shard's script keeps when the shards run one after another: the
    // slowest lane's own rate, so no lane goes faster than its limit.
    let full_rate = config.rate.or_else(|| {
        sending()
            .map(|g| g.rate(&plan.targets))
            .min_by(|a, b| a.per_second().total_cmp(&b.per_second()))
    });
    let rate = full_rate.map_or_else(|| "unlimited".to_string(), |r| r.to_string());
    crate::outputs::emit::check_curl_span(sleeps, has_kommo, &rate)
        .map_err(|why| RunErrorKind::CurlSpan(why).into())
}

/// `--expect-digest`: the plan must be the one that was reviewed.
fn check_digest(config: &RunConfig, digest: &Digests) -> Result<(), RunError> {
    let Some(value) = &config.expect_digest else {
        return Ok(());
    };
    Expected::parse(value)
        .and_then(|expected| expected.check(digest))
        .map_err(|why| RunErrorKind::Digest(why).into())
}

/// Every file the run writes can be written.
fn check_outputs(config: &RunConfig) -> Result<(), RunError> {
    for (path, what) in outputs(config) {
        let mut writable = try_output(path);
        if config.metrics_file.as_deref() == Some(path) {
            // Replaced through a new file beside it: its directory must take one too.
            writable = writable.and_then(|()| crate::outputs::metrics::check_directory(path));
        }
        writable.map_err(|source| RunErrorKind::Unwritable {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// A report holding live results is replaced only when asked (`--overwrite`), never by a dry
/// run, whose report a later `--resume` could not use.
fn refuse_replacing_live_results(config: &RunConfig, holds_live: bool) -> Result<(), RunError> {
    if !holds_live {
        return Ok(());
    }
    let path = config.report.clone();
    Err(if config.dry_run {
        RunErrorKind::DryRunOverLiveReport { path }
    } else {
        RunErrorKind::LiveReport { path }
    }
    .into())
}

/// `--resume`: the rows the earlier report shows done. A report that does not exist yet at
/// the run's own report path is a first run.
fn load_done(plan: &Plan, config: &RunConfig) -> Result<Option<DoneSet>, RunError> {
    let Some(path) = &config.resume else {
        return Ok(None);
    };
    if !path.exists() && *path == config.report {
        crate::outputs::log::info(&format!(
            "reactbatch run: no earlier report at {}; starting from the first row",
            path.display()
        ));
        return Ok(None);
    }
    DoneSet::load_for_resume(path, plan, config.retry_failed)
        .map(Some)
        .map_err(|e| RunErrorKind::Resume(e).into())
}

/// Lowers the run's concurrency (its bound on open connections) to what the open-file limit
/// allows, with room for the other files, saying so when it had to.
fn fit_open_files(config: &mut RunConfig) {
    let Some(soft) = crate::fdlimit::soft_limit() else {
        return;
    };
    let fitted = crate::fdlimit::fit_concurrency(config.concurrency, soft, config.sandbox);
    if fitted < config.concurrency {
        crate::outputs::log::warn(&format!(
            "reactbatch run: concurrency {} lowered to {fitted} to fit the open-file limit of \
             {soft} (ulimit -n; its hard limit is the most it can be raised to)",
            config.concurrency
        ));
        config.concurrency = fitted;
    }
}
