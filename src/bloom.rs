//! A blocked Bloom filter of 64-bit hashes: "have I seen this before?" over millions of rows
//! in fixed memory, answered "no" for sure or "maybe". A "maybe" that is false costs its
//! caller more work later (a second read of the rows, or an entry it did not need), so the
//! filter keeps them rare and cheap to ask: all of an item's bits fall in one 512-bit block,
//! one cache line, so an insertion is one memory access however many bits it sets. That access
//! is still a miss to memory nearly every time (the filter is far larger than the caches), so
//! [`Bloom::add`] starts fetching an item's block and sets its bits at the next call, while
//! the caller hashes and spools its row.

/// 2 MiB: 16 777 216 bits in 32 768 blocks.
const WORDS: usize = 1 << 18;
/// Words of one block: 512 bits.
const BLOCK_WORDS: usize = 8;
/// Bits set per item, each at 9 bits of its hash's second half (63 of its 64 bits).
const PROBES: u32 = 7;

/// Nearly always "new" for a few hundred thousand distinct items (none in 200 000 in the
/// tests), a few in ten thousand at a million.
pub(crate) struct Bloom {
    words: Vec<u64>,
    /// The item added last, its bits not set yet: its block's first word, its bits, and what
    /// to hand back if it may have been added before.
    pending: Option<(usize, u64, Option<u64>)>,
}

impl Default for Bloom {
    fn default() -> Self {
        Bloom {
            words: vec![0; WORDS],
            pending: None,
        }
    }
}

impl Bloom {
    /// Adds the item whose hash is (`block`, `bits`): two independent, well-mixed words (the
    /// first picks the block, the second the bits in it). Its bits are set at the next call
    /// (or [`Bloom::finish`]), its block fetched meanwhile. Returns the previous item's
    /// `report` when that item may have been added before it (all its bits were set already).
    /// Each item is still checked against every item added before it.
    pub(crate) fn add(&mut self, block: u64, bits: u64, report: Option<u64>) -> Option<u64> {
        let start = Self::start(block);
        if let Some(word) = self.words.get(start) {
            prefetch(word);
        }
        let previous = self.pending.replace((start, bits, report));
        previous.and_then(|(start, bits, report)| self.set(start, bits).then_some(report)?)
    }

    /// [`Bloom::add`] for an item whose 64-bit hash `h` is not uniform already (a fast
    /// hasher's): both words are mixed from it.
    pub(crate) fn add_hash(&mut self, h: u64, report: Option<u64>) -> Option<u64> {
        self.add(mix(h), mix(h ^ SEED), report)
    }

    /// Sets the last added item's bits; its `report` if it may have been added before.
    pub(crate) fn finish(&mut self) -> Option<u64> {
        let (start, bits, report) = self.pending.take()?;
        self.set(start, bits).then_some(report)?
    }

    fn start(block: u64) -> usize {
        let blocks = (WORDS / BLOCK_WORDS) as u64;
        (block % blocks) as usize * BLOCK_WORDS
    }

    /// [`Bloom::add`], answered at once: whether the item may have been added before.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, block: u64, bits: u64) -> bool {
        self.set(Self::start(block), bits)
    }

    /// Sets `bits`' probes in the block at `start`; whether they were all set already.
    fn set(&mut self, start: usize, bits: u64) -> bool {
        let Some(words) = self.words.get_mut(start..start + BLOCK_WORDS) else {
            return false;
        };
        let mut seen = true;
        for i in 0..PROBES {
            let bit = ((bits >> (9 * i)) & 511) as usize;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            seen &= words[word] & mask != 0;
            words[word] |= mask;
        }
        seen
    }
}

/// Asks the CPU to start loading `word`'s cache line: a hint, which changes no result.
fn prefetch(word: &u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the address;
    // SSE, which it needs, is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(word).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}

/// Sets [`Bloom::add_hash`]'s second word apart from its first.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's finaliser: every bit of the result depends on every bit of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Added for later, an item is checked against every item before it, the one just
    /// before included, and the last one is checked at the end.
    #[test]
    fn a_deferred_add_gives_each_answer_one_call_later() {
        let mut bloom = Bloom::default();
        assert_eq!(bloom.add(mix(1), mix(2), Some(10)), None);
        // The same item again: the first is new (nothing to say), the second is seen.
        assert_eq!(bloom.add(mix(1), mix(2), Some(11)), None);
        assert_eq!(bloom.add(mix(3), mix(4), Some(12)), Some(11));
        assert_eq!(bloom.add(mix(1), mix(2), None), None, "(3, 4) was new");
        assert_eq!(
            bloom.add(mix(3), mix(4), Some(13)),
            None,
            "(1, 2) was seen, asked nothing"
        );
        assert_eq!(bloom.finish(), Some(13), "the last one, checked at the end");
        assert_eq!(bloom.finish(), None);
    }

    #[test]
    fn an_item_is_new_once_then_seen() {
        let mut bloom = Bloom::default();
        assert!(!bloom.insert(mix(7), mix(8)));
        assert!(bloom.insert(mix(7), mix(8)));
        assert!(!bloom.insert(mix(9), mix(10)));
    }

    /// False "seen" answers among distinct items: none in 200 000, few at a million.
    #[test]
    fn distinct_items_are_rarely_taken_for_repeats() {
        let mut bloom = Bloom::default();
        let mut false_repeats = 0;
        for n in 0..1_000_000u64 {
            let h = mix(n);
            if bloom.insert(mix(h), mix(h ^ SEED)) {
                false_repeats += 1;
            }
            if n == 199_999 {
                assert_eq!(false_repeats, 0);
            }
        }
        assert!(false_repeats < 300, "{false_repeats} of 1 000 000");
    }
}
