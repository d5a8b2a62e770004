//! Emoji values and id values as the providers accept them.
//!
//! An `emoji`/`previous_emoji` is exactly one emoji by Unicode's emoji data, as the `emojis`
//! crate carries it (emoji-test.txt: ZWJ sequences, skin tones, flags, keycaps, fully/minimally
//! qualified and unqualified forms), or a `:shortcode:` (GitHub's gemoji names, which are also
//! most of Slack's, or a Unicode/CLDR name such as `:thumbs_up:`) that [`resolve`] turns into
//! its emoji. [`resolve`] gives the fully-qualified form, the one the services show and compare
//! with (`❤` → `❤️`). A word where an emoji belongs is answered with the emojis it likely
//! means ([`likely`]: `ok` → 👌 👍 🆗). Ids must not carry whitespace around
//! them: a provider compares ids byte for byte, so `" m-1"` would be a different (missing)
//! message. Both are plan errors, found before anything is sent.

use std::borrow::Cow;

use super::source::shorten;

/// Why a value is refused, with a hint for the fix (a did-you-mean, or the trimmed value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub hint: Option<String>,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid {
            message,
            hint: None,
        }
    }
}

/// Characters that are invisible around a value: Unicode white space plus the zero-width ones
/// (which are not `White_Space` but are what a copy from a chat export leaves behind).
fn invisible(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200b}' | '\u{2060}' | '\u{feff}')
}

fn trimmed(text: &str) -> &str {
    text.trim_matches(invisible)
}

/// The emoji `text` stands for: itself when it is one emoji, the emoji of a known
/// `:shortcode:`, or why it is neither. `field` names the field in messages.
pub fn resolve<'t>(field: &str, text: &'t str) -> Result<Cow<'t, str>, Invalid> {
    // Plans repeat a few emojis over many rows: the last one accepted as itself is
    // remembered, so the table lookup (a few % of the serial validation pass) is skipped.
    thread_local! {
        static LAST_EMOJI: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    if !text.is_empty() && LAST_EMOJI.with_borrow(|last| last == text) {
        return Ok(Cow::Borrowed(text));
    }
    let resolved = resolve_uncached(field, text);
    if matches!(resolved, Ok(Cow::Borrowed(e)) if e.len() == text.len() && e == text) {
        LAST_EMOJI.with_borrow_mut(|last| {
            last.clear();
            last.push_str(text);
        });
    }
    resolved
}

fn resolve_uncached<'t>(field: &str, text: &'t str) -> Result<Cow<'t, str>, Invalid> {
    let bare = trimmed(text);
    if bare.len() != text.len() {
        let hint = if bare.is_empty() {
            None
        } else {
            Some(format!("write `{}`", shorten(bare)))
        };
        let message = if bare.is_empty() {
            format!(
                "`{field}` holds only invisible characters (`{}`), not an emoji",
                shorten(&escape_invisible(text))
            )
        } else {
            format!(
                "`{field}` has whitespace or invisible characters around it: `{}`",
                shorten(&escape_invisible(text))
            )
        };
        return Err(Invalid { message, hint });
    }
    if let Some(name) = shortcode_name(text) {
        return match emojis::get_by_shortcode(name).or_else(|| by_name(name)) {
            Some(e) => Ok(Cow::Borrowed(e.as_str())),
            None => Err(Invalid {
                message: format!("`{field}`: unknown shortcode `{}`", shorten(text)),
                hint: Some(match nearest_shortcode(name) {
                    Some((code, emoji)) => format!("did you mean `:{code}:` ({emoji})?"),
                    None => "find one with `reactbatch emoji WORD` (GitHub/Slack names)".into(),
                }),
            }),
        };
    }
    // The emoji data maps every qualification of an emoji to its fully-qualified form, the
    // one the services show and compare with: `❤` (U+2764) is sent as `❤️` (U+2764 U+FE0F).
    if let Some(e) = emojis::get(text) {
        return Ok(Cow::Borrowed(if e.as_str() == text {
            text
        } else {
            e.as_str()
        }));
    }
    if let Some((n, first)) = count_emoji(text).filter(|(n, _)| *n > 1) {
        return Err(Invalid {
            message: format!(
                "`{field}` `{}` is {n} emojis; a reaction is exactly one",
                shorten(text)
            ),
            hint: Some(format!("keep one, e.g. `{first}`")),
        });
    }
    let message = format!(
        "`{field}` `{}` is not an emoji (by Unicode's emoji data)",
        shorten(&escape_invisible(text))
    );
    let likely = likely(text);
    let hint = if likely.is_empty() {
        "one emoji such as `👍` or a shortcode such as `:thumbsup:`; find one with \
         `reactbatch emoji WORD`"
            .to_string()
    } else {
        let each: Vec<String> = likely
            .iter()
            .map(|e| match e.shortcode() {
                Some(code) => format!("{} `:{code}:`", e.as_str()),
                None => e.as_str().to_string(),
            })
            .collect();
        format!("for `{}` perhaps {}", shorten(text), each.join(", "))
    };
    let hint = Some(hint);
    Err(Invalid { message, hint })
}

/// `name` folded for matching Unicode/CLDR names as shortcodes: lower case, words joined by
/// `_` (`Thumbs Up`, `thumbs-up` and `thumbs_up` are one name).
fn fold_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push('_');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Every emoji (skin-tone variants included) with its name folded by [`fold_name`], built
/// once: names are looked up per row of a plan.
fn folded_names() -> &'static [(String, &'static emojis::Emoji)] {
    use std::sync::OnceLock;
    static NAMES: OnceLock<Vec<(String, &'static emojis::Emoji)>> = OnceLock::new();
    NAMES.get_or_init(|| {
        emojis::iter()
            .flat_map(|e| std::iter::once(e).chain(e.skin_tones().into_iter().flatten()))
            .map(|e| (fold_name(e.name()), e))
            .collect()
    })
}

/// The emoji whose Unicode/CLDR name is `name` (`thumbs_up` → 👍, `red_heart` → ❤️), skin-tone
/// variants included (`thumbs_up_medium_skin_tone`).
pub fn by_name(name: &str) -> Option<&'static emojis::Emoji> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static BY_NAME: OnceLock<HashMap<&'static str, &'static emojis::Emoji>> = OnceLock::new();
    let names = BY_NAME.get_or_init(|| {
        let mut names = HashMap::new();
        for (name, e) in folded_names() {
            names.entry(name.as_str()).or_insert(*e);
        }
        names
    });
    names.get(fold_name(name).as_str()).copied()
}

/// Words people react with, and the emojis they most likely mean (by shortcode), before the
/// emojis whose name holds the word.
const REACTION_WORDS: &[(&[&str], &[&str])] = &[
    (&["ok", "okay"], &["ok_hand", "+1", "ok"]),
    (
        &["yes", "agree", "approve", "approved"],
        &["+1", "white_check_mark"],
    ),
    (&["no", "disagree"], &["-1", "x"]),
    (&["like", "good"], &["+1", "heart"]),
    (&["love"], &["heart", "heart_eyes"]),
    (&["thanks", "thank", "thx"], &["pray", "heart"]),
    (
        &["done", "check"],
        &["white_check_mark", "heavy_check_mark"],
    ),
    (&["lol", "haha", "funny"], &["joy", "rofl"]),
    (&["wow"], &["open_mouth", "astonished"]),
    (&["sad"], &["cry", "disappointed"]),
    (&["party", "congrats"], &["tada", "partying_face"]),
];

/// The emojis a word most likely stands for (`ok` → 👌 👍 🆗), at most [`LIKELY`]: the
/// reaction words' emojis, then those whose name or shortcode has the word as a whole word.
pub fn likely(word: &str) -> Vec<&'static emojis::Emoji> {
    // A plan repeats its mistakes over many rows: the last answer is remembered.
    thread_local! {
        static LAST: std::cell::RefCell<(String, Vec<&'static emojis::Emoji>)> =
            const { std::cell::RefCell::new((String::new(), Vec::new())) };
    }
    if let Some(found) = LAST.with_borrow(|(w, found)| (w == word).then(|| found.clone())) {
        return found;
    }
    let found = likely_uncached(word);
    LAST.with_borrow_mut(|last| *last = (word.to_string(), found.clone()));
    found
}

fn likely_uncached(word: &str) -> Vec<&'static emojis::Emoji> {
    let word = fold_name(word.trim_matches(':'));
    // No emoji's name is longer: a long value is no word for one.
    if word.is_empty() || word.len() > 64 {
        return Vec::new();
    }
    let mut found: Vec<&'static emojis::Emoji> = REACTION_WORDS
        .iter()
        .filter(|(words, _)| words.contains(&word.as_str()))
        .flat_map(|(_, codes)| codes.iter().filter_map(|c| emojis::get_by_shortcode(c)))
        .collect();
    // Named exactly so first (`fire` → 🔥), then with the word in the name (🚒 fire engine).
    let exact = |name: &str, e: &emojis::Emoji| name == word || e.shortcodes().any(|c| c == word);
    let within = |name: &str, _: &emojis::Emoji| name.split('_').any(|w| w == word);
    for named in [&exact as &dyn Fn(&str, &emojis::Emoji) -> bool, &within] {
        for (name, e) in folded_names() {
            if found.len() >= LIKELY {
                break;
            }
            if e.skin_tone().is_none_or(|t| t == emojis::SkinTone::Default)
                && named(name, e)
                && !found.contains(e)
            {
                found.push(e);
            }
        }
    }
    found.truncate(LIKELY);
    found
}

/// How many emojis [`likely`] suggests.
pub const LIKELY: usize = 3;

/// `name` of a `:name:` value (no colon or space inside).
fn shortcode_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix(':')?.strip_suffix(':')?;
    (!name.is_empty() && !name.contains([':', ' '])).then_some(name)
}

/// The known shortcode closest to `name` (Jaro-Winkler, as for field names), with its emoji.
fn nearest_shortcode(name: &str) -> Option<(&'static str, &'static str)> {
    let name = name.to_lowercase();
    emojis::iter()
        .flat_map(|e| e.shortcodes().map(move |code| (code, e.as_str())))
        .map(|(code, emoji)| (strsim::jaro_winkler(&name, code), code, emoji))
        .filter(|(score, ..)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, code, emoji)| (code, emoji))
}

/// How many emojis `text` is, and the first, if it is a sequence of whole emojis (longest match
/// first).
fn count_emoji(text: &str) -> Option<(usize, &str)> {
    let mut rest = text;
    let mut n = 0;
    let mut first = "";
    while !rest.is_empty() {
        let ends: Vec<usize> = rest
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take(16)
            .collect();
        let end = *ends
            .iter()
            .rev()
            .find(|&&end| emojis::get(&rest[..end]).is_some())?;
        if n == 0 {
            first = &rest[..end];
        }
        rest = &rest[end..];
        n += 1;
    }
    Some((n, first))
}

/// Shows invisible characters as `\u{..}` so a message can point at them.
fn escape_invisible(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' ' => " ".to_string(),
            c if invisible(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// An id with whitespace or invisible characters around it: the error, with the trimmed id as
/// the hint.
pub fn check_id(field: &str, text: &str) -> Result<(), Invalid> {
    let bare = trimmed(text);
    if bare.len() == text.len() {
        return Ok(());
    }
    Err(Invalid {
        message: format!(
            "`{field}` has whitespace or invisible characters around it: `{}`",
            shorten(&escape_invisible(text))
        ),
        hint: (!bare.is_empty()).then(|| format!("write `{}`", shorten(bare))),
    })
}

/// Emojis whose name or shortcodes contain `query` (case-insensitive), or the one `query` is;
/// for `reactbatch emoji`. Skin-tone variants are listed under their base emoji.
pub fn search(query: &str) -> Vec<&'static emojis::Emoji> {
    if let Some(e) = emojis::get(query).or_else(|| {
        shortcode_name(query).and_then(|n| emojis::get_by_shortcode(n).or_else(|| by_name(n)))
    }) {
        return vec![e];
    }
    let q = query
        .trim()
        .trim_matches(':')
        .to_lowercase()
        .replace('_', " ");
    // The likely ones first (`ok`: 👌 👍 🆗), then every other match in Unicode's order.
    let mut found = likely(query);
    let matching = emojis::iter().filter(|e| {
        e.name().to_lowercase().contains(&q)
            || e.shortcodes().any(|s| s.replace('_', " ").contains(&q))
    });
    for e in matching {
        if !found.contains(&e) {
            found.push(e);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remembered_emoji_changes_no_answer() {
        // Accepted, then asked again (from the cache), then values it must not let through.
        for _ in 0..2 {
            assert_eq!(resolve("emoji", "👍").as_deref(), Ok("👍"));
        }
        assert!(resolve("emoji", " 👍").is_err());
        assert!(resolve("emoji", "👍👍").is_err());
        assert!(resolve("emoji", "").is_err());
        assert_eq!(resolve("emoji", ":tada:").as_deref(), Ok("🎉"));
        assert_eq!(resolve("emoji", ":tada:").as_deref(), Ok("🎉"));
        assert!(resolve("emoji", "tada").is_err());
    }

    #[test]
    fn one_emoji_of_any_shape_passes_unchanged() {
        for e in ["👍", "👨‍👩‍👧", "👍🏽", "🇧🇷", "1️⃣", "❤️", "🏳️‍🌈"]
        {
            assert_eq!(resolve("emoji", e).as_deref(), Ok(e), "{e}");
        }
    }

    #[test]
    fn other_qualifications_become_the_fully_qualified_form() {
        assert_eq!(
            resolve("emoji", "\u{2764}").as_deref(),
            Ok("\u{2764}\u{fe0f}")
        );
        // Asked twice: the remembered emoji must not keep the unqualified form.
        assert_eq!(
            resolve("emoji", "\u{2764}").as_deref(),
            Ok("\u{2764}\u{fe0f}")
        );
        assert_eq!(
            resolve("emoji", "\u{263a}").as_deref(),
            Ok("\u{263a}\u{fe0f}")
        );
        assert_eq!(
            resolve("emoji", "\u{1f3f3}\u{200d}\u{1f308}").as_deref(),
            Ok("\u{1f3f3}\u{fe0f}\u{200d}\u{1f308}")
        );
    }

    #[test]
    fn unicode_names_work_as_shortcodes() {
        assert_eq!(resolve("emoji", ":thumbs_up:").as_deref(), Ok("👍"));
        assert_eq!(resolve("emoji", ":red_heart:").as_deref(), Ok("❤️"));
        assert_eq!(resolve("emoji", ":Thumbs-Up:").as_deref(), Ok("👍"));
        assert_eq!(
            resolve("emoji", ":thumbs_up_medium_skin_tone:").as_deref(),
            Ok("👍🏽")
        );
        assert!(resolve("emoji", ":thumbs_upp:").is_err());
        assert_eq!(
            search(":thumbs_up:").first().map(|e| e.as_str()),
            Some("👍")
        );
    }

    #[test]
    fn words_get_the_emojis_they_likely_mean() {
        let ok: Vec<&str> = likely("ok").iter().map(|e| e.as_str()).collect();
        assert_eq!(ok, ["👌", "👍", "🆗"]);
        let fire: Vec<&str> = likely("fire").iter().map(|e| e.as_str()).collect();
        assert_eq!(fire.first(), Some(&"🔥"), "{fire:?}");
        assert!(likely("zzqx").is_empty());
        let first: Vec<&str> = search("ok").iter().take(3).map(|e| e.as_str()).collect();
        assert_eq!(first, ["👌", "👍", "🆗"]);
    }

    #[test]
    fn shortcodes_resolve() {
        assert_eq!(resolve("emoji", ":thumbsup:").as_deref(), Ok("👍"));
        assert_eq!(resolve("emoji", ":+1:").as_deref(), Ok("👍"));
        assert_eq!(resolve("emoji", ":heart:").as_deref(), Ok("❤️"));
        let bad = resolve("emoji", ":thumbsupp:").expect_err("unknown");
        assert_eq!(bad.hint.as_deref(), Some("did you mean `:thumbsup:` (👍)?"));
    }

    #[test]
    fn not_one_emoji_is_refused_with_a_reason() {
        let two = resolve("emoji", "👍👍").expect_err("two");
        assert!(two.message.contains("is 2 emojis"), "{}", two.message);
        assert_eq!(two.hint.as_deref(), Some("keep one, e.g. `👍`"));
        let ok = resolve("emoji", "ok").expect_err("word");
        assert_eq!(
            ok.hint.as_deref(),
            Some("for `ok` perhaps 👌 `:ok_hand:`, 👍 `:+1:`, 🆗 `:ok:`")
        );
        let space = resolve("emoji", " 👍").expect_err("space");
        assert_eq!(space.hint.as_deref(), Some("write `👍`"));
        let zw = resolve("emoji", "\u{200b}").expect_err("zero width");
        assert!(zw.message.contains("\\u{200b}"), "{}", zw.message);
        assert!(resolve("emoji", "x").is_err());
    }

    #[test]
    fn ids_with_whitespace_are_refused() {
        assert!(check_id("message_id", "m-1").is_ok());
        let e = check_id("message_id", "m-1 ").expect_err("space");
        assert_eq!(e.hint.as_deref(), Some("write `m-1`"));
    }

    #[test]
    fn search_finds_by_name_and_shortcode() {
        assert!(search("thumbs").iter().any(|e| e.as_str() == "👍"));
        assert_eq!(search(":tada:").first().map(|e| e.as_str()), Some("🎉"));
    }
}
