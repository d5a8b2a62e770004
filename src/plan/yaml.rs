//! A small YAML node tree where every node carries the line and column it was written at, read
//! from a plan's file ([`read_file`]).
//!
//! serde_yaml reports positions only for its own syntax errors, but plan problems (a missing
//! emoji, an unknown target) are found after parsing and still have to point at the input. So we
//! drive the event parser of `yaml-rust2` (a pull parser: no recursion on our side, an explicit
//! stack) and build [`Node`]s from its events and markers.
//!
//! Policy choices, and why:
//! - **Scalars stay text.** Plain scalars are kept as their raw text: `message_id: 1001` is the
//!   string `"1001"` and `1e3` stays `"1e3"`; ids must never be reinterpreted as numbers. The
//!   callers parse numbers and booleans where a setting expects one. A plain `~`, `null` or
//!   empty value is "absent".
//! - **Anchors and aliases are refused** (an alias is an error at its position). A plan has no
//!   use for them — `defaults:` covers shared row fields — and refusing them removes the
//!   "billion laughs" alias-expansion bomb outright instead of guarding it with a budget.
//!   An anchor that is never referenced is harmless and ignored. Tags (`!!str`) are ignored.
//! - **Duplicate mapping keys are errors** naming both lines: YAML says keys are unique, and a
//!   silently overwritten target or row field is exactly the kind of typo a check must catch.
//! - **One document per file**; a second `---` document is an error.
//! - **Limits**: nesting deeper than [`MAX_DEPTH`] is an error; file size is limited by
//!   [`read_file`] ([`super::fields::MAX_YAML_BYTES`]). Without aliases, the node count is
//!   bounded by the size.
//!   Parsing stops after [`MAX_PARSE_PROBLEMS`] duplicate keys or aliases, so a file made of
//!   them costs milliseconds, not minutes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::fields::MAX_YAML_BYTES;
use super::problem::Problem;
use super::source::{shorten, Pos};

/// Deepest nesting of sequences and mappings accepted. A plan needs 4 levels.
pub(super) const MAX_DEPTH: usize = 32;

/// Parsing stops after this many problems (duplicate keys, aliases) in one file.
pub(super) const MAX_PARSE_PROBLEMS: usize = 100;

/// A YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `quoted` is true for any non-plain style (quotes, `|`, `>`): such a scalar is never null.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars; their order is kept. Duplicates were rejected while parsing.
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub text: String,
    pub pos: Pos,
    /// A list or mapping used as a key (already reported); never stored in a [`Value::Map`].
    refused: bool,
}

impl Node {
    /// `true` for a plain `~`, `null` or empty scalar.
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Scalar { text, quoted } => {
                !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// What kind of node this is, for "expected a string, found a list" messages.
    pub fn kind(&self) -> NodeKind {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => NodeKind::Null,
            Value::Scalar { .. } => NodeKind::Scalar,
            Value::Seq(_) => NodeKind::List,
            Value::Map(_) => NodeKind::Mapping,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Null,
    Scalar,
    List,
    Mapping,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Null => "nothing",
            NodeKind::Scalar => "a value",
            NodeKind::List => "a list",
            NodeKind::Mapping => "a mapping",
        })
    }
}

/// A container being built.
enum Frame {
    Seq {
        pos: Pos,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        entries: Vec<(Key, Node)>,
        /// A key waiting for its value.
        pending: Option<Key>,
        /// Key text → line of its first occurrence: duplicate checks stay O(1) per key, so a
        /// mapping with a million keys is not a quadratic scan.
        seen: HashMap<String, u32>,
    },
}

/// The last position inside a text. The parser places events and errors at the end of input
/// one line past the last line; positions are clamped to the end of the last line instead,
/// which a reader (and a caret under it) can find.
struct EndOfText {
    line: u32,
    col: u32,
}

impl EndOfText {
    fn of(text: &str) -> EndOfText {
        EndOfText {
            line: to_u32(text.lines().count().max(1)),
            col: to_u32(text.lines().last().map_or(0, |l| l.chars().count()) + 1),
        }
    }

    fn clamp(&self, line: u32, col: u32) -> Pos {
        if line > self.line {
            Pos {
                line: self.line,
                col: self.col,
            }
        } else {
            Pos { line, col }
        }
    }
}

/// The file's lines, to place empty values: the parser puts an empty plain scalar (`key:` with
/// nothing after it, a bare `-`) at the *next* token, often lines later; problems about it read
/// better just after the `:` or `-` that introduced it.
struct Lines<'t> {
    lines: Vec<&'t str>,
}

impl<'t> Lines<'t> {
    fn of(text: &'t str) -> Lines<'t> {
        Lines {
            lines: text.lines().collect(),
        }
    }

    /// The position just after the last non-blank character before `pos` (looking back at
    /// most a few lines), or `pos` itself.
    fn after_previous_token(&self, pos: Pos) -> Pos {
        let mut line = pos.line as usize;
        let mut before: Option<&str> = self.lines.get(line.wrapping_sub(1)).map(|l| {
            match l.char_indices().nth((pos.col as usize).saturating_sub(1)) {
                // A bare `-` before the next token is the *next* item's dash (a null item is
                // placed after it): look above it.
                Some((at, _)) if l[..at].trim() == "-" => "",
                Some((at, _)) => &l[..at],
                None => l,
            }
        });
        for _ in 0..8 {
            let Some(text) = before else { break };
            let trimmed = text.trim_end();
            if !trimmed.is_empty() {
                return Pos {
                    line: to_u32(line),
                    col: to_u32(trimmed.chars().count() + 1),
                };
            }
            line -= 1;
            before = if line == 0 {
                None
            } else {
                self.lines.get(line - 1).copied()
            };
        }
        pos
    }
}

/// Reads and parses one YAML file (size limit, UTF-8 with optional BOM). Problems that did not
/// stop parsing (duplicate keys) go into `problems`.
pub(super) fn read_file(
    path: &Path,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<Node>, Vec<Problem>> {
    let whole =
        |msg: String| vec![Problem::error(file, None, None, msg).with_code("unreadable_file")];
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if meta.len() > MAX_YAML_BYTES {
        // Located at line 1 (the file as a whole), so it reads like every other plan problem.
        return Err(vec![Problem::error(
            file,
            Some(1),
            None,
            format!(
                "YAML file is larger than {} MiB; put large row sets in a CSV file (streamed)",
                MAX_YAML_BYTES / (1024 * 1024)
            ),
        )]);
    }
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            let mut p = Problem::error(
                file,
                Some(to_u32(line)),
                Some(to_u32(col)),
                "the file is not valid UTF-8; save it as UTF-8",
            )
            .with_code("not_utf8");
            if e.as_bytes().starts_with(&[0xff, 0xfe]) || e.as_bytes().starts_with(&[0xfe, 0xff]) {
                p = p.with_hint("the file starts with a UTF-16 byte order mark");
            }
            return Err(vec![p]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // The YAML scanner stops at a NUL as if the file ended there, which would blame the wrong
    // place; a NUL never belongs in a plan (a binary file, or a corrupted one).
    if let Some(at) = text.find('\0') {
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
        return Err(vec![Problem::error(
            file,
            Some(to_u32(line)),
            Some(to_u32(col)),
            "the file contains a NUL byte (a binary or corrupted file?)",
        )]);
    }
    let (root, mut found) = parse(text, file)?;
    problems.append(&mut found);
    Ok(root)
}

/// A parsed document (`None` when empty) and the problems that did not stop parsing
/// (duplicate keys: the first value is kept, so checking can go on).
pub(super) type Parsed = (Option<Node>, Vec<Problem>);

/// Parses one YAML document into a node tree. `file` names the file in problems.
/// Stops at the first syntax error (positions after one are unreliable) and fails on aliases,
/// but collects every duplicate key and alias first.
pub(super) fn parse(text: &str, file: &str) -> Result<Parsed, Vec<Problem>> {
    let mut parser = Parser::new_from_str(text);
    let mut tree = Tree {
        file,
        end: EndOfText::of(text),
        lines: Lines::of(text),
        stack: Vec::new(),
        root: None,
        documents: 0,
        problems: Vec::new(),
        aliases: false,
    };
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(ev) => ev,
            Err(e) => {
                let p = tree.syntax_error(text, &e);
                tree.problems.push(p);
                return Err(tree.problems);
            }
        };
        let pos = tree.end.clamp(to_u32(mark.line()), to_u32(mark.col() + 1));
        if tree.problems.len() >= MAX_PARSE_PROBLEMS {
            // A file of a million aliases or repeated keys: listing them all would take
            // minutes and gigabytes, and the first ones already say what is wrong.
            tree.error(
                pos,
                format!(
                    "more than {MAX_PARSE_PROBLEMS} problems in this file; stopped reading here"
                ),
            );
            return Err(tree.problems);
        }
        match tree.event(event, pos) {
            Step::Next => {}
            Step::Attach(node) => tree.attach(node),
            Step::End => break,
            Step::Stop => return Err(tree.problems),
        }
    }
    if tree.aliases {
        Err(tree.problems)
    } else {
        Ok((tree.root, tree.problems))
    }
}

/// The tree being built from the parser's events, and what was found on the way.
struct Tree<'t> {
    file: &'t str,
    end: EndOfText,
    lines: Lines<'t>,
    /// The containers open around the current event, outermost first.
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    problems: Vec<Problem>,
    aliases: bool,
}

/// What an event asks for.
enum Step {
    /// Nothing to attach (a container opened, a document began).
    Next,
    /// A finished node, for its parent.
    Attach(Node),
    /// The end of the stream.
    End,
    /// A problem that ends parsing (already recorded).
    Stop,
}

impl Tree<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Problem {
        self.problems.push(Problem::error(
            self.file,
            Some(pos.line),
            Some(pos.col),
            message,
        ));
        let last = self.problems.len() - 1;
        &mut self.problems[last]
    }

    /// A syntax error at its place, kept inside the text; a tab in its line is named.
    fn syntax_error(&self, text: &str, e: &yaml_rust2::ScanError) -> Problem {
        let m = e.marker();
        let written = Pos {
            line: to_u32(m.line()),
            col: to_u32(m.col() + 1),
        };
        let at = self.end.clamp(written.line, written.col);
        let mut info = e.info().to_string();
        if at != written {
            info.push_str(" (at the end of the file)");
        }
        let p = Problem::error(
            self.file,
            Some(at.line),
            Some(at.col),
            format!("YAML syntax error: {info}"),
        )
        .with_code("yaml_syntax");
        if line_has_tab(text, at.line) {
            p.with_hint("tabs are not allowed for indentation in YAML; use spaces")
        } else {
            p
        }
    }

    fn event(&mut self, event: Event, pos: Pos) -> Step {
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => Step::Next,
            Event::StreamEnd => Step::End,
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error(
                        pos,
                        "a plan file holds one YAML document; found a second one",
                    );
                    return Step::Stop;
                }
                Step::Next
            }
            Event::Alias(_) => {
                self.aliases = true;
                let p = self.error(pos, "YAML aliases (`*name`) are not supported in plans");
                p.code = "yaml_alias";
                p.hint =
                    Some("write the value out, or use `defaults:` for shared row fields".into());
                // Stand in a null so the structure stays balanced and checking can go on.
                Step::Attach(Node {
                    pos,
                    value: Value::Scalar {
                        text: String::new(),
                        quoted: false,
                    },
                })
            }
            Event::Scalar(text, style, _anchor, _tag) => Step::Attach(Node {
                pos: if text.is_empty() && style == TScalarStyle::Plain {
                    self.lines.after_previous_token(pos)
                } else {
                    pos
                },
                value: Value::Scalar {
                    text,
                    quoted: style != TScalarStyle::Plain,
                },
            }),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.error(pos, format!("YAML nesting deeper than {MAX_DEPTH} levels"));
                    return Step::Stop;
                }
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            pos,
                            items: Vec::new(),
                        }
                    } else {
                        Frame::Map {
                            pos,
                            entries: Vec::new(),
                            pending: None,
                            seen: HashMap::new(),
                        }
                    });
                Step::Next
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, items }) => Step::Attach(Node {
                    pos,
                    value: Value::Seq(items),
                }),
                Some(Frame::Map { pos, entries, .. }) => Step::Attach(Node {
                    pos,
                    value: Value::Map(entries),
                }),
                None => Step::Next,
            },
        }
    }

    /// Attaches a finished node to its parent: the root, a list's next item, a mapping's key
    /// or the value of its pending key.
    fn attach(&mut self, node: Node) {
        // Duplicate keys directly under the top-level `targets:` are duplicate target names.
        let in_targets = self.stack.len() == 2
            && matches!(&self.stack[0], Frame::Map { pending: Some(k), .. } if k.text == "targets");
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending,
                seen,
                ..
            }) => match pending.take() {
                None => {
                    let key = key_of(&node);
                    if key.is_none() {
                        self.problems.push(Problem::error(
                            self.file,
                            Some(node.pos.line),
                            Some(node.pos.col),
                            "a mapping key must be a plain name, not a list or mapping",
                        ));
                    }
                    // A refused key keeps its place (its value still follows) but is dropped
                    // with its value, so no "unknown key" echo follows.
                    *pending = Some(Key {
                        text: key.unwrap_or_default(),
                        pos: node.pos,
                        refused: matches!(node.value, Value::Seq(_) | Value::Map(_)),
                    });
                }
                Some(key) if key.refused => {}
                Some(key) => match seen.get(&key.text) {
                    Some(first) => {
                        let what = if in_targets { "target" } else { "key" };
                        self.problems.push(Problem::error(
                            self.file,
                            Some(key.pos.line),
                            Some(key.pos.col),
                            format!(
                                "duplicate {what} `{}` (first written at line {first})",
                                shorten(&key.text)
                            ),
                        ));
                    }
                    None => {
                        seen.insert(key.text.clone(), key.pos.line);
                        entries.push((key, node));
                    }
                },
            },
        }
    }
}

/// A mapping key's text: a scalar's; `None` for a list or mapping.
fn key_of(node: &Node) -> Option<String> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn line_has_tab(text: &str, line: u32) -> bool {
    let index = (line as usize).saturating_sub(1);
    text.lines().nth(index).is_some_and(|l| l.contains('\t'))
        || (index > 0
            && text
                .lines()
                .nth(index - 1)
                .is_some_and(|l| l.contains('\t')))
}

pub(super) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        node.as_scalar().unwrap_or("<not a scalar>")
    }

    #[test]
    fn plain_scalars_stay_text_and_positions_are_kept() {
        let root = parse("a: 1001\nb:\n  - 1e3\n  - { c: 0x1F }\n", "f.yaml")
            .unwrap()
            .0
            .unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.text, "a");
        assert_eq!(scalar(&entries[0].1), "1001");
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(scalar(&items[0]), "1e3");
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn duplicate_keys_and_aliases_are_errors() {
        let (_, dups) = parse("a: 1\na: 2\n", "f.yaml").unwrap();
        assert_eq!(dups.len(), 1);
        let errs = parse("a: 1\na: 2\nb: &x 3\nc: *x\n", "f.yaml").unwrap_err();
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "f.yaml:2:1: error: duplicate key `a` (first written at line 1)",
                "f.yaml:4:4: error: YAML aliases (`*name`) are not supported in plans (write the value out, or use `defaults:` for shared row fields)"
            ]
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = "[".repeat(10_000);
        let errs = parse(&deep, "f.yaml").unwrap_err();
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn null_and_quoted() {
        let root = parse("a: ~\nb: ''\nc:\n", "f").unwrap().0.unwrap();
        let Value::Map(e) = &root.value else { panic!() };
        assert!(e[0].1.is_null());
        assert!(!e[1].1.is_null());
        assert!(e[2].1.is_null());
    }
}
