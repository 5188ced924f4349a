//! glibc's allocator told to keep what the process frees. The backbone pass
//! allocates and frees buffers of tens of megabytes for every batch; by
//! default glibc serves each from a fresh `mmap` and unmaps it on free (and
//! trims the heap's top), so every batch pays page faults and page zeroing
//! again: a third of a pass's CPU time was the kernel's. With the mmap
//! threshold at 256 MiB and no trimming, freed memory stays in the heap for
//! the next batch (BENCHMARKS.md: system time 6.4 s → 0.55 s, backbone 1.44x),
//! at the price of keeping the process's peak resident until it exits.
//! Allocations of 256 MiB and more still get their own mapping, so a vector
//! that grows that large is remapped rather than copied: with no mmap at all,
//! a sweep of ten million images ran out of a 4 GB `ulimit -v` while it was
//! listing them (`hostile::a_data_set_too_large_for_memory_is_refused_with_its_size`).
//!
//! And one arena for every thread: glibc gives other threads arenas of 64 MiB
//! heaps, and a buffer larger than that gets its own mapping whatever the
//! threshold; the pass runs its batches on such threads (the backbone pass
//! of `sweep bench`'s end-to-end run on 512 images: 50.9 s → 34.4 s, system
//! time 25.3 s → 1.9 s). The threads that allocate are few (decoders, the
//! pass, job slots) and allocate per image or per batch, so one lock costs
//! little.
//!
//! A `GLIBC_TUNABLES` in the environment that sets either threshold wins.
#![allow(unsafe_code)]

/// Raises glibc's mmap and trim thresholds and keeps one arena; elsewhere
/// does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let settings = [
            ("mmap_threshold", libc::M_MMAP_THRESHOLD, 256 << 20),
            ("trim_threshold", libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
            ("arena_max", libc::M_ARENA_MAX, 1),
        ];
        for (name, param, value) in settings {
            if !tunables.contains(&format!("glibc.malloc.{name}")) {
                // SAFETY: mallopt only sets a parameter of the allocator; it is
                // called first thing in `main`, before any other thread runs.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        }
    }
}
