//! Row results and what is built from them: the report file (CSV or JSON Lines, by the
//! file's ending) and the end-of-run summary. One [`RowResult`] per plan row.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The final state of one plan row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
    Deferred,
    Planned,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Failed,
        Status::Skipped,
        Status::Deferred,
        Status::Planned,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Deferred => "deferred",
            Status::Planned => "planned",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// One report row. Field order is the report's column order (SPEC "Report"), plus `key`, the
/// row's stable identity that `--resume` matches on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowResult {
    pub row: u64,
    /// `file:line`
    pub source: String,
    pub target: String,
    pub provider: String,
    pub action: String,
    pub message_id: String,
    pub emoji: String,
    pub status: Status,
    /// Empty when no answer was received.
    pub http_status: Option<u16>,
    /// Provider's error code, or ours (`timeout`, `connection`, `auth_stopped`, ...).
    pub code: String,
    pub message: String,
    pub attempts: u32,
    pub duration_ms: u64,
    /// RFC 3339, UTC, milliseconds.
    pub finished_at: String,
    pub key: String,
}

/// Formats a timestamp the way the report does.
pub fn timestamp(at: DateTime<Utc>) -> String {
    // Rows finishing in the same millisecond (every row of a dry run with `--now`) share the
    // text: remember the last one instead of formatting it again.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let milli = at.timestamp_millis();
    LAST.with_borrow_mut(|(cached, text)| {
        if *cached != milli {
            *text = at.to_rfc3339_opts(SecondsFormat::Millis, true);
            *cached = milli;
        }
        text.clone()
    })
}

/// The report's file format, chosen by the file's ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    JsonLines,
}

impl ReportFormat {
    pub fn for_path(path: &Path) -> ReportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("ndjson") => ReportFormat::JsonLines,
            _ => ReportFormat::Csv,
        }
    }
}

/// Writes report rows as they finish. Rows are handed to the OS on every [`flush`], so a
/// crash (even `kill -9`) loses no row that was flushed; [`sync`] makes them durable on disk.
///
/// [`flush`]: ReportWriter::flush
/// [`sync`]: ReportWriter::sync
pub struct ReportWriter {
    inner: Inner,
}

enum Inner {
    Csv(Box<csv::Writer<File>>),
    JsonLines(BufWriter<File>),
}

impl ReportWriter {
    /// Creates (truncates) the report file and writes the CSV header.
    pub fn create(path: &Path) -> io::Result<ReportWriter> {
        let file = File::create(path)?;
        let inner = match ReportFormat::for_path(path) {
            ReportFormat::Csv => Inner::Csv(Box::new(
                csv::WriterBuilder::new()
                    .has_headers(true)
                    .from_writer(file),
            )),
            ReportFormat::JsonLines => Inner::JsonLines(BufWriter::with_capacity(64 * 1024, file)),
        };
        Ok(ReportWriter { inner })
    }

    pub fn write(&mut self, row: &RowResult) -> io::Result<()> {
        match &mut self.inner {
            Inner::Csv(w) => w.serialize(row).map_err(io::Error::other),
            Inner::JsonLines(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")
            }
        }
    }

    /// Hands buffered rows to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Csv(w) => w.flush(),
            Inner::JsonLines(w) => w.flush(),
        }
    }

    /// Flushes and asks the OS to put the rows on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match &mut self.inner {
            Inner::Csv(w) => w.get_ref().sync_data(),
            Inner::JsonLines(w) => w.get_ref().sync_data(),
        }
    }
}

/// Reads a report written by [`ReportWriter`] (CSV or JSON Lines). A torn last line (a crash
/// mid-write) is ignored; any other malformed line is an error naming it.
pub fn read_report(path: &Path) -> Result<Vec<RowResult>, String> {
    let mut rows = Vec::new();
    for_each_report_row(path, |r| rows.push(r))?;
    Ok(rows)
}

/// Streams a report's rows to `f`; see [`read_report`]. Memory does not grow with the report.
pub fn for_each_report_row(path: &Path, mut f: impl FnMut(RowResult)) -> Result<(), String> {
    let shown = path.display();
    let cannot = |e: io::Error| format!("cannot read report {shown}: {e}");
    let mut file = File::open(path).map_err(cannot)?;
    // A file that does not end in a newline was cut mid-row: read only up to its last newline.
    let complete = complete_length(&mut file).map_err(cannot)?;
    let reader = io::BufReader::with_capacity(64 * 1024, file.take(complete));
    match ReportFormat::for_path(path) {
        ReportFormat::JsonLines => {
            for (i, line) in io::BufRead::split(reader, b'\n').enumerate() {
                let line = line.map_err(cannot)?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let row: RowResult = serde_json::from_slice(&line)
                    .map_err(|e| format!("{shown}:{}: not a report row: {e}", i + 1))?;
                f(row);
            }
        }
        ReportFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(reader);
            for record in reader.deserialize::<RowResult>() {
                let row = record.map_err(|e| {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    format!("{shown}:{line}: not a report row: {e}")
                })?;
                f(row);
            }
        }
    }
    Ok(())
}

/// The length of `file` up to and including its last newline (0 when it has none).
fn complete_length(file: &mut File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            file.seek(SeekFrom::Start(0))?;
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(row: u64, status: Status) -> RowResult {
        RowResult {
            row,
            source: "p.yaml:7".into(),
            target: "kommo-main".into(),
            provider: "kommo".into(),
            action: "react".into(),
            message_id: "m-1".into(),
            emoji: "👍".into(),
            status,
            http_status: Some(200),
            code: String::new(),
            message: "a, \"quoted\"\nmessage".into(),
            attempts: 2,
            duration_ms: 15,
            finished_at: "2026-12-01T09:00:00.000Z".into(),
            key: "k1".into(),
        }
    }

    #[test]
    fn csv_and_jsonl_round_trip_and_ignore_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["r.csv", "r.jsonl"] {
            let path = dir.path().join(name);
            let mut w = ReportWriter::create(&path).expect("create");
            w.write(&sample(1, Status::Ok)).expect("write");
            w.write(&sample(2, Status::Failed)).expect("write");
            w.flush().expect("flush");
            drop(w);
            // Simulate a crash in the middle of a third row.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(b"3,p.yaml:9,kommo-m").expect("append");
            let rows = read_report(&path).expect("read");
            assert_eq!(
                rows,
                vec![sample(1, Status::Ok), sample(2, Status::Failed)],
                "{name}"
            );
        }
    }

    #[test]
    fn csv_header_is_the_spec_columns_then_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.csv");
        let mut w = ReportWriter::create(&path).expect("create");
        w.write(&sample(1, Status::Ok)).expect("write");
        w.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text.lines().next(),
            Some("row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key")
        );
    }
}
