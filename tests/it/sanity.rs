//! The sanity check before the backbone pass (issue 18): weights that stand
//! in for trained ones (their batch norms calibrated on other generated
//! images under mean and std 0.5) and the dogs of `own_data.rs`. A wrong
//! normalisation stops `sweep run` before anything is recorded, with one
//! line naming the likely cause and the way out; `--no-sanity-check` (or
//! `sanity_check = false`) trains anyway; the right one passes without a word.

use sweep_worker::{calibrated_weights, synthetic_image, Arch, SyntheticConfig, Transform};

use crate::own_data::{dogs, error_line, no_sweep_recorded, sweep_file, weights_with_metadata, write_safetensors};
use crate::{stderr, Env};

/// `trained.safetensors`: ResNet-18 weights whose batch norms hold the
/// statistics of 48 other generated images at 32 px, mean and std 0.5.
fn trained(env: &Env) {
    let cfg = SyntheticConfig { classes: 6, images: 48, width: 48, height: 40, seed: 100 };
    let images: Vec<_> = (0..48).map(|i| synthetic_image(&cfg, i)).collect();
    let transform = Transform { size: 32, mean: [0.5; 3], std: [0.5; 3], channel_order: sweep_worker::ChannelOrder::Rgb };
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
