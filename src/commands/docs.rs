//! `reactbatch schema`, `reactbatch completions SHELL` and `reactbatch man`: documents generated
//! from the program's own definitions (the plan types, the clap definitions), printed on
//! stdout, so they cannot drift from what the program accepts.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::exit::Exit;

/// Prints the plan's JSON Schema ([`crate::plan::schema`]).
pub(crate) fn schema() -> Exit {
    write_stdout("schema", crate::plan::schema::plan_schema_json().as_bytes())
}

/// Prints a completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "reactbatch", &mut script);
    write_stdout("completions", &script)
}

/// `reactbatch man [COMMAND] [--out DIR]`: prints `reactbatch(1)` or COMMAND's page, or writes
/// the pages (all of them, or COMMAND's) into DIR.
pub(crate) fn man(args: &ManArgs) -> Exit {
    let pages = match man_pages(args.command.as_deref()) {
        Ok(pages) => pages,
        Err(message) => {
            eprintln!("reactbatch man: {message}");
            return Exit::Invalid;
        }
    };
    let Some(dir) = &args.out else {
        let page = pages.into_iter().next().map(|(_, page)| page);
        return write_stdout("man", page.unwrap_or_default().as_bytes());
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("reactbatch man: cannot create {}: {e}", dir.display());
        return Exit::Invalid;
    }
    let mut written = String::new();
    for (file, page) in pages {
        let path = dir.join(&file);
        if let Err(e) = std::fs::write(&path, page) {
            eprintln!("reactbatch man: cannot write {}: {e}", path.display());
            return Exit::Invalid;
        }
        written.push_str(&format!("{}\n", path.display()));
    }
    write_stdout("man", written.as_bytes())
}

/// The man pages as (file name, roff): `reactbatch.1` first, then one per subcommand in the
/// order of `--help`; or only `command`'s page.
pub(crate) fn man_pages(command: Option<&str>) -> Result<Vec<(String, String)>, String> {
    // `help` is clap's own subcommand, not a page of ours: the main page must not point at a
    // `reactbatch-help(1)` that is never written.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let subs: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let sub_names: Vec<String> = subs.iter().map(page_name).collect();
    let mut pages = Vec::new();
    match command {
        None => {
            pages.push(render_page(&cli, &sub_names)?);
            for sub in &subs {
                pages.push(render_page(sub, &["reactbatch".to_string()])?);
            }
        }
        Some(name) => {
            let Some(sub) = subs.iter().find(|s| s.get_name() == name) else {
                let names: Vec<&str> = subs.iter().map(clap::Command::get_name).collect();
                return Err(format!(
                    "no page for `{name}`: the commands are {}",
                    names.join(", ")
                ));
            };
            pages.push(render_page(sub, &["reactbatch".to_string()])?);
        }
    }
    Ok(pages)
}

/// `reactbatch-run` for `run` (the name clap gives a built subcommand).
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// One page: clap_mangen's sections (the examples under EXTRA, without the reference part of
/// `--help`), then EXIT STATUS and ENVIRONMENT from the tables `--help` prints, then SEE ALSO
/// naming `see_also`, pages that are written alongside.
fn render_page(cmd: &clap::Command, see_also: &[String]) -> Result<(String, String), String> {
    let mut cmd = cmd.clone();
    let reference = crate::cli::reference_text();
    if let Some(long) = cmd.get_after_long_help().map(ToString::to_string) {
        if let Some(examples) = long.strip_suffix(&reference) {
            let examples = examples.trim_end().to_string();
            cmd = cmd.after_long_help(examples);
        }
    }
    let man =
        clap_mangen::Man::new(cmd.clone()).source(format!("reactbatch {}", crate::cli::VERSION));
    let file = man.get_filename();
    let mut page = Vec::new();
    man.render_title(&mut page).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    man.render_name_section(&mut body)
        .and_then(|()| man.render_synopsis_section(&mut body))
        .and_then(|()| man.render_description_section(&mut body))
        .map_err(|e| e.to_string())?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut body)
            .map_err(|e| e.to_string())?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut body)
            .map_err(|e| e.to_string())?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(&mut body)
            .map_err(|e| e.to_string())?;
    }
    let mut roff = roff::Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in crate::cli::EXIT_STATUS {
        roff.control("TP", [])
            .text([roff::bold(code.to_string())])
            .text([roff::roman(*meaning)]);
    }
    roff.control("PP", [])
        .text([roff::roman(crate::cli::EXIT_PRECEDENCE)]);
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in crate::cli::ENVIRONMENT {
        roff.control("TP", [])
            .text([roff::bold(*name)])
            .text([roff::roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let refs: Vec<String> = see_also.iter().map(|name| format!("{name}(1)")).collect();
    roff.text([roff::roman(refs.join(", "))]);
    roff.to_writer(&mut body).map_err(|e| e.to_string())?;
    // Each section rendered on its own starts with roff's apostrophe preamble; the page needs
    // it once, at the top.
    let preamble = roff::Roff::new().render();
    let body = String::from_utf8_lossy(&body).replace(&preamble, "");
    let mut page = String::from_utf8_lossy(&page).into_owned();
    page.push_str(&body);
    Ok((file, page))
}

/// A closed pipe (`reactbatch man | head`) is not an error worth a message.
fn write_stdout(command: &str, bytes: &[u8]) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Exit::Success,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => {
            eprintln!("reactbatch {command}: cannot write to standard output: {e}");
            Exit::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_subcommand_and_see_also_names_only_those() {
        let pages = man_pages(None).expect("pages");
        let files: Vec<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(files[0], "reactbatch.1");
        for sub in ["run", "check", "undo", "sign", "sandbox", "emoji", "man"] {
            assert!(
                files.contains(&format!("reactbatch-{sub}.1").as_str()),
                "{files:?}"
            );
        }
        let main = &pages[0].1;
        let see_also = main.split(".SH \"SEE ALSO\"").nth(1).expect("SEE ALSO");
        let mut named = 0;
        for word in see_also.split([',', ' ', '\n']) {
            if let Some(name) = word.trim().strip_suffix("(1)") {
                let name = name.replace("\\-", "-");
                assert!(
                    files.contains(&format!("{name}.1").as_str()),
                    "{name} in {files:?}"
                );
                named += 1;
            }
        }
        assert_eq!(named, files.len() - 1, "{see_also}");
        assert!(!main.contains("reactbatch\\-help(1)"), "{main}");
    }

    #[test]
    fn every_page_has_exit_status_and_environment_once() {
        for (file, page) in man_pages(None).expect("pages") {
            for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH \"SEE ALSO\""] {
                assert_eq!(page.matches(section).count(), 1, "{section} in {file}");
            }
            for (code, _) in crate::cli::EXIT_STATUS {
                assert!(
                    page.contains(&format!("\\fB{code}\\fR")),
                    "{code} in {file}"
                );
            }
            assert!(page.contains("NO_COLOR"), "{file}");
            // The reference is in its sections, not repeated under EXTRA from `--help`.
            assert_eq!(page.matches("Exit status:").count(), 0, "{file}");
            assert_eq!(page.matches(".ie \\n(.g").count(), 1, "{file}");
        }
    }

    #[test]
    fn the_exit_table_covers_every_exit_code() {
        use crate::exit::Exit;
        let listed: Vec<u8> = crate::cli::EXIT_STATUS.iter().map(|(c, _)| *c).collect();
        for exit in [
            Exit::Success,
            Exit::RowsFailed,
            Exit::Invalid,
            Exit::AuthStopped,
            Exit::Locked,
            Exit::Interrupted,
            Exit::Terminated,
        ] {
            assert!(listed.contains(&exit.code()), "{exit:?}");
        }
    }

    #[test]
    fn an_unknown_page_names_the_commands() {
        let err = man_pages(Some("runn")).expect_err("unknown");
        assert!(err.contains("run, "), "{err}");
    }
}
