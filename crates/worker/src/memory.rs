//! Whether a backbone pass fits in memory, checked before anything of its
//! size is allocated: a data set too large (a synthetic one of ten million
//! images under ResNet-50 needs 76 GiB for its features alone) is refused
//! with the sizes rather than aborted by the allocator half way.

use crate::backbone::ModelConfig;
use crate::Error;

/// What a pass over `images` images holds at once: the features (`images` x
/// the backbone's width, f32) and the decoded batches (two a decoder, one
/// in each device's backbone; 3 x `image_size`² f32 an image), in bytes.
pub(crate) fn pass_bytes(
    images: usize,
    model: &ModelConfig,
    batch: usize,
    workers: usize,
    devices: usize,
) -> (u64, u64) {
    let features = (images as u64).saturating_mul(model.arch.feature_dim() as u64 * 4);
    let batches = (workers.max(1) as u64).saturating_mul(2).saturating_add(devices.max(1) as u64);
    let batches = batches.saturating_mul(batch.clamp(1, images.max(1)) as u64);
    let decoded = batches.saturating_mul(3 * (model.image_size as u64).pow(2) * 4);
    (features, decoded)
}

/// The memory this process may still use, and where the number comes from:
/// Linux's `MemAvailable`, lowered to the address-space or data-size limit
/// (`ulimit -v`, `ulimit -d`) when one is set; elsewhere a fixed 64 GiB.
pub(crate) fn available() -> (u64, &'static str) {
    let mut best = match meminfo_available() {
        Some(bytes) => (bytes, "available (MemAvailable)"),
        None => (64 << 30, "assumed available on this system"),
    };
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        for (name, what) in [("Max address space", "allowed by ulimit -v"), ("Max data size", "allowed by ulimit -d")] {
            if let Some(bytes) = limit(&limits, name) {
                if bytes < best.0 {
                    best = (bytes, what);
                }
            }
        }
    }
    best
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A soft limit of `/proc/self/limits` in bytes (`unlimited` is none).
fn limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Refuses a pass that would need more memory than there is (see
/// [`pass_bytes`]); `what` names the data set.
pub(crate) fn check_pass(
    what: &str,
    images: usize,
    model: &ModelConfig,
    batch: usize,
    workers: usize,
    devices: usize,
    available: (u64, &'static str),
) -> Result<(), Error> {
    let (features, decoded) = pass_bytes(images, model, batch, workers, devices);
    let needed = features.saturating_add(decoded);
    if needed <= available.0 {
        return Ok(());
    }
    Err(Error::Memory {
        what: what.to_owned(),
        message: format!(
            "{images} images need {} of memory for the backbone pass ({} of features, {} floats an image from {}; \
             {} of decoded batches), more than the {} {}: use fewer or smaller images",
            human_bytes(needed),
            human_bytes(features),
            model.arch.feature_dim(),
            model.arch.name(),
            human_bytes(decoded),
            human_bytes(available.0),
            available.1
        ),
    })
}

/// `1.5 GiB`, `12.0 MiB`, `300 bytes`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{Arch, DType, Weights};

    fn model(arch: Arch, image_size: usize) -> ModelConfig {
        ModelConfig {
            arch,
            weights: Weights::Random { seed: 0 },
            image_size,
            mean: [0.5; 3],
            std: [0.5; 3],
            channel_order: crate::ChannelOrder::Rgb,
            dtype: DType::F32,
            feature_dtype: crate::FeatureDType::F32,
        }
    }

    /// Issue 16: a synthetic set too large for memory aborted the process.
    #[test]
    fn a_pass_larger_than_memory_is_refused_with_the_sizes() {
        let big = model(Arch::Resnet50, 224);
        assert_eq!(pass_bytes(10_000_000, &big, 32, 2, 1).0, 10_000_000 * 2048 * 4);
        assert_eq!(pass_bytes(100, &big, 32, 2, 1).1, 5 * 32 * 3 * 224 * 224 * 4);
        let err = check_pass("synthetic data", 10_000_000, &big, 32, 2, 1, (16 << 30, "available (MemAvailable)"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("synthetic data: 10000000 images need 76.4 GiB of memory for the backbone pass (76.3 GiB of features, 2048 floats an image from resnet50; "),
            "{err}"
        );
        assert!(err.ends_with("more than the 16.0 GiB available (MemAvailable): use fewer or smaller images"), "{err}");
        check_pass("synthetic data", 200, &big, 32, 2, 1, (1 << 30, "x")).unwrap();
        // A billion images overflow nothing.
        assert!(check_pass("d", 1_000_000_000, &big, usize::MAX, usize::MAX / 2, 1, (u64::MAX / 2, "x")).is_err());
    }

    #[test]
    fn limits_are_read_from_proc_self_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max data size             unlimited            unlimited            bytes\n\
                      Max address space         4096000000           unlimited            bytes\n";
        assert_eq!(limit(limits, "Max address space"), Some(4_096_000_000));
        assert_eq!(limit(limits, "Max data size"), None);
        assert!(available().0 > 0);
    }
}
