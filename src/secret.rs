//! Secrets as a type: the channel secret and API keys are held in [`Secret`], whose `Debug` and
//! `Display` print `(redacted)`, so no log line, error or report can carry one by accident.
//! Where a secret must be shown to a user (a runnable curl command), its *reference*
//! ([`SecretRef`]) is shown instead: `$OGMMA_API_KEY` or `$(cat path)`.

use std::fmt;
use std::path::PathBuf;

/// A secret value. The only way to read it is [`Secret::expose`], used by the signer and the
/// HTTP client; everything else sees `(redacted)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for signing and for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// `true` when an environment variable *name* looks like a credential pasted where the name
/// belongs (a Kommo channel secret is 40 hex digits, a valid name whenever it starts with a
/// letter): long, no `_`, several digits. Messages about such a name must not echo it.
pub fn looks_like_a_secret(env_name: &str) -> bool {
    env_name.len() >= 20
        && !env_name.contains('_')
        && env_name.bytes().filter(u8::is_ascii_digit).count() >= 4
}

/// Where a secret comes from, as written in a plan: `{ env: NAME }` or `{ file: PATH }`.
/// Safe to print; it is what dry-run output and curl renderings show.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    /// The path as resolved relative to the plan file.
    File(PathBuf),
}

impl SecretRef {
    /// A shell expression that yields the secret at run time, for runnable curl commands.
    ///
    /// A file path is made absolute (against the current directory, which is what a relative
    /// plan path was resolved against), so the command runs from any directory, and is quoted
    /// for the shell, so a path holding `'` neither breaks the command nor injects into it.
    pub fn shell_expr(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("${name}"),
            SecretRef::File(path) => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let quoted = path.display().to_string().replace('\'', r"'\''");
                format!("$(cat '{quoted}')")
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "{{ env: {name} }}"),
            SecretRef::File(path) => write!(f, "{{ file: {} }}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "(redacted)");
        assert_eq!(format!("{s}"), "(redacted)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn pasted_secrets_look_like_secrets_and_variable_names_do_not() {
        assert!(looks_like_a_secret(
            "abcd1e8f4c7b2a9d6e3f0c5b8a1d4e7f2c9b6a3d"
        ));
        assert!(looks_like_a_secret("sk2live9f3e7a1b5c8d0e4f"));
        for name in [
            "KOMMO_CHANNEL_SECRET",
            "OGMMA_API_KEY",
            "V",
            "REACTBATCH_TEST_UNSET_VAR",
            "token2024",
        ] {
            assert!(!looks_like_a_secret(name), "{name}");
        }
    }

    #[test]
    fn file_reference_is_absolute_and_shell_quoted() {
        let r = SecretRef::File(PathBuf::from("keys/it's.key"));
        let cwd = std::env::current_dir().expect("cwd");
        let want = cwd.join("keys/it's.key").display().to_string();
        assert_eq!(
            r.shell_expr(),
            format!("$(cat '{}')", want.replace('\'', r"'\''"))
        );
        assert!(r.shell_expr().contains(r"it'\''s.key"));
        let abs = SecretRef::File(PathBuf::from("/etc/k"));
        assert_eq!(abs.shell_expr(), "$(cat '/etc/k')");
    }
}
