//! How long the lanes take at their pace: the dry run's estimate and, from the same numbers,
//! the live run's ETA.

use crate::plan::Rate;

/// One lane in the [`PaceModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanePace {
    /// Rows it sends in this run.
    pub rows: u64,
    /// Its pace in this run.
    pub rate: Rate,
    /// Its host's ceiling, an index into [`PaceModel::ceilings`], if its host has one.
    pub host: Option<usize>,
}

/// How long the lanes take at their pace: the dry run's estimate and the live ETA, from the
/// same numbers. Lanes run side by side, so the run lasts as long as its slowest lane; the
/// lanes to a host with a ceiling together take at least their rows over the ceiling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaceModel {
    pub lanes: Vec<LanePace>,
    /// Host ceilings: what the lanes to one host may send together, at most.
    pub ceilings: Vec<Rate>,
    pub burst: u32,
}

impl PaceModel {
    /// Milliseconds the whole run takes from the start.
    pub fn total_ms(&self) -> u64 {
        let lanes = self
            .lanes
            .iter()
            .map(|l| estimate_ms(l.rows, l.rate, self.burst));
        let hosts = self.ceilings.iter().enumerate().map(|(h, &ceiling)| {
            // One request goes at once, then the ceiling's even pace.
            estimate_ms(self.rows_on(h, |l| l.rows), ceiling, 1)
        });
        lanes.chain(hosts).max().unwrap_or(0)
    }

    /// Rows the lanes to host `h` send, counted by `rows`.
    fn rows_on(&self, h: usize, rows: impl Fn(&LanePace) -> u64) -> u64 {
        self.lanes
            .iter()
            .filter(|l| l.host == Some(h))
            .map(rows)
            .sum()
    }

    /// The same lanes without rows that will not be sent after all (`not_sent`, per lane:
    /// rows an earlier report shows done).
    pub fn without(&self, not_sent: &[u64]) -> PaceModel {
        let mut model = self.clone();
        for (l, n) in model.lanes.iter_mut().zip(not_sent) {
            l.rows = l.rows.saturating_sub(*n);
        }
        model
    }

    /// Time left mid-run: `finished[i]` of lane i's rows are done, and it goes at `pace[i]`
    /// requests a second — what it actually achieves, or `None` for its configured pace
    /// until it has one.
    pub fn time_left(&self, finished: &[u64], pace: &[Option<f64>]) -> std::time::Duration {
        let left =
            |i: usize, l: &LanePace| l.rows.saturating_sub(finished.get(i).copied().unwrap_or(0));
        let secs = |rows: u64, per_second: f64| {
            if rows == 0 || !per_second.is_finite() || per_second <= 0.0 {
                0.0
            } else {
                rows as f64 / per_second
            }
        };
        let lanes = self.lanes.iter().enumerate().map(|(i, l)| {
            let configured = l.rate.per_second();
            let going = pace
                .get(i)
                .copied()
                .flatten()
                .filter(|p| *p > 0.0)
                .map_or(configured, |p| p.min(configured));
            secs(left(i, l), going)
        });
        let hosts = self.ceilings.iter().enumerate().map(|(h, ceiling)| {
            let rows: u64 = self
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| l.host == Some(h))
                .map(|(i, l)| left(i, l))
                .sum();
            secs(rows, ceiling.per_second())
        });
        let most = lanes.chain(hosts).fold(0.0f64, f64::max);
        std::time::Duration::from_secs_f64(most.min(1e9))
    }
}

/// Milliseconds to send `rows` at `rate` with `burst` allowed ahead of the even schedule.
pub fn estimate_ms(rows: u64, rate: Rate, burst: u32) -> u64 {
    let Some(interval) = rate.interval() else {
        return 0;
    };
    let paced = rows.saturating_sub(u64::from(burst.max(1)));
    (interval.as_secs_f64() * paced as f64 * 1000.0).round() as u64
}
