//! `reactbatch emoji SEARCH`: the emojis a word likely means (`ok`: 👌 👍 🆗), then every emoji
//! whose name or shortcode contains SEARCH, one a line
//! with the shortcodes a plan may use instead (`:thumbsup:`), for people writing plans.

use std::io::Write;

use crate::cli::EmojiArgs;
use crate::exit::Exit;
use crate::plan::emoji::search;

pub(crate) fn run(args: &EmojiArgs) -> Exit {
    let query = args.search.join(" ");
    let found = search(&query);
    if found.is_empty() {
        eprintln!("reactbatch emoji: nothing matches `{query}`");
        return Exit::RowsFailed;
    }
    let mut out = String::new();
    for e in found {
        let codes: Vec<String> = e.shortcodes().map(|c| format!(":{c}:")).collect();
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            e.as_str(),
            codes.join(" "),
            e.name()
        ));
    }
    // A closed stdout (e.g. piped into `head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Exit::Success
}
