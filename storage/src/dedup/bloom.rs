//! Blocked, foldable bloom filters, one per run, kept in memory.
//!
//! * **Blocked**: every key touches one 64-byte block (one cache line), so a
//!   probe costs one cache miss whatever `k` is.
//! * **Foldable**: the block count is a power of two and a key's block is the
//!   low bits of its hash, so a filter can be halved in place by OR-ing its
//!   upper half onto its lower half. That is how older filters give memory
//!   back when the index grows and the budget must be shared by more keys:
//!   no run has to be re-read. Folding keeps `k`, so a folded filter has a
//!   somewhat higher false-positive rate than a fresh one of the same size,
//!   but never a false negative.
//! * `k` is chosen for half the filter's bits per key: a growing index folds every filter as
//!   the budget is shared by more keys, and a filter built for its first size with the `k`
//!   best there (up to 8) answers "maybe" for most keys once folded twice (at 4 bits per key,
//!   k = 8 gives 31 % false positives, k = 3 gives 15 %, before blocking's loss). The price
//!   unfolded is small (16 bits per key, k = 6: 0.09 % instead of 0.06 % with k = 8).
//! * Filters with the same block count can be joined (`union`): the result holds every key of
//!   each, queried with the smallest `k`.
//! * An empty filter (no blocks) answers "maybe" for every key.

use super::Key;

/// Bytes in one block (one cache line).
pub(crate) const BLOCK_BYTES: usize = 64;
const BLOCK_BITS: f64 = 512.0;
/// Above this, more bits per key buy almost nothing (≈0.1 % false positives).
pub(crate) const MAX_BITS_PER_KEY: f64 = 16.0;
/// Bit positions come from 9-bit slices of the hash: at most 8 of them.
const MAX_K: u32 = 8;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([u64; 8]);

pub(crate) struct Bloom {
    blocks: Vec<Block>,
    k: u32,
}

/// Brings the cache line at `value` into the cache (no-op where unsupported).
#[inline]
pub(crate) fn prefetch_line<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        #[allow(unsafe_code)]
        // SAFETY: SSE is part of x86_64's baseline, and a prefetch is only a hint: it reads
        // nothing into the program and never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Asks Linux to back `[addr, addr + len)` with 2 MiB pages where the range covers whole
/// ones (transparent huge pages in `madvise` mode, the default of many distributions). A
/// filter is probed at random, one cache line per key: with 4 KiB pages nearly every probe
/// of a filter of tens of MiB also misses the TLB, and a page walk costs several memory
/// reads, more under a hypervisor. Must be called before the pages are first touched.
/// Errors are ignored: the advice only changes speed.
pub(crate) fn advise_huge_pages(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = addr.next_multiple_of(HUGE);
        let end = (addr + len) / HUGE * HUGE;
        if end > start {
            #[allow(unsafe_code)]
            // SAFETY: madvise takes no Rust references; MADV_HUGEPAGE only changes how the
            // kernel backs pages of this process's own mapping (here inside one allocation
            // of `len` bytes from `addr`), never their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

/// murmur3's 64-bit finaliser: a cheap bijective mixer.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Two 64-bit hashes of a key. Keys are normally uniform already, but mixing
/// keeps the filter good for any key distribution (tests use small integers).
#[inline]
fn hashes(key: Key) -> (u64, u64) {
    let a = mix64(key as u64 ^ mix64((key >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15));
    (a, mix64(a ^ 0x2545_f491_4f6c_dd1d))
}

/// Position of the `i`-th bit inside the block (0..512).
#[inline]
fn bit_pos(a: u64, b: u64, i: u32) -> usize {
    if i < 7 {
        ((b >> (9 * i)) & 511) as usize
    } else {
        ((a >> 55) & 511) as usize
    }
}

impl Bloom {
    /// No filter at all: every key is a "maybe".
    pub(crate) fn none() -> Self {
        Self {
            blocks: Vec::new(),
            k: 0,
        }
    }

    /// A filter of `blocks` blocks (a power of two, or 0 for none) for `keys` keys.
    pub(crate) fn new(blocks: usize, keys: u64) -> Self {
        if blocks == 0 {
            return Self::none();
        }
        debug_assert!(blocks.is_power_of_two());
        let mut memory = Vec::with_capacity(blocks);
        advise_huge_pages(memory.as_ptr() as usize, blocks * BLOCK_BYTES);
        memory.resize(blocks, Block::default());
        Self {
            blocks: memory,
            k: k_for(blocks, keys),
        }
    }

    /// Asks the CPU to bring the block `key` maps to into the cache, so that a lookup or
    /// an insert of it soon after does not wait for memory. Lookups of a batch prefetch
    /// a few keys ahead: each key touches one block in each run's filter, tens of MiB
    /// apart, and waiting for each in turn was a tenth of the server's CPU at full rate.
    #[inline]
    pub(crate) fn prefetch(&self, key: Key) {
        if self.blocks.is_empty() {
            return;
        }
        let (a, _) = hashes(key);
        prefetch_line(&self.blocks[a as usize & (self.blocks.len() - 1)]);
    }

    /// Inserts the key of each item, prefetching a few ahead (see [`Self::prefetch`]).
    pub(crate) fn insert_all<T>(&mut self, items: &[T], key: impl Fn(&T) -> Key) {
        const AHEAD: usize = 8;
        for (i, item) in items.iter().enumerate() {
            if let Some(next) = items.get(i + AHEAD) {
                self.prefetch(key(next));
            }
            self.insert(key(item));
        }
    }

    pub(crate) fn insert(&mut self, key: Key) {
        if self.blocks.is_empty() {
            return;
        }
        let (a, b) = hashes(key);
        let mask = self.blocks.len() - 1;
        let block = &mut self.blocks[a as usize & mask];
        for i in 0..self.k {
            let bit = bit_pos(a, b, i);
            block.0[bit >> 6] |= 1 << (bit & 63);
        }
    }

    /// False only if the key is certainly absent.
    #[inline]
    pub(crate) fn may_contain(&self, key: Key) -> bool {
        if self.blocks.is_empty() {
            return true;
        }
        let (a, b) = hashes(key);
        let block = &self.blocks[a as usize & (self.blocks.len() - 1)];
        (0..self.k).all(|i| {
            let bit = bit_pos(a, b, i);
            block.0[bit >> 6] & (1 << (bit & 63)) != 0
        })
    }

    /// Halves the filter (a one-block filter becomes no filter).
    pub(crate) fn fold(&mut self) {
        let n = self.blocks.len();
        if n <= 1 {
            *self = Self::none();
            return;
        }
        let (lo, hi) = self.blocks.split_at_mut(n / 2);
        for (l, h) in lo.iter_mut().zip(hi.iter()) {
            for (lw, hw) in l.0.iter_mut().zip(h.0.iter()) {
                *lw |= *hw;
            }
        }
        self.blocks.truncate(n / 2);
        self.blocks.shrink_to_fit();
    }

    /// One filter holding every key of `filters`, in the memory of the smallest: each is
    /// folded to its block count, OR-ed in, and queried with the smallest `k` (the first `k`
    /// bit positions of a key are the same whatever `k` it was inserted with). No filter if any
    /// is none.
    pub(crate) fn union(filters: Vec<Bloom>) -> Bloom {
        let Some(blocks) = filters.iter().map(Bloom::blocks).min() else {
            return Self::none();
        };
        if blocks == 0 {
            return Self::none();
        }
        let mut filters = filters.into_iter();
        let Some(mut out) = filters.next() else {
            return Self::none();
        };
        while out.blocks() > blocks {
            out.fold();
        }
        for mut f in filters {
            while f.blocks() > blocks {
                f.fold();
            }
            out.k = out.k.min(f.k);
            for (o, b) in out.blocks.iter_mut().zip(&f.blocks) {
                for (ow, bw) in o.0.iter_mut().zip(b.0.iter()) {
                    *ow |= *bw;
                }
            }
        }
        out
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Bits a key sets and a lookup tests.
    pub(crate) fn k(&self) -> u32 {
        self.k
    }

    pub(crate) fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK_BYTES
    }
}

/// The `k` a filter of `blocks` blocks for `keys` keys is built with: the best `k` for half
/// its bits per key (see the module docs), 1 to 8.
pub(crate) fn k_for(blocks: usize, keys: u64) -> u32 {
    let bits_per_key = blocks as f64 * BLOCK_BITS / keys.max(1) as f64;
    ((bits_per_key / 2.0 * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_K)
}

/// The false-positive rate of a filter of `blocks` blocks holding `keys` keys and queried with
/// `k` bits per key (the classic estimate `(1 - e^(-k/c))^k` at `c` bits per key; blocking
/// costs a little more, alike for every filter, so comparisons between filters hold). A
/// missing filter answers "maybe" to everything.
pub(crate) fn false_positive_rate(keys: u64, blocks: usize, k: u32) -> f64 {
    if blocks == 0 {
        return 1.0;
    }
    if keys == 0 {
        return 0.0;
    }
    let bits_per_key = blocks as f64 * BLOCK_BITS / keys as f64;
    let k = f64::from(k.max(1));
    (1.0 - (-k / bits_per_key).exp()).powf(k)
}

/// The power-of-two block count (at least 1) nearest, on a log scale, to
/// `keys * bits_per_key` bits.
pub(crate) fn desired_blocks(keys: u64, bits_per_key: f64) -> usize {
    let want = keys as f64 * bits_per_key / BLOCK_BITS;
    if want <= 1.0 {
        return 1;
    }
    // At most 2^(BITS - 8) blocks, so that a filter's bytes fit a usize.
    let exp = want.log2().floor().min(f64::from(usize::BITS - 8)) as u32;
    let lower = 1usize << exp;
    if want >= lower as f64 * std::f64::consts::SQRT_2 {
        lower * 2
    } else {
        lower
    }
}

/// One filter in a budget plan: a run's key count, its filter's block count, and the `k` it
/// is queried with (`None` for a filter not built yet, whose `k` follows its final size).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Planned {
    pub keys: u64,
    pub blocks: usize,
    pub k: Option<u32>,
}

impl Planned {
    /// A filter still to be built, asked for at the most bits per key worth having.
    pub(crate) fn new_filter(keys: u64) -> Self {
        Self {
            keys,
            blocks: desired_blocks(keys, MAX_BITS_PER_KEY),
            k: None,
        }
    }

    fn false_positive_rate(&self, blocks: usize) -> f64 {
        let k = self.k.unwrap_or_else(|| k_for(blocks, self.keys));
        false_positive_rate(self.keys, blocks, k)
    }
}

/// Shrinks block counts until their sum fits `budget_bytes`, halving each time the filter
/// whose halving adds the fewest expected false positives per byte it gives back (a one-block
/// filter goes to none).
///
/// A new key is looked up in every run, so the expected number of disk probes per new key is
/// the *sum* of the filters' false-positive rates. Spreading the bits evenly over the keys
/// (equal rates) is far from the least sum: a small run's filter costs little memory at a
/// very low rate, while the same bytes taken from the largest run raise its rate only a
/// little. This greedy choice gives each run a rate roughly in proportion to its size, as
/// Monkey (Dayan et al., SIGMOD 2017) does for LSM trees.
pub(crate) fn fit_to_budget(filters: &mut [Planned], budget_bytes: usize) {
    // In u128: key counts come from files and checkpoint states, so a plan may ask for
    // more bytes than a usize can count before it is cut down.
    let bytes = |blocks: usize| blocks as u128 * BLOCK_BYTES as u128;
    let mut total: u128 = filters.iter().map(|f| bytes(f.blocks)).sum();
    while total > budget_bytes as u128 {
        let cost = |f: &Planned| {
            let half = f.blocks / 2;
            let added = f.false_positive_rate(half) - f.false_positive_rate(f.blocks);
            added / bytes(f.blocks - half) as f64
        };
        let Some(cheapest) = filters
            .iter_mut()
            .filter(|f| f.blocks > 0)
            .min_by(|x, y| cost(x).total_cmp(&cost(y)))
        else {
            return;
        };
        let half = cheapest.blocks / 2;
        total -= bytes(cheapest.blocks - half);
        cheapest.blocks = half;
    }
}
