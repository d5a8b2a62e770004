//! `run --ping URL` (setting `ping_url`): a healthchecks-style monitor told that a live run
//! started and how it ended. `URL/start` once sending starts, `URL/<exit code>` at the end
//! (0: success) with the summary's first line as the body; a run refused before sending pings
//! `URL/<exit code>` alone (2 for an invalid plan). A ping is a side channel: one that fails,
//! is refused or takes over [`PING_TIMEOUT`] is a warning and never changes the run.
//!
//! A ping URL is a credential ([`PingUrl`] never prints it whole), and so are the errors here:
//! none names more of the URL than its origin.

use std::time::Duration;

use url::Url;

pub use crate::plan::PingUrl;

/// The most a ping may take, connecting included; past it the ping is given up with a
/// warning, and the run goes on (or ends) as it would have.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Pings `URL/<suffix>` with `body`, within [`PING_TIMEOUT`]; a warning (never printing the
/// URL whole) when it fails or the monitor does not answer 2xx.
pub async fn ping(url: &PingUrl, suffix: &str, body: String) {
    if let Err(why) = try_ping(url, suffix, body).await {
        crate::outputs::log::warn(&format!(
            "reactbatch run: ping {} failed: {why}; the run's outcome is unchanged",
            url.shown(suffix)
        ));
    }
}

/// [`ping`], the failure returned instead of printed.
pub async fn try_ping(url: &PingUrl, suffix: &str, body: String) -> Result<(), String> {
    let target = url.at(suffix);
    // The cap is this one: the request's own timeout is set past it, so a silent monitor is
    // told as one plain "no answer" whatever the stack would have said.
    let request = send("POST", &target, body, PING_TIMEOUT + Duration::from_secs(1));
    let sent = tokio::time::timeout(PING_TIMEOUT, request);
    match sent.await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("the monitor answered HTTP {status}")),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!("no answer within {}s", PING_TIMEOUT.as_secs())),
    }
}

/// The one HTTP request a ping makes: `method url` with `body`, answered within `timeout`;
/// the response status, or why there is none. It goes through the run's own HTTP stack
/// (proxies from the environment, loopback reached directly); the URL's userinfo becomes a
/// Basic `Authorization` header and is not sent in the URL. The error never holds the URL.
pub async fn send(method: &str, url: &Url, body: String, timeout: Duration) -> Result<u16, String> {
    use base64::Engine as _;
    use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut bare = url.clone();
    if !url.username().is_empty() || url.password().is_some() {
        let user = percent_decoded(url.username());
        let password = url.password().map(percent_decoded).unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| "the URL's credentials cannot be sent".to_string())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
        // Neither fails on an http(s) URL with a host, which is all a ping URL can be.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
    }
    crate::executor::transport::request_once(
        method,
        bare.as_str(),
        headers,
        bytes::Bytes::from(body),
        timeout,
    )
    .await
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}
