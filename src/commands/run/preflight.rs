//! Before anything is sent: load the plan, resolve the [`RunConfig`], validate every row (one
//! pass that also finds identities and the digest: [`RowPass`]), take the lock, check the
//! digest and the earlier report to resume. Every refusal here is exit 2 (or 4 for a held
//! lock) with nothing sent. Every file the run will write is tried here too (opened for
//! append, never truncated; removed again if the test created it), so a missing directory or
//! a read-only file is found before the first request, not after the last. A live run refuses a report
//! that already holds live results unless it resumes from it or `--overwrite` says to
//! replace it: a second cron tick without `--resume` must not send every row again.

use std::path::Path;

use crate::audit::{Audit, Replacing};
use crate::digest::{Digests, Expected};

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::identity::Identities;
use crate::lock::{LockError, RunLock};
use crate::outputs::ping::PingUrl;
use crate::outputs::watch::refusal_ping;
use crate::plan::pace::LaneMap;
use crate::plan::spool::{Spool, SpoolRows};
use crate::plan::{EmitFormat, Plan, Problem, ProviderKind, Threads};
use crate::resume::DoneSet;

use super::config::RunConfig;
use super::row_pass::RowPass;

/// What the passes before sending produced.
pub struct Preflight {
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
pub struct Work {
    /// The validated rows, in plan order.
    pub spool: SpoolRows,
    pub total_rows: u64,
    pub identities: Identities,
    /// Rows an earlier report shows done (`--resume`).
    pub done: Option<DoneSet>,
    /// The lanes' rows and paces behind the plan's estimate ([`Audit::model`]), for the
    /// progress ETA.
    pub pace: crate::audit::PaceModel,
    /// The second pass of the outline's replacing counts, to be given every row again.
    pub replacing: Replacing,
    /// The lanes, one per pace group and per account the rows name, and each row's lane.
    pub lanes: LaneMap,
}

pub(super) fn print_problems(problems: &[Problem]) {
    crate::log::problems(problems);
}

/// Warnings found before sending, printed once the run is sure to start.
#[derive(Default)]
struct Warnings(Vec<Problem>);

impl Warnings {
    fn add(&mut self, more: Vec<Problem>) {
        self.0.extend(more);
    }

    fn print(self) {
        print_problems(&self.0);
    }

    /// After a refusal: how many warnings were held back, and where to see them.
    fn untold(self, plan: &Path) {
        if !self.0.is_empty() {
            crate::log::info(&format!(
                "reactbatch run: {} warning(s) not shown; `reactbatch check {}` lists them",
                self.0.len(),
                plan.display()
            ));
        }
    }
}

/// Whether `path` is a report with rows that went (or were to go) on the wire: anything but
/// `planned`. Unreadable or foreign files count as not holding results.
fn holds_live_results(path: &Path) -> bool {
    crate::report::holds_live_rows(path)
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

/// `ping`: the URL to tell of a refusal, set as soon as it is known (see
/// [`crate::outputs::watch::refusal_ping`]).
pub fn preflight(args: &RunArgs, ping: &mut Option<PingUrl>) -> Result<Preflight, Exit> {
    *ping = refusal_ping(args, None);
    let plan = match Plan::load(&args.plan, args.targets.as_deref()) {
        Ok(plan) => {
            *ping = refusal_ping(args, Some(&plan.settings));
            plan
        }
        Err(problems) => {
            print_problems(&problems);
            crate::log::error(&format!(
                "reactbatch run: {} is invalid; nothing was sent",
                args.plan.display()
            ));
            return Err(Exit::Invalid);
        }
    };
    let mut config = match RunConfig::resolve(args, &plan) {
        Ok(o) => {
            crate::log::set_quiet(o.quiet);
            o
        }
        Err(message) => {
            crate::log::error(&format!("reactbatch run: {message}"));
            return Err(Exit::Invalid);
        }
    };
    if !config.dry_run {
        fit_open_files(&mut config);
    }

    if !config.sandbox {
        let insecure = plan.insecure_http();
        if !insecure.is_empty() && !args.allow_insecure_http {
            print_problems(&insecure);
            crate::log::error(
                "reactbatch run: refusing plain http:// to a non-loopback host; nothing was sent",
            );
            return Err(Exit::Invalid);
        }
    }
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

    let spool = match Spool::create() {
        Ok(s) => s,
        Err(e) => {
            crate::log::error(&format!(
                "reactbatch run: cannot create a spool file in the temp directory: {e}"
            ));
            return Err(Exit::Invalid);
        }
    };
    let now = config.now.unwrap_or_else(chrono::Utc::now);
    // Warnings are only printed without -q: quiet, the pass that only finds warnings is skipped.
    let RowPass {
        validation,
        scan,
        digest,
        audit,
        lanes,
        spool,
        spool_error,
    } = RowPass::run(
        &plan,
        !config.quiet,
        config.shard,
        now,
        spool,
        Threads::available(),
    );
    if let Some(e) = spool_error {
        crate::log::error(&format!(
            "reactbatch run: cannot write the spool file in the temp directory: {e}; nothing was sent"
        ));
        return Err(Exit::Invalid);
    }
    let error_count = validation.error_count();
    if !config.quiet {
        warnings.add(plan.pace_warnings.clone());
        warnings.add(validation.warnings);
    }
    if !validation.errors.is_empty() {
        print_problems(&validation.errors);
        crate::log::error(&format!(
            "reactbatch run: {} has {} error(s); nothing was sent",
            plan.path.display(),
            error_count
        ));
        warnings.untold(&plan.path);
        return Err(Exit::Invalid);
    }
    let lock = match &config.lock {
        Some(path) => match RunLock::acquire(path) {
            Ok(lock) => Some(lock),
            Err(LockError::Held(holder)) => {
                crate::log::error(&format!(
                    "reactbatch run: lock {} is held by another run ({holder}); not starting",
                    path.display()
                ));
                warnings.untold(&plan.path);
                return Err(Exit::Locked);
            }
            Err(LockError::Io(e)) => {
                crate::log::error(&format!(
                    "reactbatch run: cannot open lock file {}: {e}",
                    path.display()
                ));
                warnings.untold(&plan.path);
                return Err(Exit::Invalid);
            }
        },
        None => None,
    };

    let identities = scan.finish();
    let rates: Vec<_> = lanes
        .lanes
        .iter()
        .map(|g| config.pace(g.rate(&plan.targets)))
        .collect();
    let spool = match spool.into_rows() {
        Ok(rows) => rows,
        Err(e) => {
            crate::log::error(&format!(
                "reactbatch run: cannot read the spool file back: {e}; nothing was sent"
            ));
            warnings.untold(&plan.path);
            return Err(Exit::Invalid);
        }
    };
    // The run takes each row's identity hash from the spool instead of hashing it again.
    let identities = identities.linked_to(spool.content_ids());
    // The outline's second pass (replacing counts) rides on the run's own read of the rows.
    let (mut audit, replacing) = audit.finish(&lanes.lanes, &rates, config.burst);
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
    if config.emit.is_some() && config.emit_format == EmitFormat::Curl {
        // A lane's requests: the rows routed to it, at most what its targets send (deferred
        // rows are not in the script).
        let sleeps = crate::emit::curl_sleeps(lanes.lanes.iter().zip(&lanes.rows).zip(&rates).map(
            |((g, &routed), r)| {
                let sent: u64 = g
                    .members
                    .iter()
                    .map(|&m| audit.targets[m].reacts + audit.targets[m].unreacts)
                    .sum();
                (routed.min(sent), r.interval())
            },
        ));
        let sends = |g: &&crate::plan::pace::PaceGroup| {
            g.members
                .iter()
                .any(|&m| audit.targets[m].reacts + audit.targets[m].unreacts > 0)
        };
        let has_kommo = lanes
            .lanes
            .iter()
            .filter(sends)
            .any(|g| g.provider == ProviderKind::Kommo);
        // The pace each shard's script keeps when the shards run one after another: the
        // slowest lane's own rate, so no lane goes faster than its limit.
        let full_rate = config.rate.or_else(|| {
            lanes
                .lanes
                .iter()
                .filter(sends)
                .map(|g| g.rate(&plan.targets))
                .min_by(|a, b| a.per_second().total_cmp(&b.per_second()))
        });
        let rate = full_rate.map_or_else(|| "unlimited".to_string(), |r| r.to_string());
        if let Err(why) = crate::emit::check_curl_span(sleeps, has_kommo, &rate) {
            crate::log::error(&format!("reactbatch run: --emit: {why}; nothing was sent"));
            warnings.untold(&plan.path);
            return Err(Exit::Invalid);
        }
    }
    let digest = digest.finish_all();
    if let Some(value) = &config.expect_digest {
        let checked = Expected::parse(value).and_then(|expected| expected.check(&digest));
        if let Err(why) = checked {
            crate::log::error(&format!("reactbatch run: {why}; nothing was sent"));
            warnings.untold(&plan.path);
            return Err(Exit::Invalid);
        }
    }
    for (path, what) in outputs(&config) {
        let mut writable = try_output(path);
        if config.metrics_file.as_deref() == Some(path) {
            // Replaced through a new file beside it: its directory must take one too.
            writable = writable.and_then(|()| crate::outputs::metrics::check_directory(path));
        }
        if let Err(e) = writable {
            crate::log::error(&format!(
                "reactbatch run: cannot write {what} {}: {e}; nothing was sent",
                path.display()
            ));
            warnings.untold(&plan.path);
            return Err(Exit::Invalid);
        }
    }
    let holds_live = live_check.finish();
    if !config.dry_run && holds_live {
        let shown = config.report.display();
        crate::log::error(&format!(
            "reactbatch run: {shown} holds the results of a live run, which this run would \
             overwrite; nothing was sent. To go on from it (skipping rows it shows done), add \
             --resume {shown}; to replace it, add --overwrite"
        ));
        warnings.untold(&plan.path);
        return Err(Exit::Invalid);
    }
    if config.dry_run && holds_live {
        crate::log::error(&format!(
            "reactbatch run: {} holds the results of a live run, which a dry run would overwrite \
             (and a later --resume needs them); give the dry run its own --report FILE",
            config.report.display()
        ));
        warnings.untold(&plan.path);
        return Err(Exit::Invalid);
    }
    let done = match &config.resume {
        None => None,
        Some(path) if !path.exists() && *path == config.report => {
            crate::log::info(&format!(
                "reactbatch run: no earlier report at {}; starting from the first row",
                path.display()
            ));
            None
        }
        Some(path) => match DoneSet::load_for_resume(path, &plan, config.retry_failed) {
            Ok(set) => Some(set),
            Err(e) => {
                crate::log::error(&format!("reactbatch run: --resume: {e}"));
                warnings.untold(&plan.path);
                return Err(Exit::Invalid);
            }
        },
    };
    warnings.print();
    let pace = audit.model.clone();
    Ok(Preflight {
        plan,
        config,
        digest,
        audit,
        lock,
        work: Work {
            spool,
            total_rows: validation.rows,
            identities,
            done,
            pace,
            replacing,
            lanes,
        },
    })
}

/// Lowers the run's concurrency (its bound on open connections) to what the open-file limit
/// allows, with room for the other files, saying so when it had to.
fn fit_open_files(config: &mut RunConfig) {
    let Some(soft) = crate::fdlimit::soft_limit() else {
        return;
    };
    let fitted = crate::fdlimit::fit_concurrency(config.concurrency, soft, config.sandbox);
    if fitted < config.concurrency {
        crate::log::warn(&format!(
            "reactbatch run: concurrency {} lowered to {fitted} to fit the open-file limit of \
             {soft} (ulimit -n; its hard limit is the most it can be raised to)",
            config.concurrency
        ));
        config.concurrency = fitted;
    }
}
