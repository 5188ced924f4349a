//! The sanity check's limit, measured (issue 18): on weights that stand in
//! for trained ones (seeded random weights whose batch norms hold the
//! statistics of one set of generated images, preprocessed one way), the
//! check runs on other images, preprocessed the same way (matching setups:
//! it must pass every one) or another way (broken setups: it must fail
//! each, naming the likely cause). Each case's divergence is printed
//! (`cargo test --workspace --locked --test sanity -- --nocapture`): the
//! numbers behind `SANITY_LIMIT`.

use std::path::{Path, PathBuf};

use image::RgbImage;
use sweep_worker::{
    calibrated_weights, sanity_check, synthetic_image, Arch, Backbone, DType, Dataset, Item, ModelConfig, Sanity,
    Source, SyntheticConfig, Transform, Weights, SANITY_LIMIT,
};

/// A normalisation: mean and std.
type Norm = ([f64; 3], [f64; 3]);

const IMAGENET: Norm = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
const HALF: Norm = ([0.5; 3], [0.5; 3]);
/// Caffe's: pixels in 0-255 less the mean (BGR weights, here run on RGB).
const CAFFE: Norm = ([0.408, 0.458, 0.482], [1.0 / 255.0; 3]);
/// No normalisation: pixels in 0-1.
const RAW: Norm = ([0.0; 3], [1.0; 3]);

/// `n` generated images of `classes` classes.
fn images(seed: u64, n: usize, classes: usize, (w, h): (u32, u32)) -> Vec<RgbImage> {
    let cfg = SyntheticConfig { classes, images: n, width: w, height: h, seed };
    (0..n).map(|i| synthetic_image(&cfg, i)).collect()
}

/// The images' red and blue swapped: what a BGR/RGB mix-up feeds the network.
fn swapped(images: &[RgbImage]) -> Vec<RgbImage> {
    images
        .iter()
        .map(|img| {
            let mut img = img.clone();
            img.pixels_mut().for_each(|p| p.0.swap(0, 2));
            img
        })
        .collect()
}

/// The images with a warm cast (red over green over blue, as in photographs:
/// ImageNet's mean is 0.485, 0.456, 0.406), so that their channel order shows.
fn warm(images: &[RgbImage]) -> Vec<RgbImage> {
    images
        .iter()
        .map(|img| {
            let mut img = img.clone();
            img.pixels_mut().for_each(|p| {
                p.0 = [p.0[0], (f32::from(p.0[1]) * 0.8) as u8, (f32::from(p.0[2]) * 0.55) as u8];
            });
            img
        })
        .collect()
}

/// The images in grey: same preprocessing, another kind of picture.
fn grey(images: &[RgbImage]) -> Vec<RgbImage> {
    images
        .iter()
        .map(|img| {
            let mut img = img.clone();
            img.pixels_mut().for_each(|p| {
                let y = (0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2])) as u8;
                p.0 = [y; 3];
            });
            img
        })
        .collect()
}

/// The images written as PNG files, and a data set listing them.
fn dataset(dir: &Path, images: &[RgbImage]) -> Dataset {
    let items = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let path = dir.join(format!("{i}.png"));
            img.save(&path).expect("write a png");
            Item { source: Source::File(path), label: 0 }
        })
        .collect();
    Dataset { classes: vec!["a".into()], items, synthetic: None }
}

/// Weights calibrated on 48 images of seed 100 (`warm`: with a warm cast)
/// under `norm`, saved to a file.
fn weights(dir: &Path, arch: Arch, size: usize, norm: Norm, warmed: bool) -> PathBuf {
    let path = dir.join(format!("{}-{size}-{}-{}-{warmed}.safetensors", arch.name(), norm.0[0], norm.1[0]));
    if path.exists() {
        return path;
    }
    let mut calibration = images(100, 48, 8, (48, 40));
    if warmed {
        calibration = warm(&calibration);
    }
    let transform = Transform { size, mean: norm.0, std: norm.1 };
    let tensors = calibrated_weights(arch, 5, &calibration, &transform).expect("calibrate");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    path
}

struct Case {
    name: &'static str,
    /// The architecture the weights are for, and the one the sweep file names.
    arch: (Arch, Arch),
    /// The normalisation the weights expect, and the one in force.
    norm: (Norm, Norm),
    images: Vec<RgbImage>,
    size: usize,
    /// The weights calibrated on images with a warm cast.
    warm: bool,
}

fn run(dir: &Path, case: &Case) -> Sanity {
    let path = weights(dir, case.arch.0, case.size, case.norm.0, case.warm);
    let model = ModelConfig {
        arch: case.arch.1,
        weights: Weights::Safetensors(path),
        image_size: case.size,
        mean: case.norm.1 .0,
        std: case.norm.1 .1,
        dtype: DType::F32,
    };
    let data_dir = dir.join(case.name);
    std::fs::create_dir_all(&data_dir).unwrap();
    let data = dataset(&data_dir, &case.images);
    let device = sweep_worker::Device::Cpu;
    let backbone = Backbone::load(&model, &device).expect("load");
    assert!(!backbone.untrained());
    let sanity = sanity_check(&data, &model, &backbone, &device).expect("check");
    let (verdict, report) = match &sanity {
        Sanity::Passed(r) => ("pass", r),
        Sanity::Failed(r) => ("FAIL", r),
        Sanity::Skipped(why) => panic!("{}: skipped: {why}", case.name),
    };
    eprintln!(
        "{:<44} {verdict}  stem {:>9.4}  worst {:>9.4} at {}",
        case.name, report.stem, report.worst.1, report.worst.0
    );
    sanity
}

fn user_images() -> Vec<RgbImage> {
    // Other seed, other size, other classes than the calibration's.
    images(7, 40, 5, (64, 52))
}

#[test]
fn matching_setups_pass() {
    let dir = tempfile::tempdir().unwrap();
    let same = |name, arch, norm, images, size| Case {
        name,
        arch: (arch, arch),
        norm: (norm, norm),
        images,
        size,
        warm: false,
    };
    let cases = [
        same("resnet18 32px imagenet", Arch::Resnet18, IMAGENET, user_images(), 32),
        same("resnet18 64px imagenet", Arch::Resnet18, IMAGENET, user_images(), 64),
        same("resnet18 32px half", Arch::Resnet18, HALF, user_images(), 32),
        same("resnet18 32px caffe", Arch::Resnet18, CAFFE, user_images(), 32),
        same("resnet18 32px raw", Arch::Resnet18, RAW, user_images(), 32),
        same("resnet18 32px imagenet, 5 images", Arch::Resnet18, IMAGENET, images(9, 5, 3, (40, 40)), 32),
        same("resnet18 32px imagenet, other kind (grey)", Arch::Resnet18, IMAGENET, grey(&user_images()), 32),
        same("resnet34 32px imagenet", Arch::Resnet34, IMAGENET, user_images(), 32),
        same("resnet50 48px imagenet", Arch::Resnet50, IMAGENET, user_images(), 48),
        same("resnet50-v1 48px imagenet", Arch::Resnet50V1, IMAGENET, user_images(), 48),
        Case { warm: true, ..same("resnet18 32px imagenet, warm", Arch::Resnet18, IMAGENET, warm(&user_images()), 32) },
    ];
    let mut worst: f64 = 0.0;
    for case in &cases {
        match run(dir.path(), case) {
            Sanity::Passed(report) => worst = worst.max(report.worst.1),
            other => panic!("{}: a matching setup must pass: {other:?}", case.name),
        }
    }
    eprintln!("matching setups: {} of {} passed, largest divergence {worst:.4}", cases.len(), cases.len());
    assert!(worst < SANITY_LIMIT / 1.4, "the limit keeps a margin over matching setups: {worst}");
}

#[test]
fn broken_setups_fail_naming_the_likely_cause() {
    let dir = tempfile::tempdir().unwrap();
    let r18 = (Arch::Resnet18, Arch::Resnet18);
    let cases = [
        (
            Case {
                name: "imagenet given, half expected",
                arch: r18,
                norm: (HALF, IMAGENET),
                images: user_images(),
                size: 32,
                warm: false,
            },
            "normalisation",
        ),
        (
            Case {
                name: "half given, imagenet expected",
                arch: r18,
                norm: (IMAGENET, HALF),
                images: user_images(),
                size: 32,
                warm: false,
            },
            "normalisation",
        ),
        (
            Case {
                name: "imagenet given, caffe expected",
                arch: r18,
                norm: (CAFFE, IMAGENET),
                images: user_images(),
                size: 32,
                warm: false,
            },
            "normalisation",
        ),
        (
            Case {
                name: "raw given, imagenet expected",
                arch: r18,
                norm: (IMAGENET, RAW),
                images: user_images(),
                size: 32,
                warm: false,
            },
            "normalisation",
        ),
        (
            Case {
                name: "imagenet given, raw expected",
                arch: r18,
                norm: (RAW, IMAGENET),
                images: user_images(),
                size: 32,
                warm: false,
            },
            "normalisation",
        ),
    ];
    let mut detected = 0;
    let mut least = f64::MAX;
    for (case, cause) in &cases {
        match run(dir.path(), case) {
            Sanity::Failed(report) => {
                least = least.min(report.worst.1);
                let model = ModelConfig {
                    arch: case.arch.1,
                    weights: Weights::Random { seed: 0 },
                    image_size: case.size,
                    mean: case.norm.1 .0,
                    std: case.norm.1 .1,
                    dtype: DType::F32,
                };
                let said = report.cause(&model);
                assert!(said.contains(cause), "{}: expected the {cause} named: {said}", case.name);
                detected += 1;
            }
            other => panic!("{}: a broken setup must fail: {other:?}", case.name),
        }
    }
    eprintln!("broken setups: {detected} of {} detected, smallest divergence {least:.4}", cases.len());
    assert_eq!(detected, cases.len());
    assert!(least > SANITY_LIMIT * 1.4, "the limit keeps a margin under broken setups: {least}");
}

/// What the check does not see, measured so that the README says so: red
/// and blue swapped (a BGR image fed as RGB, even on images with a warm
/// cast) moves the first batch norm less than a change of kind of image
/// (grey) does; ResNet-50 v1 weights run as v1.5, or the other way round,
/// differ from `layer2` on, which the check does not read. (The
/// normalisation's message names BGR as a possibility.)
#[test]
fn a_channel_swap_or_the_other_resnet50_variant_stays_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let r50 =
        |name, arch| Case { name, arch, norm: (IMAGENET, IMAGENET), images: user_images(), size: 48, warm: false };
    let cases = [
        Case {
            name: "channels swapped (BGR), warm images",
            arch: (Arch::Resnet18, Arch::Resnet18),
            norm: (IMAGENET, IMAGENET),
            images: swapped(&warm(&user_images())),
            size: 32,
            warm: true,
        },
        r50("resnet50-v1 weights as resnet50", (Arch::Resnet50V1, Arch::Resnet50)),
        r50("resnet50 weights as resnet50-v1", (Arch::Resnet50, Arch::Resnet50V1)),
    ];
    for case in &cases {
        let sanity = run(dir.path(), case);
        assert!(matches!(sanity, Sanity::Passed(_)), "{}: now detected: update the README", case.name);
    }
}

/// A matching ResNet-50 at 224 px, and what the check costs beside the
/// pass over the same 32 images (slow: `-- --ignored`).
#[test]
#[ignore]
fn a_matching_resnet50_at_224_px_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights(dir.path(), Arch::Resnet50, 224, IMAGENET, false);
    let model = ModelConfig {
        arch: Arch::Resnet50,
        weights: Weights::Safetensors(path),
        image_size: 224,
        mean: IMAGENET.0,
        std: IMAGENET.1,
        dtype: DType::F32,
    };
    let data = dataset(dir.path(), &images(3, 64, 5, (256, 240)));
    let device = sweep_worker::Device::Cpu;
    let backbone = Backbone::load(&model, &device).unwrap();
    let started = std::time::Instant::now();
    let sanity = sanity_check(&data, &model, &backbone, &device).unwrap();
    eprintln!("check: {:.1} s, {sanity:?}", started.elapsed().as_secs_f64());
    assert!(matches!(sanity, Sanity::Passed(_)), "{sanity:?}");
    let sample = Dataset { items: data.items[..32].to_vec(), ..data.clone() };
    let cache = sweep_worker::FeatureCache::new(dir.path().join("cache"));
    let started = std::time::Instant::now();
    sweep_worker::compute_features(&sample, &model, &cache, 2, 32, &device, &|_| {}).unwrap();
    eprintln!("the pass over 32 images: {:.1} s", started.elapsed().as_secs_f64());
}
