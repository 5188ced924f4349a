//! Golden test: the worker's decode and transform against torchvision's
//! (Pillow's) values on committed images. The fixture and its generator are in
//! `tests/fixtures/`: `python tests/fixtures/make_preprocess_fixture.py`
//! (numpy and Pillow; it also checks torchvision agrees when installed).

use std::path::{Path, PathBuf};

use sweep_worker::{decode_image, preprocess, Transform};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).expect("fixture manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

fn floats(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture tensor");
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn transform(size: usize, m: &serde_json::Value) -> Transform {
    let three = |key: &str| -> [f64; 3] { std::array::from_fn(|c| m[key][c].as_f64().expect("a number")) };
    Transform { size, mean: three("mean"), std: three("std"), channel_order: sweep_worker::ChannelOrder::Rgb }
}

/// Every (image file, size, expected floats) of the fixture, with the Pillow-decoded bytes of JPEGs.
fn cases() -> Vec<(String, Option<String>, usize, String)> {
    let m = manifest();
    let mut out = Vec::new();
    for case in m["cases"].as_array().expect("cases") {
        let image = case["image"].as_str().expect("image").to_owned();
        let decoded = case["decoded"].as_str().map(str::to_owned);
        for (size, expected) in case["outputs"].as_object().expect("outputs") {
            let size: usize = size.parse().expect("size");
            out.push((image.clone(), decoded.clone(), size, expected.as_str().expect("file").to_owned()));
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn run(img: &image::RgbImage, t: &Transform) -> Vec<f32> {
    let mut out = vec![0.0; t.len()];
    preprocess(img, t, &mut out);
    out
}

#[test]
fn png_matches_torchvision_bit_for_bit() {
    let m = manifest();
    let mut checked = 0;
    for (image, _, size, expected) in cases().into_iter().filter(|c| c.0.ends_with(".png")) {
        let img = decode_image(&fixture_dir().join(&image)).expect("decodes");
        let got = run(&img, &transform(size, &m));
        let want = floats(&expected);
        let mismatches: Vec<usize> = (0..want.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
        assert!(
            mismatches.is_empty(),
            "{image} at {size}: {} of {} values differ (max {}), first at {}",
            mismatches.len(),
            want.len(),
            max_abs_diff(&got, &want),
            mismatches[0]
        );
        checked += 1;
    }
    assert_eq!(checked, 8, "4 PNGs at 2 sizes");
}

#[test]
fn jpeg_transform_is_exact_on_pillows_pixels_and_the_decoder_is_close() {
    let m = manifest();
    let mut checked = 0;
    for (image, decoded, size, expected) in cases().into_iter().filter(|c| c.1.is_some()) {
        let t = transform(size, &m);
        let ours = decode_image(&fixture_dir().join(&image)).expect("decodes");
        let (w, h) = ours.dimensions();
        // The transform on the pixels Pillow (libjpeg-turbo) decoded: exact.
        let pillow_bytes = std::fs::read(fixture_dir().join(decoded.expect("filtered"))).expect("decoded bytes");
        let pillow = image::RgbImage::from_raw(w, h, pillow_bytes).expect("same size as our decode");
        let want = floats(&expected);
        assert_eq!(max_abs_diff(&run(&pillow, &t), &want), 0.0, "{image} at {size}: transform");
        // The decoders (zune-jpeg here, libjpeg-turbo in Pillow) round the
        // IDCT and the chroma upsampling differently. Measured on this noisy
        // q90 4:2:0 image: a quarter of the bytes differ, by at most 3 levels
        // of 255; after the transform's averaging, by at most 2 levels
        // (0.0349 in normalised units).
        let pixel_diff = ours.as_raw().iter().zip(pillow.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        assert!(pixel_diff <= 3, "{image}: decoders differ by {pixel_diff} levels");
        let float_diff = max_abs_diff(&run(&ours, &t), &want);
        let bound = 2.0 / 255.0 / 0.224;
        assert!(float_diff <= bound, "{image} at {size}: {float_diff} > {bound}");
        checked += 1;
    }
    assert_eq!(checked, 2, "1 JPEG at 2 sizes");
}
