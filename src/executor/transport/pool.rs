//! The run's connections, per origin.
//!
//! HTTP/1.1: idle keep-alive connections wait in their origin's [`Slot`]. A sender checks one
//! out, drives it **in its own task** while it waits for its answer ([`with_conn`]: the
//! connection's I/O is polled together with the response, no task of its own, no hand-off
//! between tasks per request), then checks it back in. Every HTTP/1.1 connection holds one
//! of `--concurrency` permits, so the run never has more open than that: a sender that finds
//! none free closes an idle connection of another origin, or waits for one to be released.
//!
//! HTTP/2 (chosen by ALPN): one connection per origin, its driver a task of its own (what
//! multiplexing needs), its `SendRequest` cloned to every sender; a second is opened only
//! when the first has gone away. Until an HTTPS origin's protocol is known, one connection
//! to it is opened at a time, so a first burst does not open `--concurrency` connections
//! only to find they could all have been one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::{self, BoxIo, Origin, Route, Tls};

pub(super) type Body = Full<Bytes>;
type H1Driver = http1::Connection<TokioIo<BoxIo>, Body>;

/// Response bodies are read up to this many bytes; the rest is ignored (a hostile or broken
/// server cannot make us buffer megabytes per row).
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// What came back.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) retry_after: Option<String>,
    /// At most [`MAX_BODY`] bytes.
    pub(super) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection could be made: DNS, TCP, the proxy, the TLS handshake.
    Connect(std::io::Error),
    /// Opening a connection took longer than its share of the request timeout.
    ConnectTimeout,
    /// The connection failed or ended once open, before the whole answer came.
    Dropped(Option<hyper::Error>),
}

/// The run's connections.
pub(super) struct Pool {
    /// One per HTTP/1.1 connection open.
    permits: Arc<Semaphore>,
    /// Senders waiting for a permit: while there are any, a connection coming back is closed
    /// rather than kept idle, so its permit goes to them.
    waiting: AtomicUsize,
    slots: Mutex<HashMap<Origin, Arc<Slot>>>,
    tls: Tls,
    proxies: Matcher,
    connect_timeout: Duration,
}

/// One origin's connections.
pub(super) struct Slot {
    origin: Origin,
    state: Mutex<SlotState>,
    /// Held while opening a connection whose protocol is not known yet (HTTPS).
    probe: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    idle: Vec<H1>,
    h2: Option<http2::SendRequest<Body>>,
    /// What the origin's last new connection spoke: `Some(true)` for HTTP/2.
    h2_known: Option<bool>,
}

/// An HTTP/1.1 connection and its permit.
struct H1 {
    sender: http1::SendRequest<Body>,
    conn: Pin<Box<H1Driver>>,
    _permit: OwnedSemaphorePermit,
}

enum Conn {
    /// With whether it was idle in the pool (then the server may have closed it meanwhile).
    H1(H1, bool),
    H2(http2::SendRequest<Body>),
}

/// Counts a waiting sender while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic elsewhere: every change is one statement.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// `connections`: HTTP/1.1 connections open at once, at most.
    pub(super) fn new(connections: usize, tls: Tls, connect_timeout: Duration) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(connections.max(1))),
            waiting: AtomicUsize::new(0),
            slots: Mutex::default(),
            tls,
            proxies: Matcher::from_env(),
            connect_timeout,
        }
    }

    pub(super) fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Whether a connection for `url` would speak TLS (to the origin or to its proxy).
    pub(super) fn needs_tls(&self, url: &url::Url) -> bool {
        Origin::of(url, &self.proxies).is_some_and(|o| o.needs_tls())
    }

    /// The slot of `url`'s origin; `None` for a URL no connection can be opened to.
    pub(super) fn slot(&self, url: &url::Url) -> Option<Arc<Slot>> {
        let origin = Origin::of(url, &self.proxies)?;
        let mut slots = lock(&self.slots);
        let slot = slots.entry(origin).or_insert_with_key(|origin| {
            Arc::new(Slot {
                origin: origin.clone(),
                state: Mutex::default(),
                probe: tokio::sync::Mutex::new(()),
            })
        });
        Some(Arc::clone(slot))
    }

    /// Sends `request` (origin-form, with `Host`) to `slot`'s origin and reads the answer;
    /// `absolute` is the request's URL, for HTTP/2 and for a proxy. A request that a pooled
    /// connection would not take (the server closed it while idle) goes on another; one that
    /// was written is never sent again here: whether to retry is the executor's decision.
    pub(super) async fn exchange(
        &self,
        slot: &Slot,
        mut request: Request<Body>,
        absolute: &Uri,
    ) -> Result<Answer, Failure> {
        let mut resent = false;
        loop {
            match self.checkout(slot).await? {
                Conn::H2(mut sender) => {
                    // The authority is the URL's; a `Host` header beside it is not HTTP/2's.
                    *request.uri_mut() = absolute.clone();
                    request.headers_mut().remove(hyper::header::HOST);
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            return read_answer(response)
                                .await
                                .map(|(answer, _)| answer)
                                .map_err(|e| Failure::Dropped(Some(e)))
                        }
                        Err(mut e) => match e.take_message() {
                            // Not sent (the server refused the stream or was going away, as
                            // servers do after so many requests on a connection): once more,
                            // on a new connection if this one is gone.
                            Some(back) if !resent => {
                                resent = true;
                                request = back;
                            }
                            _ => return Err(Failure::Dropped(Some(e.into_error()))),
                        },
                    }
                }
                Conn::H1(mut h1, reused) => {
                    if let Route::Forward(proxy) = &slot.origin.route {
                        *request.uri_mut() = absolute.clone();
                        if let Some(auth) = &proxy.auth {
                            request
                                .headers_mut()
                                .insert(hyper::header::PROXY_AUTHORIZATION, auth.clone());
                        }
                    }
                    match h1.exchange(request).await {
                        Ok((answer, whole)) => {
                            // A connection whose answer was cut short is not used again.
                            if whole && !h1.sender.is_closed() {
                                self.checkin(slot, h1);
                            }
                            return Ok(answer);
                        }
                        Err(Unsent(Some(back), _)) if reused => request = back,
                        Err(Unsent(_, e)) => return Err(Failure::Dropped(e)),
                    }
                }
            }
        }
    }

    /// A connection to `slot`'s origin: the HTTP/2 one, an idle HTTP/1.1 one, or a new one.
    /// Opening one (TCP, a tunnel, TLS, the handshake) is boxed: it is rare, and its future
    /// would otherwise make every request's future that much larger, and every copy of it.
    async fn checkout(&self, slot: &Slot) -> Result<Conn, Failure> {
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        let h2_known = lock(&slot.state).h2_known;
        if !slot.origin.https || h2_known == Some(false) {
            let permit = self.permit().await?;
            return Box::pin(self.open(slot, permit)).await;
        }
        // HTTPS, and HTTP/2 for all we know: one connection opened at a time.
        let probing = slot.probe.lock().await;
        if let Some(conn) = slot.ready() {
            return Ok(conn);
        }
        let h2_known = lock(&slot.state).h2_known;
        let _probing = (h2_known != Some(false)).then_some(probing);
        let permit = self.permit().await?;
        Box::pin(self.open(slot, permit)).await
    }

    /// One of the HTTP/1.1 connection permits: a free one, else an idle connection's (of any
    /// origin: it is closed), else the next one released.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, Failure> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        // Counted before looking for idle connections: one checked in from now on is closed
        // for us, one checked in before is found below.
        let _waiting = Waiting::new(&self.waiting);
        loop {
            if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                return Ok(permit);
            }
            if !self.close_one_idle() {
                break;
            }
        }
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Failure::Connect(std::io::Error::other("the connection pool is closed")))
    }

    /// Closes one idle HTTP/1.1 connection, of any origin; false if there is none.
    fn close_one_idle(&self) -> bool {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for slot in slots {
            let idle = lock(&slot.state).idle.pop();
            if idle.is_some() {
                return true;
            }
        }
        false
    }

    /// Opens a connection to `slot`'s origin. An HTTP/2 one is kept in the slot for every
    /// sender, and needs no permit.
    async fn open(&self, slot: &Slot, permit: OwnedSemaphorePermit) -> Result<Conn, Failure> {
        let connected = tokio::time::timeout(
            self.connect_timeout,
            connect::connect(&slot.origin, &self.tls),
        )
        .await
        .map_err(|_| Failure::ConnectTimeout)?
        .map_err(Failure::Connect)?;
        let io = TokioIo::new(connected.io);
        if connected.h2 {
            drop(permit);
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| Failure::Connect(std::io::Error::other(e)))?;
            tokio::spawn(async move {
                // Its errors reach the requests on it.
                let _ = conn.await;
            });
            let mut state = lock(&slot.state);
            state.h2_known = Some(true);
            state.h2 = Some(sender.clone());
            return Ok(Conn::H2(sender));
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Failure::Connect(std::io::Error::other(e)))?;
        lock(&slot.state).h2_known = Some(false);
        Ok(Conn::H1(
            H1 {
                sender,
                conn: Box::pin(conn),
                _permit: permit,
            },
            false,
        ))
    }

    /// Back to the idle connections, unless a sender waits for a permit.
    fn checkin(&self, slot: &Slot, h1: H1) {
        let mut state = lock(&slot.state);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            drop(state);
            drop(h1);
            return;
        }
        state.idle.push(h1);
    }
}

impl Slot {
    /// The origin's HTTP/2 connection, or its most recently used idle HTTP/1.1 one that is
    /// still open; those the server closed while idle are dropped on the way.
    fn ready(&self) -> Option<Conn> {
        let mut state = lock(&self.state);
        if let Some(sender) = &state.h2 {
            if !sender.is_closed() {
                return Some(Conn::H2(sender.clone()));
            }
            state.h2 = None;
        }
        while let Some(mut h1) = state.idle.pop() {
            // A connection the server closed while it sat idle has finished (or errored) by
            // now; polling it once also reads the close.
            if !h1.sender.is_closed() && h1.conn.as_mut().now_or_never().is_none() {
                return Some(Conn::H1(h1, true));
            }
        }
        None
    }
}

/// An exchange's error: the request back if it was never written, and hyper's error if any.
struct Unsent(Option<Request<Body>>, Option<hyper::Error>);

impl H1 {
    /// Writes the request and reads the answer, driving the connection meanwhile. `whole` is
    /// false when the body was cut at [`MAX_BODY`] (the connection is then not reused).
    async fn exchange(&mut self, request: Request<Body>) -> Result<(Answer, bool), Unsent> {
        let H1 { sender, conn, .. } = self;
        // First until the connection takes a request: if it ends or fails before that,
        // nothing was written and the request comes back.
        match with_conn(conn, sender.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Unsent(Some(request), Some(e))),
            Err(ended) => return Err(Unsent(Some(request), ended)),
        }
        // Pinned where it is made: `with_conn` holds a reference, not a copy of the future.
        let work = std::pin::pin!(async move {
            let response = sender.try_send_request(request).await.map_err(|mut e| {
                let unsent = e.take_message();
                Unsent(unsent, Some(e.into_error()))
            })?;
            read_answer(response)
                .await
                .map_err(|e| Unsent(None, Some(e)))
        });
        match with_conn(conn, work).await {
            Ok(result) => result,
            Err(ended) => Err(Unsent(None, ended)),
        }
    }
}

/// Status, `Retry-After` and at most [`MAX_BODY`] bytes of body; `whole` when the body was
/// read to its end.
async fn read_answer(response: Response<Incoming>) -> Result<(Answer, bool), hyper::Error> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut incoming = response.into_body();
    // A body that comes in one chunk (nearly all of them) is kept as it came, not copied.
    let mut first: Option<Bytes> = None;
    let mut joined = Vec::new();
    let mut whole = true;
    while let Some(frame) = incoming.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        if first.is_none() && joined.is_empty() {
            if chunk.len() >= MAX_BODY {
                first = Some(chunk.slice(..MAX_BODY));
                whole = false;
                break;
            }
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            joined.extend_from_slice(&f);
        }
        if !append_capped(&mut joined, &chunk) {
            whole = false;
            break;
        }
    }
    Ok((
        Answer {
            status,
            retry_after,
            body: first.unwrap_or_else(|| Bytes::from(joined)),
        },
        whole,
    ))
}

/// Appends `chunk` to a response body kept to [`MAX_BODY`] bytes; false once it is full (the
/// rest is not read).
fn append_capped(body: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = MAX_BODY - body.len();
    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    body.len() < MAX_BODY
}

/// Runs `work` while driving `conn`'s I/O in the same task. If the connection ends first,
/// `work` can make no more progress: `Err` with the connection's error, if it had one.
fn with_conn<F: Future>(conn: &mut Pin<Box<H1Driver>>, work: F) -> WithConn<'_, F> {
    WithConn {
        work,
        conn,
        ended: None,
    }
}

pin_project_lite::pin_project! {
    /// [`with_conn`]'s future. A struct rather than an `async fn`, which would hold `work`
    /// twice (the argument and the pinned local) in every request's state.
    struct WithConn<'a, F> {
        #[pin]
        work: F,
        conn: &'a mut Pin<Box<H1Driver>>,
        ended: Option<Result<(), hyper::Error>>,
    }
}

impl<F: Future> Future for WithConn<'_, F> {
    type Output = Result<F::Output, Option<hyper::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if this.ended.is_none() {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                // The connection handed its last answer or error to `work`: one more look.
                if let Poll::Ready(out) = this.work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(out));
                }
                *this.ended = Some(result);
            }
        }
        match this.ended.take() {
            Some(result) => Poll::Ready(Err(result.err())),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests;
