//! The backbone against torchvision, and its weight files (issue #4).
//!
//! The golden features in `fixtures/backbone/features.safetensors` come from
//! `fixtures/backbone/make_fixture.py` (torch + torchvision, eval mode) on
//! weights and input that both sides compute from the same integer hash
//! (`uniform`/`hashed` here and in the script, bit for bit), so the 100 MB of
//! ResNet-50 weights need not be stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sweep_worker::{param_shapes, Arch, Backbone, DType, ModelConfig, Weights};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbone")
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `n` values in [-1, 1): splitmix64 of `fnv1a(name) + i`, its top 24 bits.
fn uniform(name: &str, n: usize) -> Vec<f32> {
    let h = fnv1a(name);
    (0..n as u64)
        .map(|i| {
            let x = h.wrapping_add(i).wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let z = z ^ (z >> 31);
            ((z >> 40) as i64 - (1 << 23)) as f32 / (1 << 23) as f32
        })
        .collect()
}

/// One tensor of the hashed weights, as `make_fixture.py`'s `hashed`.
fn hashed(name: &str, shape: &[usize]) -> Tensor {
    let u = uniform(name, shape.iter().product());
    let data: Vec<f32> = if shape.len() == 4 {
        let scale = (6.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt() as f32;
        u.iter().map(|v| v * scale).collect()
    } else if name.ends_with(".running_var") {
        u.iter().map(|v| 1.0 + 0.5 * v).collect()
    } else if name.ends_with(".weight") && shape.len() == 1 {
        u.iter().map(|v| 1.0 + 0.1 * v).collect()
    } else if name == "input" {
        u.iter().map(|v| 2.0 * v).collect()
    } else {
        u.iter().map(|v| 0.1 * v).collect()
    };
    Tensor::from_vec(data, shape, &Device::Cpu).expect("shape fits")
}

fn hashed_weights(arch: Arch) -> HashMap<String, Tensor> {
    param_shapes(arch)
        .into_iter()
        .map(|(name, shape)| {
            let t = hashed(&name, &shape);
            (name, t)
        })
        .collect()
}

fn config(arch: Arch, weights: Weights) -> ModelConfig {
    ModelConfig {
        arch,
        weights,
        image_size: 64,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: sweep_worker::ChannelOrder::Rgb,
        dtype: DType::F32,
        feature_dtype: sweep_worker::FeatureDType::F32,
    }
}

/// max |ours - theirs| over max |theirs|.
fn relative_error(ours: &Tensor, theirs: &Tensor) -> f32 {
    let diff = ours.sub(theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = theirs.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    diff / scale
}

fn check_golden(arch: Arch, weights: Weights, expected: &HashMap<String, Tensor>) {
    let what = format!("{} from {weights:?}", arch.name());
    let backbone = Backbone::load(&config(arch, weights), &Device::Cpu).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ours = backbone.forward(&expected["input"]).unwrap();
    let theirs = &expected[arch.name()];
    assert_eq!(ours.dims(), theirs.dims(), "{what}");
    let err = relative_error(&ours, theirs);
    eprintln!("{what}: {err:e}");
    assert!(err <= 1e-4, "{what}: features differ from torchvision's by {err:e} (relative to the largest)");
}

#[test]
fn features_equal_torchvision_on_hashed_weights() {
    let expected = candle_core::safetensors::load(fixtures().join("features.safetensors"), &Device::Cpu).unwrap();
    // The hash is ported bit for bit: the input computed here is the script's.
    let input = hashed("input", &[2, 3, 64, 64]);
    assert_eq!(
        input.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        expected["input"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    let dir = tempfile::tempdir().unwrap();
    for (file_arch, archs) in
        [(Arch::Resnet50, &[Arch::Resnet50, Arch::Resnet50V1][..]), (Arch::Resnet18, &[Arch::Resnet18])]
    {
        // Through a real .safetensors file, so that the loader is tested end to end.
        let path = dir.path().join(format!("{}.safetensors", file_arch.name()));
        candle_core::safetensors::save(&hashed_weights(file_arch), &path).unwrap();
        for &arch in archs {
            check_golden(arch, Weights::Safetensors(path.clone()), &expected);
        }
        std::fs::remove_file(&path).unwrap();
    }

    // The full torchvision .pth path: the files are 45-100 MB, so they are not
    // committed; `make_fixture.py --pth-dir DIR` writes them and
    // SWEEP_GOLDEN_PTH_DIR=DIR checks them too.
    if let Ok(pth_dir) = std::env::var("SWEEP_GOLDEN_PTH_DIR") {
        for arch in [Arch::Resnet50, Arch::Resnet50V1, Arch::Resnet18] {
            let path = Path::new(&pth_dir).join(format!("{}.pth", arch.name()));
            assert!(path.exists(), "SWEEP_GOLDEN_PTH_DIR is set but {} is missing", path.display());
            check_golden(arch, Weights::Pth(path), &expected);
        }
    }
}

#[test]
fn a_torch_file_that_does_not_fit_lists_the_first_mismatches() {
    // wrong.pth: a real torch.save zip (make_fixture.py) of three tensors.
    let path = fixtures().join("wrong.pth");
    let err = Backbone::load(&config(Arch::Resnet18, Weights::Pth(path.clone())), &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: does not fit resnet18 (", path.display())), "{msg}");
    assert!(msg.contains("`conv1.weight` has shape [64, 3, 3, 3], expected [64, 3, 7, 7]"), "{msg}");
    assert!(msg.contains("missing `layer1.0.conv1.weight`"), "{msg}");
    assert!(msg.contains("more"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn resnet18_weights_given_to_resnet50_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    let zeros: HashMap<String, Tensor> = param_shapes(Arch::Resnet18)
        .into_iter()
        .map(|(name, shape)| (name, Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&zeros, &path).unwrap();
    let msg = Backbone::load(&config(Arch::Resnet50, Weights::Safetensors(path.clone())), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&format!("{}: does not fit resnet50 (", path.display())), "{msg}");
    // The first bottleneck's 1x1 conv1 is a 3x3 in a basic block.
    assert!(msg.contains("`layer1.0.conv1.weight` has shape [64, 64, 3, 3], expected [64, 64, 1, 1]"), "{msg}");
    assert!(msg.contains("missing `layer1.0.conv3.weight`"), "{msg}");
}

#[test]
fn a_file_that_is_not_safetensors_gets_a_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in
        [("text.safetensors", &b"these are not weights at all, just some text"[..]), ("short.safetensors", b"abc")]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let msg = Backbone::load(&config(Arch::Resnet18, Weights::Safetensors(path.clone())), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(&format!("{}: not a safetensors file", path.display())), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    let missing = dir.path().join("missing.safetensors");
    let msg = Backbone::load(&config(Arch::Resnet18, Weights::Safetensors(missing.clone())), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&format!("{}: cannot open", missing.display())), "{msg}");
}

/// Every hub case in one test: they set process-wide environment variables.
#[test]
fn hub_weights_come_from_the_cache_and_fail_fast_and_clearly_offline() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", home.path());
    std::env::remove_var("HF_TOKEN");
    let load = |repo: &str| {
        let start = std::time::Instant::now();
        let result = Backbone::load(&config(Arch::Resnet18, Weights::Hub { repo: repo.into() }), &Device::Cpu);
        (result.map(|_| ()).unwrap_err().to_string(), start.elapsed())
    };

    // HF_HUB_OFFLINE: the cache only, so an empty cache is a clear error.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:1");
    let (msg, _) = load("owner/repo");
    assert!(msg.starts_with("hub:owner/repo: model.safetensors is not in the hub cache"), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");

    // Online against a closed port: refused at once, the URL named.
    std::env::remove_var("HF_HUB_OFFLINE");
    let (msg, took) = load("owner/repo");
    assert!(
        msg.starts_with("hub:owner/repo: cannot download http://127.0.0.1:1/owner/repo/resolve/main/model.safetensors"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(took.as_secs() < 20, "a refused connection took {took:?}");

    // A file in the cache is used offline; its errors name the cached file.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let repo_dir = home.path().join("hub/models--owner--cached");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    let one = HashMap::from([("conv1.weight".to_owned(), hashed("conv1.weight", &[64, 3, 3, 3]))]);
    candle_core::safetensors::save(&one, snapshot.join("model.safetensors")).unwrap();
    let (msg, _) = load("owner/cached");
    assert!(
        msg.starts_with(&format!("{}: does not fit resnet18", snapshot.join("model.safetensors").display())),
        "{msg}"
    );

    // Not `owner/name`.
    let (msg, _) = load("just-a-name");
    assert!(msg.starts_with("hub:just-a-name: expected a hub repository as `owner/name`"), "{msg}");
    for var in ["HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT"] {
        std::env::remove_var(var);
    }
}
