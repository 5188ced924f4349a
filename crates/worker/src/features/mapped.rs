//! The one place a feature cache entry is memory-mapped, and where its bytes
//! are seen as `f32`s or `f16`s (and those as bytes) without a copy.
//!
//! A mapped entry costs no anonymous memory: its pages are the file's, read
//! when first touched and dropped by the kernel under pressure (to be read
//! again), so a run over a million images holds its features' pages only as
//! far as the page cache has room for them.
#![allow(unsafe_code)]

use std::fs::File;

/// A whole file mapped read-only and shared (`PROT_READ`, `MAP_SHARED`).
pub(crate) struct Mapping(memmap2::Mmap);

impl Mapping {
    /// Maps `file` read-only.
    ///
    /// If the file changes under the mapping: the cache never writes an entry
    /// in place. It writes `KEY.tmpPID` and renames it over `KEY.safetensors`
    /// (a rebuilt entry, a joined pass), which only replaces the name: the
    /// mapped inode and its pages stay as they were until unmapped, so a
    /// running job keeps the features whose checksum it verified. Another
    /// program truncating the file in place would make a read past the new
    /// end fault (`SIGBUS`), and one writing into it would change the
    /// features under the jobs; sweep does neither, and the cache folder is
    /// its own.
    pub(crate) fn open(file: &File) -> std::io::Result<Mapping> {
        // SAFETY: the mapping is read-only and lives as long as `Mapping`;
        // the file is only ever replaced by rename (above), never modified.
        let map = unsafe { memmap2::Mmap::map(file) }?;
        Ok(Mapping(map))
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `bytes` as `f32`s in place: on a little-endian CPU (the cache's byte
/// order) when they are aligned, else `None` (the caller copies).
pub(crate) fn floats(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid `f32`; `align_to` returns only
    // the aligned middle, and an unaligned head or tail is refused.
    let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(floats)
}

/// `bytes` as half-precision floats in place: on a little-endian CPU when
/// they are aligned, else `None` (the caller converts).
pub(crate) fn halves(bytes: &[u8]) -> Option<&[half::f16]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: `f16` is a `u16` (`repr(transparent)`): every bit pattern is
    // valid; an unaligned head or tail is refused.
    let (head, halves, tail) = unsafe { bytes.align_to::<half::f16>() };
    (head.is_empty() && tail.is_empty()).then_some(halves)
}

/// Half-precision floats as their bytes in place, for halves that
/// [`halves`] gave (so on a little-endian CPU: the cache's byte order).
pub(crate) fn bytes_of_halves(halves: &[half::f16]) -> &[u8] {
    // `halves` gives none on a big-endian CPU, so no mapped halves reach here there.
    // SAFETY: `u8` has no alignment and no invalid values, and the length
    // covers exactly the halves' bytes.
    let (head, bytes, tail) = unsafe { halves.align_to::<u8>() };
    debug_assert!(head.is_empty() && tail.is_empty());
    bytes
}

/// `floats` as their bytes in place, on a little-endian CPU (the cache's
/// byte order), else `None` (the caller converts).
pub(crate) fn bytes_of(floats: &[f32]) -> Option<&[u8]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: `u8` has no alignment and no invalid values, and the length
    // covers exactly the floats' bytes.
    let (head, bytes, tail) = unsafe { floats.align_to::<u8>() };
    debug_assert!(head.is_empty() && tail.is_empty());
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_bytes_round_trip_and_misalignment_is_refused() {
        let xs = [1.5f32, -2.0, 3.25];
        let bytes = bytes_of(&xs).unwrap().to_vec();
        assert_eq!(bytes, xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        // A Vec<f32>'s buffer is aligned; one byte in, it is not.
        let aligned: Vec<f32> = xs.to_vec();
        let view = bytes_of(&aligned).unwrap();
        assert_eq!(floats(view).unwrap(), xs);
        assert!(floats(&view[1..9]).is_none());
    }

    #[test]
    fn a_mapped_file_reads_its_bytes_and_keeps_them_after_a_rename_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        std::fs::write(&path, b"old bytes").unwrap();
        let map = Mapping::open(&File::open(&path).unwrap()).unwrap();
        let tmp = dir.path().join("entry.tmp");
        std::fs::write(&tmp, b"NEW BYTES, longer").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(map.bytes(), b"old bytes");
        assert_eq!(std::fs::read(&path).unwrap(), b"NEW BYTES, longer");
    }
}
