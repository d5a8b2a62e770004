//! A simulated provider for executor tests under tokio's paused clock: the executor runs in
//! process, unchanged, through the [`Transport`] seam, against a provider that keeps time with
//! `tokio::time::Instant` only. Paused time makes every figure exact and repeatable (the pace a
//! strict bucket settles at, the number of 429s, every window), where a run on the wall clock
//! only allows loose floors.
//!
//! How to use it (in a `#[tokio::test(start_paused = true)]`):
//!
//! ```text
//! let provider = Arc::new(Provider::new()        // unlimited, instant, faultless
//!     .kommo_rate(per_sec(7), 1)                 // a GCRA bucket per Kommo scope: 7/s, burst 1
//!     .ogmma_rate(per_sec(5), 2)                 // ... per Ogmma API key (`.rate`: both)
//!     .kommo_retry_after(RetryAfter::Header(1))  // its 429s carry `Retry-After: 1` (default: none)
//!     .latency(ms(20)).jitter(ms(5), seed)       // each answer takes 20–25 ms
//!     .faults(seed, 0.10, 0.05)                  // 10% 5xx, 5% dropped connections
//!     .refuse("127.0.0.2:9"));                   // that origin refuses connections
//! let targets = vec![sim::kommo("k", "s1", per_sec(7)), sim::ogmma("o", "ch", "key", rate)];
//! let run = sim::run(&provider, config, targets, Vec::new(), sim::rows(100, 0, "m-")).await;
//! run.results          // the report rows, sorted by row number
//! run.log              // every request: sent/arrived/answered (since start), fate, message…
//! run.log.scope("s1").accepted().achieved_rate(); run.log.max_in_window(secs(1));
//! run.log.count(429); run.log.counts(); run.log.gaps();
//! run.lanes[0]         // what the summary reports for the lane (rate, max in 1 s, slowdowns…)
//! run.targets[1]       // ... and for the target (requests, rate, max in 1 s, why stopped)
//! ```
//!
//! Pass `lanes: Vec::new()` for a lane per target (targets start at `http://127.0.0.1:9`).
//! Rows: `Row::test(n).on(target).message("m").emoji("👍")`, or [`rows`]. [`run_with`] takes
//! rows that may be unusable and a [`Cancel`] the test holds; [`run_routed`] a lane map
//! (rows naming their accounts); [`run_source`] rows read lane by lane from a [`spooled`]
//! plan, as a live run reads them.
//! [`Provider::script`] answers chosen requests itself (any outcome, any latency) and leaves
//! the rest to the model. The bucket and the faults are the sandbox's own (`sandbox::limits`,
//! `sandbox::faults`), so the simulated provider refuses what the sandbox refuses; the answers
//! go through the HTTP transport's own reading of status, `Retry-After` and body.
//!
//! The scope a request is limited by: Kommo's from its path (`/v2/origin/custom/{scope}/react`),
//! Ogmma's from its bearer key (logged as `key:` and a hash of it, never the key), otherwise
//! its URL. A scripted request arrives when it is sent; a modelled one halfway through its
//! latency. Signatures and keys are not checked here: that is the sandbox's part, over loopback
//! in the integration tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::cancel::Cancel;
use super::config::ExecConfig;
use super::context::RunContext;
use super::dispatch::{execute, Admission, RowSource};
use super::lane::Lane;
use super::progress;
use super::rate::PaceStats;
use super::retry::AttemptOutcome;
use super::target::TargetRuntime;
use super::transport::{answered, Transport};
use super::writer::OutputThread;
use crate::outputs::report::{read_report, ReportWriter, RowResult};
use crate::plan::pace::LaneMap;
use crate::plan::spool::{LaneRows, Spool};
use crate::plan::{Problem, ProviderKind, Rate, Row, Source, Target, TargetKind};
use crate::provider::SignedRequest;
use crate::sandbox::{Fault, FaultPlan, ProviderLimiter};
use crate::secret::{Secret, SecretRef};

/// What a 429 carries to say when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    /// Nothing: the client has to find the pace itself (Ogmma).
    None,
    /// A `Retry-After: N` header, in seconds.
    Header(u64),
    /// `"retry_after": N` in the JSON body only, which the client honours as it would the
    /// header.
    Body(u64),
}

/// A request as the provider sees it, for a [`Provider::script`].
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Requests that reached the provider before this one.
    pub n: usize,
    pub scope: String,
    pub message: String,
    pub emoji: String,
}

type Script = dyn Fn(&Request) -> Option<(AttemptOutcome, Duration)> + Send + Sync;

/// One provider's limit: a bucket per scope, and what its 429s say.
#[derive(Clone, Copy, Debug)]
struct Limit {
    rate: Rate,
    burst: u32,
    retry_after: RetryAfter,
}

/// The simulated providers' behaviour (Kommo's and Ogmma's); built with its methods, then
/// handed to [`run`].
pub(crate) struct Provider {
    kommo: Limit,
    ogmma: Limit,
    latency: Duration,
    jitter: Duration,
    jitter_seed: u64,
    faults: (u64, f64, f64),
    refused: Option<String>,
    script: Option<Box<Script>>,
}

impl Default for Provider {
    fn default() -> Self {
        Provider::new()
    }
}

impl Provider {
    /// Unlimited, answering at once, no faults.
    pub(crate) fn new() -> Provider {
        let limit = Limit {
            rate: Rate::Unlimited,
            burst: 1,
            retry_after: RetryAfter::None,
        };
        Provider {
            kommo: limit,
            ogmma: limit,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_seed: 0,
            faults: (0, 0.0, 0.0),
            refused: None,
            script: None,
        }
    }

    /// A token bucket per scope, for both providers: `rate`, holding up to `burst` requests
    /// back to back; above it, 429.
    pub(crate) fn rate(self, rate: Rate, burst: u32) -> Provider {
        self.kommo_rate(rate, burst).ogmma_rate(rate, burst)
    }

    /// Kommo's bucket (per scope) only.
    pub(crate) fn kommo_rate(mut self, rate: Rate, burst: u32) -> Provider {
        (self.kommo.rate, self.kommo.burst) = (rate, burst);
        self
    }

    /// Ogmma's bucket (per API key) only.
    pub(crate) fn ogmma_rate(mut self, rate: Rate, burst: u32) -> Provider {
        (self.ogmma.rate, self.ogmma.burst) = (rate, burst);
        self
    }

    /// What both providers' 429s carry.
    pub(crate) fn retry_after(self, retry_after: RetryAfter) -> Provider {
        self.kommo_retry_after(retry_after)
            .ogmma_retry_after(retry_after)
    }

    pub(crate) fn kommo_retry_after(mut self, retry_after: RetryAfter) -> Provider {
        self.kommo.retry_after = retry_after;
        self
    }

    pub(crate) fn ogmma_retry_after(mut self, retry_after: RetryAfter) -> Provider {
        self.ogmma.retry_after = retry_after;
        self
    }

    /// Each request takes this long, send to answer; it reaches the provider (and is counted
    /// against the bucket) halfway.
    pub(crate) fn latency(mut self, latency: Duration) -> Provider {
        self.latency = latency;
        self
    }

    /// Adds up to `max` to each request's latency, the same for the same `seed`.
    pub(crate) fn jitter(mut self, max: Duration, seed: u64) -> Provider {
        self.jitter = max;
        self.jitter_seed = seed;
        self
    }

    /// Seeded faults on requests within the bucket: `error_rate` of them answered 500, 502 or
    /// 503, `drop_rate` dropped without an answer, decided per message as the sandbox does.
    pub(crate) fn faults(mut self, seed: u64, error_rate: f64, drop_rate: f64) -> Provider {
        self.faults = (seed, error_rate, drop_rate);
        self
    }

    /// `origin` (`host:port`) refuses every connection.
    pub(crate) fn refuse(mut self, origin: &str) -> Provider {
        self.refused = Some(origin.to_string());
        self
    }

    /// Answers a request itself when `script` returns an outcome and a latency (the request is
    /// logged with the outcome's status); `None` leaves it to the model.
    pub(crate) fn script(
        mut self,
        script: impl Fn(&Request) -> Option<(AttemptOutcome, Duration)> + Send + Sync + 'static,
    ) -> Provider {
        self.script = Some(Box::new(script));
        self
    }
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fate {
    /// Answered with this status.
    Status(u16),
    /// Reached the provider; the connection was dropped without an answer.
    Dropped,
    /// No answer within the timeout.
    TimedOut,
    /// Never reached the provider: the connection was refused.
    Refused,
}

/// One request in the log.
#[derive(Clone, Debug)]
pub(crate) struct Arrival {
    /// Since the run started: sent, reached the provider, answer back (or given up).
    pub sent: Duration,
    pub at: Duration,
    pub done: Duration,
    pub fate: Fate,
    pub message: String,
    pub emoji: String,
    pub scope: String,
}

impl Arrival {
    /// The provider saw it (a refused connection never got there).
    pub(crate) fn arrived(&self) -> bool {
        self.fate != Fate::Refused
    }
}

/// Every request of a run, in the order they reached the provider.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log(pub Vec<Arrival>);

impl Log {
    /// The requests for which `keep` holds.
    pub(crate) fn filter(&self, keep: impl Fn(&Arrival) -> bool) -> Log {
        Log(self.0.iter().filter(|a| keep(a)).cloned().collect())
    }

    /// The requests on `scope`.
    pub(crate) fn scope(&self, scope: &str) -> Log {
        self.filter(|a| a.scope == scope)
    }

    /// The requests answered 2xx.
    pub(crate) fn accepted(&self) -> Log {
        self.filter(|a| matches!(a.fate, Fate::Status(200..=299)))
    }

    /// The requests answered `status`.
    pub(crate) fn count(&self, status: u16) -> usize {
        self.0
            .iter()
            .filter(|a| a.fate == Fate::Status(status))
            .count()
    }

    /// How many requests met each fate.
    pub(crate) fn counts(&self) -> BTreeMap<Fate, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.0 {
            *counts.entry(a.fate).or_default() += 1;
        }
        counts
    }

    /// Arrival times (refused connections left out).
    pub(crate) fn times(&self) -> Vec<Duration> {
        self.0
            .iter()
            .filter(|a| a.arrived())
            .map(|a| a.at)
            .collect()
    }

    /// The most requests that reached the provider within any window `[t, t + window)`.
    pub(crate) fn max_in_window(&self, window: Duration) -> usize {
        // Counted as the sandbox counts its arrivals.
        let t0 = Instant::now();
        let times = self.times().into_iter().map(|t| t0 + t).collect();
        crate::sandbox::max_in_window(times, window)
    }

    /// Requests per second between the first and the last arrival: `(n - 1) / span`.
    pub(crate) fn achieved_rate(&self) -> Option<f64> {
        let times = self.times();
        let (first, last) = (times.iter().min()?, times.iter().max()?);
        let span = (*last - *first).as_secs_f64();
        (times.len() > 1 && span > 0.0).then(|| (times.len() - 1) as f64 / span)
    }

    /// The gaps between consecutive arrivals.
    pub(crate) fn gaps(&self) -> Vec<Duration> {
        let mut times = self.times();
        times.sort_unstable();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A lane's figures as the summary gets them.
#[derive(Clone, Debug)]
pub(crate) struct LaneStats {
    pub name: String,
    pub requests: u64,
    pub achieved_rate: Option<f64>,
    pub max_in_1s: usize,
    /// 429 answers.
    pub rate_limited: u64,
    pub pace: PaceStats,
    /// Senders the lane started.
    pub senders: usize,
}

/// A target's figures as the summary gets them.
#[derive(Clone, Debug)]
pub(crate) struct TargetStats {
    pub name: String,
    pub requests: u64,
    pub achieved_rate: Option<f64>,
    pub max_in_1s: usize,
    /// Why it was stopped, if it was.
    pub stopped: Option<String>,
}

/// What a run gave.
pub(crate) struct SimRun {
    /// The report rows, by row number.
    pub results: Vec<RowResult>,
    pub log: Log,
    /// By lane index (the lanes passed in, then one per target no lane named).
    pub lanes: Vec<LaneStats>,
    /// By target index.
    pub targets: Vec<TargetStats>,
    /// How long the run took on the paused clock.
    pub took: Duration,
}

impl SimRun {
    /// Rows reported with `status`.
    pub(crate) fn count(&self, status: crate::outputs::report::Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
}

/// The provider while a run goes on.
struct SimTransport {
    provider: Arc<Provider>,
    kommo: ProviderLimiter,
    ogmma: ProviderLimiter,
    faults: FaultPlan,
    start: Instant,
    log: Arc<Mutex<Vec<Arrival>>>,
    /// Requests that reached the provider so far (for scripts and jitter).
    arrived: Mutex<usize>,
}

/// What `send` reads from a request.
struct Seen {
    kind: ProviderKind,
    scope: String,
    origin: String,
    message: String,
    emoji: String,
}

fn seen(request: &SignedRequest) -> Seen {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    let text = |k: &str| body[k].as_str().map(str::to_string);
    let message = text("messageId")
        .or_else(|| text("id"))
        .or_else(|| text("msgid"))
        .unwrap_or_default();
    let emoji = text("emoji").unwrap_or_default();
    let kommo_scope = request
        .path
        .strip_prefix("/v2/origin/custom/")
        .and_then(|p| p.strip_suffix("/react"));
    let kind = if kommo_scope.is_some() {
        ProviderKind::Kommo
    } else {
        ProviderKind::Ogmma
    };
    let scope = match (kommo_scope, &request.bearer) {
        (Some(scope), _) => scope.to_string(),
        (None, Some(key)) => {
            use std::hash::BuildHasher;
            let hash = foldhash::quality::FixedState::default().hash_one(key.expose());
            format!("key:{hash:016x}")
        }
        (None, None) => request.url.to_string(),
    };
    let origin = url::Url::parse(&request.url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_default();
    Seen {
        kind,
        scope,
        origin,
        message,
        emoji,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimTransport {
    fn latency(&self, n: usize) -> Duration {
        if self.provider.jitter.is_zero() {
            return self.provider.latency;
        }
        use std::hash::BuildHasher;
        let roll =
            foldhash::quality::FixedState::with_seed(self.provider.jitter_seed).hash_one(n as u64);
        let nanos = self.provider.jitter.as_nanos() as u64;
        self.provider.latency + Duration::from_nanos(roll % (nanos + 1))
    }

    /// The provider's answer to a request arriving now, as the HTTP transport would read it.
    fn answer(&self, seen: &Seen) -> (Fate, AttemptOutcome) {
        let now = Instant::now();
        let (limiter, limit) = match seen.kind {
            ProviderKind::Kommo => (&self.kommo, &self.provider.kommo),
            ProviderKind::Ogmma => (&self.ogmma, &self.provider.ogmma),
        };
        if limiter.check(&seen.scope, now).is_err() {
            let (header, body) = match limit.retry_after {
                RetryAfter::None => (None, serde_json::json!({"error": "rate_limit_exceeded"})),
                RetryAfter::Header(s) => (
                    Some(s.to_string()),
                    serde_json::json!({"error": "rate_limit_exceeded"}),
                ),
                RetryAfter::Body(s) => (
                    None,
                    serde_json::json!({"error": "rate_limit_exceeded", "retry_after": s}),
                ),
            };
            let body = body.to_string();
            return (
                Fate::Status(429),
                answered(429, header.as_deref(), body.as_bytes()),
            );
        }
        match self.faults.decide(seen.kind, &seen.scope, &seen.message) {
            Fault::None => (Fate::Status(200), answered(200, None, b"{}")),
            Fault::ServerError(status) => (
                Fate::Status(status),
                answered(status, None, br#"{"error":"internal_error"}"#),
            ),
            Fault::Drop => (
                Fate::Dropped,
                AttemptOutcome::Connection("connection closed before an answer".into()),
            ),
        }
    }

    fn record(&self, sent: Instant, at: Instant, fate: Fate, seen: Seen) {
        let since = |t: Instant| t - self.start;
        lock(&self.log).push(Arrival {
            sent: since(sent),
            at: since(at),
            done: since(Instant::now()),
            fate,
            message: seen.message,
            emoji: seen.emoji,
            scope: seen.scope,
        });
    }
}

impl Transport for SimTransport {
    type Session = ();

    fn session(&self) {}

    async fn send(
        &self,
        _session: &mut (),
        request: SignedRequest,
        timeout: Duration,
    ) -> AttemptOutcome {
        let sent = Instant::now();
        let seen = seen(&request);
        if self.provider.refused.as_deref() == Some(seen.origin.as_str()) {
            self.record(sent, sent, Fate::Refused, seen);
            // As the HTTP transport words it: the origin, then the cause.
            let origin = self.provider.refused.clone().unwrap_or_default();
            return AttemptOutcome::Unreachable {
                message: format!("{origin}: Connection refused (os error 111)"),
                origin,
                code: "connection".into(),
            };
        }
        let n = {
            let mut arrived = lock(&self.arrived);
            *arrived += 1;
            *arrived - 1
        };
        let scripted = self.provider.script.as_ref().and_then(|script| {
            script(&Request {
                n,
                scope: seen.scope.clone(),
                message: seen.message.clone(),
                emoji: seen.emoji.clone(),
            })
        });
        if let Some((outcome, latency)) = scripted {
            tokio::time::sleep(latency.min(timeout)).await;
            let fate = match &outcome {
                _ if latency > timeout => Fate::TimedOut,
                AttemptOutcome::Answered { status, .. } => Fate::Status(*status),
                AttemptOutcome::Timeout => Fate::TimedOut,
                AttemptOutcome::Unreachable { .. } => Fate::Refused,
                AttemptOutcome::Connection(_) => Fate::Dropped,
            };
            self.record(sent, sent, fate, seen);
            return if latency > timeout {
                AttemptOutcome::Timeout
            } else {
                outcome
            };
        }
        let latency = self.latency(n);
        let half = latency / 2;
        if half > timeout {
            // It never got there in time.
            tokio::time::sleep(timeout).await;
            self.record(sent, sent + timeout, Fate::TimedOut, seen);
            return AttemptOutcome::Timeout;
        }
        tokio::time::sleep(half).await;
        let at = Instant::now();
        let (fate, outcome) = self.answer(&seen);
        if latency > timeout {
            tokio::time::sleep(timeout - half).await;
            self.record(sent, at, Fate::TimedOut, seen);
            return AttemptOutcome::Timeout;
        }
        tokio::time::sleep(latency - half).await;
        self.record(sent, at, fate, seen);
        outcome
    }
}

/// A Kommo target on `scope` (its own lane unless a lane names it), paced at `rate`.
pub(crate) fn kommo(name: &str, scope: &str, rate: Rate) -> TargetRuntime {
    target(
        name,
        TargetKind::Kommo {
            scope_id: Some(scope.into()),
            user_id: Some("u-1".into()),
            user_ref_id: None,
        },
        "kommo-secret",
        rate,
    )
}

/// An Ogmma target on `channel` whose API key is `key`, paced at `rate`.
pub(crate) fn ogmma(name: &str, channel: &str, key: &str, rate: Rate) -> TargetRuntime {
    target(
        name,
        TargetKind::Ogmma {
            channel_id: Some(channel.into()),
        },
        key,
        rate,
    )
}

fn target(name: &str, kind: TargetKind, secret: &str, rate: Rate) -> TargetRuntime {
    let spec = Target {
        name: name.into(),
        kind,
        base_url: "http://127.0.0.1:9".into(),
        rate: Some(rate),
        credential: SecretRef::Env("SIM_SECRET".into()),
        source: Source {
            file: "p.yaml".into(),
            line: 1,
        },
    };
    TargetRuntime::new(spec, Secret::new(secret), rate)
}

/// `n` rows on `target`, row `i` reacting `e{i}` on message `{prefix}{i}`.
pub(crate) fn rows(n: u64, target: usize, prefix: &str) -> Vec<Row> {
    (1..=n)
        .map(|i| {
            Row::test(i)
                .on(target)
                .message(format!("{prefix}{i}"))
                .emoji(format!("e{i}"))
        })
        .collect()
}

/// `count` requests per second.
pub(crate) fn per_sec(count: u32) -> Rate {
    Rate::Limited {
        count,
        per: Duration::from_secs(1),
    }
}

/// Runs `rows` through the executor against `provider`, with every row admitted.
pub(crate) async fn run(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    rows: impl IntoIterator<Item = Row>,
) -> SimRun {
    run_with(
        provider,
        config,
        targets,
        lanes,
        rows.into_iter().map(Ok),
        Cancel::new(),
    )
    .await
}

/// [`run`] with rows that may be unusable, and a cancel the test holds.
pub(crate) async fn run_with(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    rows: impl IntoIterator<Item = Result<Row, Problem>>,
    cancel: Cancel,
) -> SimRun {
    let map = LaneMap::default();
    run_routed(provider, config, targets, lanes, map, rows, cancel).await
}

/// [`run_with`] with rows routed to lanes by `map` (rows naming their accounts), as the
/// validation pass routes them.
pub(crate) async fn run_routed(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    map: LaneMap,
    rows: impl IntoIterator<Item = Result<Row, Problem>>,
    cancel: Cancel,
) -> SimRun {
    run_source(
        provider,
        config,
        targets,
        lanes,
        map,
        rows.into_iter(),
        cancel,
    )
    .await
}

/// [`run_with`] under host ceilings ([`super::host`]).
pub(crate) async fn run_under_ceilings(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    hosts: super::host::HostCeilings,
    rows: impl IntoIterator<Item = Result<Row, Problem>>,
    cancel: Cancel,
) -> SimRun {
    let setup = |ctx: RunContext<SimTransport>| ctx.with_host_ceilings(hosts);
    run_set_up(
        provider,
        config,
        targets,
        lanes,
        setup,
        rows.into_iter(),
        cancel,
    )
    .await
}

/// `rows` with the lane each goes to, in a spool chained by lane as the validation pass
/// writes it, to be read back lane by lane ([`run_source`]) as a live run reads it.
pub(crate) fn spooled(rows: &[(Row, usize)]) -> LaneRows {
    let mut spool = Spool::create().expect("spool");
    for (row, lane) in rows {
        spool.push_to(row, None, *lane).expect("spool a row");
    }
    let rows = spool.into_rows().expect("spooled rows");
    rows.by_lane().expect("spooled rows by lane")
}

/// [`run_routed`] reading the rows from `source` (rows in plan order, or [`spooled`]).
pub(crate) async fn run_source(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    map: LaneMap,
    rows: impl RowSource,
    cancel: Cancel,
) -> SimRun {
    let setup = |ctx: RunContext<SimTransport>| ctx.with_lane_map(map);
    run_set_up(provider, config, targets, lanes, setup, rows, cancel).await
}

/// [`run_with`] with the run's context completed by `setup` (lane map, host ceilings).
async fn run_set_up(
    provider: &Arc<Provider>,
    config: ExecConfig,
    targets: Vec<TargetRuntime>,
    lanes: Vec<Lane>,
    setup: impl FnOnce(RunContext<SimTransport>) -> RunContext<SimTransport>,
    rows: impl RowSource,
    cancel: Cancel,
) -> SimRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.csv");
    let writer = ReportWriter::create(&path).expect("report");
    let (out, thread) = OutputThread::start(writer, None, Arc::new(progress::Counters::default()))
        .expect("writer thread");
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (seed, error_rate, drop_rate) = provider.faults;
    let transport = SimTransport {
        provider: Arc::clone(provider),
        kommo: ProviderLimiter::new(provider.kommo.rate, provider.kommo.burst),
        ogmma: ProviderLimiter::new(provider.ogmma.rate, provider.ogmma.burst),
        faults: FaultPlan::new(seed, error_rate, drop_rate),
        start,
        log: Arc::clone(&log),
        arrived: Mutex::new(0),
    };
    let ctx = Arc::new(setup(RunContext::new(
        config, targets, lanes, transport, out, cancel,
    )));
    execute(
        Arc::clone(&ctx),
        rows,
        Box::new(|r: &Row| format!("k{}", r.number)),
        |_: &Row, _: &str| Admission::Run,
    )
    .await;
    let took = start.elapsed();
    let ctx = Arc::try_unwrap(ctx).ok().expect("tasks done");
    let lanes = ctx
        .lanes
        .iter()
        .map(|l| LaneStats {
            name: l.name.clone(),
            requests: l.requests(),
            achieved_rate: l.achieved_rate(),
            max_in_1s: l.max_sent_in_1s(),
            rate_limited: l.rate_limited.load(std::sync::atomic::Ordering::Relaxed),
            pace: l.pace_stats(),
            senders: l.senders(),
        })
        .collect();
    let targets = ctx
        .targets
        .iter()
        .map(|t| TargetStats {
            name: t.spec.name.clone(),
            requests: t.requests(),
            achieved_rate: t.achieved_rate(),
            max_in_1s: t.max_sent_in_1s(),
            stopped: t.stopped().map(str::to_string),
        })
        .collect();
    drop(ctx);
    thread.join().await;
    let mut results = read_report(&path).expect("read report");
    results.sort_by_key(|r| r.row);
    let mut log = std::mem::take(&mut *lock(&log));
    log.sort_by_key(|a| a.at);
    SimRun {
        results,
        log: Log(log),
        lanes,
        targets,
        took,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::report::Status;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The provider's bucket is what the log shows: a plan twice as fast as a 5/s bucket with a
    /// burst of 3 gets 429s, never more than 5 + 3 - 1 arrivals accepted in any second...
    #[tokio::test(start_paused = true)]
    async fn the_bucket_refuses_above_its_rate_and_the_lane_slows_down() {
        let provider = Arc::new(Provider::new().rate(per_sec(5), 3));
        let config = ExecConfig {
            concurrency: 4,
            ..ExecConfig::default()
        };
        let run = run(
            &provider,
            config,
            vec![kommo("k", "s1", per_sec(10))],
            Vec::new(),
            rows(40, 0, "m"),
        )
        .await;
        assert_eq!(run.count(Status::Ok), 40);
        let accepted = run.log.accepted();
        assert_eq!(accepted.len(), 40, "one accepted request per row");
        assert!(run.log.count(429) > 0, "{:?}", run.log.counts());
        assert_eq!(run.lanes[0].rate_limited as usize, run.log.count(429));
        assert!(run.lanes[0].pace.slowdowns > 0);
        // The bucket: at most burst + rate × window, for every window.
        assert!(accepted.max_in_window(Duration::from_secs(1)) <= 5 + 3);
        assert!(accepted.max_in_window(Duration::from_secs(4)) <= 5 * 4 + 3);
        assert!(run.log.0.iter().all(|a| a.scope == "s1"));
    }

    /// Latency, seeded faults and a refused origin, each as the executor sees it.
    #[tokio::test(start_paused = true)]
    async fn faults_latency_and_refused_connections_reach_the_report() {
        let provider = Arc::new(
            Provider::new()
                .latency(ms(40))
                .faults(7, 0.2, 0.1)
                .refuse("127.0.0.2:9"),
        );
        let mut refused = ogmma("o2", "ch2", "key-2", Rate::Unlimited);
        refused.spec.base_url = "http://127.0.0.2:9".into();
        refused.endpoint = crate::provider::Endpoint::new(&refused.spec);
        let rows = rows(30, 0, "m")
            .into_iter()
            .chain(rows(3, 1, "r").into_iter().map(|r| Row {
                number: r.number + 30,
                ..r
            }));
        let config = ExecConfig {
            concurrency: 1,
            retries: 10,
            backoff_base: ms(10),
            ..ExecConfig::default()
        };
        let run = run(
            &provider,
            config,
            vec![ogmma("o", "ch", "key-1", Rate::Unlimited), refused],
            Vec::new(),
            rows,
        )
        .await;
        let counts = run.log.scope(&run.log.0[0].scope).counts();
        assert!(
            counts.get(&Fate::Dropped).is_some_and(|&n| n > 0),
            "{counts:?}"
        );
        let errors: usize = [500, 502, 503]
            .iter()
            .map(|s| counts.get(&Fate::Status(*s)).copied().unwrap_or(0))
            .sum();
        assert!(errors > 0, "{counts:?}");
        assert_eq!(counts.get(&Fate::Status(200)), Some(&30));
        // Every row on the healthy target is ok, each answer 40 ms after it was sent.
        assert!(run.results[..30].iter().all(|r| r.status == Status::Ok));
        for a in run.log.0.iter().filter(|a| a.arrived()) {
            assert_eq!((a.at - a.sent, a.done - a.sent), (ms(20), ms(40)), "{a:?}");
        }
        // The refused origin's rows never reach the provider, and none is reported ok.
        let refused = run.log.filter(|a| a.fate == Fate::Refused);
        assert!(refused.len() >= 3, "{:?}", run.log.counts());
        assert!(refused.0.iter().all(|a| a.message.starts_with('r')));
        assert!(run
            .log
            .filter(|a| a.message.starts_with('r'))
            .times()
            .is_empty());
        // Ten failures in a row to connect stop the origin's target: its rows are skipped.
        for r in &run.results[30..] {
            assert_eq!(r.status, Status::Skipped, "{r:?}");
            assert_eq!(r.code, "unreachable", "{r:?}");
        }
    }

    /// A script answers the requests it picks (by scope, message, emoji, or count) and leaves
    /// the rest to the model; jitter spreads latencies the same way for the same seed.
    #[tokio::test(start_paused = true)]
    async fn scripts_pick_requests_and_jitter_is_seeded() {
        let script = |r: &Request| {
            (r.scope == "s1" && r.message == "m3" || r.n == 5).then(|| {
                let outcome = answered(404, None, br#"{"error":"message_not_found"}"#);
                (outcome, ms(7))
            })
        };
        let go = |seed| async move {
            let provider = Arc::new(
                Provider::new()
                    .latency(ms(10))
                    .jitter(ms(20), seed)
                    .script(script),
            );
            let config = ExecConfig {
                concurrency: 1,
                ..ExecConfig::default()
            };
            let targets = vec![kommo("k", "s1", Rate::Unlimited)];
            run(&provider, config, targets, Vec::new(), rows(8, 0, "m")).await
        };
        let (a, b, c) = (go(1).await, go(1).await, go(2).await);
        let codes: Vec<(u64, &str)> = a.results.iter().map(|r| (r.row, r.code.as_str())).collect();
        assert_eq!(
            codes,
            vec![
                (1, ""),
                (2, ""),
                (3, "message_not_found"),
                (4, ""),
                (5, ""),
                (6, "message_not_found"),
                (7, ""),
                (8, "")
            ]
        );
        let latencies =
            |run: &SimRun| -> Vec<Duration> { run.log.0.iter().map(|a| a.done - a.sent).collect() };
        let (la, lb, lc) = (latencies(&a), latencies(&b), latencies(&c));
        assert_eq!(la, lb, "same seed, same latencies");
        assert_ne!(la, lc, "another seed, other latencies");
        for (i, l) in la.iter().enumerate() {
            if [2, 5].contains(&i) {
                assert_eq!(*l, ms(7), "scripted");
            } else {
                assert!((ms(10)..=ms(30)).contains(l), "{i}: {l:?}");
            }
        }
        assert_eq!(a.log.0[2].emoji, "e3");
    }
}
