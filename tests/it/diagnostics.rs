//! What the operator reads: one grouped diagnostic for one mistake on many rows, errors that
//! make others meaningless shown alone, man pages with exit codes and environment, emoji
//! values sent in the form the services show, secrets never echoed.

use std::process::{Output, Stdio};

use crate::common::*;

fn reactbatch(dir: &std::path::Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run reactbatch")
}

// ---- man pages ----

#[test]
fn man_run_prints_the_page_of_run_with_exit_codes_and_environment() {
    let out = reactbatch(&root(), &["man", "run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = text(&out.stdout);
    assert!(page.contains(".TH reactbatch-run 1"), "{page}");
    assert!(page.contains("\\-\\-resume"), "{page}");
    let exit = page
        .split(".SH \"EXIT STATUS\"")
        .nth(1)
        .expect("EXIT STATUS section");
    for code in [0, 1, 2, 3, 4, 5, 74, 130, 143] {
        assert!(
            exit.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "{code}: {exit}"
        );
    }
    let env = page.split(".SH ENVIRONMENT").nth(1).expect("ENVIRONMENT");
    for var in [
        "NO_COLOR",
        "HTTPS_PROXY",
        "KOMMO_CHANNEL_SECRET",
        "SSL_CERT_FILE",
    ] {
        assert!(env.contains(var), "{var}: {env}");
    }
    // `--help` prints the same table.
    let help = text(&reactbatch(&root(), &["run", "--help"]).stdout);
    for (code, meaning) in reactbatch::cli::EXIT_STATUS {
        assert!(
            help.contains(&format!("{code:<4}{meaning}")),
            "{code}: {help}"
        );
        assert!(page.contains(&meaning.replace('-', "\\-")), "{meaning}");
    }
}

#[test]
fn man_out_writes_a_page_per_subcommand_and_see_also_names_only_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man1");
    let out = reactbatch(dir.path(), &["man", "--out", "man1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for page in [
        "reactbatch.1",
        "reactbatch-run.1",
        "reactbatch-check.1",
        "reactbatch-man.1",
    ] {
        assert!(files.iter().any(|f| f == page), "{page} in {files:?}");
    }
    let main = std::fs::read_to_string(out_dir.join("reactbatch.1")).expect("main page");
    let see_also = main.split(".SH \"SEE ALSO\"").nth(1).expect("SEE ALSO");
    let named: Vec<String> = see_also
        .split([',', ' ', '\n'])
        .filter_map(|w| w.trim().strip_suffix("(1)"))
        .map(|name| format!("{}.1", name.replace("\\-", "-")))
        .collect();
    assert_eq!(named.len(), files.len() - 1, "{see_also}");
    for page in &named {
        assert!(
            files.contains(page),
            "SEE ALSO names {page}, not written: {files:?}"
        );
    }
    for file in &files {
        let page = std::fs::read_to_string(out_dir.join(file)).expect("page");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{file}");
        assert!(page.contains(".SH ENVIRONMENT"), "{file}");
    }
    let bad = reactbatch(dir.path(), &["man", "runn"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("the commands are check, run"),
        "{}",
        stderr(&bad)
    );
}

// ---- sign ----

#[test]
fn sign_never_echoes_a_pasted_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("body.json"), "{}").expect("body");
    for pasted in [
        "s3cr3tK3y9x",
        "dGhpcyBpcyBhIHNlY3JldA==",
        "ab12cd34ef56ab12cd34ef5678",
    ] {
        let out = reactbatch(
            dir.path(),
            &[
                "sign",
                "kommo",
                "--secret-env",
                pasted,
                "--path",
                "/v2/x",
                "body.json",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{pasted}");
        let err = stderr(&out);
        assert!(!err.contains(pasted), "{pasted} echoed: {err}");
        assert!(err.contains("--secret-env"), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A name that looks like one is named, so the user sees which variable is missing.
    let out = reactbatch(
        dir.path(),
        &[
            "sign",
            "kommo",
            "--secret-env",
            "MY_UNSET_SECRET",
            "--path",
            "/v2/x",
            "body.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("MY_UNSET_SECRET is not set"),
        "{}",
        stderr(&out)
    );
}
