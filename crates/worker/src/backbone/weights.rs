//! Where the backbone's tensors come from: a safetensors file (memory-mapped),
//! a torchvision `.pth`, a hub repository's `model.safetensors`, or seeded
//! random initialisation; and the checks of their names and shapes, which
//! list the first mismatches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType as CDType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Arch, ModelConfig, Weights};
use crate::Error;

/// The torchvision names and shapes of every tensor the backbone needs
/// (batch-norm buffers included, the final `fc` excluded).
pub fn param_shapes(arch: Arch) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv = |name: String, c_out: usize, c_in: usize, k: usize| {
        out.push((format!("{name}.weight"), vec![c_out, c_in, k, k]));
    };
    let mut bns = Vec::new();
    conv("conv1".into(), 64, 3, 7);
    bns.push(("bn1".to_owned(), 64));
    let mut c_in = 64;
    for (layer, (&count, width)) in arch.blocks().iter().zip([64, 128, 256, 512]).enumerate() {
        for block in 0..count {
            let p = format!("layer{}.{block}", layer + 1);
            let stride = if block == 0 && layer > 0 { 2 } else { 1 };
            if arch.bottleneck() {
                let c_out = width * 4;
                conv(format!("{p}.conv1"), width, c_in, 1);
                conv(format!("{p}.conv2"), width, width, 3);
                conv(format!("{p}.conv3"), c_out, width, 1);
                bns.extend([(format!("{p}.bn1"), width), (format!("{p}.bn2"), width), (format!("{p}.bn3"), c_out)]);
                if stride != 1 || c_in != c_out {
                    conv(format!("{p}.downsample.0"), c_out, c_in, 1);
                    bns.push((format!("{p}.downsample.1"), c_out));
                }
                c_in = c_out;
            } else {
                conv(format!("{p}.conv1"), width, c_in, 3);
                conv(format!("{p}.conv2"), width, width, 3);
                bns.extend([(format!("{p}.bn1"), width), (format!("{p}.bn2"), width)]);
                if stride != 1 || c_in != width {
                    conv(format!("{p}.downsample.0"), width, c_in, 1);
                    bns.push((format!("{p}.downsample.1"), width));
                }
                c_in = width;
            }
        }
    }
    for (name, c) in bns {
        for part in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.{part}"), vec![c]));
        }
    }
    out
}

/// Seeded random weights in torchvision's own initialisation: Kaiming-normal
/// convolutions (fan-out, ReLU gain), batch norms at weight 1, bias 0, and
/// running statistics 0 and 1. Their features have the scale of a trained
/// network's (mean about 0.7 on the demo's images).
pub fn random_weights(arch: Arch, seed: u64) -> Result<HashMap<String, Tensor>, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in param_shapes(arch) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 4 {
            let fan_out = shape[0] * shape[2] * shape[3];
            let std = (2.0 / fan_out as f64).sqrt() as f32;
            (0..n).map(|_| normal(&mut rng) * std).collect()
        } else if name.ends_with(".running_var") || name.ends_with(".weight") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The tensors a backbone is built from, checked: every name and shape the
/// architecture needs is there, and every value is usable.
pub(super) struct Loaded {
    /// By torchvision name, on the CPU, in the file's dtype; nothing else.
    pub tensors: HashMap<String, Tensor>,
    /// The file they come from, for the errors of the build that reads them
    /// (`None` for random weights).
    pub file: Option<PathBuf>,
}

/// Checks, without loading a tensor, that the weights file `cfg` names can
/// be read and that its tensor names and shapes fit the backbone: what a
/// run checks before it registers anything. Hub weights are checked when
/// loaded (finding them may take the network).
pub fn check_weights(cfg: &ModelConfig) -> Result<(), Error> {
    match &cfg.weights {
        Weights::Random { .. } | Weights::Hub { .. } => Ok(()),
        Weights::Safetensors(path) => check_shapes(cfg.arch, &safetensors_shapes(path)?, &path.display().to_string()),
        Weights::Pth(path) => {
            let file = candle_core::pickle::PthTensors::new(path, None).map_err(|e| weights_err(path, e))?;
            let shapes: HashMap<String, Vec<usize>> = file
                .tensor_infos()
                .iter()
                .map(|(name, info)| (name.clone(), info.layout.shape().dims().to_vec()))
                .collect();
            check_shapes(cfg.arch, &shapes, &path.display().to_string())
        }
    }
}

/// Whether every batch norm's running statistics are still at their
/// initial values (mean 0, variance 1), as in [`random_weights`]: weights
/// that were never trained, whose statistics say nothing of the data.
pub(super) fn at_initial_statistics(tensors: &HashMap<String, Tensor>) -> Result<bool, Error> {
    for (name, t) in tensors {
        let want = if name.ends_with(".running_mean") {
            0.0
        } else if name.ends_with(".running_var") {
            1.0
        } else {
            continue;
        };
        let values: Vec<f32> = t.to_dtype(CDType::F32)?.flatten_all()?.to_vec1()?;
        if values.iter().any(|&v| v != want) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Loads and checks the weights `cfg` names (see [`Loaded`]).
pub(super) fn load(cfg: &ModelConfig) -> Result<Loaded, Error> {
    let (tensors, file) = match &cfg.weights {
        // Generated here, finite by construction.
        Weights::Random { seed } => return Ok(Loaded { tensors: random_weights(cfg.arch, *seed)?, file: None }),
        Weights::Safetensors(path) => (load_safetensors(cfg.arch, path)?, path.clone()),
        Weights::Pth(path) => (load_pth(cfg.arch, path)?, path.clone()),
        Weights::Hub { repo } => {
            let path = hub_file(repo)?;
            (load_safetensors(cfg.arch, &path)?, path)
        }
    };
    check_values(cfg.arch, &tensors, &file)?;
    Ok(Loaded { tensors, file: Some(file) })
}

fn load_safetensors(arch: Arch, path: &Path) -> Result<HashMap<String, Tensor>, Error> {
    let shapes = safetensors_shapes(path)?;
    check_shapes(arch, &shapes, &path.display().to_string())?;
    // SAFETY: the file is mapped read-only and sweep never writes weight
    // files; as with every mmap, another process truncating it underneath
    // would be undefined behaviour, which candle's own loaders accept too.
    #[allow(unsafe_code)]
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| weights_err(path, e))?;
    param_shapes(arch)
        .into_iter()
        .map(|(name, _)| {
            let tensor = file.load(&name, &Device::Cpu).map_err(|e| weights_err(path, e))?;
            Ok((name, tensor))
        })
        .collect()
}

fn load_pth(arch: Arch, path: &Path) -> Result<HashMap<String, Tensor>, Error> {
    let file = candle_core::pickle::PthTensors::new(path, None).map_err(|e| weights_err(path, e))?;
    let shapes: HashMap<String, Vec<usize>> =
        file.tensor_infos().iter().map(|(name, info)| (name.clone(), info.layout.shape().dims().to_vec())).collect();
    check_shapes(arch, &shapes, &path.display().to_string())?;
    param_shapes(arch)
        .into_iter()
        .map(|(name, _)| {
            let tensor = file
                .get(&name)
                .map_err(|e| weights_err(path, e))?
                .ok_or_else(|| weights_err(path, format!("cannot read `{name}`")))?;
            Ok((name, tensor))
        })
        .collect()
}

/// Refuses weights whose values would make every feature NaN, naming each
/// tensor at fault (the first few): NaN or infinite values anywhere, and
/// negative running variances (the fold takes their square root). Such
/// weights once gave all-zero features and a "done" job at chance accuracy.
fn check_values(arch: Arch, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), Error> {
    let mut problems = Vec::new();
    let expected = param_shapes(arch);
    for (name, _) in &expected {
        let values: Vec<f32> = tensors[name]
            .to_dtype(CDType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| weights_err(path, e))?;
        let n = values.len();
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        let negative = values.iter().filter(|&&v| v < 0.0).count();
        if non_finite > 0 {
            problems.push(format!("`{name}` has {non_finite} of {n} values NaN or infinite"));
        } else if name.ends_with(".running_var") && negative > 0 {
            problems.push(format!("`{name}` has {negative} of {n} variances negative"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let total = problems.len();
    let mut message = format!("{total} of {} tensors hold unusable values: ", expected.len());
    message.push_str(&problems.iter().take(4).cloned().collect::<Vec<_>>().join(", "));
    if total > 4 {
        message.push_str(&format!(", and {} more", total - 4));
    }
    Err(weights_err(path, message))
}

/// The file a hub repository must hold. Its tensors need torchvision's names
/// (`conv1.weight`, `layer1.0.bn1.running_mean`, ...): timm's and
/// transformers' ResNet repositories name them otherwise and are refused with
/// the list of mismatches.
const HUB_FILE: &str = "model.safetensors";

/// Finds `HUB_FILE` of a hub model repository: in the Hugging Face cache
/// (`HF_HOME`, default `~/.cache/huggingface`) if it is there, else downloaded
/// from `HF_ENDPOINT` (default huggingface.co) into that cache, with the token
/// of `HF_TOKEN` or the cache. `HF_HUB_OFFLINE=1` looks in the cache only.
/// Offline, a download fails at once (connection refused, unknown host)
/// or after ureq's 30 s connect timeout (a network that drops packets).
fn hub_file(repo: &str) -> Result<PathBuf, Error> {
    let err = |message: String| Error::Weights { path: format!("hub:{repo}"), message };
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) || repo.contains(char::is_whitespace) {
        return Err(err("expected a hub repository as `owner/name`".to_owned()));
    }
    let cache = hf_hub::Cache::from_env();
    let hub_repo = hf_hub::Repo::model(repo.to_owned());
    if let Some(path) = cache.repo(hub_repo.clone()).get(HUB_FILE) {
        return Ok(path);
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "true", "yes", "on"].contains(&v.trim().to_ascii_lowercase().as_str()));
    if offline {
        return Err(err(format!(
            "{HUB_FILE} is not in the hub cache {} and HF_HUB_OFFLINE is set",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| err(format!("cannot reach the hub: {e}")))?;
    tracing::info!(repo, file = HUB_FILE, cache = %cache.path().display(), "downloading backbone weights");
    let url = api.model(repo.to_owned()).url(HUB_FILE);
    api.model(repo.to_owned()).download(HUB_FILE).map_err(|e| {
        err(format!("cannot download {url}: {e} (offline? put the file in the hub cache and set HF_HUB_OFFLINE=1, or name a local file)"))
    })
}

pub(super) fn weights_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Weights { path: path.display().to_string(), message: e.to_string() }
}

fn safetensors_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>, Error> {
    let meta = safetensors_header(path)?;
    Ok(meta.tensors().into_iter().map(|(name, info)| (name, info.shape.clone())).collect())
}

/// A safetensors file's header (tensor names, shapes, metadata), read
/// without the tensors.
pub(super) fn safetensors_header(path: &Path) -> Result<safetensors::tensor::Metadata, Error> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| weights_err(path, format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| weights_err(path, "not a safetensors file (too short)"))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(weights_err(path, "not a safetensors file (header length out of range)"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| weights_err(path, "not a safetensors file (header cut short)"))?;
    serde_json::from_slice(&header).map_err(|e| weights_err(path, format!("not a safetensors file: {e}")))
}

/// Checks a weights file's tensor names and shapes against the architecture,
/// listing the first mismatches.
fn check_shapes(arch: Arch, found: &HashMap<String, Vec<usize>>, path: &str) -> Result<(), Error> {
    let mut problems = Vec::new();
    let expected = param_shapes(arch);
    for (name, shape) in &expected {
        match found.get(name) {
            None => problems.push(format!("missing `{name}`")),
            Some(s) if s != shape => problems.push(format!("`{name}` has shape {s:?}, expected {shape:?}")),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let total = problems.len();
    let mut message = format!("does not fit {} ({total} of {} tensors wrong): ", arch.name(), expected.len());
    message.push_str(&problems.iter().take(4).cloned().collect::<Vec<_>>().join(", "));
    if total > 4 {
        message.push_str(&format!(", and {} more", total - 4));
    }
    let missing = expected.iter().filter(|(name, _)| !found.contains_key(name)).count();
    if missing * 2 > expected.len() {
        // Most names are not torchvision's: say what they are instead.
        message.push_str(&format!("; {}", naming_hint(found)));
    }
    Err(Error::Weights { path: path.to_owned(), message })
}

/// What a weights file's tensor names look like when they are not
/// torchvision's, and what to do about it: a few of them, and the framework
/// they most likely come from.
fn naming_hint(found: &HashMap<String, Vec<usize>>) -> String {
    let mut names: Vec<&str> = found.keys().map(String::as_str).collect();
    names.sort_unstable();
    let sample = names.iter().take(3).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let has = |needle: &str| names.iter().any(|n| n.contains(needle));
    let all_prefixed = |prefix: &str| !names.is_empty() && names.iter().all(|n| n.starts_with(prefix));
    let looks = if names.is_empty() {
        "the file holds no tensors".to_owned()
    } else if let Some(prefix) = ["module.", "model.", "backbone.", "encoder."].into_iter().find(|p| all_prefixed(p)) {
        format!("every name starts with `{prefix}` (a wrapped model's state_dict): save the inner model's state_dict, or strip the prefix")
    } else if has("/kernel") || has(":0") || has("moving_mean") || has("_branch2a") || has("conv2_block1") {
        "these look like Keras/TensorFlow names (`…/kernel`, `moving_mean`, `res2a_branch2a`): convert the model to PyTorch and save torchvision's `resnet50().state_dict()` names".to_owned()
    } else if has("embedder.") || has("encoder.stages.") {
        "these look like Hugging Face transformers' ResNet (`embedder`, `encoder.stages`): load it with torchvision's names instead (e.g. timm's or torchvision's own resnet50 weights)".to_owned()
    } else if has("stem.") || has("stages.") || has("downsample_layers") {
        "these look like another architecture's names (`stem`, `stages`): sweep's backbones are torchvision's ResNets"
            .to_owned()
    } else {
        "these are not torchvision's ResNet names (`conv1.weight`, `layer1.0.conv1.weight`, …)".to_owned()
    };
    format!("found {} tensors such as {sample}: {looks}", names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_counts_match_torchvision() {
        // torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in fc;
        // resnet18 11,689,512 with 513,000 in fc. Buffers (running stats) are not parameters.
        let count = |arch| -> usize {
            param_shapes(arch)
                .iter()
                .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        assert_eq!(count(Arch::Resnet50), 25_557_032 - 2_049_000);
        assert_eq!(count(Arch::Resnet18), 11_689_512 - 513_000);
    }

    /// Issue 18: a file of another framework's names says what it found and
    /// what they look like, not only "265 of 265 tensors wrong".
    #[test]
    fn foreign_names_are_recognised() {
        let check = |names: &[&str]| {
            let found: HashMap<String, Vec<usize>> = names.iter().map(|n| (n.to_string(), vec![1])).collect();
            check_shapes(Arch::Resnet50, &found, "w.safetensors").unwrap_err().to_string()
        };
        let keras = check(&["res2a_branch2a/kernel:0", "bn2a_branch2a/moving_mean:0", "conv1/kernel:0"]);
        assert!(keras.contains("found 3 tensors such as `bn2a_branch2a/moving_mean:0`"), "{keras}");
        assert!(keras.contains("look like Keras/TensorFlow names"), "{keras}");
        let wrapped: Vec<String> =
            param_shapes(Arch::Resnet50).into_iter().map(|(n, _)| format!("module.{n}")).collect();
        let wrapped = check(&wrapped.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(wrapped.contains("every name starts with `module.`"), "{wrapped}");
        let hf = check(&[
            "resnet.embedder.embedder.convolution.weight",
            "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight",
        ]);
        assert!(hf.contains("Hugging Face transformers' ResNet"), "{hf}");
        let other = check(&["foo.weight"]);
        assert!(other.contains("not torchvision's ResNet names"), "{other}");
        // A file that is nearly right gets no guess, only its mismatches.
        let mut found: HashMap<String, Vec<usize>> = param_shapes(Arch::Resnet50).into_iter().collect();
        found.remove("fc.weight");
        found.remove("layer1.0.conv1.weight");
        let near = check_shapes(Arch::Resnet50, &found, "w.safetensors").unwrap_err().to_string();
        assert!(!near.contains("found "), "{near}");
    }

    #[test]
    fn mismatched_weights_are_listed() {
        let mut found: HashMap<String, Vec<usize>> = param_shapes(Arch::Resnet18).into_iter().collect();
        found.remove("layer1.0.conv1.weight");
        found.insert("conv1.weight".into(), vec![64, 3, 3, 3]);
        let err = check_shapes(Arch::Resnet18, &found, "w.safetensors").unwrap_err().to_string();
        assert!(err.starts_with("w.safetensors: does not fit resnet18 (2 of"), "{err}");
        assert!(err.contains("`conv1.weight` has shape [64, 3, 3, 3], expected [64, 3, 7, 7]"), "{err}");
        assert!(err.contains("missing `layer1.0.conv1.weight`"), "{err}");
    }

    /// Issue 16c: weights full of NaN gave all-zero features and a "done" job
    /// at chance accuracy. They are refused at load time, each tensor named.
    #[test]
    fn non_finite_weights_are_refused_naming_the_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = random_weights(Arch::Resnet18, 0).unwrap();
        let poison = |t: &Tensor, at: &[usize], value: f32| {
            let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            for &i in at {
                v[i] = value;
            }
            Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
        };
        let conv = poison(&tensors["layer2.0.conv1.weight"], &[0, 5, 9], f32::NAN);
        tensors.insert("layer2.0.conv1.weight".into(), conv);
        let var = poison(&tensors["layer3.1.bn2.running_var"], &[7], -1.0);
        tensors.insert("layer3.1.bn2.running_var".into(), var);
        let bias = poison(&tensors["bn1.bias"], &[0], f32::INFINITY);
        tensors.insert("bn1.bias".into(), bias);
        let path = dir.path().join("nan.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let cfg = ModelConfig {
            arch: Arch::Resnet18,
            weights: Weights::Safetensors(path.clone()),
            image_size: 32,
            mean: [0.5; 3],
            std: [0.5; 3],
            channel_order: crate::ChannelOrder::Rgb,
            dtype: crate::backbone::DType::F32,
            feature_dtype: crate::FeatureDType::F32,
        };
        let err = load(&cfg).map(|_| ()).unwrap_err().to_string();
        let n = param_shapes(Arch::Resnet18).len();
        assert_eq!(
            err,
            format!(
                "{}: 3 of {n} tensors hold unusable values: `layer2.0.conv1.weight` has 3 of 73728 values NaN or \
                 infinite, `bn1.bias` has 1 of 64 values NaN or infinite, `layer3.1.bn2.running_var` has 1 of 256 \
                 variances negative",
                path.display()
            )
        );
    }
}
