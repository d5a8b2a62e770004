//! The audit trail of signed requests (`--emit`): one JSON object a line, or runnable curl
//! commands. Secrets never appear: the Ogmma key is shown as `Bearer (redacted)` in JSON and as
//! a `$VAR` reference in curl, so the command still runs where the variable is set.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use crate::json;
use crate::plan::EmitFormat;
use crate::provider::{header_text, SignedRequest, USER_AGENT};
use crate::secret::SecretRef;

/// How long Kommo accepts a signed request after the `Date` it carries: a curl script must
/// reach its last Kommo request within this of being written.
pub(crate) const KOMMO_SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What one script should take at most when the run suggests splitting it: below
/// [`KOMMO_SIGNATURE_LIFETIME`], as shards are not exactly even and the script is run a little
/// after it is written.
const SPLIT_TARGET: Duration = Duration::from_secs(12 * 60);

/// The format `--emit PATH` writes when neither `--emit-format` nor `settings.emit_format`
/// says: `.sh` a curl script, anything else (`.jsonl`, `.json`, …) JSON Lines.
pub(crate) fn format_for_path(path: &Path) -> EmitFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("sh") => EmitFormat::Curl,
        _ => EmitFormat::Jsonl,
    }
}

/// A curl script's pauses: each request is followed by its lane's interval, one request after
/// another. `lanes`: per pace group, the requests the script holds and the interval.
pub(crate) fn curl_sleeps(lanes: impl IntoIterator<Item = (u64, Option<Duration>)>) -> Duration {
    lanes
        .into_iter()
        .filter_map(|(requests, interval)| {
            Some(interval?.saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX)))
        })
        .fold(Duration::ZERO, Duration::saturating_add)
}

/// Refuses a curl script with Kommo requests whose pauses add up to more than a signature
/// lives: its last requests would be refused when it runs. (Refused rather than written in
/// parts: a part written now would still expire before its turn came.) The error says how to
/// split the plan into scripts that each fit.
pub(crate) fn check_curl_span(sleeps: Duration, has_kommo: bool, rate: &str) -> Result<(), String> {
    if !has_kommo || sleeps <= KOMMO_SIGNATURE_LIFETIME {
        return Ok(());
    }
    let parts = sleeps.as_secs().div_ceil(SPLIT_TARGET.as_secs()).max(2);
    Err(format!(
        "the curl script's pauses add up to {}, past the 15 minutes a Kommo signature is valid: \
         its last requests would be refused. Write one script per shard, each run as soon as it \
         is written: --shard 1/{parts} --rate {rate} … --shard {parts}/{parts} --rate {rate} (--rate \
         keeps each shard at the full pace, as they run one after another); or emit a smaller \
         plan, or JSON Lines (--emit-format jsonl)",
        crate::outputs::audit::human_ms(sleeps.as_millis() as u64)
    ))
}

/// One request as it goes (or would go) on the wire.
pub(crate) struct EmitRecord<'a> {
    pub row: u64,
    pub attempt: u32,
    pub request: &'a SignedRequest,
    /// Where the bearer key comes from, for curl's `$VAR`.
    pub credential: &'a SecretRef,
    /// The target's pace (time between two of its requests); the curl script sleeps this long
    /// after each request, so running it never goes faster than the run would.
    pub pace: Option<Duration>,
}

/// The `Host` header for `url`: host, and the port when it is not the scheme's default.
fn host_header(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The `url` member and the start of `headers` up to and including the `Host` entry, for
/// one URL: the same on every row of a target.
struct UrlPart {
    url: String,
    json: Vec<u8>,
}

thread_local! {
    /// The last URL rendered on this thread: rows of a target share their URL, so `Host` is
    /// parsed out of it (the `url` crate, IDNA) and escaped once, not on every record.
    static LAST_URL: std::cell::RefCell<UrlPart> =
        const { std::cell::RefCell::new(UrlPart { url: String::new(), json: Vec::new() }) };
}

/// Appends `,"url":"…","headers":{"Host":"…",` for `url` (no `Host` entry when the URL has
/// no host), from the thread's cache when the URL is the last one seen.
fn push_url_part(url: &str, out: &mut Vec<u8>) {
    LAST_URL.with(|cell| {
        let mut last = cell.borrow_mut();
        if last.url != url || last.json.is_empty() {
            let mut json = Vec::with_capacity(url.len() + 64);
            json.extend_from_slice(b",\"url\":");
            json::push_str(url, &mut json);
            json.extend_from_slice(b",\"headers\":{");
            if let Some(host) = host_header(url) {
                push_entry("Host", &host, &mut json);
            }
            *last = UrlPart {
                url: url.to_string(),
                json,
            };
        }
        out.extend_from_slice(&last.json);
    });
}

/// Appends `"name":"value",` (JSON-escaped). The object's last entry is written without the
/// comma by the caller.
fn push_entry(name: &str, value: &str, out: &mut Vec<u8>) {
    json::push_str(name, out);
    out.push(b':');
    json::push_str(value, out);
    out.push(b',');
}

/// Renders one record as a JSON line (without the newline): `row`, `attempt`, `method`, `url`,
/// `headers` (every header the request carries on the wire: `Host` from the URL, the signed
/// ones, the bearer redacted, and the two the HTTP client adds, `User-Agent` and
/// `Content-Length`) and `body`. Written by hand, byte for byte what `serde_json` made of the
/// same record (see the tests): a record is rendered on every row of a dry run with `--emit`,
/// and the writer should cost little next to signing.
pub(crate) fn to_json_line(rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
    let r = rec.request;
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"row\":");
    out.extend_from_slice(n.format(rec.row).as_bytes());
    out.extend_from_slice(b",\"attempt\":");
    out.extend_from_slice(n.format(rec.attempt).as_bytes());
    out.extend_from_slice(b",\"method\":");
    json::push_str(r.method, out);
    push_url_part(&r.url, out);
    for (name, value) in &r.headers {
        push_entry(name, header_text(value), out);
    }
    if r.bearer.is_some() {
        out.extend_from_slice(b"\"Authorization\":\"Bearer (redacted)\",");
    }
    push_entry("User-Agent", USER_AGENT, out);
    out.extend_from_slice(b"\"Content-Length\":\"");
    out.extend_from_slice(n.format(r.body.len()).as_bytes());
    out.extend_from_slice(b"\"},\"body\":");
    // Bodies are built from validated strings, so UTF-8 (checked faster than lossily).
    match std::str::from_utf8(&r.body) {
        Ok(body) => json::push_str(body, out),
        Err(_) => json::push_str(&String::from_utf8_lossy(&r.body), out),
    }
    out.push(b'}');
}

/// Quotes a string for POSIX shells: `'...'` with embedded `'` as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Renders one record as runnable shell: a label naming the row, the curl command (failing on
/// an HTTP error, with the response body and a newline), and the pause that keeps the target's
/// pace. Retries are not rendered: the script replays first attempts only.
pub(crate) fn to_curl(rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
    if rec.attempt > 1 {
        return;
    }
    let r = rec.request;
    let mut cmd = format!(
        "# row {row}\nprintf '%s' 'row {row}: '\ncurl -sS --fail-with-body -w '\\n' -A {} -X {} {}",
        shell_quote(USER_AGENT),
        r.method,
        shell_quote(&r.url),
        row = rec.row,
    );
    for (name, value) in &r.headers {
        cmd.push_str(" -H ");
        cmd.push_str(&shell_quote(&format!("{name}: {}", header_text(value))));
    }
    if r.bearer.is_some() {
        // Double quotes so the shell expands the reference; the reference is a plain
        // variable name or a path we quote inside `$(cat '...')`.
        cmd.push_str(&format!(
            " -H \"Authorization: Bearer {}\"",
            rec.credential.shell_expr()
        ));
    }
    cmd.push_str(" --data-binary ");
    cmd.push_str(&shell_quote(&String::from_utf8_lossy(&r.body)));
    if let Some(pace) = rec.pace.filter(|p| !p.is_zero()) {
        cmd.push_str(&format!("\nsleep {:.3}", pace.as_secs_f64()));
    }
    cmd.push('\n');
    out.extend_from_slice(cmd.as_bytes());
}

/// The start of a curl script: strict mode, the expiry warning, and a check for each
/// credential the requests read, so a missing one stops the script before it sends anything.
fn curl_prologue(credentials: &[SecretRef]) -> String {
    let mut text = String::from(
        "#!/usr/bin/env bash\n\
         # Requests written by reactbatch (first attempts only, in the order they were signed).\n\
         # Kommo signatures expire 15 minutes after the Date each request carries (the clock of\n\
         # the run that wrote this file): run it within 15 minutes, or write it again.\n\
         # Stops at the first request that is refused (curl --fail-with-body), printing its answer.\n\
         set -eu\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for credential in credentials {
        if !seen.insert(credential.to_string()) {
            continue;
        }
        match credential {
            SecretRef::Env(name) => text.push_str(&format!(
                ": \"${{{name}:?is not set: export it (the Ogmma API key) before running this script}}\"\n"
            )),
            SecretRef::File(path) => {
                // The same absolute path the commands' `$(cat '...')` reads.
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let quoted = shell_quote(&path.display().to_string());
                text.push_str(&format!(
                    "[ -r {quoted} ] || {{ echo 'cannot read the Ogmma API key file '{quoted} >&2; exit 1; }}\n"
                ));
            }
        }
    }
    text
}

/// Appends emit records to a file as they happen.
pub(crate) struct EmitWriter {
    out: BufWriter<File>,
}

impl EmitWriter {
    /// Creates (or truncates) the file. `credentials` are the bearer keys the requests read
    /// (the curl script checks each is set before sending anything); a curl script is made
    /// executable (0755).
    pub(crate) fn create(
        path: &Path,
        format: EmitFormat,
        credentials: &[SecretRef],
    ) -> io::Result<EmitWriter> {
        let file = File::create(path)?;
        if format == EmitFormat::Curl {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        if format == EmitFormat::Curl {
            out.write_all(curl_prologue(credentials).as_bytes())?;
        }
        Ok(EmitWriter { out })
    }

    /// Writes an already rendered record (see [`EmitWriter::render`]).
    pub(crate) fn write_raw(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)
    }

    /// Appends a rendered record with its newline to `out` (nothing for a curl retry).
    pub(crate) fn render_into(format: EmitFormat, rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
        match format {
            EmitFormat::Jsonl => {
                to_json_line(rec, out);
                out.push(b'\n');
            }
            EmitFormat::Curl => to_curl(rec, out),
        }
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use hyper::header::HeaderValue;
    use serde::ser::{SerializeMap, Serializer};
    use serde::Serialize;

    use crate::secret::Secret;

    /// The record as `serde_json` rendered it before the hand-written renderer: the reference
    /// the output must match byte for byte.
    struct RefHeaders<'a>(&'a SignedRequest);

    impl Serialize for RefHeaders<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            if let Some(host) = host_header(&self.0.url) {
                map.serialize_entry("Host", &host)?;
            }
            for (name, value) in &self.0.headers {
                map.serialize_entry(name, header_text(value))?;
            }
            if self.0.bearer.is_some() {
                map.serialize_entry("Authorization", "Bearer (redacted)")?;
            }
            map.serialize_entry("User-Agent", USER_AGENT)?;
            map.serialize_entry("Content-Length", &self.0.body.len().to_string())?;
            map.end()
        }
    }

    #[derive(Serialize)]
    struct RefRecord<'a> {
        row: u64,
        attempt: u32,
        method: &'a str,
        url: &'a str,
        headers: RefHeaders<'a>,
        body: &'a str,
    }

    fn reference(rec: &EmitRecord<'_>) -> Vec<u8> {
        let body = String::from_utf8_lossy(&rec.request.body);
        serde_json::to_vec(&RefRecord {
            row: rec.row,
            attempt: rec.attempt,
            method: rec.request.method,
            url: &rec.request.url,
            headers: RefHeaders(rec.request),
            body: &body,
        })
        .expect("serialises")
    }

    fn request(url: &str, value: &str, body: &[u8], bearer: bool) -> SignedRequest {
        SignedRequest {
            method: "POST",
            url: url.into(),
            path: "/p".into(),
            headers: vec![
                // Header values are visible ASCII; the hostile strings that are not stand
                // for nothing a request can carry.
                (
                    "Date",
                    HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("d")),
                ),
                ("X-Signature", HeaderValue::from_static("ab\"c")),
            ],
            bearer: bearer.then(|| Secret::new("k-secret")),
            body: Bytes::copy_from_slice(body),
        }
    }

    fn json_line(req: &SignedRequest, row: u64, attempt: u32) -> Vec<u8> {
        let credential = SecretRef::Env("OGMMA_API_KEY".into());
        let rec = EmitRecord {
            row,
            attempt,
            request: req,
            credential: &credential,
            pace: None,
        };
        let mut out = Vec::new();
        to_json_line(&rec, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&reference(&rec)),
            "differs from serde_json"
        );
        out
    }

    #[test]
    fn json_lines_match_serde_json_on_hostile_strings() {
        let urls = [
            "http://127.0.0.1:39999/v2/origin/custom/s/react",
            "https://amojo.kommo.com/v2/origin/custom/s/react",
            "https://[::1]:8443/v1/channels/c/messages/react",
            "http://EXAMPLE.com:80/a?q=\"x\"",
            "not a url \" \\",
        ];
        for (i, url) in urls.iter().enumerate() {
            for (j, text) in json::HOSTILE.iter().enumerate() {
                let body = format!("{{\"emoji\":{text:?},\"raw\":\"{text}\"}}");
                for bearer in [false, true] {
                    let req = request(url, text, body.as_bytes(), bearer);
                    json_line(&req, (i * 100 + j) as u64, 1 + j as u32);
                }
            }
        }
        // Bytes that are not UTF-8 in the body come out as U+FFFD, as before.
        json_line(
            &request(urls[0], "d", b"\xff\xfe\"x\"\x80", true),
            u64::MAX,
            u32::MAX,
        );
    }

    #[test]
    fn the_host_cache_follows_the_url() {
        // One thread, URLs alternating: each record names its own host.
        let a = json_line(&request("http://a.test:81/x", "d", b"{}", false), 1, 1);
        let b = json_line(&request("http://b.test/x", "d", b"{}", false), 2, 1);
        let none = json_line(&request("no host", "d", b"{}", false), 3, 1);
        let a2 = json_line(&request("http://a.test:81/x", "d", b"{}", false), 4, 1);
        let has = |line: &[u8], host: &str| String::from_utf8_lossy(line).contains(host);
        assert!(has(&a, r#""Host":"a.test:81""#) && has(&a2, r#""Host":"a.test:81""#));
        assert!(has(&b, r#""Host":"b.test""#));
        assert!(!has(&none, r#""Host""#));
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
