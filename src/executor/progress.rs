//! Live progress on stderr: an indicatif bar on a terminal; elsewhere (cron, CI), or with
//! `--log-format json`, a timestamped status line (or JSON event, see
//! [`crate::outputs::log`]) every 10 seconds. `--no-progress` and `--quiet` turn both off.
//! Both show an ETA from the lanes' pace model ([`crate::outputs::audit::PaceModel`], the dry
//! run's estimate): each lane's rows left at the pace it actually goes (its limiter's pace after any 429, or what it achieves when that
//! is slower), the slowest lane or host ceiling deciding ([`time_left`]) — not the run's
//! average rate so far, which a lane that finished early or one held back by 429s would skew.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::outputs::audit::PaceModel;
use crate::outputs::report::Status;

use super::lane::Lane;

/// The ETA, read at each tick: `None` once the run it reads is gone.
pub(crate) type TimeLeft = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    Off,
    Bar,
    Lines,
}

impl ProgressMode {
    /// The bar on a terminal, status lines elsewhere, unless turned off.
    pub(crate) fn detect(off: bool) -> ProgressMode {
        if off {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal()
            && crate::outputs::log::format() == crate::outputs::log::LogFormat::Text
        {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// Counters shared by the report writer (which counts) and the progress display.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub done: AtomicU64,
    by_status: [AtomicU64; 6],
}

impl Counters {
    pub(crate) fn record(&self, status: Status) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.by_status[index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, status: Status) -> u64 {
        self.by_status[index(status)].load(Ordering::Relaxed)
    }
}

fn index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

/// The display; dropped (or [`Progress::finish`]ed) at the end of the run.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `time_left`: the ETA by the lanes' pace model (see [`time_left`]).
    pub(crate) fn start(
        mode: ProgressMode,
        total: u64,
        counters: Arc<Counters>,
        time_left: TimeLeft,
    ) -> Progress {
        match mode {
            ProgressMode::Off => Progress {
                bar: None,
                ticker: None,
            },
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style =
                    ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} rows  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                let shown = bar.clone();
                let ticker = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        shown.set_position(counters.done.load(Ordering::Relaxed));
                        let eta = time_left().unwrap_or_default();
                        shown.set_message(format!(
                            "ok {}  failed {}  ETA {}",
                            counters.get(Status::Ok),
                            counters.get(Status::Failed),
                            crate::outputs::audit::human_ms(eta.as_millis() as u64)
                        ));
                    }
                });
                Progress {
                    bar: Some(bar),
                    ticker: Some(ticker),
                }
            }
            ProgressMode::Lines => {
                let ticker = tokio::spawn(async move {
                    let start = tokio::time::Instant::now();
                    // Rows copied from an earlier report are counted before the run starts.
                    let copied = counters.done.load(Ordering::Relaxed);
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let done = counters.done.load(Ordering::Relaxed);
                        let elapsed = start.elapsed();
                        let rate =
                            (done - copied.min(done)) as f64 / elapsed.as_secs_f64().max(1e-3);
                        crate::outputs::log::progress(crate::outputs::log::ProgressCounts {
                            done,
                            total,
                            ok: counters.get(Status::Ok),
                            failed: counters.get(Status::Failed),
                            rows_per_second: rate,
                            eta: if done >= total {
                                Duration::ZERO
                            } else {
                                time_left().unwrap_or_default()
                            },
                        });
                    }
                });
                Progress {
                    bar: None,
                    ticker: Some(ticker),
                }
            }
        }
    }

    /// Stops the display and waits until its ticker is gone (it reads the run while it
    /// ticks: once this returns, it holds nothing of it).
    pub(crate) async fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
            let _ = t.await;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The ETA of a run going on: `model`'s rows (index-aligned with the run's `lanes`) less those
/// each lane finished, each lane at the pace it goes now — its limiter's (lowered by 429s), or
/// what it achieves when that is slower (latency, concurrency, its host's ceiling).
pub(crate) fn time_left(lanes: &[Lane], model: &PaceModel) -> Duration {
    let finished: Vec<u64> = lanes.iter().map(|l| l.finished()).collect();
    let pace: Vec<Option<f64>> = lanes
        .iter()
        .map(|l| match (l.limiter.current_rate(), l.achieved_rate()) {
            (Some(limit), Some(seen)) => Some(limit.min(seen)),
            (limit, seen) => limit.or(seen),
        })
        .collect();
    model.time_left(&finished, &pace)
}
