//! glibc's allocator told to keep what the process frees. The backbone pass
//! allocates and frees buffers of tens of megabytes for every batch; by
//! default glibc serves each from a fresh `mmap` and unmaps it on free (and
//! trims the heap's top), so every batch pays page faults and page zeroing
//! again: a third of a pass's CPU time was the kernel's. With both
//! thresholds at their largest, freed memory stays in the heap for the next
//! batch (BENCHMARKS.md: system time 7.3 s → 0.7 s, backbone +50%), at the
//! price of keeping the process's peak resident until it exits.
//!
//! A `GLIBC_TUNABLES` in the environment that sets either threshold wins.
#![allow(unsafe_code)]

/// Raises glibc's mmap and trim thresholds; elsewhere does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        for (name, param) in [("mmap_threshold", libc::M_MMAP_THRESHOLD), ("trim_threshold", libc::M_TRIM_THRESHOLD)] {
            if !tunables.contains(&format!("glibc.malloc.{name}")) {
                // SAFETY: mallopt only sets a parameter of the allocator; it is
                // called first thing in `main`, before any other thread runs.
                unsafe {
                    libc::mallopt(param, libc::c_int::MAX);
                }
            }
        }
    }
}
