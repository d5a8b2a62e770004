//! Where a plan's text sits and how it is quoted back: a position in a source file, and the
//! shortened, escaped form of user text that messages echo. Below both the YAML tree and the
//! row fields, which point at and quote the same input.

/// A 1-based position in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// Shortens user text for messages (never used for secrets, which are not echoed at all), and
/// escapes control and bidirectional-override characters (`\u{202e}`), so an echoed value can
/// neither move the cursor nor reorder what the terminal shows ("Trojan Source").
pub fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_and_escapes() {
        assert_eq!(shorten("kommo\u{202e}main\n"), "kommo\\u{202e}main\\u{a}");
        assert_eq!(shorten(&"x".repeat(61)), format!("{}…", "x".repeat(60)));
        assert_eq!(shorten(&"x".repeat(60)), "x".repeat(60));
    }
}
