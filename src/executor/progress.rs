//! Live progress on stderr: an indicatif bar on a terminal; elsewhere (cron, CI), or with
//! `--log-format json`, a timestamped status line (or JSON event, see [`crate::log`]) every
//! 10 seconds. `--no-progress` and `--quiet` turn both off. Both show an ETA: the bar's from
//! its own rate; the status lines' from the rows this run finished per second so far, or —
//! before there is a rate to go by — from the plan's estimate ([`crate::audit`]).

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
    /// `estimated`: the plan's estimate of the whole run, for the ETA before rows finish.
    pub fn start(
        mode: ProgressMode,
        total: u64,
        counters: Arc<Counters>,
        estimated: Duration,
    ) -> Progress {
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
                        crate::log::progress(crate::log::ProgressCounts {
                            done,
                            total,
                            ok: counters.get(Status::Ok),
                            failed: counters.get(Status::Failed),
                            rows_per_second: rate,
                            eta: eta(total.saturating_sub(done), rate, estimated, elapsed),
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

/// Time left for `remaining` rows: at the `rate` seen so far, or, with no rate yet, what the
/// plan's `estimated` time leaves after `elapsed`.
pub fn eta(remaining: u64, rate: f64, estimated: Duration, elapsed: Duration) -> Duration {
    if remaining == 0 {
        Duration::ZERO
    } else if rate > 0.0 {
        Duration::from_secs_f64(remaining as f64 / rate)
    } else {
        estimated.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_from_the_rate_seen_or_else_the_estimate() {
        let s = Duration::from_secs;
        assert_eq!(eta(70, 7.0, s(100), s(10)), s(10));
        assert_eq!(eta(70, 0.0, s(100), s(10)), s(90));
        assert_eq!(eta(70, 0.0, s(5), s(10)), Duration::ZERO);
        assert_eq!(eta(0, 7.0, s(100), s(10)), Duration::ZERO);
    }
}
