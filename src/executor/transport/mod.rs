//! Putting a signed request on the wire. [`Transport`] is the one seam the executor has, so
//! scheduling can be tested under paused tokio time; every integration test still goes over
//! loopback HTTP to the sandbox through [`HttpTransport`].
//!
//! [`HttpTransport`] is one HTTP stack for the whole run, direct and proxied, on hyper's
//! connection layer: its connections belong to the origin (scheme, host, port, proxy), kept
//! in a pool shared by every lane and sender that sends there ([`pool`]), so a run across a
//! thousand accounts on one host keeps a handful of connections open, not one per sender per
//! lane. HTTPS offers HTTP/2 by ALPN (many requests on one connection) and falls back to
//! HTTP/1.1 keep-alive, with at most `--concurrency` such connections open at once. A sender
//! drives its HTTP/1.1 connection itself while it waits for the answer: no task hand-off per
//! request.

mod connect;
mod outcome;
mod pool;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::Uri;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::provider::SignedRequest;

#[cfg(test)]
pub(super) use self::outcome::answered;
use self::outcome::{answered_at, describe, failed, one_line};
use self::pool::{Pool, Slot};
use super::config::Clock;
use super::retry::AttemptOutcome;

pub(crate) trait Transport: Send + Sync + 'static {
    /// What one sender keeps between its requests.
    type Session: Send + 'static;

    /// A new sender's state.
    fn session(&self) -> Self::Session;

    fn send(
        &self,
        session: &mut Self::Session,
        request: SignedRequest,
        timeout: Duration,
    ) -> impl Future<Output = AttemptOutcome> + Send;
}

pub(crate) use crate::provider::USER_AGENT;

/// Whom HTTPS trusts, beyond the system store and the bundled web roots.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trust {
    /// Extra CA certificates, DER (`--ca-cert`, or the in-process sandbox's own CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Trust {
    /// Reads a PEM file of one or more CA certificates (`--ca-cert FILE`).
    pub(crate) fn from_pem_file(path: &std::path::Path) -> Result<Trust, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA certificate {}: {e}", path.display()))?;
        Trust::from_pem(&pem).map_err(|e| format!("CA certificate {}: {e}", path.display()))
    }

    pub(crate) fn from_pem(pem: &[u8]) -> Result<Trust, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate ({e})"))?;
        if certs.is_empty() {
            return Err("holds no `-----BEGIN CERTIFICATE-----` block".into());
        }
        // Refused here, not at the first request: a certificate rustls cannot use.
        let mut store = tokio_rustls::rustls::RootCertStore::empty();
        for cert in &certs {
            store
                .add(cert.clone())
                .map_err(|e| format!("not a usable CA certificate ({e})"))?;
        }
        Ok(Trust { extra_roots: certs })
    }
}

/// The run's one HTTP stack (hyper, rustls): no redirects (a redirect is answered as a final
/// failure, so credentials never follow one to another host), no decompression, the bundled
/// web roots, the system store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set) and the extra roots
/// of [`Trust`].
///
/// A proxy named by the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, either case,
/// and `NO_PROXY`) is used for every host but loopback ones: a corporate proxy cannot reach
/// the sandbox or a local relay, or should not see them. Plain HTTP goes to the proxy in
/// absolute form, HTTPS through a CONNECT tunnel.
#[derive(Clone)]
pub(crate) struct HttpTransport {
    pool: Arc<Pool>,
    /// "Now" for a `Retry-After` given as a date.
    clock: Clock,
}

impl HttpTransport {
    /// `connections` is the run's `--concurrency`, the bound on HTTP/1.1 connections open at
    /// once; `timeout` the request timeout, of which opening a connection may take three
    /// quarters, so a connection that cannot be made is told apart from an answer that does
    /// not come.
    pub(crate) fn new(
        connections: usize,
        timeout: Duration,
        trust: &Trust,
    ) -> Result<HttpTransport, String> {
        let tls = connect::Tls::new(trust.extra_roots.clone());
        Ok(HttpTransport {
            pool: Arc::new(Pool::new(connections, tls, timeout.mul_f64(0.75))),
            clock: Clock::System,
        })
    }

    /// The same transport, reading "now" for `Retry-After` dates from `clock`.
    pub(crate) fn with_clock(self, clock: Clock) -> HttpTransport {
        HttpTransport { clock, ..self }
    }

    /// Sets TLS up now (the system store is read), off the runtime's workers, if a request to
    /// one of `urls` would need it: a live run does so before its first request, so that
    /// request is not late for its pace by the time the store takes to load. A run whose
    /// origins and proxies all speak plain HTTP (the sandbox, a local relay) never reads the
    /// store.
    pub(crate) async fn ready_for<'a>(
        &self,
        urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let needs_tls = urls
            .into_iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .any(|u| self.pool.needs_tls(&u));
        if needs_tls {
            self.pool.tls().ready().await?;
        }
        Ok(())
    }

    /// Whether TLS was set up (for tests of [`HttpTransport::ready_for`]).
    #[cfg(test)]
    fn tls_ready(&self) -> bool {
        self.pool.tls().is_built()
    }
}

/// One request outside a run (a health-check ping): `method` to `url` with `headers` and
/// `body`, through the same stack (proxies from the environment, the system and bundled
/// roots), within `timeout`. The answer's status, or why there is none in one line. Nothing of the URL but
/// its origin is named in an error (a ping URL may carry a token in its path).
pub(crate) async fn request_once(
    method: &str,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<u16, String> {
    request_once_trusting(method, url, headers, body, timeout, &Trust::default()).await
}

/// [`request_once`], trusting the extra roots of `trust` too (`--ca-cert`).
pub(crate) async fn request_once_trusting(
    method: &str,
    url: &str,
    extra: HeaderMap,
    body: Bytes,
    timeout: Duration,
    trust: &Trust,
) -> Result<u16, String> {
    let transport = HttpTransport::new(1, timeout, trust)?;
    let Some(dest) = Destination::parse(url, &transport.pool) else {
        return Err("not an http:// or https:// URL".into());
    };
    let method = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("not an HTTP method: {}", one_line(method, 40)))?;
    let mut headers = extra;
    headers.insert(hyper::header::HOST, dest.host_header.clone());
    headers.insert(
        hyper::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    headers.insert(hyper::header::CONTENT_LENGTH, content_length(body.len()));
    let mut request = hyper::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = dest.target.clone();
    *request.headers_mut() = headers;
    let work = transport.pool.exchange(&dest.slot, request, &dest.absolute);
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(format!("{}: no answer within {timeout:?}", dest.origin)),
        Ok(Ok(answer)) => Ok(answer.status),
        Ok(Err(e)) => Err(match failed(&dest.origin, &e) {
            AttemptOutcome::Unreachable { message, .. } | AttemptOutcome::Connection(message) => {
                message
            }
            _ => format!("{}: {}", dest.origin, describe(&e)),
        }),
    }
}

/// A sender's last destination, parsed (every row of a target has the same URL: parsing it
/// per request showed in profiles), and its request timer.
#[derive(Default)]
pub(crate) struct HttpSession {
    last: Option<Destination>,
    /// The sender's request deadline ([`Deadline::within`]).
    deadline: Deadline,
}

/// One timer per sender, kept armed from request to request. Registering a new timer for
/// every request and removing it when the answer came (what `tokio::time::timeout` does) was
/// a share of every request; this one is reset only when it fires, at most once per
/// timeout per sender, and then only to the current request's own deadline.
#[derive(Default)]
struct Deadline(Option<std::pin::Pin<Box<tokio::time::Sleep>>>);

impl Deadline {
    /// `work`'s output, or `None` if `timeout` passed first.
    fn within<F: Future>(&mut self, timeout: Duration, work: F) -> Within<'_, F> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Armed for later than this request may take (a longer timeout before): bring it in.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        Within {
            work,
            timer,
            deadline,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Deadline::within`]'s future. A struct rather than an `async fn`: the latter keeps
    /// `work` twice in its state (the argument and the pinned local).
    struct Within<'a, F> {
        #[pin]
        work: F,
        timer: &'a mut std::pin::Pin<Box<tokio::time::Sleep>>,
        deadline: tokio::time::Instant,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(out) = this.work.poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        // It fires at an earlier request's deadline: this one's may not have come yet.
        while this.timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= *this.deadline {
                return std::task::Poll::Ready(None);
            }
            this.timer.as_mut().reset(*this.deadline);
        }
        std::task::Poll::Pending
    }
}

/// A request URL, parsed once.
struct Destination {
    url_text: String,
    /// `host:port`, naming the origin in connection failures.
    origin: String,
    /// `host[:port]`, as the `Host` header carries it.
    host_header: HeaderValue,
    /// The request target in origin form (path and query), as HTTP/1.1 sends it.
    target: Uri,
    /// The whole URL, as HTTP/2 and a proxy get it.
    absolute: Uri,
    /// The origin's connections.
    slot: Arc<Slot>,
    /// The headers of the requests sent here, to fill in ([`Template`]).
    template: Option<Template>,
}

/// The header map of a request to one destination, kept to be cloned for the next request
/// with the same header names, whose values are then set in place: cheaper than hashing
/// every name into a new map (that was the largest share of building a request).
struct Template {
    names: Vec<&'static str>,
    bearer: bool,
    map: HeaderMap,
}

impl Template {
    /// A template of `map`, built by [`header_map`] from `names` (plus `Authorization` when
    /// `bearer`, then `User-Agent` and `Content-Length`); `None` unless its entries come in that
    /// order, one value each — the order [`Template::fill`] sets them in.
    fn of(names: Vec<&'static str>, bearer: bool, map: &HeaderMap) -> Option<Template> {
        let expected = std::iter::once("host")
            .chain(names.iter().copied())
            .chain(bearer.then_some("authorization"))
            .chain(["user-agent", "content-length"]);
        let mut actual = map.iter().map(|(name, _)| name.as_str());
        for want in expected {
            if !actual.next()?.eq_ignore_ascii_case(want) {
                return None;
            }
        }
        if actual.next().is_some() {
            return None;
        }
        // The values are the next request's to set; none of this one's (a bearer key
        // included) stays behind.
        let mut map = map.clone();
        for (name, value) in map.iter_mut() {
            if name != hyper::header::HOST && name != hyper::header::USER_AGENT {
                *value = HeaderValue::from_static("");
            }
        }
        Some(Template { names, bearer, map })
    }

    fn fits(&self, request: &SignedRequest) -> bool {
        self.bearer == request.bearer.is_some()
            && self.names.len() == request.headers.len()
            && self
                .names
                .iter()
                .zip(&request.headers)
                .all(|(a, (b, _))| a == b)
    }

    /// The template's map with this request's values, in the order [`Template::of`] checked.
    fn fill(
        &self,
        headers: Vec<(&'static str, HeaderValue)>,
        bearer: Option<HeaderValue>,
        length: HeaderValue,
    ) -> Option<HeaderMap> {
        let mut map = self.map.clone();
        let mut slots = map.iter_mut().map(|(_, value)| value);
        slots.next()?; // Host: the destination's own
        for (_, value) in headers {
            *slots.next()? = value;
        }
        if let Some(value) = bearer {
            *slots.next()? = value;
        }
        slots.next()?; // User-Agent: constant
        *slots.next()? = length;
        Some(map)
    }
}

impl Destination {
    fn parse(text: &str, pool: &Pool) -> Option<Destination> {
        let url = url::Url::parse(text).ok()?;
        let host = url.host_str()?;
        let host_header = match url.port() {
            Some(port) => HeaderValue::from_str(&format!("{host}:{port}")).ok()?,
            None => HeaderValue::from_str(host).ok()?,
        };
        let origin = format!("{host}:{}", url.port_or_known_default()?);
        let target = url[url::Position::BeforePath..].parse::<Uri>().ok()?;
        let absolute = url.as_str().parse::<Uri>().ok()?;
        Some(Destination {
            url_text: text.to_string(),
            origin,
            host_header,
            target,
            absolute,
            slot: pool.slot(&url)?,
            template: None,
        })
    }

    /// The request for `request` to this destination (see [`build_request`]).
    fn request(&mut self, request: SignedRequest) -> Option<hyper::Request<Full<Bytes>>> {
        build_request(
            request,
            self.host_header.clone(),
            &self.target,
            &mut self.template,
        )
    }
}

impl Transport for HttpTransport {
    type Session = HttpSession;

    fn session(&self) -> HttpSession {
        HttpSession::default()
    }

    async fn send(
        &self,
        session: &mut HttpSession,
        request: SignedRequest,
        timeout: Duration,
    ) -> AttemptOutcome {
        let HttpSession { last, deadline } = session;
        let Some(dest) = session_destination(last, &request.url, &self.pool) else {
            return AttemptOutcome::Connection(format!(
                "the target's URL cannot be requested: {}",
                one_line(&request.url, 200)
            ));
        };
        let built = dest.request(request);
        let Some(built) = built else {
            return AttemptOutcome::Connection(format!(
                "{}: the request cannot be built from the target's URL and headers",
                dest.origin
            ));
        };
        // Pinned where it is made, so the exchange's future is not copied into the deadline's.
        let work = std::pin::pin!(self.pool.exchange(&dest.slot, built, &dest.absolute));
        match deadline.within(timeout, work).await {
            None => AttemptOutcome::Timeout,
            Some(Ok(answer)) => answered_at(
                answer.status,
                answer.retry_after.as_deref(),
                &answer.body,
                self.clock.now(),
            ),
            Some(Err(e)) => failed(&dest.origin, &e),
        }
    }
}

/// `text` parsed, from the session's last URL when it is the same.
fn session_destination<'a>(
    last: &'a mut Option<Destination>,
    text: &str,
    pool: &Pool,
) -> Option<&'a mut Destination> {
    if last.as_ref().is_none_or(|d| d.url_text != text) {
        *last = Destination::parse(text, pool);
    }
    last.as_mut()
}

/// The request for `request`: `Host`, the signed headers in wire order, the bearer
/// credential, `User-Agent` and `Content-Length`, and the exact body bytes that were signed
/// (the client adds no header of its own to these: it writes them in this order, and over
/// HTTP/2 `Host` is the request's authority). Takes the signed request: its header values
/// move to the wire without a copy. The header map is the destination's `template` filled in
/// when the names are the same as last time.
fn build_request(
    request: SignedRequest,
    host: HeaderValue,
    target: &Uri,
    template: &mut Option<Template>,
) -> Option<hyper::Request<Full<Bytes>>> {
    let length = content_length(request.body.len());
    let bearer = match &request.bearer {
        Some(key) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok()?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let filled = match template.as_ref() {
        Some(t) if t.fits(&request) => t.fill(request.headers, bearer, length),
        _ => {
            let names: Vec<&'static str> = request.headers.iter().map(|(n, _)| *n).collect();
            let has_bearer = bearer.is_some();
            let mut headers = header_map(request.headers, Some(host))?;
            if let Some(value) = bearer {
                headers.insert(hyper::header::AUTHORIZATION, value);
            }
            headers.insert(
                hyper::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
            headers.insert(hyper::header::CONTENT_LENGTH, length);
            *template = Template::of(names, has_bearer, &headers);
            Some(headers)
        }
    };
    let method = match request.method {
        "POST" => hyper::Method::POST,
        "DELETE" => hyper::Method::DELETE,
        other => hyper::Method::from_bytes(other.as_bytes()).ok()?,
    };
    let mut built = hyper::Request::new(Full::new(request.body));
    *built.method_mut() = method;
    *built.uri_mut() = target.clone();
    *built.headers_mut() = filled?;
    Some(built)
}

/// `Content-Length: len`, made once per length per thread: bodies of one plan have few
/// distinct lengths, and a value made from a number costs two allocations. (A table indexed
/// by length, 4 096 entries, took 160 KiB a thread.)
fn content_length(len: usize) -> HeaderValue {
    /// Lengths remembered per thread, at most; later ones are made each time.
    const CACHED: usize = 64;
    thread_local! {
        static BY_LENGTH: std::cell::RefCell<Vec<(usize, HeaderValue)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    BY_LENGTH.with_borrow_mut(|values| {
        if let Some((_, value)) = values.iter().find(|(l, _)| *l == len) {
            return value.clone();
        }
        let value = HeaderValue::from(len);
        if values.len() < CACHED {
            values.push((len, value.clone()));
        }
        value
    })
}

/// The request's headers (after `Host`, when given), with the names we send known in advance
/// (no parsing per request). The values are shared, not copied. `None` if a name does not
/// convert.
fn header_map(
    headers: impl IntoIterator<Item = (&'static str, HeaderValue), IntoIter: ExactSizeIterator>,
    host: Option<HeaderValue>,
) -> Option<HeaderMap> {
    let headers = headers.into_iter();
    let mut map = HeaderMap::with_capacity(headers.len() + 4);
    if let Some(host) = host {
        map.insert(hyper::header::HOST, host);
    }
    for (name, value) in headers {
        let name = match name {
            "Date" => hyper::header::DATE,
            "Content-Type" => hyper::header::CONTENT_TYPE,
            "Content-MD5" => HeaderName::from_static("content-md5"),
            "X-Signature" => HeaderName::from_static("x-signature"),
            "Accept" => hyper::header::ACCEPT,
            other => HeaderName::from_bytes(other.as_bytes()).ok()?,
        };
        map.append(name, value);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_the_body_length_whether_remembered_or_not() {
        // More distinct lengths than are remembered, each asked for several times.
        for round in 0..3 {
            for len in (0..200).chain([4096, 1 << 20]) {
                assert_eq!(
                    content_length(len),
                    HeaderValue::from(len),
                    "{len} (round {round})"
                );
            }
        }
    }

    /// The sender's one timer times every request out at its own deadline: not at an earlier
    /// request's (the timer fires there and is moved on), not later after a longer timeout.
    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_times_each_request_out_at_its_own_deadline() {
        use tokio::time::{sleep, Instant};
        let mut deadline = Deadline::default();
        let secs = Duration::from_secs;
        let start = Instant::now();
        // Answered within its 10 s.
        let first = deadline.within(secs(10), async {
            sleep(secs(1)).await;
            7
        });
        assert_eq!(first.await, Some(7));
        sleep(secs(4)).await;
        // Sent at 5 s, never answered: out at 15 s, though the timer was armed for 11 s.
        let never = std::future::pending::<()>();
        assert_eq!(deadline.within(secs(10), never).await, None);
        assert_eq!(start.elapsed(), secs(15));
        // A shorter timeout after a longer one: out at its own 2 s.
        let at = Instant::now();
        assert_eq!(
            deadline
                .within(secs(30), async {
                    sleep(secs(1)).await;
                })
                .await,
            Some(())
        );
        let shorter = deadline.within(secs(2), std::future::pending::<()>());
        assert_eq!(shorter.await, None);
        assert_eq!(at.elapsed(), secs(3));
    }

    /// Every header of `request` as the wire gets it: name, value, sensitivity, in order.
    fn wire_headers(request: &hyper::Request<Full<Bytes>>) -> Vec<(String, String, bool)> {
        request
            .headers()
            .iter()
            .map(|(n, v)| {
                let text = v.to_str().unwrap_or("?").to_string();
                (n.to_string(), text, v.is_sensitive())
            })
            .collect()
    }

    #[test]
    fn a_filled_template_is_the_map_built_from_scratch() {
        use crate::plan::{Row, Source, Target, TargetKind};
        use crate::provider::{Endpoint, Signer};
        use crate::secret::{Secret, SecretRef};
        let row = |n: u64, emoji: &str| Row {
            conversation_id: Some("c".into()),
            user_id: Some("u".into()),
            ..Row::test(n).message(format!("m-{n}")).emoji(emoji)
        };
        let target = |kind| Target {
            name: "t".into(),
            kind,
            base_url: "http://127.0.0.1:9".into(),
            rate: None,
            credential: SecretRef::Env("K".into()),
            source: Source {
                file: "p.yaml".into(),
                line: 1,
            },
        };
        let kinds = [
            TargetKind::Kommo {
                scope_id: Some("s".into()),
                user_id: Some("u".into()),
                user_ref_id: None,
            },
            TargetKind::Ogmma {
                channel_id: Some("c".into()),
            },
        ];
        let tls = connect::Tls::new(Vec::new());
        let pool = Pool::new(1, tls, Duration::from_secs(1));
        for kind in kinds {
            let target = target(kind);
            let (endpoint, signer) = (Endpoint::new(&target), Signer::new(&Secret::new("k-1")));
            let url = endpoint.prepare(&row(1, "x")).url;
            let mut dest = Destination::parse(&url, &pool).expect("url");
            let (host, target) = (dest.host_header.clone(), dest.target.clone());
            let fresh = |signed: SignedRequest| {
                build_request(signed, host.clone(), &target, &mut None).expect("request")
            };
            let first = signer.sign(&endpoint.prepare(&row(1, "x")), chrono::Utc::now());
            let second = signer.sign(
                &endpoint.prepare(&row(2, "a longer emoji")),
                chrono::Utc::now() + chrono::Duration::seconds(3),
            );
            let (want1, want2) = (fresh(first.clone()), fresh(second.clone()));
            let got1 = dest.request(first).expect("request");
            assert!(
                dest.template.is_some(),
                "the first request leaves a template"
            );
            let got2 = dest.request(second).expect("request");
            assert_eq!(wire_headers(&got1), wire_headers(&want1));
            assert_eq!(wire_headers(&got2), wire_headers(&want2));
            assert_ne!(wire_headers(&got1), wire_headers(&got2));
            // The template keeps no value of a request: no bearer key, no signature.
            let kept = dest.template.as_ref().expect("template");
            assert!(kept
                .map
                .iter()
                .all(|(_, v)| !v.to_str().unwrap_or("").contains("k-1") && !v.is_sensitive()));
        }
    }

    /// The system store is read only for a run with an HTTPS origin (or an HTTPS proxy).
    #[tokio::test]
    async fn tls_is_set_up_only_when_a_target_speaks_it() {
        let secs = Duration::from_secs(5);
        let transport = HttpTransport::new(4, secs, &Trust::default()).expect("transport");
        let plain = ["http://127.0.0.1:9/", "http://localhost:8080/base"];
        transport.ready_for(plain).await.expect("ready");
        assert!(!transport.tls_ready(), "plain HTTP reads no certificates");
        let mixed = ["http://127.0.0.1:9/", "https://127.0.0.1:9/"];
        transport.ready_for(mixed).await.expect("ready");
        assert!(
            transport.tls_ready(),
            "an HTTPS origin sets TLS up before sending"
        );

        let proxy = |scheme: &str| connect::Proxy {
            uri: format!("{scheme}://proxy.test:3128").parse().expect("uri"),
            auth: None,
        };
        let origin = |https: bool, route: connect::Route| connect::Origin {
            https,
            host: url::Host::Domain("amojo.kommo.com".to_string()),
            port: 80,
            route,
        };
        assert!(!origin(false, connect::Route::Direct).needs_tls());
        assert!(!origin(false, connect::Route::Forward(proxy("http"))).needs_tls());
        assert!(origin(false, connect::Route::Forward(proxy("https"))).needs_tls());
        assert!(origin(true, connect::Route::Tunnel(proxy("http"))).needs_tls());
    }

    /// A one-off request: the status of whatever answers, or one line naming the origin
    /// (and nothing else of the URL) when nothing does.
    #[tokio::test]
    async fn request_once_gives_the_status_or_names_the_origin() {
        let sandbox = crate::sandbox::Sandbox::start(crate::sandbox::SandboxConfig::new())
            .await
            .expect("sandbox");
        let secs = Duration::from_secs(5);
        let url = format!("{}/_sandbox/stats", sandbox.base_url());
        assert_eq!(
            request_once("GET", &url, HeaderMap::new(), Bytes::new(), secs).await,
            Ok(200)
        );
        let stats = sandbox.stats();
        assert_eq!(stats.by_version.get("HTTP/1.1"), Some(&1), "{stats:?}");
        sandbox.shutdown().await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}/ping/secret-token");
        let err = request_once(
            "POST",
            &url,
            HeaderMap::new(),
            Bytes::from_static(b"x"),
            secs,
        )
        .await
        .expect_err("nothing listens");
        assert!(err.starts_with(&format!("127.0.0.1:{port}: ")), "{err}");
        assert!(
            !err.contains("secret-token") && !err.contains('\n'),
            "{err}"
        );
        let err = request_once(
            "GET",
            "ftp://example.test/x",
            HeaderMap::new(),
            Bytes::new(),
            secs,
        )
        .await;
        assert!(err.is_err());
    }
}
