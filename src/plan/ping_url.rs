//! The `ping_url` setting's value (`run --ping URL`): the URL of a healthchecks-style
//! monitor. A ping URL is a credential: healthchecks-style services put the check's key in the
//! path (`/<uuid>`, `/<ping-key>/<slug>`), and a URL may carry a user and password or a token
//! in its query. [`PingUrl`] prints only `scheme://host[:port]/…`, whatever is asked of it.

use std::fmt;

use url::Url;

/// An `http(s)://` URL to ping. Its `Debug` and `Display` show the scheme and host only: the
/// rest is the check's key.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl(Url);

impl PingUrl {
    /// An absolute `http://` or `https://` URL with a host. The error never repeats the text
    /// (it may hold a key).
    pub fn parse(text: &str) -> Result<PingUrl, String> {
        let url = Url::parse(text.trim())
            .map_err(|e| format!("the ping URL is not an absolute URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the ping URL must be http:// or https://, not {}://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the ping URL has no host".into());
        }
        if url.fragment().is_some() {
            return Err("the ping URL has a #fragment, which is never sent".into());
        }
        Ok(PingUrl(url))
    }

    /// `URL/<suffix>`: the suffix appended to the path (one `/` between), the query kept.
    pub fn at(&self, suffix: &str) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}/{suffix}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// What may be printed of it: `scheme://host[:port]`, then `/…` for the path and query
    /// it hides, then `/suffix`.
    pub(crate) fn shown(&self, suffix: &str) -> String {
        let mut s = format!("{}://", self.0.scheme());
        if let Some(host) = self.0.host_str() {
            s.push_str(host);
        }
        if let Some(port) = self.0.port() {
            s.push_str(&format!(":{port}"));
        }
        let hidden = self.0.path() != "/"
            || self.0.query().is_some()
            || self.0.password().is_some()
            || !self.0.username().is_empty();
        if hidden {
            s.push_str("/…");
        }
        if !suffix.is_empty() {
            s.push('/');
            s.push_str(suffix);
        }
        s
    }
}

impl fmt::Display for PingUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown(""))
    }
}

impl fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PingUrl({})", self.shown(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_taken() {
        assert!(PingUrl::parse("https://hc-ping.com/5f2b").is_ok());
        assert!(PingUrl::parse("http://127.0.0.1:9/x").is_ok());
        for bad in [
            "hc-ping.com/5f2b",
            "ftp://h/x",
            "file:///tmp/x",
            "https://h/x#frag",
            "",
        ] {
            assert!(PingUrl::parse(bad).is_err(), "{bad}");
        }
        let err = PingUrl::parse("ftp://user:hunter2@h/uuid-123").unwrap_err();
        assert!(
            !err.contains("hunter2") && !err.contains("uuid-123"),
            "{err}"
        );
    }

    #[test]
    fn suffix_goes_on_the_path_and_the_query_stays() {
        let u = PingUrl::parse("https://hc-ping.com/abc/").unwrap();
        assert_eq!(u.at("start").as_str(), "https://hc-ping.com/abc/start");
        let u = PingUrl::parse("https://hc-ping.com/key/slug?create=1").unwrap();
        assert_eq!(
            u.at("0").as_str(),
            "https://hc-ping.com/key/slug/0?create=1"
        );
        let u = PingUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.at("2").as_str(), "http://127.0.0.1:8080/2");
    }

    #[test]
    fn printed_forms_hide_userinfo_path_and_query() {
        let u = PingUrl::parse("https://bob:hunter2@hc-ping.com:8443/uuid-123?token=tok9").unwrap();
        for shown in [u.to_string(), format!("{u:?}"), u.shown("start")] {
            for secret in ["bob", "hunter2", "uuid-123", "tok9"] {
                assert!(!shown.contains(secret), "{shown} shows {secret}");
            }
            assert!(shown.contains("https://hc-ping.com:8443/…"), "{shown}");
        }
        assert_eq!(u.shown("1"), "https://hc-ping.com:8443/…/1");
        let bare = PingUrl::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(bare.shown("start"), "http://127.0.0.1:9/start");
    }
}
