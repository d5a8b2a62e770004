//! One sender's own HTTP/1.1 keep-alive connections, driven in the sender's task.
//!
//! A [`Link`] is a hyper `client::conn::http1` connection (plain TCP or rustls) that belongs to
//! exactly one of a lane's senders. The connection's I/O is polled by the sender itself while it
//! waits for its answer ([`with_conn`]) instead of by a background task, so a request costs no
//! wake-up of another task and no hand-off between threads: the sender writes the request,
//! reads the answer and goes on (what a dedicated load generator such as oha does). Profiles of
//! the pooled client showed its request future and its connection task waking each other
//! through futexes on every request.
//!
//! A connection the server closed while idle is noticed before it is used; a request that a
//! reused connection would not take (closed between the check and the write) goes once more
//! on a fresh one, as pooled clients do. A request that was written is never sent again here:
//! whether to retry it is the executor's decision, and it counts as an attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::transport::append_capped;

/// Where a connection goes: scheme, host and port of a request's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    https: bool,
    host: url::Host<String>,
    port: u16,
}

impl Origin {
    /// `None` for a URL that is neither http nor https or names no host.
    pub(super) fn of(url: &url::Url) -> Option<Origin> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(Origin {
            https,
            host: url.host()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

/// A byte stream a connection runs on: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Conn = http1::Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>;

/// One open connection.
struct Link {
    origin: Origin,
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<Conn>>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum LinkError {
    /// Connecting (DNS, TCP, TLS handshake).
    Connect(std::io::Error),
    /// HTTP on an open connection.
    Http(hyper::Error),
    /// The connection ended before the answer was complete.
    Closed(Option<hyper::Error>),
}

impl LinkError {
    /// The error to look into for a cause (an untrusted certificate, a refused connection).
    pub(super) fn source_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Connect(e) => Some(e),
            LinkError::Http(e) | LinkError::Closed(Some(e)) => Some(e),
            LinkError::Closed(None) => None,
        }
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "{e}"),
            LinkError::Http(e) => write!(f, "{e}"),
            LinkError::Closed(Some(e)) => write!(f, "connection closed before the answer: {e}"),
            LinkError::Closed(None) => write!(f, "connection closed before the answer"),
        }
    }
}

/// What came back.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) retry_after: Option<String>,
    /// At most [`MAX_BODY`](super::transport::MAX_BODY) bytes.
    pub(super) body: Vec<u8>,
}

/// A sender's connections (a lane's targets may live on more than one host), a few at most.
#[derive(Default)]
pub struct Links {
    open: Vec<Link>,
}

/// Connections a sender keeps to different origins; beyond this the oldest is closed.
const MAX_ORIGINS: usize = 4;

impl Links {
    /// Sends `request` to `origin` on this sender's connection there, opening one if needed.
    pub(super) async fn exchange(
        &mut self,
        origin: &Origin,
        tls: &Tls,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Answer, LinkError> {
        let (mut link, reused) = match self.take(origin) {
            Some(link) => (link, true),
            // Boxed: the connect and TLS handshake state is large and needed once per
            // connection; inline, every request's future would carry (and move) it.
            None => (Box::pin(connect(origin, tls)).await?, false),
        };
        let result = match link.exchange(request).await {
            // Never written: the server had closed the reused connection. Once more, fresh.
            Err(Failed {
                unsent: Some(request),
                ..
            }) if reused => {
                link = Box::pin(connect(origin, tls)).await?;
                link.exchange(request).await
            }
            other => other,
        };
        // A connection that failed a request, or whose answer was cut short, is not used again.
        let (answer, whole) = result.map_err(|f| f.error)?;
        if whole && !link.sender.is_closed() {
            self.put(link);
        }
        Ok(answer)
    }

    /// The open connection to `origin`, if it is still usable.
    fn take(&mut self, origin: &Origin) -> Option<Link> {
        let i = self.open.iter().position(|l| &l.origin == origin)?;
        let mut link = self.open.swap_remove(i);
        // A connection the server closed while it sat idle has finished (or errored) by now;
        // polling it once also reads the close.
        if link.sender.is_closed() || (&mut link.conn).now_or_never().is_some() {
            return None;
        }
        Some(link)
    }

    fn put(&mut self, link: Link) {
        if self.open.len() >= MAX_ORIGINS {
            self.open.remove(0);
        }
        self.open.push(link);
    }
}

/// An exchange's error, and the request back if it was never written.
struct Failed {
    error: LinkError,
    /// The connection would not take the request (on a reused connection: the server had
    /// closed it between two requests). Nothing reached the server, so it may go again.
    unsent: Option<hyper::Request<Full<Bytes>>>,
}

impl Link {
    /// Writes the request and reads the answer, driving the connection meanwhile. `whole` is
    /// false when the body was cut at [`MAX_BODY`](super::transport::MAX_BODY) (the connection is then not reused).
    async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(Answer, bool), Failed> {
        let Link { sender, conn, .. } = self;
        // First until the connection takes a request: if it ends or fails before that,
        // nothing was written and the request comes back.
        match with_conn(conn, sender.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failed {
                    error: LinkError::Http(e),
                    unsent: Some(request),
                })
            }
            Err(ended) => {
                return Err(Failed {
                    error: LinkError::Closed(ended),
                    unsent: Some(request),
                })
            }
        }
        let work = async move {
            let response = sender.try_send_request(request).await.map_err(|mut e| {
                let unsent = e.take_message();
                Failed {
                    error: LinkError::Http(e.into_error()),
                    unsent,
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut incoming = response.into_body();
            let mut body = Vec::new();
            let mut whole = true;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| Failed {
                    error: LinkError::Http(e),
                    unsent: None,
                })?;
                if let Ok(chunk) = frame.into_data() {
                    if !append_capped(&mut body, &chunk) {
                        whole = false;
                        break;
                    }
                }
            }
            Ok((
                Answer {
                    status,
                    retry_after,
                    body,
                },
                whole,
            ))
        };
        match with_conn(conn, work).await {
            Ok(result) => result,
            Err(ended) => Err(Failed {
                error: LinkError::Closed(ended),
                unsent: None,
            }),
        }
    }
}

/// Runs `work` while driving `conn`'s I/O in the same task. If the connection ends first,
/// `work` can make no more progress: `Err` with the connection's error, if it had one.
fn with_conn<F: Future>(conn: &mut Pin<Box<Conn>>, work: F) -> WithConn<'_, F> {
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
        conn: &'a mut Pin<Box<Conn>>,
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

/// Opens a connection to `origin`: TCP with `TCP_NODELAY`, then TLS for https.
async fn connect(origin: &Origin, tls: &Tls) -> Result<Link, LinkError> {
    let failed = LinkError::Connect;
    let tcp = match &origin.host {
        url::Host::Ipv4(ip) => TcpStream::connect((*ip, origin.port)).await,
        url::Host::Ipv6(ip) => TcpStream::connect((*ip, origin.port)).await,
        url::Host::Domain(name) => TcpStream::connect((name.as_str(), origin.port)).await,
    }
    .map_err(failed)?;
    // Small request/response pairs on keep-alive: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if origin.https {
        let name = match &origin.host {
            url::Host::Ipv4(ip) => ServerName::IpAddress((*ip).into()),
            url::Host::Ipv6(ip) => ServerName::IpAddress((*ip).into()),
            url::Host::Domain(name) => ServerName::try_from(name.clone())
                .map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?,
        };
        let connector = tls.connector().await?;
        Box::new(connector.connect(name, tcp).await.map_err(failed)?)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(LinkError::Http)?;
    Ok(Link {
        origin: origin.clone(),
        sender,
        conn: Box::pin(conn),
    })
}

/// The TLS client every https connection uses, built at the first one: loading the system
/// store (every file of `SSL_CERT_DIR` when it is set) took tens of milliseconds before the
/// first request, which a run to http targets (the sandbox) never needs.
pub(super) struct Tls {
    extra_roots: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    connector: tokio::sync::OnceCell<Result<TlsConnector, String>>,
}

impl Tls {
    pub(super) fn new(
        extra_roots: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    ) -> Tls {
        Tls {
            extra_roots,
            connector: tokio::sync::OnceCell::new(),
        }
    }

    async fn connector(&self) -> Result<&TlsConnector, LinkError> {
        let built = self
            .connector
            .get_or_init(|| async {
                let roots = self.extra_roots.clone();
                // Reading and parsing certificate files: not on a runtime worker.
                tokio::task::spawn_blocking(move || tls_connector(&roots))
                    .await
                    .unwrap_or_else(|e| Err(format!("cannot set up TLS: {e}")))
            })
            .await;
        built
            .as_ref()
            .map_err(|e| LinkError::Connect(std::io::Error::other(e.clone())))
    }
}

/// The TLS client every connection uses: the bundled web roots, the system store
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set) and the extra roots given, HTTP/1.1 only.
fn tls_connector(
    extra_roots: &[tokio_rustls::rustls::pki_types::CertificateDer<'static>],
) -> Result<TlsConnector, String> {
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped, as the pooled client did: the bundled
    // roots still stand.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
    }
    // An explicit provider: the process may hold more than one rustls backend.
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
