//! The audit trail of signed requests (`--emit`): one JSON object a line, or runnable curl
//! commands. Secrets never appear: the Ogmma key is shown as `Bearer (redacted)` in JSON and as
//! a `$VAR` reference in curl, so the command still runs where the variable is set.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::executor::transport::USER_AGENT;
use crate::plan::EmitFormat;
use crate::provider::SignedRequest;
use crate::secret::SecretRef;

/// One request as it goes (or would go) on the wire.
pub struct EmitRecord<'a> {
    pub row: u64,
    pub attempt: u32,
    pub request: &'a SignedRequest,
    /// Where the bearer key comes from, for curl's `$VAR`.
    pub credential: &'a SecretRef,
    /// The target's pace (time between two of its requests); the curl script sleeps this long
    /// after each request, so running it never goes faster than the run would.
    pub pace: Option<std::time::Duration>,
}

struct Headers<'a>(&'a SignedRequest);

/// Every header the request carries on the wire: `Host` (from the URL), the signed ones, the
/// bearer (redacted), and the two the HTTP client adds (`User-Agent`, `Content-Length`).
impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(host) = host_header(&self.0.url) {
            map.serialize_entry("Host", &host)?;
        }
        for (name, value) in &self.0.headers {
            map.serialize_entry(name, value)?;
        }
        if self.0.bearer.is_some() {
            map.serialize_entry("Authorization", "Bearer (redacted)")?;
        }
        map.serialize_entry("User-Agent", USER_AGENT)?;
        map.serialize_entry("Content-Length", &self.0.body.len().to_string())?;
        map.end()
    }
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

#[derive(Serialize)]
struct JsonRecord<'a> {
    row: u64,
    attempt: u32,
    method: &'a str,
    url: &'a str,
    headers: Headers<'a>,
    body: &'a str,
}

/// Renders one record as a JSON line (without the newline).
pub fn to_json_line(rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
    let body = String::from_utf8_lossy(&rec.request.body);
    let json = JsonRecord {
        row: rec.row,
        attempt: rec.attempt,
        method: rec.request.method,
        url: &rec.request.url,
        headers: Headers(rec.request),
        body: &body,
    };
    // Writing JSON of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &json);
}

/// Quotes a string for POSIX shells: `'...'` with embedded `'` as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Renders one record as runnable shell: a label naming the row, the curl command (failing on
/// an HTTP error, with the response body and a newline), and the pause that keeps the target's
/// pace. Retries are not rendered: the script replays first attempts only.
pub fn to_curl(rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
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
        cmd.push_str(&shell_quote(&format!("{name}: {value}")));
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
pub struct EmitWriter {
    out: BufWriter<File>,
}

impl EmitWriter {
    /// Creates (or truncates) the file. `credentials` are the bearer keys the requests read
    /// (the curl script checks each is set before sending anything); a curl script is made
    /// executable (0755).
    pub fn create(
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
    pub fn write_raw(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)
    }

    /// Renders a record with its newline, so executor tasks can do the work in parallel.
    pub fn render(format: EmitFormat, rec: &EmitRecord<'_>) -> Vec<u8> {
        let mut line = Vec::with_capacity(512);
        Self::render_into(format, rec, &mut line);
        line
    }

    /// Appends a rendered record with its newline to `out` (nothing for a curl retry).
    pub fn render_into(format: EmitFormat, rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
        match format {
            EmitFormat::Jsonl => {
                to_json_line(rec, out);
                out.push(b'\n');
            }
            EmitFormat::Curl => to_curl(rec, out),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
