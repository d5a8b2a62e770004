//! Opening a connection to an origin: TCP with `TCP_NODELAY`, rustls for HTTPS (ALPN offers
//! `h2` and `http/1.1`), directly or through the proxy the environment names. A plain-HTTP
//! origin behind a proxy is reached by a connection to the proxy (its requests then go in
//! absolute form); an HTTPS one through a CONNECT tunnel, with TLS to the origin inside it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A byte stream a connection runs on: TCP, TLS over TCP, or TLS inside a tunnel.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(super) type BoxIo = Box<dyn Io>;

/// Where a connection goes and how: the pool keeps connections per origin, so two routes to
/// one host (say, after `NO_PROXY` changed nothing but the route) never share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub(super) https: bool,
    pub(super) host: url::Host<String>,
    pub(super) port: u16,
    pub(super) route: Route,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Route {
    Direct,
    /// Plain HTTP through a proxy: the connection is to the proxy, requests in absolute form.
    Forward(Proxy),
    /// HTTPS through a proxy: CONNECT, then TLS with the origin.
    Tunnel(Proxy),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Proxy {
    pub(super) uri: Uri,
    /// `Proxy-Authorization`, from the user and password in the proxy's URL.
    pub(super) auth: Option<HeaderValue>,
}

impl Origin {
    /// Whether connections here speak TLS: to an HTTPS origin, or to an HTTPS proxy.
    pub(super) fn needs_tls(&self) -> bool {
        let https_proxy = |p: &Proxy| p.uri.scheme_str() == Some("https");
        self.https
            || match &self.route {
                Route::Direct => false,
                Route::Forward(p) | Route::Tunnel(p) => https_proxy(p),
            }
    }

    /// `None` for a URL that is neither http nor https or names no host.
    pub(super) fn of(url: &url::Url, proxies: &Matcher) -> Option<Origin> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(Origin {
            https,
            host: url.host()?.to_owned(),
            port: url.port_or_known_default()?,
            route: route(url, https, proxies),
        })
    }
}

/// The route to `url`: direct for loopback hosts (a corporate proxy cannot reach the sandbox
/// or a local relay, or should not see them) and for what the environment does not proxy.
fn route(url: &url::Url, https: bool, proxies: &Matcher) -> Route {
    if is_loopback(url) {
        return Route::Direct;
    }
    let Ok(uri) = url.as_str().parse::<Uri>() else {
        return Route::Direct;
    };
    match proxies.intercept(&uri) {
        None => Route::Direct,
        Some(intercept) => {
            let proxy = Proxy {
                uri: intercept.uri().clone(),
                auth: intercept.basic_auth().cloned().map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            };
            if https {
                Route::Tunnel(proxy)
            } else {
                Route::Forward(proxy)
            }
        }
    }
}

/// Whether `url` names a loopback host (`127.0.0.0/8`, `::1`, `localhost`).
pub(super) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// The run's TLS client configurations, built once: the bundled web roots, the system store
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set) and the extra roots of `--ca-cert`.
pub(super) struct Tls {
    extra_roots: Vec<CertificateDer<'static>>,
    built: tokio::sync::OnceCell<Result<Connectors, String>>,
}

#[derive(Clone)]
struct Connectors {
    /// To origins: ALPN `h2`, then `http/1.1`.
    origin: TlsConnector,
    /// To an HTTPS proxy, which is spoken to in HTTP/1.1 only.
    proxy: TlsConnector,
}

impl Tls {
    pub(super) fn new(extra_roots: Vec<CertificateDer<'static>>) -> Tls {
        Tls {
            extra_roots,
            built: tokio::sync::OnceCell::new(),
        }
    }

    /// Builds the configurations now, off the runtime's workers: loading the system store
    /// (every file of `SSL_CERT_DIR` when set) takes tens of milliseconds.
    pub(super) async fn ready(&self) -> Result<(), String> {
        self.connectors().await.map(|_| ())
    }

    #[cfg(test)]
    pub(super) fn is_built(&self) -> bool {
        self.built.initialized()
    }

    async fn connectors(&self) -> Result<&Connectors, String> {
        let built = self
            .built
            .get_or_init(|| async {
                let roots = self.extra_roots.clone();
                tokio::task::spawn_blocking(move || connectors(&roots))
                    .await
                    .unwrap_or_else(|e| Err(format!("cannot set up TLS: {e}")))
            })
            .await;
        built.as_ref().map_err(Clone::clone)
    }
}

fn connectors(extra_roots: &[CertificateDer<'static>]) -> Result<Connectors, String> {
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped: the bundled roots still stand.
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
    let proxy = TlsConnector::from(Arc::new(config.clone()));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Connectors {
        origin: TlsConnector::from(Arc::new(config)),
        proxy,
    })
}

/// An open byte stream to an origin, and whether it speaks HTTP/2 (ALPN chose `h2`).
pub(super) struct Connected {
    pub(super) io: BoxIo,
    pub(super) h2: bool,
}

/// Opens a connection to `origin` (DNS, TCP, the proxy's tunnel, TLS). Every error is an
/// `io::Error` whose chain holds the cause (a rustls error for a TLS failure).
pub(super) async fn connect(origin: &Origin, tls: &Tls) -> std::io::Result<Connected> {
    match &origin.route {
        Route::Direct => {
            let tcp = tcp(&origin.host, origin.port).await?;
            if origin.https {
                secure(tcp, &origin.host, tls).await
            } else {
                Ok(Connected {
                    io: Box::new(tcp),
                    h2: false,
                })
            }
        }
        Route::Forward(proxy) => Ok(Connected {
            io: to_proxy(&proxy.uri, tls).await?,
            h2: false,
        }),
        Route::Tunnel(proxy) => {
            let dialer = Dialer {
                proxy_tls: proxy_tls(&proxy.uri, tls).await?,
            };
            let mut tunnel = Tunnel::new(proxy.uri.clone(), dialer);
            if let Some(auth) = &proxy.auth {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let dst = format!("https://{}:{}", authority_host(&origin.host), origin.port)
                .parse::<Uri>()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let io = tower_service::Service::call(&mut tunnel, dst)
                .await
                .map_err(|e| std::io::Error::other(format!("proxy tunnel: {e:?}")))?;
            secure(io.into_inner(), &origin.host, tls).await
        }
    }
}

/// `host` as a URL's authority writes it (an IPv6 address in brackets).
fn authority_host(host: &url::Host<String>) -> String {
    match host {
        url::Host::Ipv6(ip) => format!("[{ip}]"),
        other => other.to_string(),
    }
}

async fn tcp(host: &url::Host<String>, port: u16) -> std::io::Result<TcpStream> {
    let tcp = match host {
        url::Host::Ipv4(ip) => TcpStream::connect((*ip, port)).await,
        url::Host::Ipv6(ip) => TcpStream::connect((*ip, port)).await,
        url::Host::Domain(name) => TcpStream::connect((name.as_str(), port)).await,
    }?;
    // Small request/response pairs on keep-alive: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// TLS with `host` over `io`, offering HTTP/2.
async fn secure<S>(io: S, host: &url::Host<String>, tls: &Tls) -> std::io::Result<Connected>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let name = server_name(host)?;
    let connector = tls.connectors().await.map_err(std::io::Error::other)?;
    let stream = connector.origin.connect(name, io).await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(Connected {
        io: Box::new(stream),
        h2,
    })
}

fn server_name(host: &url::Host<String>) -> std::io::Result<ServerName<'static>> {
    match host {
        url::Host::Ipv4(ip) => Ok(ServerName::IpAddress((*ip).into())),
        url::Host::Ipv6(ip) => Ok(ServerName::IpAddress((*ip).into())),
        url::Host::Domain(name) => ServerName::try_from(name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
    }
}

/// The TLS client for a proxy named by an `https://` URL, `None` for an `http://` one.
async fn proxy_tls(proxy: &Uri, tls: &Tls) -> std::io::Result<Option<TlsConnector>> {
    match proxy.scheme_str() {
        Some("https") => {
            let connectors = tls.connectors().await.map_err(std::io::Error::other)?;
            Ok(Some(connectors.proxy.clone()))
        }
        Some("http") | None => Ok(None),
        Some(other) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("proxy scheme {other}:// is not supported (http:// and https:// are)"),
        )),
    }
}

/// A connection to the proxy itself (TLS to it for an `https://` proxy).
async fn to_proxy(proxy: &Uri, tls: &Tls) -> std::io::Result<BoxIo> {
    let proxy_tls = proxy_tls(proxy, tls).await?;
    dial_proxy(proxy.clone(), proxy_tls).await
}

async fn dial_proxy(proxy: Uri, proxy_tls: Option<TlsConnector>) -> std::io::Result<BoxIo> {
    let invalid = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the proxy URL {proxy} names no host"),
        )
    };
    let host_text = proxy.host().ok_or_else(invalid)?;
    let host = url::Host::parse(host_text.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|_| invalid())?;
    let https = proxy_tls.is_some();
    let port = proxy.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tcp(&host, port).await?;
    match proxy_tls {
        Some(connector) => Ok(Box::new(connector.connect(server_name(&host)?, tcp).await?)),
        None => Ok(Box::new(tcp)),
    }
}

/// What the CONNECT tunnel runs on: a connection to the proxy.
#[derive(Clone)]
struct Dialer {
    proxy_tls: Option<TlsConnector>,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<BoxIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<BoxIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, proxy: Uri) -> Self::Future {
        let proxy_tls = self.proxy_tls.clone();
        Box::pin(async move { dial_proxy(proxy, proxy_tls).await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for (url, want) in [
            ("http://127.0.0.1:9/x", true),
            ("https://127.1.2.3/x", true),
            ("http://[::1]:8/x", true),
            ("http://localhost:8/x", true),
            ("https://amojo.kommo.com/x", false),
            ("https://10.0.0.1/x", false),
        ] {
            let parsed = url::Url::parse(url).expect("url");
            assert_eq!(is_loopback(&parsed), want, "{url}");
        }
    }

    /// Plain HTTP behind a proxy is forwarded, HTTPS tunnelled, loopback and `NO_PROXY`
    /// hosts go direct, and a proxy's user and password become `Proxy-Authorization`.
    #[test]
    fn routes_follow_the_proxy_settings() {
        let proxies = Matcher::builder()
            .all("http://user:pass@proxy.example:3128")
            .no("internal.example")
            .build();
        let origin = |url: &str| {
            Origin::of(&url::Url::parse(url).expect("url"), &proxies)
                .expect("origin")
                .route
        };
        match origin("http://api.example/x") {
            Route::Forward(p) => {
                assert_eq!(p.uri.host(), Some("proxy.example"));
                assert_eq!(p.uri.port_u16(), Some(3128));
                assert_eq!(
                    p.auth.as_ref().and_then(|v| v.to_str().ok()),
                    Some("Basic dXNlcjpwYXNz")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(origin("https://api.example/x"), Route::Tunnel(_)));
        assert_eq!(origin("https://internal.example/x"), Route::Direct);
        assert_eq!(origin("https://127.0.0.1:8443/x"), Route::Direct);
        assert_eq!(origin("http://localhost:8/x"), Route::Direct);
        let none = Matcher::builder().build();
        let direct = Origin::of(
            &url::Url::parse("https://api.example/").expect("url"),
            &none,
        );
        assert_eq!(direct.map(|o| o.route), Some(Route::Direct));
    }
}
