//! Putting a signed request on the wire. [`Transport`] is the one seam the executor has, so
//! scheduling can be tested under paused tokio time; every integration test still goes over
//! loopback HTTP to the sandbox through [`HttpTransport`].

use std::future::Future;
use std::time::Duration;

use crate::provider::SignedRequest;

use super::retry::{parse_retry_after, AttemptOutcome};

/// Response bodies are read up to this many bytes; the rest is ignored (a hostile or broken
/// server cannot make us buffer megabytes per row).
pub const MAX_BODY: usize = 64 * 1024;

pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        request: &SignedRequest,
        timeout: Duration,
    ) -> impl Future<Output = AttemptOutcome> + Send;
}

/// The `User-Agent` every request carries (also listed by `--emit`).
pub const USER_AGENT: &str = concat!("reactbatch/", env!("CARGO_PKG_VERSION"));

/// Whom HTTPS trusts, beyond the system store and the bundled web roots.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Extra CA certificates (`--ca-cert`, or the in-process sandbox's own CA).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Trust {
    /// Reads a PEM file of one or more CA certificates (`--ca-cert FILE`).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Trust, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA certificate {}: {e}", path.display()))?;
        Trust::from_pem(&pem).map_err(|e| format!("CA certificate {}: {e}", path.display()))
    }

    pub fn from_pem(pem: &[u8]) -> Result<Trust, String> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("not a PEM certificate ({e})"))?;
        if certs.is_empty() {
            return Err("holds no `-----BEGIN CERTIFICATE-----` block".into());
        }
        Ok(Trust { extra_roots: certs })
    }
}

/// reqwest over rustls; HTTP/1.1 keep-alive, no redirects (a redirect is answered as a final
/// failure, so credentials never follow one to another host).
///
/// Two clients: `proxied` honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (reqwest reads them) and
/// serves remote hosts; `direct` never uses a proxy and serves loopback hosts (the sandbox,
/// a local relay), which a corporate proxy cannot reach or should not see.
#[derive(Clone)]
pub struct HttpTransport {
    proxied: reqwest::Client,
    direct: reqwest::Client,
}

impl HttpTransport {
    pub fn new(max_idle_per_host: usize, trust: &Trust) -> Result<HttpTransport, String> {
        let build = |proxy: bool| {
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(max_idle_per_host)
                .tcp_nodelay(true)
                .user_agent(USER_AGENT)
                .http1_only();
            // Bundled web roots and the system store both (reqwest features), plus these.
            for cert in &trust.extra_roots {
                builder = builder.add_root_certificate(cert.clone());
            }
            if !proxy {
                builder = builder.no_proxy();
            }
            builder
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        Ok(HttpTransport {
            proxied: build(true)?,
            direct: build(false)?,
        })
    }
}

/// Whether `url` names a loopback host (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

impl Transport for HttpTransport {
    async fn send(&self, request: &SignedRequest, timeout: Duration) -> AttemptOutcome {
        let work = async {
            let mut builder = match parsed_url(&request.url) {
                Some(url) if is_loopback(&url) => self.direct.post(url),
                Some(url) => self.proxied.post(url),
                None => self.proxied.post(&request.url),
            };
            match header_map(&request.headers) {
                Some(map) => builder = builder.headers(map),
                None => {
                    for (name, value) in &request.headers {
                        builder = builder.header(*name, value);
                    }
                }
            }
            if let Some(key) = &request.bearer {
                builder = builder.bearer_auth(key.expose());
            }
            // The exact bytes that were hashed and signed; reqwest sends them untouched.
            let mut response = builder.body(request.body.clone()).send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            let (code, message) = if (200..300).contains(&status) {
                // Empty unless the body refuses despite the status (Ogmma `success: false`):
                // a code on a 2xx makes it a final failure.
                refusal_in_success(&body)
            } else {
                error_fields(status, &body)
            };
            Ok::<_, reqwest::Error>(AttemptOutcome::Answered {
                status,
                retry_after,
                code,
                message,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Err(_) => AttemptOutcome::Timeout,
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) if e.is_timeout() => AttemptOutcome::Timeout,
            Ok(Err(e)) => match certificate_problem(&e) {
                Some(problem) => AttemptOutcome::Refused {
                    code: "tls".into(),
                    message: format!(
                        "the server's certificate is not trusted ({problem}); if a private or \
                         corporate CA signed it, pass --ca-cert FILE (PEM) or set \
                         `settings: ca_cert:`"
                    ),
                },
                None => AttemptOutcome::Connection(describe(&e)),
            },
        }
    }
}

/// `url` parsed, from a per-thread cache of the last one: every row of a target has the same
/// URL, and parsing it (with IDNA) for each request showed in profiles.
/// `None` when it does not parse: the caller then lets reqwest report the error as before.
fn parsed_url(url: &str) -> Option<reqwest::Url> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, reqwest::Url)>> = const { std::cell::RefCell::new(None) };
    }
    let cached = LAST.with_borrow(|last| match last {
        Some((text, parsed)) if text == url => Some(parsed.clone()),
        _ => None,
    });
    if cached.is_some() {
        return cached;
    }
    // The parse `Client::post(&str)` does.
    let parsed = reqwest::Url::parse(url).ok()?;
    LAST.with_borrow_mut(|last| *last = Some((url.to_string(), parsed.clone())));
    Some(parsed)
}

/// The request's headers, with the names we send known in advance (no parsing per request).
/// `None` if one does not convert: the caller then adds them one by one as before, so the
/// error is reqwest's.
fn header_map(headers: &[(&'static str, String)]) -> Option<reqwest::header::HeaderMap> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, DATE};
    let mut map = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let name = match *name {
            "Date" => DATE,
            "Content-Type" => CONTENT_TYPE,
            "Content-MD5" => HeaderName::from_static("content-md5"),
            "X-Signature" => HeaderName::from_static("x-signature"),
            "Accept" => reqwest::header::ACCEPT,
            other => HeaderName::from_bytes(other.as_bytes()).ok()?,
        };
        map.append(name, HeaderValue::from_str(value).ok()?);
    }
    Some(map)
}

/// The certificate problem behind a transport error, if that is what it is: retrying cannot
/// fix it, the user's trust settings can.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    use tokio_rustls::rustls::Error as TlsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        match s.downcast_ref::<TlsError>() {
            Some(
                err @ (TlsError::InvalidCertificate(_)
                | TlsError::NoCertificatesPresented
                | TlsError::UnsupportedNameType),
            ) => return Some(one_line(&err.to_string(), 200)),
            Some(_) => return None,
            None => {}
        }
        // rustls errors arrive wrapped in io::Errors (two deep), whose `source()` skips the
        // wrapped error: step into it instead.
        source = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}

/// Code and message of a 2xx body that says the request was not done: a JSON object with
/// `"success": false` (Ogmma), with its `code`/`message` or `success_false`. Empty otherwise.
pub fn refusal_in_success(body: &[u8]) -> (String, String) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return (String::new(), String::new());
    };
    if map.get("success") != Some(&serde_json::Value::Bool(false)) {
        return (String::new(), String::new());
    }
    let text = |k: &str| {
        map.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| one_line(s, 300))
    };
    (
        text("code").unwrap_or_else(|| "success_false".into()),
        text("message").unwrap_or_else(|| "the provider answered success: false".into()),
    )
}

/// The innermost cause of a transport error, in one line.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    one_line(&text, 200)
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat.to_string(),
    }
}

/// The provider's error code and message from a JSON body (`code`/`error` and
/// `message`/`detail`), else `http_<status>` and the body's first line.
pub fn error_fields(status: u16, body: &[u8]) -> (String, String) {
    let fallback_code = format!("http_{status}");
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = |k: &str| {
            map.get(k)
                .and_then(|v| v.as_str())
                .map(|s| one_line(s, 300))
        };
        let code = text("code")
            .or_else(|| text("error"))
            .unwrap_or(fallback_code);
        let message = text("message")
            .or_else(|| text("detail"))
            .unwrap_or_default();
        return (code, message);
    }
    (fallback_code, one_line(&String::from_utf8_lossy(body), 300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_false_is_a_refusal_with_the_body_code() {
        assert_eq!(
            refusal_in_success(br#"{"success":true,"message":"Reacao processada"}"#),
            (String::new(), String::new())
        );
        assert_eq!(
            refusal_in_success(br#"{"success":false,"code":"X","message":"no"}"#),
            ("X".into(), "no".into())
        );
        assert_eq!(
            refusal_in_success(br#"{"success":false}"#).0,
            "success_false"
        );
        assert_eq!(refusal_in_success(b"ok").0, "");
    }

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
            let parsed = reqwest::Url::parse(url).expect("url");
            assert_eq!(is_loopback(&parsed), want, "{url}");
        }
    }

    #[test]
    fn error_fields_reads_provider_json_or_falls_back() {
        let body = br#"{"message":"Mensagem nao encontrada.","code":"MESSAGE_NOT_FOUND"}"#;
        assert_eq!(
            error_fields(404, body),
            (
                "MESSAGE_NOT_FOUND".into(),
                "Mensagem nao encontrada.".into()
            )
        );
        assert_eq!(
            error_fields(502, b"<html>\nbad gateway"),
            ("http_502".into(), "<html> bad gateway".into())
        );
    }
}
