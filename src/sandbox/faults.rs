//! Fault injection, deterministic from a seed.
//!
//! Each request that reaches the fault stage (authenticated, within the rate, well-formed) is
//! identified by its message — (provider, scope/channel, message id) — and by how many earlier
//! requests for that same message reached this stage. The outcome is a pure hash of
//! (seed, message, occurrence), so it does not depend on how requests for *different* messages
//! interleave: a client that sends each message's requests in order (as the executor does) sees
//! the same faults on every run with the same seed, whatever its concurrency.
//!
//! Faults are decided before any state changes: a 5xx or a dropped connection never changes
//! state, so a client's retry of the same request is always correct.

use std::collections::HashMap;
use std::sync::Mutex;

use super::state::lock;
use crate::plan::ProviderKind;

/// What happens to one request at the fault stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Processed normally.
    None,
    /// Answered with this 5xx status (500, 502 or 503) and no state change.
    ServerError(u16),
    /// The connection is closed without any answer.
    Drop,
}

pub(crate) struct FaultPlan {
    seed: u64,
    error_rate: f64,
    drop_rate: f64,
    /// Occurrences per message (keyed by a 64-bit hash of provider, scope and message, so no
    /// allocation per request). Only touched when some fault rate is non-zero.
    seen: Mutex<HashMap<u64, u64>>,
}

impl FaultPlan {
    pub(crate) fn new(seed: u64, error_rate: f64, drop_rate: f64) -> Self {
        FaultPlan {
            seed,
            error_rate: error_rate.clamp(0.0, 1.0),
            drop_rate: drop_rate.clamp(0.0, 1.0),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn decide(&self, provider: ProviderKind, scope: &str, message: &str) -> Fault {
        if self.error_rate <= 0.0 && self.drop_rate <= 0.0 {
            return Fault::None;
        }
        let mut h = Fnv::new();
        h.write(provider.as_str().as_bytes());
        h.write(&[0]);
        h.write(scope.as_bytes());
        h.write(&[0]);
        h.write(message.as_bytes());
        let message_hash = h.finish();
        let occurrence = {
            let mut seen = lock(&self.seen);
            let n = seen.entry(message_hash).or_insert(0);
            *n += 1;
            *n
        };
        let roll = splitmix64(
            self.seed ^ splitmix64(message_hash ^ splitmix64(occurrence.wrapping_mul(0x9E37))),
        );
        // The top 53 bits as a uniform fraction in [0, 1).
        let u = (roll >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.drop_rate {
            Fault::Drop
        } else if u < self.drop_rate + self.error_rate {
            Fault::ServerError([500, 502, 503][(roll % 3) as usize])
        } else {
            Fault::None
        }
    }
}

/// A stable, dependency-free mixer (the SplitMix64 finaliser): same input, same output, on every
/// platform and Rust version, which `std`'s hashers do not promise.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, for the same reason.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(seed: u64) -> Vec<Fault> {
        let plan = FaultPlan::new(seed, 0.3, 0.2);
        (0..200)
            .map(|i| plan.decide(ProviderKind::Kommo, "s", &format!("m{}", i % 20)))
            .collect()
    }

    #[test]
    fn same_seed_same_outcomes_and_rates_are_roughly_right() {
        let a = outcomes(7);
        assert_eq!(a, outcomes(7));
        assert_ne!(a, outcomes(8));
        let drops = a.iter().filter(|f| **f == Fault::Drop).count();
        let errors = a
            .iter()
            .filter(|f| matches!(f, Fault::ServerError(_)))
            .count();
        assert!((20..=60).contains(&drops), "drops {drops}");
        assert!((35..=85).contains(&errors), "errors {errors}");
    }

    #[test]
    fn outcome_depends_on_the_message_and_its_occurrence_not_on_interleaving() {
        let plan = FaultPlan::new(1, 0.5, 0.0);
        let a1 = plan.decide(ProviderKind::Ogmma, "c", "a");
        let b1 = plan.decide(ProviderKind::Ogmma, "c", "b");
        let a2 = plan.decide(ProviderKind::Ogmma, "c", "a");
        let other = FaultPlan::new(1, 0.5, 0.0);
        assert_eq!(other.decide(ProviderKind::Ogmma, "c", "b"), b1);
        assert_eq!(other.decide(ProviderKind::Ogmma, "c", "a"), a1);
        assert_eq!(other.decide(ProviderKind::Ogmma, "c", "a"), a2);
    }

    #[test]
    fn zero_rates_never_fault() {
        let plan = FaultPlan::new(3, 0.0, 0.0);
        assert!(
            (0..100).all(|i| plan.decide(ProviderKind::Kommo, "s", &i.to_string()) == Fault::None)
        );
    }
}
