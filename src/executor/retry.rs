//! What to do with an attempt's outcome: done, retry (and after how long), or give up.
//! 429, 5xx, timeouts and connection errors are retried with exponential backoff and full
//! jitter, honouring `Retry-After`; 400/401/403/404 (and any other answer) are final.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// How an attempt ended, as far as the wire is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// The provider answered.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        /// Provider error code and text, extracted from the body (empty on success).
        code: String,
        message: String,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection dropped before an answer (or could not be made, where the transport
    /// cannot tell the two apart).
    Connection(String),
    /// No connection could be established to the origin (refused, DNS, connect timeout, TLS
    /// handshake): these count toward the origin's unreachable breaker, while a reset or a 5xx
    /// on an established connection does not. `origin` is `host:port`; `code` is
    /// `connection` (retried) or `tls` (final: a handshake the server refused or a
    /// certificate we do not trust is not fixed by trying again).
    Unreachable {
        origin: String,
        code: String,
        message: String,
    },
}

/// The decision for one outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    /// Worth another attempt; `retry_after` is the provider's instruction, if any.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Final failure; `auth` marks 401/403, which count toward stopping the target.
    Fail {
        auth: bool,
    },
}

pub(crate) fn classify(outcome: &AttemptOutcome) -> Verdict {
    match outcome {
        AttemptOutcome::Answered {
            status,
            retry_after,
            code,
            ..
        } => match *status {
            // A 2xx whose body still says no (Ogmma `success: false`) carries a code.
            200..=299 if code.is_empty() => Verdict::Success,
            200..=299 => Verdict::Fail { auth: false },
            429 | 500..=599 => Verdict::Retry {
                retry_after: *retry_after,
            },
            401 | 403 => Verdict::Fail { auth: true },
            _ => Verdict::Fail { auth: false },
        },
        AttemptOutcome::Timeout | AttemptOutcome::Connection(_) => {
            Verdict::Retry { retry_after: None }
        }
        AttemptOutcome::Unreachable { code, .. } if code == "tls" => Verdict::Fail { auth: false },
        AttemptOutcome::Unreachable { .. } => Verdict::Retry { retry_after: None },
    }
}

/// Backoff before retry number `retry` (1 for the first retry): full jitter over
/// `min(cap, base × 2^(retry-1))`, and never less than the provider's `Retry-After`.
pub(crate) fn backoff(
    retry: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(cap);
    let jitter =
        Duration::from_nanos(rng.random_range(0..=exp.as_nanos().min(u128::from(u64::MAX)) as u64));
    jitter.max(retry_after.unwrap_or_default())
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (relative to `now`).
/// Absurd values are capped at one hour so a broken server cannot park a run forever.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default().min(MAX))
}

/// A retry hint in a JSON error body, where a provider gives it instead of the header:
/// `retry_after` or `retryAfter`, in seconds (a number or a numeric string), capped like the
/// header.
pub(crate) fn retry_after_in_body(body: &[u8]) -> Option<Duration> {
    // Most bodies carry no hint: no JSON parse for them.
    if !body.windows(5).any(|w| w.eq_ignore_ascii_case(b"retry")) {
        return None;
    }
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let value = map.get("retry_after").or_else(|| map.get("retryAfter"))?;
    let secs = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn answered(status: u16) -> AttemptOutcome {
        AttemptOutcome::Answered {
            status,
            retry_after: None,
            code: String::new(),
            message: String::new(),
        }
    }

    #[test]
    fn classifies_per_the_spec() {
        assert_eq!(classify(&answered(200)), Verdict::Success);
        for s in [429, 500, 502, 503] {
            assert_eq!(
                classify(&answered(s)),
                Verdict::Retry { retry_after: None },
                "{s}"
            );
        }
        assert_eq!(classify(&answered(401)), Verdict::Fail { auth: true });
        assert_eq!(classify(&answered(403)), Verdict::Fail { auth: true });
        assert_eq!(classify(&answered(400)), Verdict::Fail { auth: false });
        assert_eq!(classify(&answered(404)), Verdict::Fail { auth: false });
        assert_eq!(
            classify(&AttemptOutcome::Timeout),
            Verdict::Retry { retry_after: None }
        );
    }

    #[test]
    fn backoff_is_bounded_by_the_exponential_cap_and_honours_retry_after() {
        let mut rng = SmallRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for retry in 1..=12 {
            let bound = base.saturating_mul(1 << (retry - 1)).min(cap);
            for _ in 0..200 {
                assert!(backoff(retry, base, cap, None, &mut rng) <= bound);
            }
        }
        let ra = Some(Duration::from_secs(3));
        assert!(backoff(1, base, cap, ra, &mut rng) >= Duration::from_secs(3));
    }

    #[test]
    fn a_retry_hint_in_a_json_body_is_read_in_seconds() {
        let secs = |b: &str| retry_after_in_body(b.as_bytes());
        assert_eq!(secs(r#"{"retry_after": 2}"#), Some(Duration::from_secs(2)));
        assert_eq!(
            secs(r#"{"code":"x","retryAfter":"1.5"}"#),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            secs(r#"{"retry_after": 1e9}"#),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(secs(r#"{"retry_after": -1}"#), None);
        assert_eq!(secs(r#"{"retry_after": true}"#), None);
        assert_eq!(secs(r#"{"code":"rate_limited"}"#), None);
        assert_eq!(secs("retry later"), None);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .single()
            .expect("date");
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 09:00:30 +0000", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 08:00:00 +0000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(Duration::from_secs(3600))
        );
    }
}
