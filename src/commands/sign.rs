//! `reactbatch sign kommo`: sign a request by hand and print `Content-MD5` and `X-Signature`
//! (and with `-v` the exact string that was signed), so a user chasing a 403 can compare.

use std::io::{Read, Write};

use crate::cli::{SignArgs, SignProvider};
use crate::exit::Exit;
use crate::secret::Secret;

pub(crate) fn run(args: &SignArgs) -> Exit {
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
        Err(_) if !plausible_name(&args.secret_env) => {
            return Err(
                "--secret-env names no set environment variable, and looks like a secret \
                 value rather than a variable's name (it is not shown here): pass the \
                 variable's name, e.g. `--secret-env KOMMO_CHANNEL_SECRET`, and put the secret \
                 in that variable"
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

/// Whether an unset `--secret-env` value may be echoed in the error: a shell variable name
/// (letters, digits, `_`, not starting with a digit) that is not long and digit-laden like a
/// credential, and that has an `_`, is all upper case or has no digit. A pasted secret
/// (`s3cr3tK3y`, 40 hex digits, base64 with `+/=`) fails one of these, and is then not shown.
fn plausible_name(text: &str) -> bool {
    let mut chars = text.chars();
    let shell_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let conventional = text.contains('_')
        || !text.bytes().any(|b| b.is_ascii_lowercase())
        || !text.bytes().any(|b| b.is_ascii_digit());
    shell_name && conventional && !crate::secret::looks_like_a_secret(text)
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

#[cfg(test)]
mod tests {
    use super::plausible_name;

    #[test]
    fn only_names_that_look_like_names_are_echoed() {
        for name in [
            "KOMMO_CHANNEL_SECRET",
            "kommo_secret",
            "secret",
            "TOKEN2",
            "_X",
        ] {
            assert!(plausible_name(name), "{name}");
        }
        for pasted in [
            "s3cr3t",
            "s3cr3tK3y9",
            "2b7e151628aed2a6abf7158809cf4f3c2b7e1516",
            "ab12cd34ef56ab12cd34ef56",
            "dGhpcyBpcyBhIHNlY3JldA==",
            "key-with-dash",
            "",
        ] {
            assert!(!plausible_name(pasted), "{pasted}");
        }
    }
}
