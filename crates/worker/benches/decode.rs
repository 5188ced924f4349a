//! Images per second through decode + preprocess, the CPU half of the
//! backbone pass: 200 generated 500x375 JPEGs (quality 90, the dog photos'
//! usual size) read from disk, decoded to RGB and transformed to 224x224
//! (Resize, CenterCrop, ToTensor, Normalize) with the worker's own functions,
//! on 1 and 2 threads. Also the split between decoding and the transform.
//!
//! `cargo bench -p sweep-worker --bench decode` (release). The generated
//! images carry pixel noise everywhere, so they decode slower than photos.
//! `DECODE_BENCH_IMAGES` sets the count (200), `DECODE_BENCH_THREADS` the
//! thread counts (`1,2`), `DECODE_BENCH_DIR` a folder to keep the images in
//! (a temporary one by default), for `decode_pillow.py` beside this file to
//! time Pillow + torchvision on the same files.

#![allow(missing_docs, clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use sweep_worker::{decode_image, preprocess, synthetic_image, SyntheticConfig, Transform};

const IMAGENET: Transform = Transform {
    size: 224,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    channel_order: sweep_worker::ChannelOrder::Rgb,
};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Decodes and transforms every file on `threads` threads; returns seconds.
fn pass(files: &[PathBuf], threads: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut out = vec![0f32; IMAGENET.len()];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { return };
                    let img = decode_image(path).expect("a generated image decodes");
                    preprocess(&img, &IMAGENET, &mut out);
                    std::hint::black_box(&out);
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = env_or("DECODE_BENCH_IMAGES", 200);
    let threads: Vec<usize> = std::env::var("DECODE_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("DECODE_BENCH_DIR").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("the image folder");
    let cfg = SyntheticConfig { classes: 8, images: n, width: 500, height: 375, seed: 0 };
    let mut bytes = 0;
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let img = synthetic_image(&cfg, i);
            let mut jpeg = Vec::new();
            JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).expect("encode");
            bytes += jpeg.len();
            let path = dir.join(format!("{i:04}.jpg"));
            std::fs::write(&path, jpeg).expect("write");
            path
        })
        .collect();
    println!("{n} JPEGs of 500x375 at quality 90, {} KiB on average, to 224x224", bytes / n / 1024);

    // Warm the page cache and the allocator.
    pass(&files[..n.min(20)], 1);

    // Where one thread's time goes.
    let decoded: Vec<_> = files.iter().take(50).map(|p| decode_image(p).expect("decodes")).collect();
    let start = Instant::now();
    for p in files.iter().take(50) {
        std::hint::black_box(decode_image(p).expect("decodes"));
    }
    let decode_ms = start.elapsed().as_secs_f64() * 1e3 / decoded.len() as f64;
    let mut out = vec![0f32; IMAGENET.len()];
    let start = Instant::now();
    for img in &decoded {
        preprocess(img, &IMAGENET, &mut out);
        std::hint::black_box(&out);
    }
    let transform_ms = start.elapsed().as_secs_f64() * 1e3 / decoded.len() as f64;
    println!("one image: decode {decode_ms:.2} ms, transform {transform_ms:.2} ms");

    for &t in &threads {
        let secs = pass(&files, t);
        let rate = n as f64 / secs;
        println!("threads {t}: {rate:.0} images/s ({:.0} per thread), {secs:.2} s", rate / t as f64);
    }
}
