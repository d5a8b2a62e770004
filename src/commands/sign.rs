//! `reactbatch sign kommo`: sign a request by hand and print `Content-MD5` and `X-Signature`
//! (and with `-v` the exact string that was signed), so a user chasing a 403 can compare.

use std::io::{Read, Write};

use crate::cli::{SignArgs, SignProvider};
use crate::exit::Exit;
use crate::secret::Secret;

pub fn run(args: &SignArgs) -> Exit {
    match sign(args) {
        Ok((out, warning)) => {
            if let Some(warning) = warning {
                eprintln!("reactbatch sign: warning: {warning}");
            }
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (e.g. piped into `head`) is not worth a panic.
            let _ = stdout.write_all(out.as_bytes());
            Exit::Success
        }
        Err(message) => {
            eprintln!("reactbatch sign: {message}");
            Exit::Invalid
        }
    }
}

/// The signed headers (and, with `-v`, the signed string), plus a warning about the Date.
fn sign(args: &SignArgs) -> Result<(String, Option<String>), String> {
    let secret = match std::env::var(&args.secret_env) {
        Ok(v) if !v.is_empty() => Secret::new(v),
        Ok(_) => return Err(format!("environment variable {} is empty", args.secret_env)),
        Err(_) if crate::secret::looks_like_a_secret(&args.secret_env) => {
            return Err(
                "--secret-env names no set environment variable, and looks like a \
                 secret value rather than a name (it is not shown here): pass the variable's \
                 name and put the secret in that variable"
                    .into(),
            )
        }
        Err(_) => {
            return Err(format!(
                "environment variable {} is not set",
                args.secret_env
            ))
        }
    };
    if !args.path.starts_with('/') {
        return Err(format!(
            "--path must start with `/` (got `{}`): give the path without scheme or host",
            args.path
        ));
    }
    // The clock is read here only when no Date was given; a given one is signed verbatim
    // (that is what a server compares), with a warning if a server would likely refuse it.
    let (date, warning) = match &args.date {
        Some(date) => (date.clone(), crate::sign::date_warning(date)),
        None => (crate::sign::http_date(chrono::Utc::now()), None),
    };
    let body = read_body(args.body.as_deref())?;
    let SignProvider::Kommo = args.provider;
    let sig = crate::sign::sign_kommo(&args.method, &args.path, &body, &date, &secret);
    let mut out = String::new();
    if args.date.is_none() {
        out.push_str(&format!("Date: {date}\n"));
    }
    out.push_str(&format!(
        "Content-MD5: {}\nX-Signature: {}\n",
        sig.content_md5, sig.signature
    ));
    if args.verbose {
        out.push_str("--- signed string (between the markers, no trailing newline) ---\n");
        out.push_str(&sig.signed);
        out.push_str("\n--- end ---\n");
    }
    Ok((out, warning))
}

fn read_body(path: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    match path {
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut body).map(|_| ()),
        Some(p) => std::fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut body))
            .map(|_| ()),
    }
    .map_err(|e| match path {
        Some(p) if p.as_os_str() != "-" => format!("cannot read body file {}: {e}", p.display()),
        _ => format!("cannot read body from standard input: {e}"),
    })?;
    Ok(body)
}
