//! `sweep synth`: writes a generated data set to disk in the Kaggle layout
//! (`labels.csv` + `train/<id>.jpg`), so that sweep and other tools (the
//! PyTorch reference in bench/) read the very same JPEG files.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use sweep_worker::{synthetic_image, SyntheticConfig};

use crate::args::{SynthArgs, SynthFeaturesArgs};
use crate::Outcome;

pub fn synth(args: &SynthArgs) -> anyhow::Result<Outcome> {
    let cfg = SyntheticConfig {
        classes: args.classes,
        images: args.images,
        width: args.width,
        height: args.height,
        seed: args.seed,
    };
    anyhow::ensure!(cfg.classes >= 2 && cfg.images >= cfg.classes, "need at least 2 classes and one image per class");
    let train = args.out.join("train");
    std::fs::create_dir_all(&train).with_context(|| format!("{}: cannot create", train.display()))?;
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= cfg.images {
                            return Ok(());
                        }
                        let img = synthetic_image(&cfg, i);
                        let path = train.join(format!("{}.jpg", image_id(i)));
                        let file = std::fs::File::create(&path)
                            .with_context(|| format!("{}: cannot create", path.display()))?;
                        let mut writer = std::io::BufWriter::new(file);
                        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, args.quality)
                            .encode_image(&img)
                            .with_context(|| format!("{}: cannot encode", path.display()))?;
                        writer.flush()?;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("an encoder thread panicked"))??;
        }
        Ok(())
    })?;
    let mut labels = String::from("id,breed\n");
    for i in 0..cfg.images {
        labels.push_str(&format!("{},class{:03}\n", image_id(i), i % cfg.classes));
    }
    let csv = args.out.join("labels.csv");
    std::fs::write(&csv, labels).with_context(|| format!("{}: cannot write", csv.display()))?;
    eprintln!("wrote {} images in {} classes to {}", cfg.images, cfg.classes, args.out.display());
    Ok(Outcome::Success)
}

/// `sweep synth-features` (hidden): the cache entry a sweep file's backbone
/// pass would write (same key: the data set and model resolved as `sweep
/// run` resolves them), filled with seeded random features, streamed, so
/// head training and its memory can be measured on a million images
/// without a million-image pass (bench/scale.sh).
pub fn synth_features(args: &SynthFeaturesArgs) -> anyhow::Result<Outcome> {
    let spec = sweep_scheduler::SweepSpec::load(&args.file)?;
    let mut checked = sweep_scheduler::preflight::check(&spec)?;
    // As `sweep run` on the CPU resolves it.
    checked.model.model.dtype = checked.model.model.dtype.on_device("cpu").0;
    let model = &checked.model.model;
    let manifest = sweep_worker::DataManifest::new(&spec.data, &checked.dataset, model, &checked.splits)?;
    let (images, dim) = (checked.dataset.items.len(), model.arch.feature_dim());
    let cache = sweep_worker::FeatureCache::new(&args.cache_dir);
    sweep_worker::bench::write_random_features(
        &cache,
        &manifest.features_key,
        images,
        dim,
        model.feature_dtype,
        args.seed,
    )?;
    eprintln!(
        "wrote {images} x {dim} random features to {} as entry {}",
        args.cache_dir.display(),
        manifest.features_key
    );
    Ok(Outcome::Success)
}

/// A Kaggle-like id: 32 hex digits, distinct per index.
fn image_id(i: usize) -> String {
    blake3::hash(&(i as u64).to_le_bytes()).to_hex()[..32].to_owned()
}
