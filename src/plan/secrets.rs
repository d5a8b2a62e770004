//! Reading each target's secret from `{ env: NAME }` or `{ file: PATH }`. Problems name the
//! variable or file and the target, never the value.

use std::io::Read;

use super::fields::MAX_SECRET_BYTES;
use super::model::Target;
use super::problem::Problem;
use super::source::Pos;
use crate::secret::{Secret, SecretRef};

/// Where a target's secret reference was written.
#[derive(Clone, Debug)]
pub(super) struct SecretSite {
    pub file: String,
    pub pos: Pos,
}

pub(super) fn resolve(
    targets: &[Target],
    sites: &[SecretSite],
) -> Result<Vec<Secret>, Vec<Problem>> {
    let mut secrets = Vec::new();
    let mut problems = Vec::new();
    for (target, site) in targets.iter().zip(sites) {
        match read(target, site) {
            Ok(s) => secrets.push(s),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(secrets)
    } else {
        Err(problems)
    }
}

/// Warnings for secret files that users other than the owner can read (Unix permissions).
pub(super) fn permission_warnings(targets: &[Target], sites: &[SecretSite]) -> Vec<Problem> {
    let mut warnings = Vec::new();
    #[cfg(unix)]
    for (target, site) in targets.iter().zip(sites) {
        use std::os::unix::fs::PermissionsExt;
        let SecretRef::File(path) = &target.credential else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if !meta.is_file() {
            // Not read at all (an error of its own), so its mode says nothing.
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warnings.push(
                Problem::warning(
                    &site.file,
                    Some(site.pos.line),
                    Some(site.pos.col),
                    format!(
                        "secret file `{}` (target `{}`) can be read by other users (mode {:o})",
                        path.display(),
                        target.name,
                        mode & 0o777
                    ),
                )
                .with_hint(format!("chmod 600 {}", path.display()))
                .with_code("secret_file_readable"),
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (targets, sites);
    warnings
}

/// Warnings for secrets whose value starts or ends with whitespace (a file's trailing newline
/// excepted: it is not part of the secret). Such a value is used as it is, but it is almost
/// always a copy-paste slip (`export KEY=" abc"`, a trailing space) that would fail every
/// request with 401. Secrets that cannot be read are left to [`resolve`]'s errors.
pub(super) fn whitespace_warnings(targets: &[Target], sites: &[SecretSite]) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for (target, site) in targets.iter().zip(sites) {
        let Ok(secret) = read(target, site) else {
            continue;
        };
        let value = secret.expose();
        if value.trim() == value {
            continue;
        }
        let what = match &target.credential {
            SecretRef::Env(var) => format!("environment variable `{var}`"),
            SecretRef::File(path) => format!("secret file `{}`", path.display()),
        };
        let end = match (
            value.starts_with(char::is_whitespace),
            value.ends_with(char::is_whitespace),
        ) {
            (true, true) => "starts and ends",
            (true, false) => "starts",
            _ => "ends",
        };
        warnings.push(
            Problem::warning(
                &site.file,
                Some(site.pos.line),
                Some(site.pos.col),
                format!(
                    "{what} (secret of target `{}`) {end} with whitespace; it is sent as it is",
                    target.name
                ),
            )
            .with_hint("remove the whitespace if it is not part of the secret")
            .with_code("secret_whitespace"),
        );
    }
    warnings
}

/// Targets whose `base_url` is plain `http://` to a host that is not loopback: their secrets
/// (the Ogmma key, Kommo signatures) would cross a network unencrypted.
pub(super) fn insecure_http(targets: &[Target]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for t in targets {
        let Ok(url) = url::Url::parse(&t.base_url) else {
            continue;
        };
        if url.scheme() != "http" {
            continue;
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !loopback {
            problems.push(
                Problem::error(
                    t.source.file.to_string(),
                    Some(t.source.line),
                    None,
                    format!(
                        "target `{}` uses plain http:// to `{}`: credentials would travel unencrypted",
                        t.name,
                        url.host_str().unwrap_or("")
                    ),
                )
                .with_hint("use https://, or pass --allow-insecure-http to `run`")
                .with_code("insecure_http"),
            );
        }
    }
    problems
}

fn read(target: &Target, site: &SecretSite) -> Result<Secret, Problem> {
    // Every way of not getting the secret is one code: the message says which.
    let err = |msg: String| {
        Problem::error(&site.file, Some(site.pos.line), Some(site.pos.col), msg)
            .with_code("secret_unavailable")
    };
    let name = &target.name;
    match &target.credential {
        SecretRef::Env(var) => {
            let value = std::env::var_os(var).ok_or_else(|| {
                if crate::secret::looks_like_a_secret(var) {
                    // Likely the secret itself, pasted where the variable's name belongs.
                    return err(format!(
                        "`env` of target `{name}` names no set environment variable, and looks \
                         like a secret value rather than a name (it is not shown here)"
                    ))
                    .hiding_source()
                    .with_hint(
                        "write `{ env: NAME }` with the variable's name and put the secret in \
                         that variable",
                    );
                }
                err(format!(
                    "environment variable `{var}` is not set (secret of target `{name}`)"
                ))
                .with_hint(format!("set {var} or use {{ file: ... }}"))
            })?;
            let value = value.into_string().map_err(|_| {
                err(format!(
                    "environment variable `{var}` (target `{name}`) is not valid UTF-8"
                ))
            })?;
            if value.trim().is_empty() {
                return Err(err(format!(
                    "environment variable `{var}` (target `{name}`) is empty"
                )));
            }
            Ok(Secret::new(value))
        }
        SecretRef::File(path) => {
            let shown = path.display();
            let cannot = |e: std::io::Error| {
                err(format!(
                    "cannot read secret file `{shown}` (target `{name}`): {e}"
                ))
            };
            // Checked before opening: opening a FIFO would block until a writer comes.
            if let Err(what) = super::paths::regular_file(path) {
                return Err(err(format!(
                    "secret file `{shown}` (target `{name}`) is {what}, not a regular file"
                )));
            }
            let file = std::fs::File::open(path).map_err(cannot)?;
            let mut bytes = Vec::new();
            file.take(MAX_SECRET_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(cannot)?;
            if bytes.len() as u64 > MAX_SECRET_BYTES {
                return Err(err(format!(
                    "secret file `{shown}` (target `{name}`) is larger than 64 KiB"
                )));
            }
            let text = String::from_utf8(bytes).map_err(|_| {
                err(format!(
                    "secret file `{shown}` (target `{name}`) is not valid UTF-8"
                ))
            })?;
            // Files usually end with a newline that is not part of the secret.
            let value = text.trim_end_matches(['\n', '\r']);
            if value.trim().is_empty() {
                return Err(err(format!(
                    "secret file `{shown}` (target `{name}`) is empty"
                )));
            }
            Ok(Secret::new(value))
        }
    }
}
