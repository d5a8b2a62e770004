//! `targets:` → [`Target`]s. Secrets stay references here (resolved by [`super::secrets`]); a
//! literal secret is an error whose message never contains the value.

use std::path::Path;

use super::doc::DocReader;
use super::model::{ProviderKind, Rate, Source, Target, TargetKind};
use super::pace::LimitGroup;
use super::source::Pos;
use super::yaml::{Key, Node};
use crate::secret::SecretRef;

/// Keys of a Kommo / an Ogmma target, and of a secret reference (the JSON Schema in
/// [`super::schema`] is tested against them).
pub(super) const KOMMO_KEYS: &[&str] = &[
    "provider",
    "scope_id",
    "secret",
    "user_id",
    "user_ref_id",
    "base_url",
    "rate",
    "limit_group",
];
pub(super) const OGMMA_KEYS: &[&str] = &[
    "provider",
    "channel_id",
    "api_key",
    "base_url",
    "rate",
    "limit_group",
];
pub(super) const SECRET_KEYS: &[&str] = &["env", "file"];

/// The most requests per second a `rate` may ask for (beyond it the pacing interval rounds to 0).
pub(super) const MAX_RATE_PER_SECOND: f64 = 100_000.0;

/// A target plus where its secret reference was written (for secret-resolution errors).
pub(super) struct LoadedTarget {
    pub target: Target,
    pub secret_pos: Pos,
    /// `limit_group:` as written, and where.
    pub limit_group: Option<(LimitGroup, Pos)>,
}

/// Reads the `targets:` mapping. `dir` is the directory of the file it is in (secret file paths
/// are relative to it).
pub(super) fn read_targets(r: &mut DocReader<'_>, node: &Node, dir: &Path) -> Vec<LoadedTarget> {
    let Some(entries) = r.map(node, "targets") else {
        return Vec::new();
    };
    if entries.is_empty() {
        r.error(
            node.pos,
            "`targets` is empty: a plan needs at least one target",
        );
    }
    let mut out = Vec::new();
    for (name, body) in entries {
        if !is_name(&name.text) {
            r.error(
                name.pos,
                format!(
                    "invalid target name `{}`: use letters, digits, `-`, `_` and `.`",
                    super::source::shorten(&name.text)
                ),
            );
            continue;
        }
        if let Some(t) = read_target(r, &name.text, name.pos, body, dir) {
            out.push(t);
        }
    }
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `[A-Za-z0-9._~-]+`: ids that go into a URL path unescaped (and are signed as written).
pub(super) fn is_path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// One target: its provider, then each of its keys; `None` when any is wrong (every problem
/// found is reported, in the order the keys are checked).
fn read_target(
    r: &mut DocReader<'_>,
    name: &str,
    name_pos: Pos,
    body: &Node,
    dir: &Path,
) -> Option<LoadedTarget> {
    let what = format!("target `{name}`");
    if body.is_null() {
        r.error(
            name_pos,
            format!("{what} is empty: expected `provider:` and its settings"),
        );
        return None;
    }
    let entries = r.map(body, &what)?;
    let t = TargetBody {
        what,
        name_pos,
        entries,
    };
    let provider = t.provider(r)?;
    let mut ok = t.known_keys(r, provider);
    let kind = t.kind(r, provider);
    let credential = t.credential(r, provider, dir);
    let base_url = t.base_url(r);
    let rate = t.rate(r);
    let limit_group = t.limit_group(r);
    ok &= base_url.is_ok() && rate.is_ok() && limit_group.is_ok();
    let (kind, (credential, secret_pos)) = (kind?, credential?);
    if !ok {
        return None;
    }
    let provider_kind = match kind {
        TargetKind::Kommo { .. } => ProviderKind::Kommo,
        TargetKind::Ogmma { .. } => ProviderKind::Ogmma,
    };
    Some(LoadedTarget {
        target: Target {
            name: name.to_string(),
            kind,
            base_url: base_url
                .ok()
                .flatten()
                .unwrap_or_else(|| provider_kind.default_base_url().to_string()),
            rate: rate.ok().flatten(),
            credential,
            source: Source {
                file: r.file.clone(),
                line: name_pos.line,
            },
        },
        secret_pos,
        limit_group: limit_group.ok().flatten(),
    })
}

/// A target's mapping, as written under its name.
struct TargetBody<'n> {
    /// How messages name it: "target `NAME`".
    what: String,
    name_pos: Pos,
    entries: &'n [(Key, Node)],
}

/// A value that was given and refused (its problem is reported); `Ok(None)`: not given.
type Setting<T> = Result<Option<T>, ()>;

impl<'n> TargetBody<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// An optional string key, with where it was written.
    fn string_at(&self, r: &mut DocReader<'_>, key: &str) -> Option<(&'n str, Pos)> {
        let node = self.get(key)?;
        r.optional_string(node, key).map(|s| (s, node.pos))
    }

    /// `provider:`, `kommo` or `ogmma`.
    fn provider(&self, r: &mut DocReader<'_>) -> Option<&'n str> {
        let what = &self.what;
        let Some(node) = self.get("provider") else {
            r.error(
                self.name_pos,
                format!("{what} has no `provider` (kommo or ogmma)"),
            );
            return None;
        };
        let provider = r.string(node, "provider")?;
        if matches!(provider, "kommo" | "ogmma") {
            return Some(provider);
        }
        let hint = super::fields::suggest(provider, ["kommo", "ogmma"]);
        let p = r.error(
            node.pos,
            format!(
                "unknown provider `{}` for {what}: expected `kommo` or `ogmma`",
                super::source::shorten(provider)
            ),
        );
        p.hint = hint;
        None
    }

    /// Whether every key is one of `provider`'s; the other provider's keys are named as such.
    fn known_keys(&self, r: &mut DocReader<'_>, provider: &str) -> bool {
        let (known, other, other_name) = match provider {
            "kommo" => (KOMMO_KEYS, OGMMA_KEYS, "ogmma"),
            _ => (OGMMA_KEYS, KOMMO_KEYS, "kommo"),
        };
        let mut ok = true;
        for (key, _) in self.entries {
            if known.contains(&key.text.as_str()) {
                continue;
            }
            ok = false;
            if other.contains(&key.text.as_str()) {
                r.error(
                    key.pos,
                    format!(
                        "`{}` is for {other_name} targets; {} is {provider}",
                        key.text, self.what
                    ),
                );
            } else {
                r.unknown_key(key, &self.what, known);
            }
        }
        ok
    }

    /// The provider's settings: its account and, for Kommo, the default user.
    fn kind(&self, r: &mut DocReader<'_>, provider: &str) -> Option<TargetKind> {
        if provider == "kommo" {
            let scope = self.account(r, "scope_id");
            let user_id = self.user(r, "user_id");
            let user_ref_id = self.user(r, "user_ref_id");
            scope.ok().map(|scope_id| TargetKind::Kommo {
                scope_id,
                user_id,
                user_ref_id,
            })
        } else {
            let channel = self.account(r, "channel_id");
            channel
                .ok()
                .map(|channel_id| TargetKind::Ogmma { channel_id })
        }
    }

    /// The account: a target may leave it to its rows (each row then gives its own).
    fn account(&self, r: &mut DocReader<'_>, key: &str) -> Setting<String> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        let text = r.string(node, key).ok_or(())?;
        if text.is_empty() {
            r.error(node.pos, format!("`{key}` of {} is empty", self.what));
            return Err(());
        }
        if is_path_safe(text) {
            return Ok(Some(text.to_string()));
        }
        r.error(
            node.pos,
            format!(
                "`{key}` of {} must be made of `A-Z a-z 0-9 . _ ~ -` only \
                 (it goes into the request path unescaped), found `{}`",
                self.what,
                super::source::shorten(text)
            ),
        );
        Err(())
    }

    /// A Kommo target's default user id, checked as a row's user id is.
    fn user(&self, r: &mut DocReader<'_>, key: &str) -> Option<String> {
        let node = self.get(key)?;
        let text = r.optional_string(node, key)?;
        if text.len() > super::fields::MAX_FIELD_BYTES {
            r.error(node.pos, format!("`{key}` is longer than 4096 bytes"));
            return None;
        }
        // A target's user ids are row ids by default: the same whitespace rule.
        if let Err(bad) = super::emoji::check_id(key, text) {
            // Kept, so rows are not also told they lack a user: one error, at its place.
            r.error(node.pos, bad.message).hint = bad.hint;
        }
        Some(text.to_string())
    }

    /// The credential reference (`secret:` for Kommo, `api_key:` for Ogmma), and where.
    fn credential(
        &self,
        r: &mut DocReader<'_>,
        provider: &str,
        dir: &Path,
    ) -> Option<(SecretRef, Pos)> {
        let key = if provider == "kommo" {
            "secret"
        } else {
            "api_key"
        };
        let Some(node) = self.get(key) else {
            r.error(
                self.name_pos,
                format!(
                    "{} ({provider}) needs `{key}: {{ env: NAME }}` or `{{ file: PATH }}`",
                    self.what
                ),
            );
            return None;
        };
        read_secret_ref(r, node, key, &self.what, dir).map(|s| (s, node.pos))
    }

    fn base_url(&self, r: &mut DocReader<'_>) -> Setting<String> {
        let Some((text, pos)) = self.string_at(r, "base_url") else {
            return Ok(None);
        };
        check_base_url(text).map(Some).map_err(|msg| {
            // `user:password@` must not reach the terminal through the snippet either.
            r.error(pos, msg).hide_source = text.contains('@');
        })
    }

    fn rate(&self, r: &mut DocReader<'_>) -> Setting<Rate> {
        let Some((text, pos)) = self.string_at(r, "rate") else {
            return Ok(None);
        };
        parse_rate(text).map(Some).map_err(|msg| {
            r.error(pos, msg);
        })
    }

    fn limit_group(&self, r: &mut DocReader<'_>) -> Setting<(LimitGroup, Pos)> {
        match self.string_at(r, "limit_group") {
            None => Ok(None),
            Some(("own", pos)) => Ok(Some((LimitGroup::Own, pos))),
            Some((text, pos)) if is_name(text) => {
                Ok(Some((LimitGroup::Named(text.to_string()), pos)))
            }
            Some((text, pos)) => {
                r.error(
                    pos,
                    format!(
                        "invalid limit_group `{}`: use letters, digits, `-`, `_` and `.` (or `own`)",
                        super::source::shorten(text)
                    ),
                );
                Err(())
            }
        }
    }
}

/// `{ env: NAME }` or `{ file: PATH }`; anything else is an error that never echoes the value,
/// and whose source line is never shown either (it may hold the secret).
fn read_secret_ref(
    r: &mut DocReader<'_>,
    node: &Node,
    key: &str,
    what: &str,
    dir: &Path,
) -> Option<SecretRef> {
    let before = r.problems.len();
    let secret = read_secret_ref_unmarked(r, node, key, what, dir);
    for p in &mut r.problems[before..] {
        p.hide_source = true;
    }
    secret
}

fn read_secret_ref_unmarked(
    r: &mut DocReader<'_>,
    node: &Node,
    key: &str,
    what: &str,
    dir: &Path,
) -> Option<SecretRef> {
    let hint = format!("write `{key}: {{ env: NAME }}` or `{key}: {{ file: PATH }}`");
    let super::yaml::Value::Map(entries) = &node.value else {
        let p = r.error(
            node.pos,
            format!(
                "literal secret in `{key}` of {what}: secrets must not be written in a plan \
                 (the value is not shown here)"
            ),
        );
        p.hint = Some(hint);
        p.code = "literal_secret";
        return None;
    };
    if entries.len() != 1 {
        let p = r.error(
            node.pos,
            format!("`{key}` of {what} must have exactly one of `env` or `file`"),
        );
        p.hint = Some(hint);
        return None;
    }
    let (k, v) = &entries[0];
    match k.text.as_str() {
        "env" => {
            let name = r.string(v, "env")?;
            let valid = !name.is_empty()
                && name.len() <= 256
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if valid {
                Some(SecretRef::Env(name.to_string()))
            } else {
                // A value that is not a variable name may be the secret pasted in the wrong place.
                r.error(
                    v.pos,
                    format!(
                        "`env` of {what} must be an environment variable name \
                         (letters, digits, `_`); the value is not shown here"
                    ),
                );
                None
            }
        }
        "file" => {
            let path = r.string(v, "file")?;
            if path.is_empty() {
                r.error(v.pos, "`file` is empty");
                return None;
            }
            match super::paths::resolve(dir, path) {
                Ok(resolved) => Some(SecretRef::File(resolved)),
                Err(msg) => {
                    r.error(v.pos, format!("secret file {msg}"));
                    None
                }
            }
        }
        _ => {
            r.unknown_key(k, &format!("`{key}` of {what}"), SECRET_KEYS);
            None
        }
    }
}

/// `http(s)://host[:port]`, no user info, path, query or fragment; a trailing `/` is dropped.
pub(super) fn check_base_url(text: &str) -> Result<String, String> {
    let shown = super::source::shorten(text);
    let bad = |why: &str| format!("invalid base_url `{shown}`: {why}");
    if text.contains('@') {
        // Not echoed: the part before `@` may be a password.
        return Err("invalid base_url: credentials in URLs are not allowed \
                    (the value is not shown here)"
            .to_string());
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| bad("expected `http://` or `https://` then host[:port]"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(bad(
            "expected no path, query or fragment, only scheme://host[:port]",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed `[` in IPv6 host"))?;
        if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(bad("invalid IPv6 host"));
        }
        (inside, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return Err(bad("invalid host"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("invalid port (1 to 65535)")),
        }
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// [`Rate::parse`] plus an upper bound, so the pacing interval stays meaningful.
pub(super) fn parse_rate(text: &str) -> Result<Rate, String> {
    let rate = Rate::parse(text)?;
    if rate.per_second() > MAX_RATE_PER_SECOND && rate != Rate::Unlimited {
        return Err(format!(
            "rate `{}` is above the maximum of 100000/s (use `unlimited` for sandbox rehearsals)",
            super::source::shorten(text)
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            check_base_url("https://amojo.kommo.com/").as_deref(),
            Ok("https://amojo.kommo.com")
        );
        assert!(check_base_url("http://127.0.0.1:8080").is_ok());
        assert!(check_base_url("http://[::1]:8080").is_ok());
        assert!(check_base_url("https://x.com/api").is_err());
        assert!(check_base_url("https://x.com?a=1").is_err());
        assert!(check_base_url("ftp://x.com").is_err());
        let err = check_base_url("https://u:hunter2@x.com").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(check_base_url("https://x.com:0").is_err());
        assert!(check_base_url("https://x.com:99999").is_err());
    }

    #[test]
    fn path_safe_ids() {
        assert!(is_path_safe("344a5002-f8ca_52e5.x~y"));
        assert!(!is_path_safe("a/b"));
        assert!(!is_path_safe("a b"));
        assert!(!is_path_safe(""));
        assert!(!is_path_safe("%2F"));
    }

    #[test]
    fn rates_are_bounded() {
        assert!(parse_rate("7/s").is_ok());
        assert!(parse_rate("unlimited").is_ok());
        assert!(parse_rate("1000000/s").is_err());
        assert!(parse_rate("0/s").is_err());
    }
}
