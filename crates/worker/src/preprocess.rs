//! torchvision's eval transform, value for value:
//! `Resize(size)` (shorter side, bilinear with antialias as Pillow does),
//! `CenterCrop(size)`, `ToTensor()`, `Normalize(mean, std)`.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// The deterministic transform applied to every image before the backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Resize target of the shorter side, and the square crop.
    pub size: usize,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f64; 3],
}

impl Transform {
    /// Size of [`preprocess`]'s output: `3 * size * size` floats.
    pub fn len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Never true: a transform always produces pixels.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// torchvision's `Resize(size)` output size for a `w` x `h` image: the shorter
/// side becomes `size`, the longer keeps the aspect ratio, truncated.
fn resized(w: u32, h: u32, size: usize) -> (u32, u32) {
    let size = size as u32;
    if w <= h {
        (size, (size as u64 * h as u64 / w as u64) as u32)
    } else {
        ((size as u64 * w as u64 / h as u64) as u32, size)
    }
}

/// Python's `round`: halves go to the even neighbour.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// Applies the transform to an RGB image, returning CHW floats.
pub fn preprocess(img: &RgbImage, t: &Transform, out: &mut [f32]) {
    assert_eq!(out.len(), t.len(), "output buffer must hold 3 * size * size floats");
    let (w, h) = img.dimensions();
    let (rw, rh) = resized(w, h, t.size);
    let resized_buf;
    let (pixels, pw, ph): (&[u8], u32, u32) = if (rw, rh) == (w, h) {
        (img.as_raw(), w, h)
    } else {
        let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3).expect("an RgbImage has 3 bytes a pixel");
        let mut dst = Image::new(rw, rh, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new().resize(&src, &mut dst, &options).expect("same pixel type on both sides");
        resized_buf = dst.into_vec();
        (&resized_buf, rw, rh)
    };
    let size = t.size;
    // torchvision pads when the image is smaller than the crop; after Resize it never is.
    let top = round_half_even((ph as f64 - size as f64) / 2.0).max(0) as usize;
    let left = round_half_even((pw as f64 - size as f64) / 2.0).max(0) as usize;
    let mean: [f32; 3] = std::array::from_fn(|c| t.mean[c] as f32);
    let std: [f32; 3] = std::array::from_fn(|c| t.std[c] as f32);
    let plane = size * size;
    for y in 0..size {
        let row = &pixels[((top + y) * pw as usize + left) * 3..][..size * 3];
        for x in 0..size {
            for c in 0..3 {
                // ToTensor divides by 255; Normalize subtracts and divides, in f32.
                let v = row[x * 3 + c] as f32 / 255.0;
                out[c * plane + y * size + x] = (v - mean[c]) / std[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_torchvision() {
        assert_eq!(resized(500, 375, 224), (298, 224));
        assert_eq!(resized(375, 500, 224), (224, 298));
        assert_eq!(resized(224, 224, 224), (224, 224));
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(37.0), 37);
        assert_eq!(round_half_even(3.2), 3);
    }

    #[test]
    fn constant_image_normalises_exactly() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 128]));
        let t = Transform { size: 16, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
        let mut out = vec![0.0; t.len()];
        preprocess(&img, &t, &mut out);
        let expect = |c: usize, v: u8| (v as f32 / 255.0 - t.mean[c] as f32) / t.std[c] as f32;
        assert_eq!(out[0], expect(0, 255));
        assert_eq!(out[256], expect(1, 0));
        assert_eq!(out[767], expect(2, 128));
    }
}
