//! A lane's time series: per time bucket, the requests it sent, how many were answered as a
//! success, 429s, retries and latency — what the HTML page draws, kept small enough for
//! thousands of lanes.
//!
//! Buckets start one second wide. A lane keeps at most [`MAX_BUCKETS`] of them: when a send
//! falls past the last one, the width doubles and each pair of neighbours is merged into one
//! (counts and latency sums added, maxima kept), so a run of any length fits, a 10-minute run
//! at 1 s, a 20-minute one at 2 s, a day-long one at 256 s. Only buckets with a send are
//! stored, and nothing is allocated until the lane's first send: a thousand lanes that never
//! send cost a thousand empty vectors.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The most buckets a lane keeps (see the module's notes).
pub(crate) const MAX_BUCKETS: u64 = 600;

/// What one attempt did, as the series counts it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    /// When the request went out.
    pub sent_at: Instant,
    pub latency: Duration,
    /// Counted as a success (the row is `ok`).
    pub ok: bool,
    /// Answered 429.
    pub rate_limited: bool,
    /// Not the row's first attempt.
    pub retry: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// Start of the bucket, in widths since the origin.
    index: u32,
    sends: u32,
    ok: u32,
    rate_limited: u32,
    retries: u32,
    latency_max_us: u32,
    latency_sum_us: u64,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.sends += other.sends;
        self.ok += other.ok;
        self.rate_limited += other.rate_limited;
        self.retries += other.retries;
        self.latency_max_us = self.latency_max_us.max(other.latency_max_us);
        self.latency_sum_us += other.latency_sum_us;
    }
}

#[derive(Debug, Default)]
struct Buckets {
    /// Seconds per bucket: 1, 2, 4, ...
    width_s: u64,
    /// Sorted by index; only buckets with a send.
    buckets: Vec<Bucket>,
}

impl Buckets {
    fn record(&mut self, secs: u64, attempt: &Attempt) {
        if self.width_s == 0 {
            self.width_s = 1;
        }
        while secs / self.width_s >= MAX_BUCKETS {
            self.widen();
        }
        let index = (secs / self.width_s) as u32;
        let latency_us = u32::try_from(attempt.latency.as_micros()).unwrap_or(u32::MAX);
        let one = Bucket {
            index,
            sends: 1,
            ok: u32::from(attempt.ok),
            rate_limited: u32::from(attempt.rate_limited),
            retries: u32::from(attempt.retry),
            latency_max_us: latency_us,
            latency_sum_us: u64::from(latency_us),
        };
        // Attempts finish nearly in the order they were sent: the last bucket, as a rule.
        match self.buckets.last_mut() {
            Some(last) if last.index == index => last.add(&one),
            Some(last) if last.index < index => self.buckets.push(one),
            None => self.buckets.push(one),
            Some(_) => match self.buckets.binary_search_by_key(&index, |b| b.index) {
                Ok(i) => self.buckets[i].add(&one),
                Err(i) => self.buckets.insert(i, one),
            },
        }
    }

    /// Doubles the width, merging each pair of neighbours.
    fn widen(&mut self) {
        self.width_s *= 2;
        let mut merged: Vec<Bucket> = Vec::with_capacity(self.buckets.len().div_ceil(2));
        for b in &self.buckets {
            let index = b.index / 2;
            match merged.last_mut() {
                Some(last) if last.index == index => last.add(b),
                _ => merged.push(Bucket { index, ..*b }),
            }
        }
        self.buckets = merged;
    }
}

/// One lane's series while the run goes on: attempts are recorded as they finish.
#[derive(Debug)]
pub(crate) struct LaneSeries {
    /// Bucket 0 starts here: when the lanes were set up, just before the first row is sent.
    origin: Instant,
    buckets: Mutex<Buckets>,
}

impl LaneSeries {
    pub(crate) fn new(origin: Instant) -> LaneSeries {
        LaneSeries {
            origin,
            buckets: Mutex::default(),
        }
    }

    /// Counts one finished attempt in the bucket of its send.
    pub(crate) fn record(&self, attempt: &Attempt) {
        let secs = attempt
            .sent_at
            .saturating_duration_since(self.origin)
            .as_secs();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.record(secs, attempt);
    }

    /// The series as the summary JSON holds it; `None` when the lane sent nothing.
    pub(crate) fn snapshot(&self) -> Option<Series> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        (!buckets.buckets.is_empty()).then(|| Series::of(&buckets))
    }
}

/// A lane's series in the summary JSON: columns of equal length, one entry per bucket that
/// had a send (documented in `docs/summary-schema.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Series {
    /// Seconds per bucket.
    pub bucket_s: u64,
    /// Start of each bucket, seconds since the lanes were set up.
    pub t: Vec<u64>,
    pub sends: Vec<u32>,
    pub ok: Vec<u32>,
    pub rate_limited: Vec<u32>,
    pub retries: Vec<u32>,
    pub latency_mean_ms: Vec<f64>,
    pub latency_max_ms: Vec<f64>,
}

impl Series {
    fn of(b: &Buckets) -> Series {
        // Microsecond precision, as the summary's other latencies.
        let ms = |ms: f64| (ms * 1000.0).round() / 1000.0;
        let col = |f: fn(&Bucket) -> u32| b.buckets.iter().map(f).collect();
        Series {
            bucket_s: b.width_s,
            t: b.buckets
                .iter()
                .map(|x| u64::from(x.index) * b.width_s)
                .collect(),
            sends: col(|x| x.sends),
            ok: col(|x| x.ok),
            rate_limited: col(|x| x.rate_limited),
            retries: col(|x| x.retries),
            latency_mean_ms: b
                .buckets
                .iter()
                .map(|x| ms(x.latency_sum_us as f64 / f64::from(x.sends.max(1)) / 1000.0))
                .collect(),
            latency_max_ms: b
                .buckets
                .iter()
                .map(|x| ms(f64::from(x.latency_max_us) / 1000.0))
                .collect(),
        }
    }

    /// Entries whose columns all exist (a hand-edited summary may have ragged columns).
    pub fn len(&self) -> usize {
        [
            self.t.len(),
            self.sends.len(),
            self.ok.len(),
            self.rate_limited.len(),
            self.retries.len(),
            self.latency_mean_ms.len(),
            self.latency_max_ms.len(),
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pretty-printed JSON with every array of numbers on one line (`[0, 1, 2]`): the series'
/// columns would otherwise take a line per number, and a summary of many lanes hundreds of
/// megabytes. Other arrays, and all strings, are left as they are.
pub(crate) fn compact_number_arrays(pretty: &str) -> String {
    let bytes = pretty.as_bytes();
    let mut out = String::with_capacity(pretty.len());
    // Copied up to here.
    let mut copied = 0;
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' => {
                // Only numbers, commas and whitespace up to the closing bracket?
                let rest = &bytes[i + 1..];
                let end = rest.iter().position(|c| {
                    !(c.is_ascii_digit()
                        || c.is_ascii_whitespace()
                        || matches!(c, b',' | b'.' | b'-' | b'+' | b'e' | b'E'))
                });
                if let Some(end) = end.filter(|&e| rest[e] == b']') {
                    let inner = &pretty[i + 1..i + 1 + end];
                    if inner.bytes().any(|c| c.is_ascii_digit()) {
                        out.push_str(&pretty[copied..i]);
                        out.push('[');
                        let numbers: Vec<&str> = inner.split(',').map(str::trim).collect();
                        out.push_str(&numbers.join(", "));
                        out.push(']');
                        i += end + 2;
                        copied = i;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&pretty[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(origin: Instant, at_ms: u64, latency_ms: u64, ok: bool) -> Attempt {
        Attempt {
            sent_at: origin + Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            ok,
            rate_limited: !ok,
            retry: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_counted_per_second_with_their_latency() {
        let origin = Instant::now();
        let s = LaneSeries::new(origin);
        assert_eq!(s.snapshot(), None, "no send, no series");
        // A lane that never sends costs its few inline bytes, no allocation.
        assert_eq!(s.buckets.lock().expect("lock").buckets.capacity(), 0);
        assert!(std::mem::size_of::<LaneSeries>() <= 64);
        s.record(&attempt(origin, 100, 10, true));
        s.record(&attempt(origin, 900, 30, true));
        s.record(&attempt(origin, 2500, 5, false));
        // Finishing out of order lands in its own bucket all the same.
        s.record(&Attempt {
            retry: true,
            ..attempt(origin, 1200, 7, true)
        });
        let got = s.snapshot().expect("series");
        assert_eq!(got.bucket_s, 1);
        assert_eq!(got.t, vec![0, 1, 2]);
        assert_eq!(got.sends, vec![2, 1, 1]);
        assert_eq!(got.ok, vec![2, 1, 0]);
        assert_eq!(got.rate_limited, vec![0, 0, 1]);
        assert_eq!(got.retries, vec![0, 1, 0]);
        assert_eq!(got.latency_mean_ms, vec![20.0, 7.0, 5.0]);
        assert_eq!(got.latency_max_ms, vec![30.0, 7.0, 5.0]);
        assert_eq!(got.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_is_merged_into_at_most_the_cap_keeping_every_count() {
        let origin = Instant::now();
        let s = LaneSeries::new(origin);
        // Three hours at one send a second, each 10 ms, one in ten answered 429.
        let secs: u64 = 3 * 3600;
        for i in 0..secs {
            s.record(&Attempt {
                rate_limited: i.is_multiple_of(10),
                ..attempt(origin, i * 1000, 10 + i % 3, true)
            });
        }
        let got = s.snapshot().expect("series");
        assert!(got.len() as u64 <= MAX_BUCKETS, "{}", got.len());
        // 10 800 s needs 18 s buckets at 600: the next power of two is 32 s.
        assert_eq!(got.bucket_s, 32);
        assert_eq!(got.len(), (secs as usize).div_ceil(32));
        assert_eq!(got.sends.iter().sum::<u32>() as u64, secs);
        assert_eq!(got.rate_limited.iter().sum::<u32>() as u64, secs / 10);
        assert_eq!(got.sends[0], 32);
        assert_eq!(got.latency_max_ms[0], 12.0);
        assert_eq!(got.t[1], 32);
        // A gap stays a gap: only buckets with a send are kept.
        let sparse = LaneSeries::new(origin);
        sparse.record(&attempt(origin, 0, 1, true));
        sparse.record(&attempt(origin, 5_000_000, 1, true));
        let got = sparse.snapshot().expect("series");
        assert_eq!(got.len(), 2);
        // 5000 s needs 9 s buckets at 600: 16 s.
        assert_eq!(got.bucket_s, 16);
        assert_eq!(got.t, vec![0, 4992]);
    }

    #[test]
    fn arrays_of_numbers_are_put_on_one_line_and_nothing_else_changes() {
        let value = serde_json::json!({
            "t": [0, 1, 2],
            "mean": [1.5, -2e-3],
            "empty": [],
            "names": ["a [1, 2]", "b\\\"[3]"],
            "nested": [[1, 2], {"x": [3]}],
        });
        let pretty = serde_json::to_string_pretty(&value).expect("JSON");
        let compact = compact_number_arrays(&pretty);
        assert!(compact.contains("\"t\": [0, 1, 2]"), "{compact}");
        assert!(compact.contains("\"mean\": [1.5, -0.002]"), "{compact}");
        assert!(compact.contains("\"x\": [3]"), "{compact}");
        assert!(
            compact.contains("\"names\": [\n"),
            "strings stay: {compact}"
        );
        assert!(compact.contains("[1, 2],\n"), "{compact}");
        let back: serde_json::Value = serde_json::from_str(&compact).expect("still JSON");
        assert_eq!(back, value);
    }
}
