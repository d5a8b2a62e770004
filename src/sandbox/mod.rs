//! The local emulator of both providers' APIs.
//!
//! It serves Kommo's `POST /v2/origin/custom/{scope_id}/react` and Ogmma's
//! `POST /v1/channels/{channelId}/messages/react` on loopback, checks every Kommo signature
//! and Date window and every Ogmma bearer key, enforces per-provider rate limits with 429s,
//! keeps the reaction state it was asked to make, and can inject faults deterministically
//! from a seed. The test suite, `run --sandbox` and `reactbatch sandbox` all use it.
//!
//! - [`SandboxConfig`] (builder) → [`Sandbox::start`] → [`SandboxHandle`]: base URL,
//!   credentials, [`Stats`], reaction state, arrival windows, [`SandboxHandle::shutdown`].
//! - `server`: accept loop and the request pipeline; `kommo` / `ogmma`: each provider's checks
//!   and exact bodies; `limits`: rate limiting; `faults`: seeded fault decisions; `state`:
//!   reactions; `stats`: counters; `log`: the JSON-lines request log; `command`:
//!   `reactbatch sandbox`.
//!
//! It must keep up with the client it tests (a live run's throughput is measured against it),
//! so the request pipeline checks without copying; `bench/notes.md` has its figures and how
//! to take them (`--date-window` for runs longer than 15 minutes).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use reactbatch::sandbox::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::start(SandboxConfig::new()).await?;
//! let base_url = sandbox.base_url(); // point targets here, with sandbox.kommo_secret() etc.
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

mod command;
mod faults;
mod kommo;
mod limits;
mod log;
mod ogmma;
mod reply;
mod server;
mod state;
mod stats;
mod tls;

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use command::{run_command, SandboxArgs};
// The rate limiter's tests count windows the way the sandbox does.
#[cfg(test)]
pub(crate) use server::max_in_window;
pub use state::{ReactionState, OGMMA_USER};
pub use stats::{ConnectionStats, FaultStats, ProviderStats, Stats};

// The executor's simulated provider (`executor::sim`) limits and faults as the sandbox does.
#[cfg(test)]
pub(crate) use {faults::Fault, limits::RateLimiter as ProviderLimiter};

use crate::plan::{ProviderKind, Rate};
use crate::secret::Secret;
pub(crate) use faults::FaultPlan;
use limits::RateLimiter;
use server::Shared;

/// The most Ogmma API keys a sandbox accepts (`--ogmma-keys`).
pub const MAX_OGMMA_KEYS: usize = 16;

/// The validity window of a Kommo signature around its `Date`, as documented.
pub const KOMMO_DATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A parsed reaction request, the same for both providers: an empty emoji removes.
pub(crate) struct Reaction<'b> {
    pub(crate) message: Cow<'b, str>,
    pub(crate) user: Cow<'b, str>,
    pub(crate) emoji: Cow<'b, str>,
}

/// How to run a sandbox. [`SandboxConfig::new`] is what tests want: loopback on a free port,
/// generated credentials, no rate limit, no faults, the documented 15-minute Date window.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    listen: SocketAddr,
    kommo_secret: Option<Secret>,
    ogmma_key: Option<Secret>,
    /// More Ogmma keys (other customers), after `ogmma_key`.
    ogmma_more_keys: Vec<Secret>,
    kommo_rate: Rate,
    kommo_burst: u32,
    ogmma_rate: Rate,
    ogmma_burst: u32,
    retry_after: Option<Duration>,
    error_rate: f64,
    drop_rate: f64,
    latency: Duration,
    seed: u64,
    not_found_prefix: Option<String>,
    record_arrivals: bool,
    request_log: Option<PathBuf>,
    date_window: Duration,
    tls: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig::new()
    }
}

impl SandboxConfig {
    pub fn new() -> Self {
        SandboxConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            kommo_secret: None,
            ogmma_key: None,
            ogmma_more_keys: Vec::new(),
            kommo_rate: Rate::Unlimited,
            kommo_burst: 1,
            ogmma_rate: Rate::Unlimited,
            ogmma_burst: 1,
            retry_after: None,
            error_rate: 0.0,
            drop_rate: 0.0,
            latency: Duration::ZERO,
            seed: 0,
            not_found_prefix: None,
            record_arrivals: false,
            request_log: None,
            date_window: KOMMO_DATE_WINDOW,
            tls: false,
        }
    }

    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The Kommo channel secret signatures are checked with. Default: generated.
    pub fn kommo_secret(mut self, secret: Secret) -> Self {
        self.kommo_secret = Some(secret);
        self
    }

    /// The Ogmma API key bearer tokens are checked against. Default: generated.
    pub fn ogmma_key(mut self, key: Secret) -> Self {
        self.ogmma_key = Some(key);
        self
    }

    /// Kommo's limit, per scope: `burst` requests back to back, refilled at `rate`.
    /// Default unlimited. `burst` below 1 counts as 1.
    pub fn kommo_rate(mut self, rate: Rate, burst: u32) -> Self {
        self.kommo_rate = rate;
        self.kommo_burst = burst.max(1);
        self
    }

    /// The Ogmma API keys accepted, each limited on its own (as Ogmma limits each customer's
    /// key): the first is [`SandboxConfig::ogmma_key`], the rest other customers'. At most
    /// [`MAX_OGMMA_KEYS`].
    pub fn ogmma_keys(mut self, keys: impl IntoIterator<Item = Secret>) -> Self {
        let mut keys = keys.into_iter();
        if let Some(first) = keys.next() {
            self.ogmma_key = Some(first);
        }
        self.ogmma_more_keys = keys.collect();
        self
    }

    /// Ogmma's limit, per API key, as for [`SandboxConfig::kommo_rate`]. Default unlimited.
    pub fn ogmma_rate(mut self, rate: Rate, burst: u32) -> Self {
        self.ogmma_rate = rate;
        self.ogmma_burst = burst.max(1);
        self
    }

    /// Both providers at their documented limits (Kommo 7/s per scope, Ogmma 60/min per key),
    /// each with a bucket of one full window (7 and 60) — what `reactbatch sandbox` does by
    /// default.
    pub fn documented_limits(self) -> Self {
        let kommo = ProviderKind::Kommo.default_rate();
        let ogmma = ProviderKind::Ogmma.default_rate();
        self.kommo_rate(kommo, window_count(kommo))
            .ogmma_rate(ogmma, window_count(ogmma))
    }

    /// Adds `Retry-After: N` (whole seconds, rounded up) to 429s. Default: no header, as Ogmma
    /// documents none.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Fraction (0..=1) of requests reaching the fault stage that get a 500/502/503.
    pub fn error_rate(mut self, fraction: f64) -> Self {
        self.error_rate = fraction;
        self
    }

    /// Fraction (0..=1) of requests reaching the fault stage whose connection is closed without
    /// an answer. `error_rate + drop_rate` must not exceed 1.
    pub fn drop_rate(mut self, fraction: f64) -> Self {
        self.drop_rate = fraction;
        self
    }

    /// Added to every provider request before it is processed.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Seed of the fault decisions; the same seed gives the same faults. Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Message ids starting with this prefix are answered 404 (never for an empty prefix).
    pub fn not_found_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.not_found_prefix = (!prefix.is_empty()).then_some(prefix);
        self
    }

    /// Records each provider request's arrival time for [`SandboxHandle::max_in_window`].
    pub fn record_arrivals(mut self, record: bool) -> Self {
        self.record_arrivals = record;
        self
    }

    /// Writes one JSON line per request to this file (created or truncated).
    pub fn request_log(mut self, path: PathBuf) -> Self {
        self.request_log = Some(path);
        self
    }

    /// How far a Kommo `Date` may be from the sandbox clock. Default 15 minutes, as documented;
    /// widen it to replay pre-signed requests (benchmarks).
    pub fn date_window(mut self, window: Duration) -> Self {
        self.date_window = window;
        self
    }

    /// Serve HTTPS with a certificate generated at start, signed by a CA generated with it
    /// ([`SandboxHandle::ca_pem`]). Default: plain HTTP.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    fn validate(&self) -> Result<(), String> {
        let fraction = |name: &str, f: f64| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a fraction between 0 and 1, got {f}"
                ))
            }
        };
        fraction("error rate", self.error_rate)?;
        fraction("drop rate", self.drop_rate)?;
        if self.error_rate + self.drop_rate > 1.0 {
            return Err(format!(
                "error rate + drop rate must not exceed 1, got {} + {}",
                self.error_rate, self.drop_rate
            ));
        }
        if 1 + self.ogmma_more_keys.len() > MAX_OGMMA_KEYS {
            return Err(format!(
                "at most {MAX_OGMMA_KEYS} Ogmma keys, got {}",
                1 + self.ogmma_more_keys.len()
            ));
        }
        Ok(())
    }
}

/// The requests a rate allows per window: the default bucket size.
pub(crate) fn window_count(rate: Rate) -> u32 {
    match rate {
        Rate::Unlimited => 1,
        Rate::Limited { count, .. } => count,
    }
}

/// Generates a credential: `prefix` + 40 lowercase hex digits (160 random bits).
pub fn generate_secret(prefix: &str) -> Secret {
    let bytes: [u8; 20] = rand::random();
    Secret::new(format!("{prefix}{}", hex::encode(bytes)))
}

/// Entry point: [`Sandbox::start`].
pub struct Sandbox;

impl Sandbox {
    /// Binds, starts serving on the current tokio runtime, and returns once the port is open.
    /// Errors: the address cannot be bound, the request log cannot be created, or the config
    /// is invalid (`InvalidInput`).
    pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = if config.tls {
            Some(tls::SandboxTls::generate().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (log, log_writer) = match &config.request_log {
            Some(path) => {
                let (log, writer) = log::RequestLog::open(path).await?;
                (Some(log), Some(writer))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            // Kommo channel secrets are 40 hex digits; Ogmma's key format is undocumented.
            kommo_secret: config.kommo_secret.unwrap_or_else(|| generate_secret("")),
            ogmma_keys: std::iter::once(
                config
                    .ogmma_key
                    .clone()
                    .unwrap_or_else(|| generate_secret("sbx_")),
            )
            .chain(config.ogmma_more_keys.iter().cloned())
            .collect(),
            kommo_rate: config.kommo_rate,
            kommo_limit: RateLimiter::new(config.kommo_rate, config.kommo_burst),
            ogmma_limit: RateLimiter::new(config.ogmma_rate, config.ogmma_burst),
            retry_after: config
                .retry_after
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            date_window: config.date_window,
            latency: config.latency,
            not_found_prefix: config.not_found_prefix,
            faults: FaultPlan::new(config.seed, config.error_rate, config.drop_rate),
            state: state::ReactionStore::new(),
            counters: stats::Counters::default(),
            arrivals: config.record_arrivals.then(|| Mutex::new(Vec::new())),
            log,
        });
        let (stop, stopped) = watch::channel(false);
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let server = tokio::spawn(server::serve(listener, shared.clone(), acceptor, stopped));
        Ok(SandboxHandle {
            addr,
            ca_pem: tls.map(|t| t.ca_pem),
            shared,
            stop,
            server: Some(server),
            log_writer,
        })
    }
}

/// A running sandbox. Dropping it stops accepting connections; [`SandboxHandle::shutdown`]
/// also waits for in-flight requests and flushes the request log.
pub struct SandboxHandle {
    addr: SocketAddr,
    /// With TLS: the CA certificate clients must trust (PEM).
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    log_writer: Option<log::LogWriter>,
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT` (`https://` with TLS): the base URL to give targets.
    pub fn base_url(&self) -> String {
        server::base_url(self.addr, self.ca_pem.is_some())
    }

    /// With TLS: the PEM of the CA that signed the sandbox's certificate (what a client passes
    /// as `--ca-cert`).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn kommo_secret(&self) -> &Secret {
        &self.shared.kommo_secret
    }

    pub fn ogmma_key(&self) -> &Secret {
        &self.shared.ogmma_keys[0]
    }

    /// Every Ogmma API key it accepts, the first being [`SandboxHandle::ogmma_key`].
    pub fn ogmma_keys(&self) -> &[Secret] {
        &self.shared.ogmma_keys
    }

    /// The credential a target of `provider` needs: Kommo channel secret or Ogmma API key.
    pub fn credential(&self, provider: ProviderKind) -> &Secret {
        match provider {
            ProviderKind::Kommo => self.kommo_secret(),
            ProviderKind::Ogmma => self.ogmma_key(),
        }
    }

    /// Counters so far (the same JSON as `GET /_sandbox/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot(self.shared.state.len())
    }

    /// The current emoji on a message from a user, if any. For Ogmma pass [`OGMMA_USER`].
    pub fn reaction(
        &self,
        provider: ProviderKind,
        scope_or_channel: &str,
        message: &str,
        user: &str,
    ) -> Option<String> {
        self.shared.state.get(&state::ReactionKey {
            provider,
            scope: scope_or_channel.to_string(),
            message: message.to_string(),
            user: user.to_string(),
        })
    }

    /// Every current reaction, sorted by provider, scope, message and user.
    pub fn reactions(&self) -> Vec<ReactionState> {
        self.shared.state.snapshot()
    }

    /// The most provider requests (of `provider`, or of both for `None`) that arrived within
    /// any window of length `window`. Needs [`SandboxConfig::record_arrivals`]; 0 otherwise.
    pub fn max_in_window(&self, provider: Option<ProviderKind>, window: Duration) -> usize {
        let Some(arrivals) = &self.shared.arrivals else {
            return 0;
        };
        let times = state::lock(arrivals)
            .iter()
            .filter(|(p, _)| provider.is_none_or(|want| want == *p))
            .map(|(_, t)| *t)
            .collect();
        server::max_in_window(times, window)
    }

    /// Stops accepting, lets in-flight requests finish (up to a few seconds), flushes the
    /// request log.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(writer) = self.log_writer.take() {
            writer.finish().await;
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
