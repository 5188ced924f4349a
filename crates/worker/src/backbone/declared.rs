//! What a weights file declares about itself: the architecture and the
//! preprocessing it was made for, in a safetensors file's metadata (`arch`
//! or `backbone`, `mean`, `std`, `channel_order`). A declared value is used where the sweep
//! file leaves the setting out, and checked where it sets it: a mismatch is
//! one error naming the file, both values and the way out.

use std::collections::HashMap;
use std::path::Path;

use super::weights::weights_err;
use super::{Arch, ChannelOrder, ModelConfig, Weights};
use crate::Error;

/// Which `[model]` settings the sweep file wrote itself (the others hold
/// their defaults), and whether the weights file's metadata is to be ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelGiven {
    /// `backbone` was written.
    pub backbone: bool,
    /// `mean` was written.
    pub mean: bool,
    /// `std` was written.
    pub std: bool,
    /// `channel_order` was written.
    pub channel_order: bool,
    /// `ignore_weights_metadata = true`: neither use nor check what the file declares.
    pub ignore_metadata: bool,
    /// `sanity_check = false`: no [sanity check](crate::sanity_check) before the pass.
    pub no_sanity_check: bool,
}

/// What a weights file declares (each `None` when it says nothing of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// `arch` (or `backbone`).
    pub arch: Option<Arch>,
    /// `mean`.
    pub mean: Option<[f64; 3]>,
    /// `std`.
    pub std: Option<[f64; 3]>,
    /// `channel_order` (`rgb` or `bgr`).
    pub channel_order: Option<ChannelOrder>,
}

/// The `[model]` settings in force once the weights file's declarations are
/// applied, and which of them came from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInForce {
    /// The settings the backbone pass uses.
    pub model: ModelConfig,
    /// The settings taken from the weights file (`backbone`, `mean`, `std`, `channel_order`).
    pub from_file: Vec<&'static str>,
}

impl ModelInForce {
    /// One line saying which backbone and normalisation are in force, and
    /// where they come from.
    pub fn describe(&self) -> String {
        let m = &self.model;
        let source = if self.from_file.is_empty() {
            String::new()
        } else {
            format!(" ({} from the weights file's metadata)", self.from_file.join(", "))
        };
        // The channel order only when not RGB: what every RGB run says stays as it was.
        let order = match m.channel_order {
            ChannelOrder::Rgb => String::new(),
            other => format!(", channel_order {}", other.name()),
        };
        format!("backbone {}, mean {}, std {}{order}{source}", m.arch.name(), triple(&m.mean), triple(&m.std))
    }
}

fn triple(v: &[f64; 3]) -> String {
    format!("[{}, {}, {}]", short(v[0]), short(v[1]), short(v[2]))
}

/// A value with at most 6 significant digits, without trailing zeros.
fn short(x: f64) -> String {
    let text = format!("{x:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "0" || text == "-0" {
        format!("{x:.3e}")
    } else {
        text.to_owned()
    }
}

/// A number written as a decimal or as a fraction of two decimals
/// (`"1/255"`, `"0.5 / 2"`); `None` for anything else.
pub fn parse_fraction(text: &str) -> Option<f64> {
    let number = |s: &str| -> Option<f64> {
        let s = s.trim();
        let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        if ok {
            s.parse::<f64>().ok()
        } else {
            None
        }
    };
    let value = match text.split_once('/') {
        Some((a, b)) => number(a)? / number(b)?,
        None => number(text)?,
    };
    value.is_finite().then_some(value)
}

/// Reads what the weights `weights` names declare: only safetensors files
/// carry metadata (`.pth`, hub and random weights declare nothing).
pub fn declared(weights: &Weights) -> Result<Declared, Error> {
    let Weights::Safetensors(path) = weights else { return Ok(Declared::default()) };
    let metadata = safetensors_metadata(path)?;
    parse_declared(&metadata, path)
}

fn safetensors_metadata(path: &Path) -> Result<HashMap<String, String>, Error> {
    Ok(super::weights::safetensors_header(path)?.metadata().clone().unwrap_or_default())
}

fn parse_declared(metadata: &HashMap<String, String>, path: &Path) -> Result<Declared, Error> {
    let bad = |key: &str, value: &str, want: &str| {
        weights_err(
            path,
            format!(
                "its metadata `{key}` is `{value}`, not {want}: fix it, or set `ignore_weights_metadata = true` in \
                 [model]"
            ),
        )
    };
    let mut declared = Declared::default();
    for key in ["arch", "backbone"] {
        if let Some(value) = metadata.get(key) {
            let arch = arch_from_metadata(value).ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                bad(key, value, &format!("one of {}", names.join(", ")))
            })?;
            declared.arch = Some(arch);
        }
    }
    let triple = |key: &str, positive: bool| -> Result<Option<[f64; 3]>, Error> {
        let Some(value) = metadata.get(key) else { return Ok(None) };
        let want = "three numbers (`[0.485, 0.456, 0.406]` or `0.485,0.456,0.406`)";
        let parsed = triple_from_metadata(value).ok_or_else(|| bad(key, value, want))?;
        if positive && parsed.iter().any(|&x| x <= 0.0) {
            return Err(bad(key, value, "three numbers > 0"));
        }
        Ok(Some(parsed))
    };
    declared.mean = triple("mean", false)?;
    declared.std = triple("std", true)?;
    if let Some(value) = metadata.get("channel_order") {
        declared.channel_order =
            Some(ChannelOrder::from_name(value).ok_or_else(|| bad("channel_order", value, "`rgb` or `bgr`"))?);
    }
    Ok(declared)
}

/// An architecture's name as other tools write it: `resnet50`,
/// `ResNet-50`, `resnet50_v1`, `resnet50-v1.5`.
fn arch_from_metadata(value: &str) -> Option<Arch> {
    let name: String = value.trim().to_ascii_lowercase().chars().filter(|c| !matches!(c, '-' | '_' | ' ')).collect();
    match name.as_str() {
        "resnet18" => Some(Arch::Resnet18),
        "resnet34" => Some(Arch::Resnet34),
        "resnet50" | "resnet50v1.5" | "resnet50v15" => Some(Arch::Resnet50),
        "resnet50v1" => Some(Arch::Resnet50V1),
        _ => None,
    }
}

/// `[a, b, c]` (JSON; numbers or fraction strings) or `a,b,c`.
fn triple_from_metadata(value: &str) -> Option<[f64; 3]> {
    let inner = value.trim().trim_start_matches('[').trim_end_matches(']');
    let parts: Vec<f64> =
        inner.split(',').map(|p| parse_fraction(p.trim().trim_matches('"'))).collect::<Option<Vec<f64>>>()?;
    <[f64; 3]>::try_from(parts).ok()
}

/// Two normalisation values that are the same up to the digits a file
/// writes them with.
fn close(a: &[f64; 3], b: &[f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-3 * x.abs().max(y.abs()) + 1e-9)
}

/// The `[model]` settings in force: what the weights file declares fills the
/// settings the sweep file left out, and must agree with those it set.
pub fn model_in_force(cfg: &ModelConfig, given: ModelGiven) -> Result<ModelInForce, Error> {
    let mut in_force = ModelInForce { model: cfg.clone(), from_file: Vec::new() };
    if given.ignore_metadata {
        return Ok(in_force);
    }
    let declared = declared(&cfg.weights)?;
    let Weights::Safetensors(path) = &cfg.weights else { return Ok(in_force) };
    let mismatch = |key: &str, declared: String, set: String| {
        weights_err(
            path,
            format!(
                "its metadata declares {key} {declared} but [model] sets {key} = {set}: leave `{key}` out of [model] \
                 to use the file's, or set `ignore_weights_metadata = true` in [model] to keep yours"
            ),
        )
    };
    if let Some(arch) = declared.arch {
        if !given.backbone {
            in_force.model.arch = arch;
            in_force.from_file.push("backbone");
        } else if arch != cfg.arch {
            return Err(mismatch("backbone", arch.name().to_owned(), format!("\"{}\"", cfg.arch.name())));
        }
    }
    for (key, value, written, slot) in [
        ("mean", declared.mean, given.mean, &mut in_force.model.mean),
        ("std", declared.std, given.std, &mut in_force.model.std),
    ] {
        let Some(value) = value else { continue };
        if !written {
            *slot = value;
            in_force.from_file.push(key);
        } else if !close(&value, slot) {
            return Err(mismatch(key, triple(&value), triple(slot)));
        }
    }
    if let Some(order) = declared.channel_order {
        if !given.channel_order {
            in_force.model.channel_order = order;
            in_force.from_file.push("channel_order");
        } else if order != cfg.channel_order {
            return Err(mismatch(
                "channel_order",
                order.name().to_owned(),
                format!("\"{}\"", cfg.channel_order.name()),
            ));
        }
    }
    Ok(in_force)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_decimals() {
        assert_eq!(parse_fraction("1/255"), Some(1.0 / 255.0));
        assert_eq!(parse_fraction(" 0.5 / 2 "), Some(0.25));
        assert_eq!(parse_fraction("0.229"), Some(0.229));
        assert_eq!(parse_fraction("-1e-3"), Some(-1e-3));
        for bad in ["", "x", "1/0", "1/2/3", "1//2", "inf", "NaN", "1 2"] {
            assert_eq!(parse_fraction(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_values_in_the_spellings_tools_write() {
        assert_eq!(triple_from_metadata("[0.485, 0.456, 0.406]"), Some([0.485, 0.456, 0.406]));
        assert_eq!(triple_from_metadata("0.5,0.5,0.5"), Some([0.5; 3]));
        assert_eq!(triple_from_metadata(r#"["1/255", "1/255", "1/255"]"#), Some([1.0 / 255.0; 3]));
        assert_eq!(triple_from_metadata("[1, 2]"), None);
        assert_eq!(arch_from_metadata("ResNet-50"), Some(Arch::Resnet50));
        assert_eq!(arch_from_metadata("resnet50_v1"), Some(Arch::Resnet50V1));
        assert_eq!(arch_from_metadata("resnet50-v1.5"), Some(Arch::Resnet50));
        assert_eq!(arch_from_metadata("vit_b_16"), None);
    }

    fn save(dir: &Path, metadata: &[(&str, &str)]) -> std::path::PathBuf {
        let path = dir.join("w.safetensors");
        let tensor = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let data = [("x", tensor)];
        let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        safetensors::serialize_to_file(data.iter().map(|(k, t)| (*k, t)), Some(meta), &path).unwrap();
        path
    }

    fn cfg(path: &Path) -> ModelConfig {
        ModelConfig {
            arch: Arch::Resnet50,
            weights: Weights::Safetensors(path.to_owned()),
            image_size: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: crate::ChannelOrder::Rgb,
            dtype: super::super::DType::F32,
            feature_dtype: crate::FeatureDType::F32,
        }
    }

    #[test]
    fn declared_values_fill_what_the_sweep_file_leaves_out_and_check_what_it_sets() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            save(dir.path(), &[("arch", "resnet50-v1"), ("mean", "[0.5, 0.5, 0.5]"), ("std", "1/255,1/255,1/255")]);
        let in_force = model_in_force(&cfg(&path), ModelGiven::default()).unwrap();
        assert_eq!(in_force.model.arch, Arch::Resnet50V1);
        assert_eq!(in_force.model.mean, [0.5; 3]);
        assert_eq!(in_force.model.std, [1.0 / 255.0; 3]);
        assert_eq!(
            in_force.describe(),
            "backbone resnet50-v1, mean [0.5, 0.5, 0.5], std [0.003922, 0.003922, 0.003922] (backbone, mean, std \
             from the weights file's metadata)"
        );
        // Written and equal (up to the file's digits): fine.
        let mut same = cfg(&path);
        same.arch = Arch::Resnet50V1;
        same.mean = [0.5; 3];
        same.std = [0.003922; 3];
        let all = ModelGiven { backbone: true, mean: true, std: true, ..ModelGiven::default() };
        assert!(model_in_force(&same, all).unwrap().from_file.is_empty());
        // Written and different: one line, naming the file, both values, the way out.
        let err =
            model_in_force(&cfg(&path), ModelGiven { std: true, ..ModelGiven::default() }).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: its metadata declares std [0.003922, 0.003922, 0.003922] but [model] sets std = [0.229, 0.224, \
                 0.225]: leave `std` out of [model] to use the file's, or set `ignore_weights_metadata = true` in \
                 [model] to keep yours",
                path.display()
            )
        );
        let err = model_in_force(&cfg(&path), ModelGiven { backbone: true, ..ModelGiven::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("declares backbone resnet50-v1 but [model] sets backbone = \"resnet50\""), "{err}");
        // Ignored: the sweep file's values, whatever the file says.
        let ignore = ModelGiven { backbone: true, ignore_metadata: true, ..ModelGiven::default() };
        assert_eq!(model_in_force(&cfg(&path), ignore).unwrap().model, cfg(&path));
    }

    #[test]
    fn a_declared_channel_order_is_used_or_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), &[("channel_order", "BGR")]);
        let in_force = model_in_force(&cfg(&path), ModelGiven::default()).unwrap();
        assert_eq!(in_force.model.channel_order, ChannelOrder::Bgr);
        assert_eq!(
            in_force.describe(),
            "backbone resnet50, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225], channel_order bgr \
             (channel_order from the weights file's metadata)"
        );
        let err = model_in_force(&cfg(&path), ModelGiven { channel_order: true, ..ModelGiven::default() })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("its metadata declares channel_order bgr but [model] sets channel_order = \"rgb\""),
            "{err}"
        );
        let path = save(dir.path(), &[("channel_order", "grb")]);
        let err = model_in_force(&cfg(&path), ModelGiven::default()).unwrap_err().to_string();
        assert!(err.contains("its metadata `channel_order` is `grb`, not `rgb` or `bgr`"), "{err}");
    }

    #[test]
    fn bad_metadata_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), &[("std", "[0.2, 0.2]")]);
        let err = model_in_force(&cfg(&path), ModelGiven::default()).unwrap_err().to_string();
        assert!(err.contains("its metadata `std` is `[0.2, 0.2]`, not three numbers"), "{err}");
        let path = save(dir.path(), &[("arch", "vgg16")]);
        let err = model_in_force(&cfg(&path), ModelGiven::default()).unwrap_err().to_string();
        assert!(err.contains("its metadata `arch` is `vgg16`, not one of resnet18"), "{err}");
        // No metadata: the sweep file's settings, nothing from the file.
        let path = save(dir.path(), &[]);
        assert!(model_in_force(&cfg(&path), ModelGiven::default()).unwrap().from_file.is_empty());
    }
}
