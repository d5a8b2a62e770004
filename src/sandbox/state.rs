//! The reactions the sandbox was asked to make: per (provider, scope/channel, message, user) the
//! current emoji. Sharded behind plain mutexes so concurrent connections rarely contend, and so
//! a run's effect can be asserted after it finishes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::plan::ProviderKind;

/// foldhash, not SipHash: every accepted request hashes its key twice (shard, then map), and
/// SipHash over the long scope id showed in the sandbox's profile under load.
type Hasher = foldhash::quality::RandomState;

/// Independent locks; a power of two well above the core count keeps contention negligible.
const SHARDS: usize = 32;

/// One current reaction, as `GET /_sandbox/reactions` and [`super::SandboxHandle::reactions`]
/// show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReactionState {
    #[serde(serialize_with = "serialize_provider")]
    pub provider: ProviderKind,
    /// Kommo `scope_id` or Ogmma `channelId`.
    pub scope: String,
    /// Kommo `id` (or `msgid:` + the `msgid` when no `id` was sent: the two are different
    /// namespaces) / Ogmma `messageId`.
    pub message: String,
    /// Kommo `user.id` (or `user.ref_id`) / Ogmma: always [`OGMMA_USER`].
    pub user: String,
    pub emoji: String,
}

fn serialize_provider<S: serde::Serializer>(p: &ProviderKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// Ogmma keeps one reaction per sender, and the sender is whoever holds the API key.
pub const OGMMA_USER: &str = "api-key";

/// Where a reaction lives. Owned strings: a key is built once per successful request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ReactionKey {
    pub(crate) provider: ProviderKind,
    pub(crate) scope: String,
    pub(crate) message: String,
    pub(crate) user: String,
}

pub(crate) struct ReactionStore {
    hasher: Hasher,
    shards: Vec<Mutex<HashMap<ReactionKey, String, Hasher>>>,
}

impl ReactionStore {
    pub(crate) fn new() -> Self {
        ReactionStore {
            hasher: Hasher::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
        }
    }

    fn shard(&self, key: &ReactionKey) -> MutexGuard<'_, HashMap<ReactionKey, String, Hasher>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[index])
    }

    /// Sets (or replaces) the reaction; an empty emoji removes it, as Ogmma documents.
    pub(crate) fn set(&self, key: ReactionKey, emoji: &str) {
        let mut shard = self.shard(&key);
        if emoji.is_empty() {
            shard.remove(&key);
        } else {
            match shard.get_mut(&key) {
                Some(current) => {
                    current.clear();
                    current.push_str(emoji);
                }
                None => {
                    shard.insert(key, emoji.to_string());
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &ReactionKey) -> Option<String> {
        self.shard(key).get(key).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Every current reaction, sorted by provider, scope, message and user.
    pub(crate) fn snapshot(&self) -> Vec<ReactionState> {
        let mut all: Vec<ReactionState> = self
            .shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(k, emoji)| ReactionState {
                        provider: k.provider,
                        scope: k.scope.clone(),
                        message: k.message.clone(),
                        user: k.user.clone(),
                        emoji: emoji.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| {
            (a.provider.as_str(), &a.scope, &a.message, &a.user).cmp(&(
                b.provider.as_str(),
                &b.scope,
                &b.message,
                &b.user,
            ))
        });
        all
    }
}

/// A panic while holding a shard cannot leave a half-written map (every update is one call),
/// so a poisoned lock is still safe to use.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> ReactionKey {
        ReactionKey {
            provider: ProviderKind::Ogmma,
            scope: "ch".into(),
            message: message.into(),
            user: OGMMA_USER.into(),
        }
    }

    #[test]
    fn set_replaces_and_empty_removes() {
        let store = ReactionStore::new();
        store.set(key("m1"), "👍");
        store.set(key("m1"), "❤️");
        store.set(key("m2"), "😂");
        assert_eq!(store.get(&key("m1")).as_deref(), Some("❤️"));
        assert_eq!(store.len(), 2);
        store.set(key("m1"), "");
        assert_eq!(store.get(&key("m1")), None);
        let all = store.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].message, "m2");
    }
}
