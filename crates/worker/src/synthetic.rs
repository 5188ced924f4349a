//! A deterministic generator of labelled images, so that the demo and the
//! tests need no files and a classifier has something real to learn.
//!
//! Class `c` fixes a shape (disc, square, triangle, ring, horizontal or
//! vertical stripes, cross, diamond), a hue and a texture frequency; each image
//! draws its position, size, background and pixel noise from the seed.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SyntheticConfig;

/// The `index`-th image of a generated set, whose class is `index % classes`.
pub fn synthetic_image(cfg: &SyntheticConfig, index: usize) -> RgbImage {
    let class = index % cfg.classes;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(index as u64 + 1);
    let (w, h) = (cfg.width, cfg.height);
    let shape = class % 8;
    // Spread hues over the classes, offset so that shape and hue vary together.
    let hue = (class as f32 * 0.618_034).fract();
    let colour = hsv(hue, 0.85, 0.95);
    let stripes = 2.0 + (class / 8 % 4) as f32 * 2.0;
    let background = hsv(rng.random::<f32>(), rng.random_range(0.0..0.3), rng.random_range(0.2..0.5));
    let size = w.min(h) as f32 * rng.random_range(0.25..0.4);
    let cx = w as f32 * rng.random_range(0.35..0.65);
    let cy = h as f32 * rng.random_range(0.35..0.65);
    let noise = 0.08f32;
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x as f32 - cx) / size, (y as f32 - cy) / size);
        let inside = match shape {
            0 => dx * dx + dy * dy <= 1.0,
            1 => dx.abs() <= 0.8 && dy.abs() <= 0.8,
            2 => (-0.9..=0.9).contains(&dy) && dx.abs() <= (dy + 0.9) * 0.55,
            3 => (0.55..=1.0).contains(&(dx * dx + dy * dy)),
            4 => dx.abs() <= 1.0 && dy.abs() <= 1.0 && ((dy + 1.0) * stripes).floor() as i32 % 2 == 0,
            5 => dx.abs() <= 1.0 && dy.abs() <= 1.0 && ((dx + 1.0) * stripes).floor() as i32 % 2 == 0,
            6 => (dx.abs() <= 0.3 && dy.abs() <= 1.0) || (dy.abs() <= 0.3 && dx.abs() <= 1.0),
            _ => dx.abs() + dy.abs() <= 1.0,
        };
        let base = if inside { colour } else { background };
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let v = base[c] + noise * (rng.random::<f32>() * 2.0 - 1.0);
            *out = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        Rgb(px)
    })
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match i as i32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let cfg = SyntheticConfig { classes: 4, images: 8, width: 32, height: 24, seed: 7 };
        let a = synthetic_image(&cfg, 3);
        assert_eq!(a.dimensions(), (32, 24));
        assert_eq!(a, synthetic_image(&cfg, 3));
        assert_ne!(a, synthetic_image(&cfg, 7));
        assert_ne!(a, synthetic_image(&SyntheticConfig { seed: 8, ..cfg }, 3));
    }
}
