//! What a cron job's monitors see of a live run: the metrics file ([`crate::outputs::metrics`]) and the
//! pings ([`super::ping`]), at the run's three moments — refused before sending, sending
//! started, ended (however: done, failed rows, interrupted, an output failed).
//!
//! Only live runs are watched: a dry run that names a metrics file or a ping URL (a cron plan
//! audited with `--dry-run`) writes and pings nothing, and says so, so an audit never looks
//! like a run to the monitors.

use std::path::PathBuf;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::outputs::summary::Summary;
use crate::plan::{Plan, Settings};

use super::ping::{self, PingUrl};

/// The monitors of one run, from the moment its settings are resolved to its end.
pub(crate) struct Watch {
    metrics: Option<PathBuf>,
    ping: Option<PingUrl>,
    plan: PathBuf,
    /// The `URL/start` ping under way, awaited before the end's ping so that the monitor
    /// sees them in order.
    start: Option<JoinHandle<()>>,
}

impl Watch {
    /// The monitors a run with these settings has: none for a dry run (said once). `plan`'s
    /// own `metrics_file` and `ping_url` were left out of a `--sandbox` run's settings (said
    /// too).
    pub(crate) fn new(
        metrics: Option<PathBuf>,
        ping: Option<PingUrl>,
        dry_run: bool,
        sandbox: bool,
        plan: &Plan,
    ) -> Watch {
        if dry_run && (metrics.is_some() || ping.is_some()) {
            crate::outputs::log::info(
                "reactbatch run: a dry run writes no metrics file and pings nothing \
                 (--metrics-file and --ping watch live runs only)",
            );
        }
        let s = &plan.settings;
        let unused = (metrics.is_none() && s.metrics_file.is_some())
            || (ping.is_none() && s.ping_url.is_some());
        if sandbox && !dry_run && unused {
            crate::outputs::log::info(
                "reactbatch run: the plan's metrics_file and ping_url are not used with \
                 --sandbox (a rehearsal is not a run of the job); --metrics-file and --ping on \
                 the command line are",
            );
        }
        Watch {
            metrics: metrics.filter(|_| !dry_run),
            ping: ping.filter(|_| !dry_run),
            plan: plan.path.clone(),
            start: None,
        }
    }

    /// Sending starts: `URL/start`, sent on `runtime` without waiting for it.
    pub(crate) fn started(&mut self, runtime: &Runtime) {
        if let Some(url) = self.ping.clone() {
            self.start = Some(runtime.spawn(async move {
                ping::ping(&url, "start", String::new()).await;
            }));
        }
    }

    /// The run ended with `exit`: the metrics file (when the run has a `summary`, i.e. it got
    /// as far as sending), then `URL/<exit code>` with the summary's first line. Waits for the
    /// pings, each at most [`ping::PING_TIMEOUT`]; changes nothing of the outcome.
    pub(crate) fn ended(self, runtime: &Runtime, summary: Option<&Summary>, exit: Exit) {
        // The run is over: from here Ctrl-C means "do not wait for the monitor", not a new
        // outcome. Listened for before the metrics are written, so none is missed after.
        let signals = self.ping.as_ref().and_then(|_| {
            let _in_runtime = runtime.enter();
            crate::signals::Signals::new().ok()
        });
        if let (Some(path), Some(summary)) = (&self.metrics, summary) {
            crate::outputs::metrics::write(path, summary, &self.plan, exit.code());
        }
        let Some(url) = self.ping else {
            return;
        };
        let body = match summary {
            Some(s) => s.render().lines().next().unwrap_or_default().to_string(),
            None => format!(
                "reactbatch: stopped before sending with exit code {}",
                exit.code()
            ),
        };
        let start = self.start;
        // On the runtime's threads, which block SIGPIPE (see `crate::signals`), not this one.
        let end = runtime.spawn(async move {
            if let Some(start) = start {
                let _ = start.await;
            }
            ping::ping(&url, &exit.code().to_string(), body).await;
        });
        runtime.block_on(async move {
            let Some(mut signals) = signals else {
                let _ = end.await;
                return;
            };
            tokio::select! {
                _ = end => {}
                stop = signals.next() => crate::outputs::log::warn(&format!(
                    "reactbatch: {}; the end ping was not waited for",
                    stop.describe()
                )),
            }
        });
    }
}

/// The URL a run refused before sending pings: `--ping` (when it parses), else the plan's
/// `ping_url` once its settings are read (`settings` is `None` while the plan is not) unless
/// the run is a `--sandbox` rehearsal; none for a dry run, as far as it is known to be one.
pub(crate) fn refusal_ping(args: &RunArgs, settings: Option<&Settings>) -> Option<PingUrl> {
    let dry_run = args.dry_run || settings.is_some_and(|s| s.dry_run == Some(true));
    if dry_run {
        return None;
    }
    match &args.ping {
        Some(text) => PingUrl::parse(text).ok(),
        None => settings
            .and_then(|s| s.ping_url.clone())
            .filter(|_| !args.sandbox),
    }
}

/// A run refused before sending (invalid plan or usage, lock held): `URL/<exit code>` alone,
/// on a small runtime of its own (the run's is not built yet).
pub(crate) fn refused(url: Option<&PingUrl>, exit: Exit) {
    let Some(url) = url.cloned() else {
        return;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(crate::signals::block_sigpipe_in_thread)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::outputs::log::warn(&format!(
                "reactbatch run: ping {url} not sent: cannot start the async runtime: {e}"
            ));
            return;
        }
    };
    let body = format!(
        "reactbatch: refused before sending with exit code {}",
        exit.code()
    );
    let code = exit.code().to_string();
    let sent = runtime.spawn(async move { ping::ping(&url, &code, body).await });
    let _ = runtime.block_on(sent);
}
