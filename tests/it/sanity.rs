//! The sanity check before the backbone pass (issue 18): weights that stand
//! in for trained ones (their batch norms calibrated on other generated
//! images under mean and std 0.5) and the dogs of `own_data.rs`. A wrong
//! normalisation stops `sweep run` before anything is recorded, with one
//! line naming the likely cause and the way out; `--no-sanity-check` (or
//! `sanity_check = false`) trains anyway; the right one passes without a word.

use sweep_worker::{calibrated_weights, synthetic_image, Arch, ChannelOrder, SyntheticConfig, Transform};

use crate::own_data::{dogs, error_line, no_sweep_recorded, sweep_file, weights_with_metadata, write_safetensors};
use crate::{json, stderr, stdout, Env};

/// `trained.safetensors`: ResNet-18 weights whose batch norms hold the
/// statistics of 48 other generated images at 32 px, mean and std 0.5.
fn trained(env: &Env) {
    let cfg = SyntheticConfig { classes: 6, images: 48, width: 48, height: 40, seed: 100 };
    let images: Vec<_> = (0..48).map(|i| synthetic_image(&cfg, i)).collect();
    let transform =
        Transform { size: 32, mean: [0.5; 3], std: [0.5; 3], channel_order: sweep_worker::ChannelOrder::Rgb };
    let tensors = calibrated_weights(Arch::Resnet18, 5, &images, &transform).expect("calibrate");
    write_safetensors(&env.path("trained.safetensors"), &tensors, &[]);
}

#[test]
fn a_wrong_normalisation_stops_the_run_before_anything_is_recorded() {
    let env = Env::new();
    dogs(&env);
    trained(&env);
    // ImageNet's mean and std (the default) on weights that expect 0.5.
    let wrong = sweep_file(&env, "wrong", "", "weights = \"trained.safetensors\"");
    let out = env.sweep(&["run", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    let weights = env.path("trained.safetensors");
    assert!(line.starts_with(&format!("error: {}: the sanity check failed: ", weights.display())), "{line}");
    assert!(
        line.contains("likely the normalisation (mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] in force"),
        "{line}"
    );
    assert!(line.contains("on 12 images the batch norms' inputs diverge"), "{line}");
    assert!(line.ends_with("train anyway with `--no-sanity-check` (or `sanity_check = false` in [model])"), "{line}");
    no_sweep_recorded(&env);
    let cache = env.path("sweep-cache");
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().next().is_none(), "no features were computed");

    // Overridden on the command line, or in the sweep file: it trains.
    let out = env.sweep(&["run", wrong.to_str().unwrap(), "--no-sanity-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let off = sweep_file(&env, "off", "", "weights = \"trained.safetensors\"\nsanity_check = false");
    let out = env.sweep(&["run", off.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));
}

#[test]
fn a_matching_setup_passes_silently_and_untrained_weights_are_skipped_with_a_note() {
    let env = Env::new();
    dogs(&env);
    trained(&env);
    let right = sweep_file(
        &env,
        "right",
        "",
        "weights = \"trained.safetensors\"\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]",
    );
    let out = env.sweep(&["run", right.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));

    // Random weights in a file: nothing to compare with, said once.
    weights_with_metadata(&env.path("random.safetensors"), &[]);
    let random = sweep_file(&env, "random", "", "weights = \"random.safetensors\"");
    let out = env.sweep(&["run", random.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("sanity check skipped: the weights are untrained"), "{}", stderr(&out));
    // `weights = "random"` (the demo's): not a word.
    let demo = sweep_file(&env, "demo", "", "weights = \"random\"");
    let out = env.sweep(&["run", demo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));
}

/// The data set's images rewritten, losslessly (PNG bytes under the same
/// names: images are recognised by their content), through `f`, into `to`.
fn rewrite_images(env: &Env, to: &str, f: impl Fn(&mut [u8; 3])) {
    let (from, to) = (env.path("dogs"), env.path(to));
    std::fs::create_dir_all(to.join("train")).expect("mkdir");
    std::fs::copy(from.join("labels.csv"), to.join("labels.csv")).expect("copy labels.csv");
    for entry in std::fs::read_dir(from.join("train")).expect("read dogs/train") {
        let path = entry.expect("an entry").path();
        let mut img = sweep_worker::decode_image(&path).expect("decode");
        img.pixels_mut().for_each(|p| f(&mut p.0));
        img.save_with_format(to.join("train").join(path.file_name().unwrap()), image::ImageFormat::Png)
            .expect("write a png");
    }
}

/// A warm cast (red over green over blue, as in photographs), so that the
/// channel order shows in the images' statistics.
fn warm(p: &mut [u8; 3]) {
    *p = [p[0], (f32::from(p[1]) * 0.8) as u8, (f32::from(p[2]) * 0.55) as u8];
}

/// Weights for `arch` whose batch norms hold the statistics of 48 other
/// generated images (`warmed`: with a warm cast) under `transform`, written
/// to `name`.
fn calibrated(env: &Env, name: &str, arch: Arch, transform: &Transform, warmed: bool) {
    let cfg = SyntheticConfig { classes: 6, images: 48, width: 48, height: 40, seed: 100 };
    let images: Vec<_> = (0..48)
        .map(|i| {
            let mut img = synthetic_image(&cfg, i);
            if warmed {
                img.pixels_mut().for_each(|p| warm(&mut p.0));
            }
            img
        })
        .collect();
    let tensors = calibrated_weights(arch, 5, &images, transform).expect("calibrate");
    write_safetensors(&env.path(name), &tensors, &[]);
}

/// A sweep file over `root` (dogs' layout) with `model` lines.
fn sweep_over(env: &Env, name: &str, root: &str, model: &str) -> String {
    let file = sweep_file(env, name, "", model);
    let text = std::fs::read_to_string(&file).unwrap().replace("root = \"dogs\"", &format!("root = \"{root}\""));
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_owned()
}

const OVERRIDE: &str = "Fix [model], or train anyway with `--no-sanity-check` (or `sanity_check = false` in [model])";

/// Issue 18: BGR weights (Caffe's, Keras') fed RGB, the mistake the
/// normalisation's check does not see, is named with what to set; the
/// channel order set, or Caffe's preset, trains without a word.
#[test]
fn bgr_weights_fed_rgb_are_named_and_channel_order_or_the_caffe_preset_fixes_it() {
    let env = Env::new();
    dogs(&env);
    rewrite_images(&env, "warm", warm);
    let imagenet = [0.485, 0.456, 0.406];
    let bgr = Transform { size: 32, mean: imagenet, std: [0.229, 0.224, 0.225], channel_order: ChannelOrder::Bgr };
    calibrated(&env, "bgr.safetensors", Arch::Resnet18, &bgr, true);

    let rgb = sweep_over(&env, "rgb", "warm", "weights = \"bgr.safetensors\"");
    let out = env.sweep(&["run", &rgb]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    let weights = env.path("bgr.safetensors");
    assert!(
        line.starts_with(&format!(
            "error: {}: the sanity check failed: the first layer sees its colour channels swapped: likely the \
             channel order (the weights look like they expect BGR, RGB is in force): set channel_order = \"bgr\" in \
             [model]",
            weights.display()
        )),
        "{line}"
    );
    assert!(line.contains("on 12 images the first batch norm's input diverges from its training statistics by "));
    assert!(line.ends_with(OVERRIDE), "{line}");
    no_sweep_recorded(&env);

    let fixed = sweep_over(&env, "fixed", "warm", "weights = \"bgr.safetensors\"\nchannel_order = \"bgr\"");
    let out = env.sweep(&["run", &fixed]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));
    assert!(stderr(&out).contains("std [0.229, 0.224, 0.225], channel_order bgr"), "{}", stderr(&out));

    // Caffe's weights: BGR, 0-255 less the mean. The preset passes; the same
    // mean and std in RGB are named for their channel order.
    let caffe_mean = [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0];
    let caffe = Transform { size: 32, mean: caffe_mean, std: [1.0 / 255.0; 3], channel_order: ChannelOrder::Bgr };
    calibrated(&env, "caffe.safetensors", Arch::Resnet18, &caffe, true);
    let preset = sweep_over(&env, "preset", "warm", "weights = \"caffe.safetensors\"\npreset = \"caffe\"");
    let out = env.sweep(&["run", &preset]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));
    let by_hand = sweep_over(
        &env,
        "by-hand",
        "warm",
        "weights = \"caffe.safetensors\"\nmean = [\"103.939/255\", \"116.779/255\", \"123.68/255\"]\nstd = \
         [\"1/255\", \"1/255\", \"1/255\"]",
    );
    let out = env.sweep(&["run", &by_hand]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out).contains("set channel_order = \"bgr\" in [model]"), "{}", stderr(&out));
    // ImageNet's normalisation on them: the normalisation named, as before.
    let none = sweep_over(&env, "none", "warm", "weights = \"caffe.safetensors\"");
    let out = env.sweep(&["run", &none]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out).contains("likely the normalisation"), "{}", stderr(&out));
    // With the channel order written by hand, the preset's jobs (same values, same ids).
    let written = sweep_over(
        &env,
        "preset",
        "warm",
        "weights = \"caffe.safetensors\"\nmean = [\"103.939/255\", \"116.779/255\", \"123.68/255\"]\nstd = \
         [\"1/255\", \"1/255\", \"1/255\"]\nchannel_order = \"bgr\"",
    );
    let out = env.sweep(&["plan", &written, "--format", "json"]);
    let plan_by_hand = stdout(&out);
    let out = env.sweep(&["plan", &preset, "--format", "json"]);
    assert_eq!(plan_by_hand, stdout(&out), "a preset and its values by hand give the same jobs");
}

/// Issue 18: ResNet-50 v1 weights (the stride on the first 1x1 convolution)
/// run as torchvision's v1.5: the tensors fit, the sanity check names the
/// variant; run as what they are, they train without a word. (On 40
/// generated images at 48 px, as in `crates/worker/tests/sanity.rs`; on the
/// 12 small dogs, upscaled from 40 px, the variant is not seen: 35% of the
/// channels.)
#[test]
fn resnet50_v1_weights_run_as_v1_5_are_named() {
    let env = Env::new();
    let transform = Transform {
        size: 48,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: ChannelOrder::Rgb,
    };
    calibrated(&env, "v1.safetensors", Arch::Resnet50V1, &transform, false);
    let file = |backbone: &str| {
        env.write(
            &format!("{backbone}.toml"),
            &format!(
                "name = \"{backbone}\"\n[data]\nlayout = \"synthetic\"\nclasses = 5\nimages = 40\nwidth = 64\nheight = \
                 52\nseed = 7\n[model]\nbackbone = \"{backbone}\"\nweights = \"v1.safetensors\"\nimage_size = 48\n[train]\n\
                 batch_size = 8\nepochs = 1\n"
            ),
        )
    };
    let out = env.sweep(&["run", file("resnet50").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.starts_with(&format!(
            "error: {}: the sanity check failed: these weights look like resnet50-v1 (the stride of layer2-4's first \
             block on its first 1x1 convolution), not resnet50 as set: set backbone = \"resnet50-v1\" in [model]; on \
             32 images ",
            env.path("v1.safetensors").display()
        )),
        "{line}"
    );
    assert!(line.contains("of `layer2.0.bn2`'s channels match their training statistics better as resnet50-v1"));
    assert!(line.ends_with(OVERRIDE), "{line}");
    no_sweep_recorded(&env);

    let out = env.sweep(&["run", file("resnet50-v1").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sanity"), "{}", stderr(&out));
}

/// `channel_order = "bgr"` feeds the network blue first: its features of an
/// image are RGB's of the image with red and blue swapped, so the heads
/// train alike, epoch for epoch; and RGB's features of the same images are
/// others (the cache keeps them apart).
#[test]
fn bgr_features_of_an_image_are_rgb_features_of_the_image_swapped() {
    let env = Env::new();
    dogs(&env);
    rewrite_images(&env, "plain", |_| {});
    rewrite_images(&env, "swapped", |p| p.swap(0, 2));
    let bgr = sweep_over(&env, "bgr", "plain", "weights = \"random\"\nchannel_order = \"bgr\"");
    let rgb_swapped = sweep_over(&env, "rgb-swapped", "swapped", "weights = \"random\"");
    let rgb = sweep_over(&env, "rgb", "plain", "weights = \"random\"");
    let epochs = |file: &str| {
        let out = env.sweep(&["run", file, "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let job = json(&out)[0]["job_id"].as_str().unwrap().to_owned();
        let shown = json(&env.sweep(&["show", &job, "--format", "json"]));
        let losses: Vec<_> =
            shown.as_array().unwrap().iter().map(|e| (e["train_loss"].clone(), e["valid_loss"].clone())).collect();
        (job, losses)
    };
    let (bgr_job, bgr_epochs) = epochs(&bgr);
    let (swapped_job, swapped_epochs) = epochs(&rgb_swapped);
    let (rgb_job, rgb_epochs) = epochs(&rgb);
    assert_eq!(bgr_epochs.len(), 3);
    assert_eq!(bgr_epochs, swapped_epochs, "the same features, the same training");
    assert_ne!(bgr_epochs, rgb_epochs, "RGB's features of the same images are others");
    assert_ne!(bgr_job, rgb_job, "the channel order is part of the job id");
    assert_ne!(bgr_job, swapped_job, "the data's root is too");
}
