//! Row results and what is built from them: the report file (CSV or JSON Lines, by the
//! file's ending) and the end-of-run summary. One [`RowResult`] per plan row; the rows
//! themselves, and how a report row is built from a plan row, are in [`row`].

mod row;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

pub use row::{
    row_view, timestamp, with_row_view, with_timestamp, with_unusable_view, RowResult, RowView,
    SourceRef, Status,
};

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

/// The CSV header: the field names of [`RowResult`], in order.
const CSV_HEADER: &[u8] = b"row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key,scope_id,channel_id\n";

/// Columns of reports written before the account columns were appended (still read).
const CSV_COLUMNS_BEFORE_ACCOUNTS: usize = 15;

/// Appends one CSV field as the `csv` crate writes it with its defaults: quoted (quotes
/// doubled) only when it holds a comma, a quote, CR or LF.
fn csv_field(out: &mut Vec<u8>, start: usize) {
    let needs = out[start..]
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if needs {
        let raw = out.split_off(start);
        out.push(b'"');
        for &b in &raw {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

fn csv_str(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    csv_field(out, start);
    out.push(b',');
}

fn csv_num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.push(b',');
}

/// Renders one report row in `format`, newline included, into `out`.
pub fn render_row(format: ReportFormat, row: &RowView<'_>, out: &mut Vec<u8>) {
    match format {
        ReportFormat::JsonLines => {
            // Writing JSON of strings and numbers into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, row);
            out.push(b'\n');
        }
        ReportFormat::Csv => {
            csv_num(out, row.row);
            let start = out.len();
            row.source.push(out);
            csv_field(out, start);
            out.push(b',');
            csv_str(out, row.target);
            csv_str(out, row.provider);
            csv_str(out, row.action);
            csv_str(out, row.message_id);
            csv_str(out, row.emoji);
            csv_str(out, row.status.as_str());
            if let Some(h) = row.http_status {
                csv_num(out, u64::from(h));
            } else {
                out.push(b',');
            }
            csv_str(out, row.code);
            csv_str(out, row.message);
            csv_num(out, u64::from(row.attempts));
            csv_num(out, row.duration_ms);
            csv_str(out, row.finished_at);
            csv_str(out, row.key);
            csv_str(out, row.scope_id);
            let start = out.len();
            out.extend_from_slice(row.channel_id.as_bytes());
            csv_field(out, start);
            out.push(b'\n');
        }
    }
}

/// Writes report rows as they finish. Rows are handed to the OS on every [`flush`], so a
/// crash (even `kill -9`) loses no row that was flushed; [`sync`] makes them durable on disk.
///
/// [`flush`]: ReportWriter::flush
/// [`sync`]: ReportWriter::sync
pub struct ReportWriter {
    out: BufWriter<File>,
    format: ReportFormat,
    scratch: Vec<u8>,
}

impl ReportWriter {
    /// Creates (truncates) the report file and, for CSV, writes the header at once and hands
    /// it to the OS: a run with no rows, or one killed before its first row, still leaves a
    /// report that CSV readers (and `--resume`) accept.
    pub fn create(path: &Path) -> io::Result<ReportWriter> {
        let file = File::create(path)?;
        let format = ReportFormat::for_path(path);
        let mut w = ReportWriter {
            out: BufWriter::with_capacity(64 * 1024, file),
            format,
            scratch: Vec::new(),
        };
        if format == ReportFormat::Csv {
            w.out.write_all(CSV_HEADER)?;
            w.out.flush()?;
        }
        Ok(w)
    }

    pub fn format(&self) -> ReportFormat {
        self.format
    }

    pub fn write(&mut self, row: &RowResult) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        render_row(self.format, &row.view(), &mut line);
        let r = self.write_rendered(&line);
        self.scratch = line;
        r
    }

    /// Appends rows already rendered by [`render_row`] in this writer's format.
    pub fn write_rendered(&mut self, rows: &[u8]) -> io::Result<()> {
        self.out.write_all(rows)
    }

    /// Hands buffered rows to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and hands back a handle to the file, for an `fsync` off this thread.
    pub fn file_to_sync(&mut self) -> io::Result<File> {
        self.flush()?;
        self.out.get_ref().try_clone()
    }

    /// Flushes and asks the OS to put the rows on disk. An `fsync` error is a write error:
    /// rows handed to the OS may not be on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.out.get_ref().sync_data()
    }

    /// Closes the file without writing what is still buffered: after a write error, the rows
    /// in the buffer were named as not recorded, and must not appear in the file later.
    pub fn abandon(self) {
        let (_file, _buffered) = self.out.into_parts();
    }
}

/// Reads a report written by [`ReportWriter`] (CSV or JSON Lines). A torn last line (a crash
/// mid-write) is ignored; any other malformed line is an error naming it.
pub fn read_report(path: &Path) -> Result<Vec<RowResult>, String> {
    let mut rows = Vec::new();
    for_each_report_row(path, |r| rows.push(r))?;
    Ok(rows)
}

/// Whether the report at `path` has a row that is not `planned` (a live run's results).
/// Unreadable or foreign files, and rows after a malformed one, count as not holding results.
/// A CSV report in our own column order is scanned for its status column only, without
/// building each row (a million-row report took as long to check as the plan to validate).
pub fn holds_live_rows(path: &Path) -> bool {
    let slow = || {
        let mut live = false;
        let _ = for_each_report_row(path, |row| live |= row.status != Status::Planned);
        live
    };
    if ReportFormat::for_path(path) != ReportFormat::Csv {
        return slow();
    }
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let Ok(complete) = complete_length(&mut file) else {
        return false;
    };
    let reader = io::BufReader::with_capacity(64 * 1024, file.take(complete));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let ours = reader.byte_headers().is_ok_and(|h| {
        let joined: Vec<&[u8]> = h.iter().collect();
        let expected: Vec<&[u8]> = CSV_HEADER
            .strip_suffix(b"\n")
            .unwrap_or(CSV_HEADER)
            .split(|b| *b == b',')
            .collect();
        joined == expected || joined[..] == expected[..CSV_COLUMNS_BEFORE_ACCOUNTS]
    });
    if !ours {
        return slow();
    }
    const STATUS: usize = 7;
    let mut record = csv::ByteRecord::new();
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let Some(status) = record.get(STATUS) else {
            return false;
        };
        if status == b"planned" {
            continue;
        }
        // Another known status: live results. Anything else is a malformed row.
        return Status::ALL.iter().any(|s| s.as_str().as_bytes() == status);
    }
    false
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
    use chrono::{SecondsFormat, Utc};

    #[test]
    fn timestamps_equal_chrono_within_a_second_and_across_seconds() {
        use chrono::TimeZone;
        let base = Utc
            .with_ymd_and_hms(2026, 12, 5, 5, 59, 59)
            .single()
            .expect("time");
        // Forward within a second, into the next, back again, the same instant twice, and
        // before 1970 (negative milliseconds).
        let offsets_ms = [0, 1, 9, 10, 99, 100, 999, 1000, 1001, 998, 998, 61_000, 7];
        let before_1970 = Utc
            .with_ymd_and_hms(1969, 7, 20, 20, 17, 40)
            .single()
            .expect("time");
        let times = offsets_ms
            .iter()
            .map(|&ms| base + chrono::Duration::milliseconds(ms))
            .chain([
                before_1970 + chrono::Duration::milliseconds(5),
                before_1970 + chrono::Duration::milliseconds(432),
            ]);
        for at in times {
            let want = at.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(timestamp(at), want);
            with_timestamp(at, |t| assert_eq!(t, want));
        }
    }

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
            scope_id: String::new(),
            channel_id: String::new(),
        }
    }

    #[test]
    fn live_rows_are_found_by_status_only_in_either_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["r.csv", "r.jsonl"] {
            let path = dir.path().join(name);
            let mut w = ReportWriter::create(&path).expect("create");
            for n in 1..=3 {
                w.write(&sample(n, Status::Planned)).expect("write");
            }
            w.flush().expect("flush");
            drop(w);
            assert!(!holds_live_rows(&path), "{name}: only planned rows");
            // A torn last row is not read, whatever its status.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(b"4,p.yaml:9,kommo-main,kommo,react,m-4,x,ok")
                .expect("append");
            assert!(!holds_live_rows(&path), "{name}: torn row");
            let mut w = ReportWriter::create(&path).expect("create");
            w.write(&sample(1, Status::Planned)).expect("write");
            w.write(&sample(2, Status::Cancelled)).expect("write");
            w.flush().expect("flush");
            drop(w);
            assert!(holds_live_rows(&path), "{name}: a cancelled row");
        }
        let foreign = dir.path().join("other.csv");
        std::fs::write(&foreign, "a,b\n1,2\n").expect("write");
        assert!(!holds_live_rows(&foreign));
        assert!(!holds_live_rows(&dir.path().join("missing.csv")));
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
    fn csv_header_is_the_spec_columns_then_key_then_the_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.csv");
        let mut w = ReportWriter::create(&path).expect("create");
        w.write(&sample(1, Status::Ok)).expect("write");
        w.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text.lines().next(),
            Some("row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key,scope_id,channel_id")
        );
    }

    /// Reports written before the account columns existed still read (as rows with no
    /// account), in both formats, and still count as holding live results.
    #[test]
    fn reports_without_the_account_columns_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("old.csv");
        std::fs::write(
            &csv,
            "row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key\n\
             1,p.csv:2,t,kommo,react,m1,👍,ok,200,,,1,5,2026-12-01T09:00:00.000Z,k1\n",
        )
        .expect("write");
        let jsonl = dir.path().join("old.jsonl");
        std::fs::write(
            &jsonl,
            r#"{"row":1,"source":"p.csv:2","target":"t","provider":"kommo","action":"react","message_id":"m1","emoji":"👍","status":"ok","http_status":200,"code":"","message":"","attempts":1,"duration_ms":5,"finished_at":"2026-12-01T09:00:00.000Z","key":"k1"}"#
                .to_string()
                + "\n",
        )
        .expect("write");
        for path in [&csv, &jsonl] {
            let rows = read_report(path).expect("an old report reads");
            assert_eq!(rows.len(), 1, "{}", path.display());
            assert_eq!(rows[0].key, "k1");
            assert_eq!(
                (rows[0].scope_id.as_str(), rows[0].channel_id.as_str()),
                ("", "")
            );
            assert!(holds_live_rows(path), "{}", path.display());
        }
        let mut with = sample(2, Status::Ok);
        with.scope_id = "acct-7".into();
        let new = dir.path().join("new.csv");
        let mut w = ReportWriter::create(&new).expect("create");
        w.write(&with).expect("write");
        w.flush().expect("flush");
        assert_eq!(read_report(&new).expect("read")[0].scope_id, "acct-7");
    }

    #[test]
    fn an_empty_report_has_its_header_and_reads_as_no_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.csv");
        let w = ReportWriter::create(&path).expect("create");
        // Without a flush or drop: the header is on disk as soon as the report exists.
        assert_eq!(std::fs::read(&path).expect("read"), CSV_HEADER);
        drop(w);
        assert_eq!(read_report(&path).expect("read"), vec![]);
    }

    #[test]
    fn rendered_rows_match_the_csv_and_json_crates_byte_for_byte() {
        let mut tricky = sample(7, Status::Deferred);
        tricky.source = "dir,x/p\"q.yaml:3".into();
        tricky.http_status = None;
        tricky.code = "a\rb".into();
        tricky.key = "k,\"1\"".into();
        tricky.emoji = String::new();
        for row in [sample(1, Status::Ok), tricky] {
            let mut w = csv::WriterBuilder::new()
                .has_headers(true)
                .from_writer(Vec::new());
            w.serialize(&row).expect("csv");
            let expected = w.into_inner().expect("csv");
            let mut got = CSV_HEADER.to_vec();
            render_row(ReportFormat::Csv, &row.view(), &mut got);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            );

            let mut expected = serde_json::to_vec(&row).expect("json");
            expected.push(b'\n');
            let mut got = Vec::new();
            render_row(ReportFormat::JsonLines, &row.view(), &mut got);
            assert_eq!(got, expected);
        }
    }
}
