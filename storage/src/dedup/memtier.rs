//! The memory tier: keys inserted since the last spill, in a fixed-size
//! open-addressing hash set (linear probing, key 0 kept aside as a flag
//! because 0 marks an empty slot).
//!
//! The table is allocated once at its maximum size (load factor ≤ 3/4 at
//! `max_keys`), so its memory is exact and constant — it is charged to the
//! memory budget up front — and it never rehashes on the hot path. A spill
//! sorts the keys in place inside the table itself, so spilling needs no
//! second copy of the keys.

use std::hash::{BuildHasher, RandomState};

use super::Key;
use super::bloom::mix64;

/// Where a probe ended: the key is there, or the slot to put it in.
pub(crate) enum Probe {
    Present,
    Vacant(usize),
}

/// `Probe::Vacant` slot meaning "the zero key".
const ZERO_SLOT: usize = usize::MAX;

pub(crate) struct MemTier {
    slots: Vec<Key>,
    len: usize,
    has_zero: bool,
    max_keys: usize,
    /// Per-process random seed so crafted keys cannot target one bucket chain.
    seed: u64,
    first_ms: i64,
    last_ms: i64,
    /// True between `sort_for_spill` and `reset`: the table is not a hash set then.
    scrambled: bool,
    /// After `sort_for_spill`: the slots that may be non-zero (`..sorted`).
    sorted: usize,
}

impl MemTier {
    /// Slots needed to hold `max_keys` at a load factor of at most 3/4.
    pub(crate) fn slots_for(max_keys: usize) -> usize {
        max_keys
            .max(1)
            .saturating_mul(4)
            .div_ceil(3)
            .next_power_of_two()
            .max(16)
    }

    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        // Zeroed memory this large comes fresh from the kernel, untouched: the advice holds.
        let slots = vec![0; Self::slots_for(max_keys)];
        super::bloom::advise_huge_pages(slots.as_ptr() as usize, slots.len() * size_of::<Key>());
        Self {
            slots,
            len: 0,
            has_zero: false,
            max_keys,
            seed: RandomState::new().hash_one(0x5eed_u64),
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            scrambled: false,
            sorted: 0,
        }
    }

    #[inline]
    fn home(&self, key: Key) -> usize {
        let h = mix64(key as u64 ^ self.seed ^ mix64((key >> 64) as u64));
        h as usize & (self.slots.len() - 1)
    }

    /// Brings the slot `key` hashes to into the cache (see `Bloom::prefetch`).
    #[inline]
    pub(crate) fn prefetch(&self, key: Key) {
        if !self.scrambled {
            super::bloom::prefetch_line(&self.slots[self.home(key)]);
        }
    }

    #[inline]
    pub(crate) fn probe(&self, key: Key) -> Probe {
        debug_assert!(!self.scrambled);
        if key == 0 {
            return if self.has_zero {
                Probe::Present
            } else {
                Probe::Vacant(ZERO_SLOT)
            };
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = self.slots[i];
            if slot == key {
                return Probe::Present;
            }
            if slot == 0 {
                return Probe::Vacant(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Records `key` in the slot a `probe` for it returned (nothing may have
    /// been inserted in between).
    #[inline]
    pub(crate) fn insert_vacant(&mut self, slot: usize, key: Key, now_ms: i64) {
        if slot == ZERO_SLOT {
            self.has_zero = true;
        } else {
            self.slots[slot] = key;
        }
        self.len += 1;
        self.first_ms = self.first_ms.min(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.max_keys
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Earliest insert time (i64::MAX when empty).
    pub(crate) fn first_ms(&self) -> i64 {
        self.first_ms
    }

    /// Latest insert time (i64::MIN when empty).
    pub(crate) fn last_ms(&self) -> i64 {
        self.last_ms
    }

    /// Bytes held by the table (constant).
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * size_of::<Key>()
    }

    /// The keys, sorted ascending, in a vector of their own (the tier stays a set).
    pub(crate) fn sorted_keys(&self) -> Vec<Key> {
        debug_assert!(!self.scrambled);
        let mut keys: Vec<Key> = Vec::with_capacity(self.len);
        if self.has_zero {
            keys.push(0);
        }
        keys.extend(self.slots.iter().copied().filter(|k| *k != 0));
        keys.sort_unstable();
        keys
    }

    /// Sorts the keys ascending in place and returns them. The tier is not
    /// usable as a set until `reset`.
    pub(crate) fn sort_for_spill(&mut self) -> &[Key] {
        self.scrambled = true;
        let mut n = 0;
        for i in 0..self.slots.len() {
            let key = self.slots[i];
            if key != 0 {
                // Moved slots are cleared, so that `reset` clears only `..n`.
                self.slots[i] = 0;
                self.slots[n] = key;
                n += 1;
            }
        }
        self.slots[..n].sort_unstable();
        if self.has_zero {
            // n < slots.len() because the load factor is below 1.
            self.slots[n] = 0;
            self.slots[..=n].rotate_right(1);
            n += 1;
        }
        self.sorted = n;
        &self.slots[..n]
    }

    /// Empties the tier (keeps the allocation). After a spill only the sorted prefix
    /// holds keys: clearing the whole table would write (and make resident) every page
    /// of it at every checkpoint, however few keys came in.
    pub(crate) fn reset(&mut self) {
        if self.scrambled {
            let sorted = self.sorted.min(self.slots.len());
            self.slots[..sorted].fill(0);
        } else {
            self.slots.fill(0);
        }
        self.sorted = 0;
        self.len = 0;
        self.has_zero = false;
        self.first_ms = i64::MAX;
        self.last_ms = i64::MIN;
        self.scrambled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(tier: &mut MemTier, key: Key) -> bool {
        match tier.probe(key) {
            Probe::Present => false,
            Probe::Vacant(slot) => {
                tier.insert_vacant(slot, key, 1);
                true
            }
        }
    }

    // A spill clears every slot it moved, so the partial clear of `reset` leaves an
    // empty set, round after round (keys colliding, a zero key, a full tier).
    #[test]
    fn reset_after_a_spill_empties_the_tier() {
        let mut tier = MemTier::new(48);
        for round in 0..4u128 {
            let keys: Vec<Key> = (0..tier.max_keys() as u128)
                .map(|k| {
                    if k == 7 {
                        0
                    } else {
                        ((k + 1) * 0x9E37_79B9 + round) << (round * 8)
                    }
                })
                .collect();
            for &k in &keys {
                assert!(insert(&mut tier, k), "round {round}: {k} new");
            }
            let mut sorted = tier.sort_for_spill().to_vec();
            let mut expected = keys.clone();
            expected.sort_unstable();
            sorted.sort_unstable();
            assert_eq!(sorted, expected);
            tier.reset();
            assert!(tier.slots.iter().all(|&s| s == 0), "round {round}");
            assert_eq!(tier.len(), 0);
            assert!(
                keys.iter()
                    .all(|&k| matches!(tier.probe(k), Probe::Vacant(_)))
            );
        }
    }
}
