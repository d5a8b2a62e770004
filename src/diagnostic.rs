//! Plan problems rendered like rustc, just and hurl: an `error: message` header, the
//! ` --> file:line:col` origin, the offending source line with a caret run under the column,
//! and a `help:` line carrying the hint.
//!
//! The rendering ([`render`]) is a pure function of a [`Problem`] and the text of its line, so
//! it is unit-tested without files or terminals. The source line is read at render time
//! ([`SourceLines`]), once per file for a whole batch of problems, and tolerantly: a file that
//! cannot be read (deleted, a directory) just renders without its snippet, invalid UTF-8 is
//! shown lossily, and a line over [`MAX_LINE_BYTES`] is not kept; long lines are cut to a
//! window around the column by the renderer, so a minified 10 MB line never reaches the
//! terminal.
//!
//! Colour is decided once per process ([`init_color`], from `--color` and `NO_COLOR`), like
//! the panic hook: every command prints problems the same way without threading a flag through.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::sync::OnceLock;

use annotate_snippets::{AnnotationKind, Level, Origin, Renderer, Snippet};

use crate::plan::{Problem, Severity};

/// `--color` (global).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always colour (even when piped, and despite `NO_COLOR`).
    Always,
    /// Never colour.
    Never,
}

/// Whether to colour stderr: `always`/`never` as said; `auto` colours a terminal unless
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub(crate) fn use_color(
    choice: ColorChoice,
    stderr_is_terminal: bool,
    no_color: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stderr_is_terminal && no_color.is_none_or(str::is_empty),
    }
}

static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides colour for the whole process (called once, from `main_entry`).
pub(crate) fn init_color(choice: ColorChoice) {
    let no_color = std::env::var("NO_COLOR").ok();
    let _ = COLOR.set(use_color(
        choice,
        std::io::stderr().is_terminal(),
        no_color.as_deref(),
    ));
}

/// The process-wide colour decision (`auto` if [`init_color`] was never called, e.g. in
/// library use).
pub(crate) fn color() -> bool {
    *COLOR.get_or_init(|| {
        let no_color = std::env::var("NO_COLOR").ok();
        use_color(
            ColorChoice::Auto,
            std::io::stderr().is_terminal(),
            no_color.as_deref(),
        )
    })
}

/// A source line longer than this (in bytes) is not kept for display at all. Shorter long
/// lines are cut by the renderer to a window around the column (`...` at either end).
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Renders one problem. `line_text` is the text of line `problem.line` (without its line
/// break), or `None` when it is unknown; then only the header, origin and hint are shown.
pub(crate) fn render(problem: &Problem, line_text: Option<&str>, color: bool) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let level = match problem.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
        Severity::Note => Level::NOTE,
    };
    let title = level.primary_title(problem.message.as_str());
    let shown = match (problem.line, line_text) {
        (Some(line), Some(text)) => window(text, problem.column).map(|w| (line, w)),
        _ => None,
    };
    let mut group = match &shown {
        // The snippet's origin line (` --> file:line:col`) is derived from the span.
        Some((line, (text, span))) => title.element(
            Snippet::source(text.as_str())
                .line_start(*line as usize)
                .path(problem.file.as_str())
                .annotation(AnnotationKind::Primary.span(span.clone())),
        ),
        None => {
            let mut origin = Origin::path(problem.file.as_str());
            if let Some(line) = problem.line {
                origin = origin.line(line as usize);
                if let Some(col) = problem.column {
                    origin = origin.char_column(col as usize);
                }
            }
            title.element(origin)
        }
    };
    if let Some(hint) = &problem.hint {
        group = group.element(Level::HELP.message(hint.as_str()));
    }
    renderer.render(&[group])
}

/// The text to show for a line and the byte span to underline in it, or `None` when the
/// column lies far past the end of the line. With a column: from the column's character to
/// the end of the word there (at least one character; a column just past the end of the line
/// is padded to, so the caret and the origin's column stay the problem's). Without one (CSV
/// records): the whole line, trimmed. The renderer computes the origin's column from the span.
fn window(text: &str, column: Option<u32>) -> Option<(String, std::ops::Range<usize>)> {
    const MAX_PAD: usize = 80;
    const MAX_SPAN: usize = 80;
    let chars: Vec<char> = text.chars().collect();
    let mut shown = text.to_string();
    let (start, end) = match column {
        Some(col) => {
            let start = (col as usize).saturating_sub(1);
            if start >= chars.len() {
                let pad = start - chars.len();
                if pad > MAX_PAD {
                    return None;
                }
                shown.extend(std::iter::repeat_n(' ', pad + 1));
                let at = shown.len() - 1;
                return Some((shown, at..at + 1));
            }
            (start, start + token_len(&chars[start..]).max(1))
        }
        None => {
            let first = chars.iter().take_while(|c| c.is_whitespace()).count();
            let last = chars.len() - chars.iter().rev().take_while(|c| c.is_whitespace()).count();
            if first >= last {
                shown.push(' ');
                return Some((shown, text.len()..text.len() + 1));
            }
            (first, last)
        }
    };
    // A 10 KB token would make the renderer show all of it under its caret run: underline
    // its start only, so the window around the column stays terminal-sized.
    let end = end.min(start + MAX_SPAN);
    let byte_at = |i: usize| chars[..i].iter().map(|c| c.len_utf8()).sum::<usize>();
    Some((shown, byte_at(start)..byte_at(end)))
}

/// The length (in characters) of the YAML/CSV token at the start of `rest`: a quoted scalar
/// through its closing quote; otherwise up to whitespace, a flow indicator (`,[]{}`) or a `:`
/// that ends a key. `0` when `rest` starts with one of those (one caret is shown then).
fn token_len(rest: &[char]) -> usize {
    if let Some(&quote @ ('"' | '\'')) = rest.first() {
        let mut i = 1;
        while i < rest.len() {
            if rest[i] == '\\' && quote == '"' {
                i += 2;
                continue;
            }
            if rest[i] == quote {
                return i + 1;
            }
            i += 1;
        }
        return 1;
    }
    let mut i = 0;
    while i < rest.len() {
        let c = rest[i];
        let ends_key = c == ':' && rest.get(i + 1).is_none_or(|n| n.is_whitespace());
        if c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}') || ends_key {
            break;
        }
        i += 1;
    }
    i
}

/// Source lines read for a batch of problems: each file is read once, up to the last line
/// needed, keeping only the lines problems point at.
#[derive(Debug, Default)]
pub(crate) struct SourceLines {
    lines: HashMap<(String, u32), String>,
}

impl SourceLines {
    /// Reads the lines `problems` point at. Unreadable files and over-long lines are skipped.
    pub(crate) fn read(problems: &[Problem]) -> SourceLines {
        let mut wanted: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        for p in problems {
            if let Some(line) = p.line {
                wanted.entry(p.file.as_str()).or_default().insert(line);
            }
        }
        let mut lines = HashMap::new();
        for (file, numbers) in wanted {
            let Ok(f) = std::fs::File::open(file) else {
                continue;
            };
            for (n, text) in read_lines(f, &numbers) {
                lines.insert((file.to_string(), n), text);
            }
        }
        SourceLines { lines }
    }

    pub(crate) fn get(&self, file: &str, line: u32) -> Option<&str> {
        self.lines
            .get(&(file.to_string(), line))
            .map(String::as_str)
    }
}

/// The lines numbered in `wanted` (1-based), each without its line break (`\n` or `\r\n`);
/// a BOM on line 1 is dropped (the loaders count columns after it). Invalid UTF-8 is shown
/// lossily; a line over [`MAX_LINE_BYTES`] is left out.
fn read_lines(source: impl Read, wanted: &BTreeSet<u32>) -> Vec<(u32, String)> {
    let Some(&last) = wanted.last() else {
        return Vec::new();
    };
    let mut reader = BufReader::new(source);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for n in 1..=last {
        buf.clear();
        let keep = wanted.contains(&n);
        // Not kept: skip to the next line break without holding the line.
        let ended = if keep {
            let limit = (MAX_LINE_BYTES + 2) as u64;
            match reader.by_ref().take(limit).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return out,
                Ok(_) => {
                    if buf.last() != Some(&b'\n') && buf.len() as u64 == limit {
                        if !skip_line(&mut reader) {
                            return out;
                        }
                        continue;
                    }
                    true
                }
            }
        } else {
            skip_line(&mut reader)
        };
        if !ended {
            return out;
        }
        if keep {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            let mut text = String::from_utf8_lossy(&buf).into_owned();
            if n == 1 {
                if let Some(rest) = text.strip_prefix('\u{feff}') {
                    text = rest.to_string();
                }
            }
            out.push((n, text));
        }
    }
    out
}

/// Consumes up to and including the next `\n`; `false` at end of input (or on an error).
fn skip_line(reader: &mut impl BufRead) -> bool {
    loop {
        let (done, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        reader.consume(used);
        if done {
            return true;
        }
    }
}

/// The problems that are the same (see [`Problem::same_as`]), as lists of indices into
/// `problems`, in the order each was first met: one mistake repeated on many rows is one group.
pub(crate) fn groups(problems: &[Problem]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, p) in problems.iter().enumerate() {
        let candidates = by_hash.entry(p.same_hash()).or_default();
        match candidates
            .iter()
            .find(|&&g| problems[groups[g][0]].same_as(p))
        {
            Some(&g) => groups[g].push(i),
            None => {
                candidates.push(groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// The fewest occurrences of one problem that [`render_all`] shows as one diagnostic.
const MIN_GROUPED: usize = 3;

/// Line ranges named in a grouped diagnostic's title; the rest are counted.
const MAX_RANGES_SHOWN: usize = 5;

/// One problem standing for all of `members` (the same problem, see [`groups`]): the first's
/// place, source line and hint, with the count and the lines in the title, as in
/// `unknown target `x` on 90 rows (rows.csv:12–101)`. A lone problem is returned as it is.
pub(crate) fn grouped(members: &[&Problem]) -> Problem {
    let Some(&first) = members.first() else {
        return Problem::error("", None, None, "");
    };
    let folded = |p: &Problem| p.folded.as_ref().map_or(0, |f| f.count);
    let count: u64 = members.iter().map(|p| 1 + folded(p)).sum();
    let mut out = first.clone();
    out.folded = None;
    if count == 1 {
        return out;
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut dropped = false;
    for p in members {
        ranges.extend(p.line.map(|l| (l, l)));
        if let Some(f) = &p.folded {
            ranges.extend(f.lines.iter().copied());
            dropped |= f.lines_dropped;
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some((_, last)) if start <= last.saturating_add(1) => *last = (*last).max(end),
            _ => merged.push((start, end)),
        }
    }
    // A CSV row is a line (a record), so its lines are its rows; a YAML row may span several.
    let (prep, noun) = if first.file.ends_with(".csv") {
        (" on", "rows")
    } else {
        (", in", "places")
    };
    let mut shown: Vec<String> = merged
        .iter()
        .take(MAX_RANGES_SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect();
    if merged.len() > MAX_RANGES_SHOWN {
        shown.push(format!("and {} more", merged.len() - MAX_RANGES_SHOWN));
    } else if dropped {
        shown.push("…".to_string());
    }
    out.message = if merged.is_empty() {
        format!("{} ({count} times)", first.message)
    } else {
        format!(
            "{}{prep} {count} {noun} ({}:{})",
            first.message,
            first.file,
            shown.join(", ")
        )
    };
    out
}

/// Renders every problem, separated by blank lines, reading source lines from the files; the
/// same problem on many lines is rendered once ([`grouped`]). A line that any problem of the
/// batch marks [`Problem::hide_source`] is shown for none of them.
pub(crate) fn render_all(problems: &[Problem], color: bool) -> String {
    let hidden: BTreeSet<(&str, u32)> = problems
        .iter()
        .filter(|p| p.hide_source)
        .filter_map(|p| Some((p.file.as_str(), p.line?)))
        .collect();
    // A group is shown where its first member was; the others keep their order. Two of a
    // kind read fine one by one, each with its own line shown.
    let mut shown: Vec<Option<Problem>> = problems.iter().cloned().map(Some).collect();
    for members in groups(problems) {
        let of_group: Vec<&Problem> = members.iter().map(|&i| &problems[i]).collect();
        if of_group.len() >= MIN_GROUPED || of_group.iter().any(|p| p.folded.is_some()) {
            shown[members[0]] = Some(grouped(&of_group));
            for &i in &members[1..] {
                shown[i] = None;
            }
        }
    }
    let shown: Vec<Problem> = shown.into_iter().flatten().collect();
    let visible: Vec<Problem> = shown
        .iter()
        .filter(|p| {
            !p.line
                .is_some_and(|l| hidden.contains(&(p.file.as_str(), l)))
        })
        .cloned()
        .collect();
    let sources = SourceLines::read(&visible);
    let mut out = String::new();
    for p in &shown {
        let line = p
            .line
            .filter(|l| !hidden.contains(&(p.file.as_str(), *l)))
            .and_then(|l| sources.get(&p.file, l));
        out.push_str(&render(p, line, color));
        out.push_str("\n\n");
    }
    out
}

/// Prints problems to stderr with the process-wide colour choice.
pub(crate) fn eprint(problems: &[Problem]) {
    if !problems.is_empty() {
        eprint!("{}", render_all(problems, color()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: u32, col: Option<u32>, msg: &str) -> Problem {
        Problem::error("plan.yaml", Some(line), col, msg)
    }

    #[test]
    fn caret_under_the_column_with_hint() {
        let p =
            problem(10, Some(7), "unknown key `emoij` in a row").with_hint("did you mean `emoji`?");
        let text = render(&p, Some("  - { emoij: \"👍\" }"), false);
        assert_eq!(
            text,
            "error: unknown key `emoij` in a row\n  \
             --> plan.yaml:10:7\n   \
             |\n\
             10 |   - { emoij: \"👍\" }\n   \
             |       ^^^^^\n   \
             |\n   \
             = help: did you mean `emoji`?"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let p = problem(3, Some(9), "bad");
        let text = render(&p, Some("🎉🎉 - a: xyz"), false);
        // Two emojis are two columns each on a terminal: the caret sits under `xyz`.
        let lines: Vec<&str> = text.lines().collect();
        let src = lines.iter().find(|l| l.starts_with("3 |")).expect("source");
        let caret = lines.iter().find(|l| l.contains('^')).expect("caret");
        let src_col = src.find("xyz").expect("xyz");
        assert_eq!(caret.find('^'), Some(src_col - "🎉🎉".len() + 4), "{text}");
    }

    #[test]
    fn carets_cover_the_token() {
        let len = |s: &str| token_len(&s.chars().collect::<Vec<_>>());
        assert_eq!(len("emoij: \"x\" }"), 5);
        assert_eq!(len("\"ch 1\\\"23\" # x"), 10);
        assert_eq!(len("'a b', c"), 5);
        assert_eq!(len("https://x.com/v2 # c"), 16);
        assert_eq!(len("komo-main, message_id: m"), 9);
        assert_eq!(len("{ a: 1 }"), 0);
        assert_eq!(len("kommo-main:"), 10);
        assert_eq!(len("\"unterminated"), 1);
    }

    #[test]
    fn without_source_or_line_only_the_header() {
        let p = Problem::warning("rows.csv", None, None, "the plan has no rows");
        assert_eq!(
            render(&p, None, false),
            "warning: the plan has no rows\n--> rows.csv"
        );
        let p = problem(4, Some(200), "gone");
        assert_eq!(render(&p, None, false), "error: gone\n--> plan.yaml:4:200");
        // A column far past the end of the line: no snippet rather than a misplaced caret.
        assert_eq!(
            render(&p, Some("x"), false),
            "error: gone\n--> plan.yaml:4:200"
        );
    }

    #[test]
    fn csv_lines_without_a_column_are_underlined_whole() {
        let p = Problem::error("rows.csv", Some(7), None, "a react row needs an `emoji`");
        let text = render(&p, Some("kommo-main,m-3,c-1,,k"), false);
        // The record starts at column 1.
        assert!(text.contains(" --> rows.csv:7:1\n"), "{text}");
        assert!(
            text.contains("7 | kommo-main,m-3,c-1,,k\n  | ^^^^^^^^^^^^^^^^^^^^^"),
            "{text}"
        );
    }

    #[test]
    fn a_column_past_the_end_still_gets_a_caret() {
        let p = problem(2, Some(12), "unexpected end");
        let text = render(&p, Some("rows: ["), false);
        assert!(text.contains(" --> plan.yaml:2:12"), "{text}");
        assert!(text.contains("\n  |            ^"), "{text}");
    }

    #[test]
    fn huge_lines_are_cut_around_the_column() {
        let mut line = "x".repeat(100_000);
        line.push_str(" bad_key: 1 ");
        line.push_str(&"y".repeat(100_000));
        let p = problem(1, Some(100_002), "unknown key `bad_key`");
        let text = render(&p, Some(&line), false);
        assert!(text.len() < 1000, "{} bytes", text.len());
        assert!(text.contains(" --> plan.yaml:1:100002"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let src = lines.iter().find(|l| l.starts_with("1 |")).expect("source");
        let caret = lines.iter().find(|l| l.contains('^')).expect("caret");
        assert!(src.contains("..."), "{text}");
        let at = src.find("bad_key").expect("key shown");
        assert_eq!(caret.find('^'), Some(at), "{text}");
        assert_eq!(caret.matches('^').count(), "bad_key".len());
    }

    #[test]
    fn colour_only_when_asked() {
        let p = problem(1, Some(1), "bad").with_hint("fix it");
        let plain = render(&p, Some("bad: 1"), false);
        let styled = render(&p, Some("bad: 1"), true);
        assert!(!plain.contains('\x1b'));
        assert!(styled.contains("\x1b["), "{styled:?}");
        let stripped: String = strip_ansi(&styled);
        assert_eq!(stripped, plain);
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn lines_that_may_hold_a_secret_are_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, "a: 1\nt: { secret: hunter2, bogus: 1 }\n").expect("write");
        let file = path.display().to_string();
        let problems = [
            Problem::error(&file, Some(2), Some(14), "literal secret").hiding_source(),
            Problem::error(&file, Some(2), Some(25), "unknown key `bogus`"),
            Problem::error(&file, Some(1), Some(1), "shown"),
        ];
        let text = render_all(&problems, false);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&format!("{file}:2:25")), "{text}");
        assert!(text.contains("1 | a: 1"), "{text}");
    }

    #[test]
    fn the_same_problem_on_many_rows_is_one_diagnostic_with_count_and_ranges() {
        let unknown = |line: u32| {
            Problem::error(
                "rows.csv",
                Some(line),
                Some(1),
                "unknown target `kommo-mian`",
            )
            .with_code("unknown_target")
            .with_hint("did you mean `kommo-main`?")
        };
        let mut problems: Vec<Problem> = (12..=101).map(unknown).collect();
        problems.insert(3, Problem::error("rows.csv", Some(14), Some(5), "other"));
        problems.push(unknown(200));
        let text = render_all(&problems, false);
        assert_eq!(text.matches("error:").count(), 2, "{text}");
        assert!(
            text.starts_with(
                "error: unknown target `kommo-mian` on 91 rows (rows.csv:12–101, 200)\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("help: did you mean `kommo-main`?").count(), 1);
        assert!(text.contains("--> rows.csv:12:1\n"), "{text}");
        let groups = groups(&problems);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], vec![3]);
    }

    #[test]
    fn folded_occurrences_count_and_name_their_lines() {
        let mut p = Problem::error("plan.yaml", Some(3), Some(7), "bad");
        let folded = p.folded.get_or_insert_default();
        for line in [5, 6, 7, 9, 11, 13, 15, 17, 19] {
            folded.add(Some(line));
        }
        let g = grouped(&[&p]);
        assert_eq!(
            g.message,
            "bad, in 10 places (plan.yaml:3, 5–7, 9, 11, 13, and 3 more)"
        );
        assert_eq!((g.line, g.column, g.folded), (Some(3), Some(7), None));
        let mut q = Problem::error("plan.yaml", None, None, "no line");
        q.folded.get_or_insert_default().add(None);
        assert_eq!(grouped(&[&q]).message, "no line (2 times)");
        let lone = Problem::error("plan.yaml", Some(1), None, "alone");
        assert_eq!(grouped(&[&lone]), lone);
    }

    #[test]
    fn color_choice() {
        use ColorChoice::*;
        assert!(use_color(Auto, true, None));
        assert!(use_color(Auto, true, Some("")));
        assert!(!use_color(Auto, true, Some("1")));
        assert!(!use_color(Auto, false, None));
        assert!(use_color(Always, false, Some("1")));
        assert!(!use_color(Never, true, None));
    }

    #[test]
    fn reads_only_wanted_lines_tolerantly() {
        let text: &[u8] = b"\xef\xbb\xbfa: 1\r\nb: 2\n\nlong\xffline\nlast";
        let wanted: BTreeSet<u32> = [1, 2, 4, 5, 9].into_iter().collect();
        let got = read_lines(text, &wanted);
        assert_eq!(
            got,
            vec![
                (1, "a: 1".to_string()),
                (2, "b: 2".to_string()),
                (4, "long\u{fffd}line".to_string()),
                (5, "last".to_string()),
            ]
        );
        let mut big = "z".repeat(MAX_LINE_BYTES + 10);
        big.push_str("\nnext\n");
        let got = read_lines(big.as_bytes(), &[1, 2].into_iter().collect());
        assert_eq!(got, vec![(2, "next".to_string())]);
    }
}
