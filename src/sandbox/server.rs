//! The HTTP side: an accept loop serving HTTP/1.1 keep-alive connections with hyper (and
//! HTTP/2 over TLS when the client offers it by ALPN, as the real services do), routing to
//! the two provider endpoints and the `/_sandbox/` control endpoints, and the request pipeline
//! shared by both providers:
//!
//! ```text
//! route ─▶ (latency) ─▶ authenticate ─▶ rate limit ─▶ body rules, emoji ─▶ faults ─▶ not-found ─▶ state
//!           sleep        401/403(400)      429           400             5xx/drop     404        200
//! ```
//!
//! Every rejection happens before the state changes, so only a 200 changes it.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::faults::{Fault, FaultPlan};
use super::limits::RateLimiter;
use super::log::{LogLine, RequestLog};
use super::reply::Reply;
use super::state::{lock, ReactionKey, ReactionStore};
use super::stats::{Counters, Route};
use super::{kommo, ogmma, Reaction};
use crate::plan::{ProviderKind, Rate};
use crate::secret::Secret;

/// Bodies are a few hundred bytes; anything past this is answered 413 unread.
const MAX_BODY: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests before closing their connections.
const GRACE: Duration = Duration::from_secs(5);
/// How long a TLS client may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Everything a request handler reads or updates. One per sandbox, shared by all connections.
pub(crate) struct Shared {
    pub(crate) kommo_secret: Secret,
    /// The Ogmma API keys accepted; each is limited on its own.
    pub(crate) ogmma_keys: Vec<Secret>,
    pub(crate) kommo_rate: Rate,
    pub(crate) kommo_limit: RateLimiter,
    pub(crate) ogmma_limit: RateLimiter,
    /// Seconds for `Retry-After` on 429s; `None` sends no header (Ogmma documents none).
    pub(crate) retry_after: Option<u64>,
    /// Kommo signatures are valid this long either side of their `Date`.
    pub(crate) date_window: Duration,
    pub(crate) latency: Duration,
    pub(crate) not_found_prefix: Option<String>,
    pub(crate) faults: FaultPlan,
    pub(crate) state: ReactionStore,
    pub(crate) counters: Counters,
    /// Arrival times of provider requests, when recording was asked for.
    pub(crate) arrivals: Option<Mutex<Vec<(ProviderKind, Instant)>>>,
    pub(crate) log: Option<RequestLog>,
}

/// The service's error: hyper closes the connection without writing any response.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections until `shutdown` turns true, then lets in-flight requests finish (up to
/// [`GRACE`]) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each connection task holds a sender; `recv()` returns `None` once all have ended.
    let (alive, mut all_closed) = mpsc::channel::<Infallible>(1);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Small request/response pairs on keep-alive: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let _open = Open::new(&shared);
            match tls {
                None => serve_connection(TokioIo::new(stream), false, shared, shutdown).await,
                Some(acceptor) => {
                    // A client that does not trust the certificate aborts the handshake: that
                    // connection simply ends. A silent one is not waited on forever.
                    let handshake = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_connection(TokioIo::new(stream), h2, shared, shutdown).await;
                    }
                }
            }
        });
    }
    drop(listener);
    drop(alive);
    let _ = tokio::time::timeout(GRACE, all_closed.recv()).await;
}

/// An accepted connection, counted open (stats) until it is dropped.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Open {
        shared.counters.opened();
        Open(Arc::clone(shared))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.closed();
    }
}

/// Serves one connection (plain or TLS; HTTP/2 when `h2` was agreed by ALPN) until it closes
/// or shutdown is asked for.
async fn serve_connection<I>(
    io: TokioIo<I>,
    h2: bool,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(shared.clone(), req));
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(GRACE, conn).await;
            }
        }
        return;
    }
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

/// Resolves once shutdown was asked for (at once if it already was).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the handle is gone, which is a request to stop too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    shared.counters.version(parts.version);
    let path = parts.uri.path();

    if let Some(name) = path.strip_prefix("/_sandbox/") {
        return Ok(control(&shared, &parts.method, name).into_response());
    }

    let target = kommo::scope_of(path)
        .map(|scope| (ProviderKind::Kommo, scope))
        .or_else(|| ogmma::channel_of(path).map(|channel| (ProviderKind::Ogmma, channel)));
    let Some((provider, scope)) = target else {
        let outcome = Outcome::Reply(unknown_path(&parts.method, path));
        finish(&shared, Route::Other, &parts, None, &outcome, started);
        return outcome.into_result();
    };
    if let Some(arrivals) = &shared.arrivals {
        lock(arrivals).push((provider, started));
    }

    let (outcome, message) = if parts.method != Method::POST {
        let reply = match provider {
            ProviderKind::Kommo => kommo::method_not_allowed(parts.method.as_str()),
            ProviderKind::Ogmma => ogmma::method_not_allowed(),
        };
        (Outcome::Reply(reply), None)
    } else {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let outcome = Outcome::Reply(Reply::error(
                    413,
                    "body_too_large",
                    &format!("the body is over {MAX_BODY} bytes"),
                ));
                finish(&shared, provider.into(), &parts, None, &outcome, started);
                return outcome.into_result();
            }
            // The client went away mid-body: nobody to answer.
            Err(_) => return Err(Dropped),
        };
        if !shared.latency.is_zero() {
            shared.counters.delayed();
            tokio::time::sleep(shared.latency).await;
        }
        let (outcome, message) = process(&shared, provider, scope, &parts, &bytes);
        (outcome, message.map(Cow::into_owned))
    };

    finish(&shared, provider.into(), &parts, message, &outcome, started);
    outcome.into_result()
}

enum Outcome {
    Reply(Reply),
    /// Close the connection without answering.
    Drop,
}

impl Outcome {
    fn into_result(self) -> Result<Response<Full<Bytes>>, Dropped> {
        match self {
            Outcome::Reply(reply) => Ok(reply.into_response()),
            Outcome::Drop => Err(Dropped),
        }
    }
}

/// The Ogmma key at `index` as the rate limiter names it: the first key `""` (as when the
/// sandbox had one key), the others their number; no allocation for the usual index.
fn ogmma_limit_key(index: usize) -> &'static str {
    const NAMES: [&str; super::MAX_OGMMA_KEYS] = [
        "", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    NAMES.get(index).copied().unwrap_or("")
}

/// The provider pipeline (see the module docs). Returns the outcome and, once the body parsed,
/// the message id for the log.
fn process<'b>(
    shared: &Shared,
    provider: ProviderKind,
    scope: &str,
    parts: &Parts,
    body: &'b [u8],
) -> (Outcome, Option<Cow<'b, str>>) {
    let auth = match provider {
        ProviderKind::Kommo => kommo::authenticate(
            &shared.kommo_secret,
            shared.date_window,
            parts.method.as_str(),
            parts.uri.path(),
            &parts.headers,
            body,
        )
        .map(|()| 0),
        ProviderKind::Ogmma => ogmma::authenticate(&shared.ogmma_keys, &parts.headers),
    };
    let key = match auth {
        Ok(key) => key,
        Err(reply) => return (Outcome::Reply(reply), None),
    };

    // Kommo limits per scope (account); Ogmma per API key (customer).
    let limited = match provider {
        ProviderKind::Kommo => shared.kommo_limit.check(scope, Instant::now()),
        ProviderKind::Ogmma => shared
            .ogmma_limit
            .check(ogmma_limit_key(key), Instant::now()),
    };
    if limited.is_err() {
        shared.counters.rate_limited();
        let mut reply = match provider {
            ProviderKind::Kommo => kommo::rate_limited(&shared.kommo_rate.to_string()),
            ProviderKind::Ogmma => ogmma::rate_limited(),
        };
        reply.retry_after = shared.retry_after;
        return (Outcome::Reply(reply), None);
    }

    let parsed = match provider {
        ProviderKind::Kommo => kommo::parse(body),
        ProviderKind::Ogmma => ogmma::parse(&parts.headers, body),
    };
    let Reaction {
        message,
        user,
        emoji,
    } = match parsed {
        Ok(reaction) => reaction,
        Err(reply) => return (Outcome::Reply(reply), None),
    };

    // As on the real services: a reaction is exactly one emoji (an empty one removes).
    if !emoji.is_empty() && emojis::get(&emoji).is_none() {
        let reply = match provider {
            ProviderKind::Kommo => kommo::invalid_emoji(&emoji),
            ProviderKind::Ogmma => ogmma::invalid_emoji(&emoji),
        };
        return (Outcome::Reply(reply), Some(message));
    }

    match shared.faults.decide(provider, scope, &message) {
        Fault::None => {}
        Fault::Drop => return (Outcome::Drop, Some(message)),
        Fault::ServerError(status) => {
            shared.counters.server_error();
            let mut reply = match provider {
                ProviderKind::Kommo => kommo::server_error(status),
                ProviderKind::Ogmma => ogmma::server_error(status),
            };
            reply.injected = true;
            return (Outcome::Reply(reply), Some(message));
        }
    }

    if let Some(prefix) = &shared.not_found_prefix {
        let id = message
            .strip_prefix(kommo::MSGID_PREFIX)
            .unwrap_or(&message);
        if id.starts_with(prefix.as_str()) {
            shared.counters.not_found();
            let reply = match provider {
                ProviderKind::Kommo => kommo::not_found(scope, &message),
                ProviderKind::Ogmma => ogmma::not_found(),
            };
            return (Outcome::Reply(reply), Some(message));
        }
    }

    shared.state.set(
        ReactionKey {
            provider,
            scope: scope.to_string(),
            message: message.to_string(),
            user: user.into_owned(),
        },
        &emoji,
    );
    let reply = match provider {
        ProviderKind::Kommo => kommo::success(),
        ProviderKind::Ogmma => ogmma::success(),
    };
    (Outcome::Reply(reply), Some(message))
}

/// Counts the request and writes its log line.
fn finish(
    shared: &Shared,
    route: Route,
    parts: &Parts,
    message: Option<String>,
    outcome: &Outcome,
    started: Instant,
) {
    let (status, label) = match outcome {
        Outcome::Reply(reply) => {
            shared.counters.answered(route, reply.status);
            (Some(reply.status), reply.outcome)
        }
        Outcome::Drop => {
            shared.counters.dropped(route);
            (None, "dropped")
        }
    };
    if let Some(log) = &shared.log {
        let now = chrono::Utc::now();
        let waited = chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        log.write(&LogLine {
            time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            arrived_us: (now - waited).timestamp_micros(),
            provider: route.as_str(),
            method: parts.method.to_string(),
            version: version_name(parts.version),
            path: parts.uri.path().to_string(),
            status,
            outcome: label,
            message_id: message,
            accept: text_header(parts, hyper::header::ACCEPT),
            user_agent: text_header(parts, hyper::header::USER_AGENT),
            // Microsecond precision, without float noise in the JSON.
            latency_ms: started.elapsed().as_micros() as f64 / 1000.0,
        });
    }
}

/// `HTTP/1.1`, `HTTP/2`, ... as the log names a request's version.
fn version_name(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

/// A header's value as text, for the log (`None` when absent or not text).
fn text_header(parts: &Parts, name: hyper::header::HeaderName) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn unknown_path(method: &Method, path: &str) -> Reply {
    Reply::error(
        404,
        "not_found",
        &format!(
            "no endpoint {method} {path}; the sandbox serves POST {}{{scope_id}}{} (Kommo), \
             POST {}{{channelId}}{} (Ogmma), GET /_sandbox/stats and GET /_sandbox/reactions",
            kommo::PREFIX,
            kommo::SUFFIX,
            ogmma::PREFIX,
            ogmma::SUFFIX
        ),
    )
}

/// `GET /_sandbox/stats` and `GET /_sandbox/reactions`; not counted in the stats.
fn control(shared: &Shared, method: &Method, name: &str) -> Reply {
    let body = match name {
        "stats" => serde_json::to_vec(&shared.counters.snapshot(shared.state.len())),
        "reactions" => serde_json::to_vec(&shared.state.snapshot()),
        _ => return unknown_path(method, &format!("/_sandbox/{name}")),
    };
    if method != Method::GET {
        return Reply::error(
            405,
            "method_not_allowed",
            "the /_sandbox/ endpoints take GET",
        );
    }
    match body {
        Ok(body) => Reply::new(200, "ok", body),
        Err(e) => Reply::error(500, "internal_error", &e.to_string()),
    }
}

/// `max_in_window` over recorded arrivals: the most requests that arrived within any window of
/// length `window` (half-open: `[t, t + window)`).
pub(crate) fn max_in_window(mut times: Vec<Instant>, window: Duration) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Formats the listen address as the base URL clients use.
pub(crate) fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_counts_half_open_windows() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = vec![
            at(0),
            at(100),
            at(999),
            at(1000),
            at(1500),
            at(1999),
            at(2000),
        ];
        assert_eq!(max_in_window(times.clone(), Duration::from_secs(1)), 3);
        assert_eq!(max_in_window(times, Duration::from_millis(1001)), 4);
        assert_eq!(max_in_window(Vec::new(), Duration::from_secs(1)), 0);
    }
}
