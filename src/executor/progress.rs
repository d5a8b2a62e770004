//! Live progress on stderr: an indicatif bar on a terminal; elsewhere (cron, CI), or with
//! `--log-format json`, a timestamped status line (or JSON event, see [`crate::log`]) every
//! 10 seconds. `--no-progress` and `--quiet` turn both off.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Off,
    Bar,
    Lines,
}

impl ProgressMode {
    /// The bar on a terminal, status lines elsewhere, unless turned off.
    pub fn detect(off: bool) -> ProgressMode {
        if off {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal()
            && crate::log::format() == crate::log::LogFormat::Text
        {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// Counters shared by the report writer (which counts) and the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    by_status: [AtomicU64; 6],
}

impl Counters {
    pub fn record(&self, status: Status) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.by_status[index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, status: Status) -> u64 {
        self.by_status[index(status)].load(Ordering::Relaxed)
    }
}

fn index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

/// The display; dropped (or [`Progress::finish`]ed) at the end of the run.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(mode: ProgressMode, total: u64, counters: Arc<Counters>) -> Progress {
        match mode {
            ProgressMode::Off => Progress {
                bar: None,
                ticker: None,
            },
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} rows  {msg}  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                let shown = bar.clone();
                let ticker = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        shown.set_position(counters.done.load(Ordering::Relaxed));
                        shown.set_message(format!(
                            "ok {}  failed {}",
                            counters.get(Status::Ok),
                            counters.get(Status::Failed)
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
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let done = counters.done.load(Ordering::Relaxed);
                        let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
                        crate::log::progress(crate::log::ProgressCounts {
                            done,
                            total,
                            ok: counters.get(Status::Ok),
                            failed: counters.get(Status::Failed),
                            rows_per_second: rate,
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

    pub fn finish(self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
