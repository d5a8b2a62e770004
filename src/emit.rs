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

/// Renders one record as a runnable curl command, preceded by a comment naming the row.
pub fn to_curl(rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
    let r = rec.request;
    let mut cmd = format!(
        "# row {} attempt {}\ncurl -sS -X {} {}",
        rec.row,
        rec.attempt,
        r.method,
        shell_quote(&r.url)
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
    out.extend_from_slice(cmd.as_bytes());
}

/// Appends emit records to a file as they happen.
pub struct EmitWriter {
    out: BufWriter<File>,
}

impl EmitWriter {
    pub fn create(path: &Path, format: EmitFormat) -> io::Result<EmitWriter> {
        let mut out = BufWriter::with_capacity(64 * 1024, File::create(path)?);
        if format == EmitFormat::Curl {
            out.write_all(b"#!/bin/sh\n# Requests written by reactbatch. Kommo signatures are valid for 15 minutes from their Date.\n")?;
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

    /// Appends a rendered record with its newline to `out`.
    pub fn render_into(format: EmitFormat, rec: &EmitRecord<'_>, out: &mut Vec<u8>) {
        match format {
            EmitFormat::Jsonl => to_json_line(rec, out),
            EmitFormat::Curl => to_curl(rec, out),
        }
        out.push(b'\n');
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
