//! How the process hands freed memory back to the OS (glibc's malloc; elsewhere these
//! do nothing).
//!
//! `malloc_trim` gives back the free pages inside an arena's bins, but not the free
//! space at the top of a thread's arena (only the main arena's). That top is trimmed
//! only when a free merges a large chunk into it, and two defaults stop that from
//! happening:
//! - the thresholds adapt: once a block above the mmap threshold is freed (a dedup
//!   tier's 32 MiB table, a grown hash table), the mmap threshold rises to that size and
//!   the trim threshold to twice it, up to 64 MiB;
//! - small chunks are freed into fastbins, which merge into the top only when
//!   `malloc_trim` consolidates them, and it then leaves that top as it is.
//!
//! Measured at rest after 100k customers: arenas with 11, 17 and 21 MB of resident free
//! top, for no live byte, different arenas in every run. [`fix_allocator_thresholds`]
//! pins both thresholds and turns fastbins off (the per-thread cache still serves small
//! blocks), so a free that reaches the top trims it.
//!
//! It also caps the arenas at [`ARENAS_MAX`] (glibc's default is 8 per core): every
//! thread that allocates under contention gets an arena of its own, and each keeps its
//! own free memory. At 300k events/s for 10 minutes with a 512 MiB budget the highest
//! resident memory sampled was 523 MiB with the default and 471 MiB with 2 arenas, at 3.8
//! and 3.7 CPU-s per million events (`benches/README.md`).

/// Blocks at least this large are mapped on their own (and unmapped when freed).
pub const MMAP_THRESHOLD: usize = 4 << 20;
/// An arena whose free top exceeds this gives it back when a block is freed into it.
pub const TRIM_THRESHOLD: usize = 2 << 20;

/// Arenas malloc may create (see the module docs).
pub const ARENAS_MAX: usize = 2;

/// Pins malloc's mmap and trim thresholds ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]) and
/// turns fastbins off, unless the operator set glibc's own `MALLOC_MMAP_THRESHOLD_` or
/// `MALLOC_TRIM_THRESHOLD_`; caps the arenas at [`ARENAS_MAX`] unless the operator set
/// `MALLOC_ARENA_MAX`. Call once at startup, before other threads allocate.
pub fn fix_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            #[allow(unsafe_code)]
            // SAFETY: `mallopt` takes no pointers and is thread-safe; this only bounds
            // how many arenas later threads are spread over.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, as_int(ARENAS_MAX));
            }
        }
        let set_by_operator = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if set_by_operator {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `mallopt` takes no pointers and is thread-safe; these parameters only
        // change when malloc maps blocks, trims arenas and consolidates freed chunks.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD));
            libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD));
            libc::mallopt(libc::M_MXFAST, 0);
        }
    }
}

/// Hands the free pages inside the arenas back to the OS. glibc's malloc keeps freed
/// memory for reuse: without this, resident memory stays at the high-water mark of
/// the customers' hot state (measured: 888 MB before and after packing 100,000
/// customers).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers; it only returns free pages of the
    // allocator's own arenas to the kernel, and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
