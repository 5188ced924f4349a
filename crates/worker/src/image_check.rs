//! What an image file's bytes say before any pixel is decoded: its format
//! (sniffed from the magic bytes, not the name), its size, and whether the
//! file is complete. A JPEG must reach its end-of-image marker and a PNG its
//! `IEND` chunk: the decoders would otherwise fill a truncated image's
//! missing rows with grey and train on it, where Pillow refuses the file
//! ("image file is truncated").
//!
//! [`check_images`] runs these checks over a whole data set before any
//! backbone work, on several threads, and reports every bad file at once.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use image::ImageFormat;

use crate::data::{Dataset, Source};

/// The format and size of a complete image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// JPEG or PNG.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Reads the header of an image file's `bytes` and walks its structure to
/// its end (JPEG markers, PNG chunks), without decoding pixels; the error
/// says what is wrong, in a few words.
pub(crate) fn inspect(bytes: &[u8]) -> Result<Header, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_owned());
    }
    let header = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg(bytes)?
    } else if bytes.starts_with(PNG_SIGNATURE) {
        png(bytes)?
    } else {
        let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(format!("not a JPEG or PNG file (it starts with {})", start.join(" ")));
    };
    if header.width == 0 || header.height == 0 {
        return Err(format!("the image has no pixels ({}x{})", header.width, header.height));
    }
    Ok(header)
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

/// Walks a JPEG's segments from SOI to EOI: each marker's length is
/// followed, and a scan's entropy-coded data runs to the next marker that is
/// neither a stuffed `FF 00` nor a restart marker. Bytes between segments
/// are skipped as libjpeg skips them; anything after EOI (trailing garbage,
/// a second image) is ignored. The size is the first frame header's (SOFn).
fn jpeg(b: &[u8]) -> Result<Header, String> {
    let truncated =
        || format!("truncated: the file ends (after {} bytes) before the JPEG's end-of-image marker", b.len());
    let mut size = None;
    let mut pos = 2;
    loop {
        // The next marker: 0xFF, any fill bytes 0xFF, then its code.
        pos += b[pos..].iter().position(|&x| x == 0xFF).ok_or_else(truncated)?;
        pos += b[pos..].iter().position(|&x| x != 0xFF).ok_or_else(truncated)?;
        let marker = b[pos];
        pos += 1;
        match marker {
            0xD9 => break,
            // Standalone markers (TEM, RSTn, SOI) and a stray `FF 00`: no length.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = b.get(pos..pos + 2).map(be16).ok_or_else(truncated)?;
        if len < 2 {
            return Err(format!("corrupt JPEG: a segment of length {len} at byte {pos}"));
        }
        let end = pos + len;
        if end > b.len() {
            return Err(truncated());
        }
        // SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) && size.is_none() {
            let frame = &b[pos + 2..end];
            if frame.len() < 5 {
                return Err("corrupt JPEG: its frame header is cut short".to_owned());
            }
            size = Some((be16(&frame[3..5]), be16(&frame[1..3])));
        }
        pos = end;
        if marker == 0xDA {
            // The scan's data, up to the next real marker.
            loop {
                pos += b[pos..].iter().position(|&x| x == 0xFF).ok_or_else(truncated)?;
                match b.get(pos + 1) {
                    None => return Err(truncated()),
                    Some(0x00 | 0xD0..=0xD7) => pos += 2,
                    Some(0xFF) => pos += 1,
                    Some(_) => break,
                }
            }
        }
    }
    let (width, height) = size.ok_or("corrupt JPEG: no frame header (SOF) before its end-of-image marker")?;
    Ok(Header { format: ImageFormat::Jpeg, width: width as u32, height: height as u32 })
}

/// Walks a PNG's chunks (length, type, data, CRC) from `IHDR`, which must
/// come first, to `IEND`; a chunk cut short or a missing `IEND` is a
/// truncated file. CRCs are left to the decoder.
fn png(b: &[u8]) -> Result<Header, String> {
    let mut pos = PNG_SIGNATURE.len();
    let mut size = None;
    let mut data = false;
    loop {
        let Some(head) = b.get(pos..pos + 8) else {
            return Err(format!("truncated: the file ends (after {} bytes) before the PNG's IEND chunk", b.len()));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let name = String::from_utf8_lossy(kind);
        let end = pos.checked_add(12).and_then(|e| e.checked_add(len)).filter(|&e| e <= b.len());
        let Some(end) = end else {
            return Err(format!("truncated: the file ends (after {} bytes) inside the PNG's `{name}` chunk", b.len()));
        };
        if size.is_none() {
            if kind != b"IHDR" || len < 8 {
                return Err(format!("corrupt PNG: its first chunk is `{name}`, not a header (IHDR)"));
            }
            let d = &b[pos + 8..];
            size = Some((u32::from_be_bytes([d[0], d[1], d[2], d[3]]), u32::from_be_bytes([d[4], d[5], d[6], d[7]])));
        }
        match kind {
            b"IDAT" => data = true,
            b"IEND" => break,
            _ => {}
        }
        pos = end;
    }
    if !data {
        return Err("corrupt PNG: it holds no image data (IDAT)".to_owned());
    }
    let (width, height) = size.expect("the first chunk is the header");
    Ok(Header { format: ImageFormat::Png, width, height })
}

/// An image file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadImage {
    /// Its position in [`Dataset::items`].
    pub index: usize,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it (`truncated: ...`, `not a JPEG or PNG file ...`).
    pub problem: String,
}

/// Every image of a data set that failed [`check_images`], in data-set order.
/// All of them are collected; the message lists the first
/// [`BadImages::SHOWN`], one per line, and counts the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadImages {
    /// The bad images, in data-set order.
    pub images: Vec<BadImage>,
    /// How many images were checked.
    pub checked: usize,
}

impl BadImages {
    /// How many bad images the message lists by name.
    pub const SHOWN: usize = 10;
}

/// One bad image is one line, as the backbone pass reports it
/// (`PATH: cannot decode image: PROBLEM`); several are a count, then one
/// indented line each for the first [`BadImages::SHOWN`], then `and N more`.
impl fmt::Display for BadImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.images.len();
        if let [bad] = self.images.as_slice() {
            return write!(f, "{}: cannot decode image: {}", bad.path.display(), bad.problem);
        }
        write!(f, "{n} of {} images cannot be decoded:", self.checked)?;
        for bad in self.images.iter().take(Self::SHOWN) {
            write!(f, "\n  {}: {}", bad.path.display(), bad.problem)?;
        }
        if n > Self::SHOWN {
            write!(f, "\n  and {} more", n - Self::SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for BadImages {}

/// Checks every image file of `dataset` before any backbone work, on
/// `threads` threads: each is read whole, its format sniffed from its magic
/// bytes, its size read from its header and its structure walked to the end
/// (no pixel is decoded). Returns every bad file at once, in data-set order,
/// so that one run finds them all; generated images need no check.
///
/// A caller that would rather skip the bad images can drop
/// [`BadImage::index`] from [`Dataset::items`].
pub fn check_images(dataset: &Dataset, threads: usize) -> Result<(), BadImages> {
    let files: Vec<(usize, &PathBuf)> = dataset
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match &item.source {
            Source::File(path) => Some((i, path)),
            Source::Synthetic { .. } => None,
        })
        .collect();
    let next = AtomicUsize::new(0);
    let check = || {
        let mut bad = Vec::new();
        while let Some(&(index, path)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            let problem = match std::fs::read(path) {
                Ok(bytes) => inspect(&bytes).err(),
                Err(e) => Some(format!("cannot read: {e}")),
            };
            if let Some(problem) = problem {
                bad.push(BadImage { index, path: path.clone(), problem });
            }
        }
        bad
    };
    let threads = threads.clamp(1, files.len().max(1));
    let mut images: Vec<BadImage> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(check)).collect();
        handles.into_iter().flat_map(|h| h.join().expect("the image check does not panic")).collect()
    });
    if images.is_empty() {
        return Ok(());
    }
    images.sort_by_key(|bad| bad.index);
    Err(BadImages { images, checked: files.len() })
}

/// `[data] skip_bad_images`: leaves the image files that fail
/// [`check_images`] out of `dataset` (its labels and classes stay as they
/// were) and returns them, or `None` when every image passes. The features,
/// their cache key and the split then cover only the images kept. A data set
/// whose every image is bad is still refused, with all of them listed.
pub fn skip_bad_images(dataset: &mut Dataset, threads: usize) -> Result<Option<BadImages>, BadImages> {
    let bad = match check_images(dataset, threads) {
        Ok(()) => return Ok(None),
        Err(bad) if bad.images.len() >= dataset.items.len() => return Err(bad),
        Err(bad) => bad,
    };
    let mut drop = bad.images.iter().map(|b| b.index).peekable();
    let mut index = 0;
    dataset.items.retain(|_| {
        let keep = drop.next_if_eq(&index).is_none();
        index += 1;
        keep
    });
    Ok(Some(bad))
}

impl BadImages {
    /// One line for a warning: how many images were left out and the first
    /// few of them.
    pub fn skipped_line(&self) -> String {
        const NAMED: usize = 3;
        let n = self.images.len();
        let named: Vec<String> =
            self.images.iter().take(NAMED).map(|b| format!("{} ({})", b.path.display(), b.problem)).collect();
        let more = if n > NAMED { format!(" and {} more", n - NAMED) } else { String::new() };
        format!(
            "skip_bad_images: left out {n} of {} images that cannot be decoded: {}{more}",
            self.checked,
            named.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use image::codecs::jpeg::JpegEncoder;

    use super::*;
    use crate::data::SyntheticConfig;
    use crate::synthetic::synthetic_image;

    fn picture() -> image::RgbImage {
        synthetic_image(&SyntheticConfig { classes: 2, images: 2, width: 45, height: 30, seed: 1 }, 1)
    }

    fn jpeg_bytes(img: &image::RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90).encode_image(img).unwrap();
        out
    }

    fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn complete_files_give_their_format_and_size() {
        let jpeg = jpeg_bytes(&picture());
        assert_eq!(inspect(&jpeg), Ok(Header { format: ImageFormat::Jpeg, width: 45, height: 30 }));
        let png = png_bytes(&picture());
        assert_eq!(inspect(&png), Ok(Header { format: ImageFormat::Png, width: 45, height: 30 }));
        // Trailing bytes after the end marker are ignored, as by Pillow.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 100]);
        padded.extend_from_slice(b"trailing garbage \xFF\xD8");
        assert!(inspect(&padded).is_ok());
    }

    #[test]
    fn truncated_jpegs_are_refused() {
        let jpeg = jpeg_bytes(&picture());
        for cut in [jpeg.len() / 2, jpeg.len() - 2, 20, 3] {
            let err = inspect(&jpeg[..cut]).unwrap_err();
            assert!(err.starts_with("truncated: the file ends (after "), "{cut}: {err}");
            assert!(err.ends_with("before the JPEG's end-of-image marker"), "{cut}: {err}");
        }
        // An EXIF-like thumbnail carries its own end marker: a naive search
        // for FF D9 would find it, the walk skips it with its segment.
        let thumbnail = jpeg_bytes(&image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])));
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((thumbnail.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(&thumbnail);
        let with_thumbnail: Vec<u8> = jpeg[..2].iter().chain(&app1).chain(&jpeg[2..]).copied().collect();
        assert_eq!(inspect(&with_thumbnail).unwrap().width, 45);
        let cut = &with_thumbnail[..with_thumbnail.len() - 200];
        assert!(cut.windows(2).any(|w| w == [0xFF, 0xD9]), "the thumbnail's EOI is still there");
        assert!(inspect(cut).unwrap_err().starts_with("truncated"));
    }

    #[test]
    fn truncated_pngs_are_refused() {
        let png = png_bytes(&picture());
        let err = inspect(&png[..png.len() / 2]).unwrap_err();
        assert!(
            err.starts_with("truncated: the file ends (after ") && err.ends_with("inside the PNG's `IDAT` chunk"),
            "{err}"
        );
        // Cut exactly before IEND: every chunk whole, the end missing.
        let err = inspect(&png[..png.len() - 12]).unwrap_err();
        assert!(err.ends_with("before the PNG's IEND chunk"), "{err}");
    }

    #[test]
    fn other_files_are_named_for_what_they_are() {
        assert_eq!(inspect(b""), Err("the file is empty".to_owned()));
        assert_eq!(
            inspect(b"GIF89a..."),
            Err("not a JPEG or PNG file (it starts with 47 49 46 38 39 61 2e 2e)".to_owned())
        );
        let mut png = png_bytes(&picture());
        png[16..24].copy_from_slice(&[0; 8]); // IHDR width and height
        assert_eq!(inspect(&png), Err("the image has no pixels (0x0)".to_owned()));
    }

    /// Issue 16b: a broken image was found only by the backbone pass, one
    /// per run. The pre-check finds every one at once, on any thread count.
    #[test]
    fn check_images_reports_every_bad_file_at_once_in_data_order() {
        let dir = tempfile::tempdir().unwrap();
        let good = jpeg_bytes(&picture());
        let mut items = Vec::new();
        for i in 0..30 {
            let path = dir.path().join(format!("{i:02}.jpg"));
            let bytes: &[u8] = match i {
                3 => &good[..good.len() / 2],
                7 => b"not an image",
                11..=24 => &good[..good.len() - 2],
                _ => &good,
            };
            std::fs::write(&path, bytes).unwrap();
            items.push(crate::data::Item { source: Source::File(path), label: i % 2 });
        }
        let missing = dir.path().join("gone.jpg");
        items.push(crate::data::Item { source: Source::File(missing.clone()), label: 0 });
        let dataset = Dataset { classes: vec!["a".into(), "b".into()], items, synthetic: None };
        for threads in [1, 4] {
            let bad = check_images(&dataset, threads).unwrap_err();
            let indices: Vec<usize> = bad.images.iter().map(|b| b.index).collect();
            let mut want = vec![3, 7];
            want.extend(11..=24);
            want.push(30);
            assert_eq!(indices, want, "{threads} threads");
            assert_eq!(bad.checked, 31);
            let message = bad.to_string();
            let lines: Vec<&str> = message.lines().collect();
            assert_eq!(lines.len(), 1 + BadImages::SHOWN + 1, "{message}");
            assert_eq!(lines[0], "17 of 31 images cannot be decoded:");
            assert_eq!(
                lines[1],
                format!(
                    "  {}: truncated: the file ends (after {} bytes) before the JPEG's end-of-image marker",
                    dir.path().join("03.jpg").display(),
                    good.len() / 2
                )
            );
            assert_eq!(
                lines[2],
                format!(
                    "  {}: not a JPEG or PNG file (it starts with 6e 6f 74 20 61 6e 20 69)",
                    dir.path().join("07.jpg").display()
                )
            );
            assert_eq!(lines[11], "  and 7 more");
            assert!(bad.images[16].path == missing && bad.images[16].problem.starts_with("cannot read: "));
        }
        let fine = Dataset { items: dataset.items[..3].to_vec(), ..dataset.clone() };
        assert_eq!(check_images(&fine, 2), Ok(()));
        // One bad image is one line, as the backbone pass would have put it.
        let one = Dataset { items: dataset.items[..4].to_vec(), ..dataset.clone() };
        assert_eq!(
            check_images(&one, 2).unwrap_err().to_string(),
            format!(
                "{}: cannot decode image: truncated: the file ends (after {} bytes) before the JPEG's end-of-image marker",
                dir.path().join("03.jpg").display(),
                good.len() / 2
            )
        );
    }

    /// Issue 16: `skip_bad_images` leaves the bad files out, keeps the rest
    /// in order, and still refuses a set with no good image.
    #[test]
    fn skip_bad_images_leaves_out_every_bad_file_and_keeps_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let good = jpeg_bytes(&picture());
        let mut items = Vec::new();
        for i in 0..8u32 {
            let path = dir.path().join(format!("{i}.jpg"));
            let bytes: &[u8] = if matches!(i, 2 | 5 | 6 | 7) { &good[..10] } else { &good };
            std::fs::write(&path, bytes).unwrap();
            items.push(crate::data::Item { source: Source::File(path), label: i % 2 });
        }
        let mut dataset = Dataset { classes: vec!["a".into(), "b".into()], items, synthetic: None };
        let all = dataset.clone();
        let bad = skip_bad_images(&mut dataset, 3).unwrap().unwrap();
        assert_eq!(bad.images.iter().map(|b| b.index).collect::<Vec<_>>(), [2, 5, 6, 7]);
        let kept: Vec<_> = [0, 1, 3, 4].iter().map(|&i| all.items[i].clone()).collect();
        assert_eq!(dataset.items, kept);
        assert_eq!(dataset.classes, all.classes);
        let line = bad.skipped_line();
        assert!(line.starts_with("skip_bad_images: left out 4 of 8 images that cannot be decoded: "), "{line}");
        assert!(line.contains("2.jpg (truncated: ") && line.ends_with(" and 1 more") && !line.contains('\n'), "{line}");
        // Nothing left out when every image passes; refused when none does.
        assert_eq!(skip_bad_images(&mut dataset, 2), Ok(None));
        assert_eq!(dataset.items.len(), 4);
        let mut none = Dataset { items: vec![all.items[2].clone(), all.items[5].clone()], ..all.clone() };
        assert_eq!(skip_bad_images(&mut none, 2).unwrap_err().images.len(), 2);
    }
}
