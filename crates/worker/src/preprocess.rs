//! torchvision's eval transform, value for value:
//! `Resize(size)` (shorter side, bilinear with antialias as Pillow does),
//! `CenterCrop(size)`, `ToTensor()`, `Normalize(mean, std)`.
//!
//! The resize is Pillow's own algorithm (`libImaging/Resample.c`), not an
//! approximation of it: the same filter support (`1 * scale` when shrinking),
//! the same bounds, coefficients rounded to the same 22-bit fixed point, the
//! horizontal pass first into 8-bit pixels, then the vertical pass, each
//! rounded and clamped as Pillow's `clip8` does. So a decoded image gives the
//! same bytes as `PIL.Image.resize((w, h), Image.BILINEAR)`, and the same
//! floats as torchvision's transform (checked against Pillow in
//! `tests/preprocess_golden.rs`). Only the pixels that survive the centre
//! crop are computed: every output pixel depends on its own window alone, so
//! skipping the others changes no value.
//!
//! (fast_image_resize, used before, follows Pillow-SIMD instead: 16-bit
//! coefficients with a per-image precision, which is off by one from Pillow
//! on some pixels.)

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
    /// The order of the colour planes out (`mean` and `std` are in it).
    pub channel_order: ChannelOrder,
}

/// The order of the colour planes the backbone's first layer expects:
/// torchvision's weights take RGB, Caffe's and Keras' ResNet-50 BGR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision's).
    #[default]
    Rgb,
    /// Blue, green, red (Caffe's, OpenCV's).
    Bgr,
}

impl ChannelOrder {
    /// Both orders.
    pub const ALL: [ChannelOrder; 2] = [ChannelOrder::Rgb, ChannelOrder::Bgr];

    /// The name in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            ChannelOrder::Rgb => "rgb",
            ChannelOrder::Bgr => "bgr",
        }
    }

    /// Parses a sweep file's (or a weights file's) name, in any case.
    pub fn from_name(name: &str) -> Option<ChannelOrder> {
        ChannelOrder::ALL.into_iter().find(|o| o.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The other order.
    pub fn swapped(self) -> ChannelOrder {
        match self {
            ChannelOrder::Rgb => ChannelOrder::Bgr,
            ChannelOrder::Bgr => ChannelOrder::Rgb,
        }
    }
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

/// Pillow's `PRECISION_BITS`: coefficients are fixed point with 22 fraction bits.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `clip8`: a fixed-point sum back to a byte.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// The resampling weights of one axis, for output pixels `first..first + count`
/// of an `in_size` to `out_size` resize (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
#[derive(Debug)]
struct Axis {
    /// First input pixel of each output pixel's window.
    start: Vec<usize>,
    /// Length of each window.
    len: Vec<usize>,
    /// Room for the longest window: output pixel `i`'s weights start at `i * ksize`.
    ksize: usize,
    /// Fixed-point weights.
    weights: Vec<i32>,
}

impl Axis {
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Axis {
        // The bilinear (triangle) filter, support 1, widened by the scale when shrinking.
        let filter = |x: f64| {
            let x = x.abs();
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        };
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut axis = Axis {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            ksize,
            weights: vec![0; count * ksize],
        };
        let mut k = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = xmax.saturating_sub(xmin);
            let mut ww = 0.0;
            for (x, kx) in k[..len].iter_mut().enumerate() {
                *kx = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *kx;
            }
            for (kx, out) in k[..len].iter().zip(&mut axis.weights[i * ksize..]) {
                let kx = if ww != 0.0 { kx / ww } else { *kx };
                let fixed = kx * (1u32 << PRECISION_BITS) as f64;
                *out = if kx < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            axis.start.push(xmin);
            axis.len.push(len);
        }
        axis
    }

    /// Output pixel `i`'s window: its first input pixel and its weights.
    #[inline(always)]
    fn window(&self, i: usize) -> (usize, &[i32]) {
        (self.start[i], &self.weights[i * self.ksize..][..self.len[i]])
    }
}

/// Applies the transform to an RGB image, returning CHW floats.
///
/// The image must have at least one pixel.
pub fn preprocess(img: &RgbImage, t: &Transform, out: &mut [f32]) {
    assert_eq!(out.len(), t.len(), "output buffer must hold 3 * size * size floats");
    let (w, h) = img.dimensions();
    assert!(w > 0 && h > 0, "an image to preprocess has pixels");
    let (rw, rh) = resized(w, h, t.size);
    let size = t.size;
    if size == 0 {
        return;
    }
    // CenterCrop; torchvision pads when the image is smaller than the crop, but after Resize it never is.
    let top = round_half_even((rh as f64 - size as f64) / 2.0).max(0) as usize;
    let left = round_half_even((rw as f64 - size as f64) / 2.0).max(0) as usize;
    let (w, h) = (w as usize, h as usize);
    let src = img.as_raw();

    // Pillow resizes horizontally first, into bytes, then vertically; an axis
    // whose size does not change is not resampled at all.
    let vertical = (rh as usize != h).then(|| Axis::new(h, rh as usize, top, size));
    let horizontal = (rw as usize != w).then(|| Axis::new(w, rw as usize, left, size));
    // The source rows the vertical pass reads.
    let (row0, row1) = match &vertical {
        Some(v) => (v.start[0], v.start[size - 1] + v.len[size - 1]),
        None => (top, top + size),
    };
    let half = 1 << (PRECISION_BITS - 1);
    // After the horizontal pass: rows row0..row1, the crop's columns only.
    let mut temp = Vec::new();
    let (rows, stride, col0): (&[u8], usize, usize) = match &horizontal {
        Some(hz) => {
            temp.resize((row1 - row0) * size * 3, 0u8);
            for (y, dst) in (row0..row1).zip(temp.chunks_exact_mut(size * 3)) {
                let line = &src[y * w * 3..][..w * 3];
                for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                    let (start, k) = hz.window(x);
                    let taps = &line[start * 3..][..k.len() * 3];
                    let (mut s0, mut s1, mut s2) = (half, half, half);
                    for (&kx, p) in k.iter().zip(taps.chunks_exact(3)) {
                        s0 += p[0] as i32 * kx;
                        s1 += p[1] as i32 * kx;
                        s2 += p[2] as i32 * kx;
                    }
                    px[0] = clip8(s0);
                    px[1] = clip8(s1);
                    px[2] = clip8(s2);
                }
            }
            (&temp, size * 3, 0)
        }
        None => (&src[row0 * w * 3..row1 * w * 3], w * 3, left),
    };

    let mean: [f32; 3] = std::array::from_fn(|c| t.mean[c] as f32);
    let std: [f32; 3] = std::array::from_fn(|c| t.std[c] as f32);
    // ToTensor divides by 255; Normalize subtracts and divides, all in f32.
    let lut: [[f32; 256]; 3] = std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
    let plane = size * size;
    // Plane 0 is the first channel of `channel_order`, normalised by `mean[0]` and `std[0]`.
    let (first, rest) = out.split_at_mut(plane);
    let (g_out, last) = rest.split_at_mut(plane);
    let (r_out, b_out, r_lut, b_lut) = match t.channel_order {
        ChannelOrder::Rgb => (first, last, 0, 2),
        ChannelOrder::Bgr => (last, first, 2, 0),
    };
    let mut line = vec![0u8; size * 3];
    let mut acc = vec![0i32; size * 3];
    for y in 0..size {
        match &vertical {
            Some(v) => {
                let (start, k) = v.window(y);
                acc.fill(half);
                for (j, &ky) in k.iter().enumerate() {
                    let row = &rows[(start + j - row0) * stride + col0 * 3..][..size * 3];
                    for (a, &p) in acc.iter_mut().zip(row) {
                        *a += p as i32 * ky;
                    }
                }
                for (dst, &a) in line.iter_mut().zip(&acc) {
                    *dst = clip8(a);
                }
            }
            None => line.copy_from_slice(&rows[(top + y - row0) * stride + col0 * 3..][..size * 3]),
        }
        let o = y * size;
        for (x, px) in line.chunks_exact(3).enumerate() {
            r_out[o + x] = lut[r_lut][px[0] as usize];
            g_out[o + x] = lut[1][px[1] as usize];
            b_out[o + x] = lut[b_lut][px[2] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGENET: Transform = Transform {
        size: 16,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: ChannelOrder::Rgb,
    };

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
        let t = IMAGENET;
        let mut out = vec![0.0; t.len()];
        preprocess(&img, &t, &mut out);
        let expect = |c: usize, v: u8| (v as f32 / 255.0 - t.mean[c] as f32) / t.std[c] as f32;
        assert!(out[..256].iter().all(|&v| v == expect(0, 255)));
        assert!(out[256..512].iter().all(|&v| v == expect(1, 0)));
        assert!(out[512..].iter().all(|&v| v == expect(2, 128)));
    }

    #[test]
    fn pillow_weights_sum_to_one_in_fixed_point() {
        // 500 -> 298 (the dog photos to 224): windows of up to 4 pixels.
        let axis = Axis::new(500, 298, 0, 298);
        assert_eq!(axis.ksize, 5);
        for i in 0..298 {
            let (start, k) = axis.window(i);
            assert!(start + k.len() <= 500);
            let sum: i32 = k.iter().sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i32, "{i}: {sum}");
        }
        // A part of the axis has the weights of the same pixels of the whole axis.
        let part = Axis::new(500, 298, 37, 224);
        for i in 0..224 {
            assert_eq!(part.window(i), axis.window(37 + i));
        }
    }

    #[test]
    fn an_image_of_the_crop_size_is_only_normalised() {
        let img = RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, (x * y) as u8]));
        let mut out = vec![0.0; IMAGENET.len()];
        preprocess(&img, &IMAGENET, &mut out);
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let want = (px[c] as f32 / 255.0 - IMAGENET.mean[c] as f32) / IMAGENET.std[c] as f32;
                assert_eq!(out[c * 256 + i], want, "pixel {i} channel {c}");
            }
        }
    }

    #[test]
    fn one_axis_only_is_a_crop_on_the_other() {
        // 16 wide: no horizontal pass, the 16-pixel window of rows is cropped from 40.
        let img = RgbImage::from_fn(16, 40, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = vec![0.0; IMAGENET.len()];
        preprocess(&img, &IMAGENET, &mut out);
        let red = |v: u8| (v as f32 / 255.0 - IMAGENET.mean[0] as f32) / IMAGENET.std[0] as f32;
        let green = |v: u8| (v as f32 / 255.0 - IMAGENET.mean[1] as f32) / IMAGENET.std[1] as f32;
        // Columns are untouched; rows 12..28 of the 40 survive the crop.
        assert_eq!(out[5], red(5));
        assert_eq!(out[256 + 3 * 16], green(15));
        assert_eq!(out[256 + 15 * 16], green(27));
    }

    #[test]
    fn bgr_output_of_an_image_is_rgb_output_of_the_image_swapped() {
        let img = RgbImage::from_fn(23, 19, |x, y| image::Rgb([(x * 11) as u8, (y * 13) as u8, (x * y) as u8]));
        let mut swapped = img.clone();
        swapped.pixels_mut().for_each(|p| p.0.swap(0, 2));
        let bgr = Transform { channel_order: ChannelOrder::Bgr, ..IMAGENET };
        let (mut a, mut b) = (vec![0.0; IMAGENET.len()], vec![0.0; IMAGENET.len()]);
        preprocess(&img, &bgr, &mut a);
        preprocess(&swapped, &IMAGENET, &mut b);
        assert_eq!(a, b);
        preprocess(&img, &IMAGENET, &mut b);
        assert_ne!(a, b);
    }
}
