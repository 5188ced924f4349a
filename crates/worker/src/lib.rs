//! The worker trains one job: it turns images into frozen-backbone features
//! (once, through a content-addressed cache) and trains a linear head on them
//! with SGD + momentum, reporting every epoch through an [`EpochSink`].
//!
//! This is the only crate that uses Candle. It knows nothing of SQLite or
//! tokio: results leave through the [`EpochSink`] trait the caller implements.

mod backbone;
pub mod bench;
mod data;
mod error;
mod features;
mod fingerprint;
mod image_check;
mod memory;
mod preprocess;
mod sanity;
mod split;
mod synthetic;
mod train;

pub use candle_core::{Device, Tensor};

pub use backbone::{
    bf16_kernel, bf16_on_cpu, check_weights, declared, model_in_force, param_shapes, parse_fraction, random_weights,
    Arch, Backbone, Bf16Kernel, DType, Declared, FeatureDType, ModelConfig, ModelGiven, ModelInForce, Probe, Weights,
};
pub use data::{
    kfold, load_dataset, small_class_warnings, split, DataConfig, Dataset, Item, Layout, Source, Split, SyntheticConfig,
};
pub use error::Error;
pub use features::{
    cached_features, compute_features, compute_features_keyed, decode_image, decode_threads, forced_device_memory,
    join_shards, shard_key, CacheOutcome, FeatureCache, FeatureMatrix, FeatureSlice, Features, Progress, ShardPass,
};
pub use fingerprint::{DataChanges, DataManifest, ManifestReader};
pub use image_check::{check_images, skip_bad_images, BadImage, BadImages};
pub use preprocess::{preprocess, ChannelOrder, Transform};
pub use sanity::{
    calibrated_weights, calibrated_weights_scaled, divergences, sample_indices, sanity_check, verdict, Sanity,
    SanityReport, Suspect, VariantReport, SANITY_IMAGES, SANITY_LIMIT, SWAP_MIN, SWAP_RATIO, VARIANT_BN, VARIANT_RATIO,
    VARIANT_SHARE,
};
pub use split::{item_ids, make_splits, pandas_split, split_csv, split_hash, SplitMethod};
pub use synthetic::synthetic_image;
pub use train::{
    heads_train_on_one_thread, train, train_fused, EpochReport, EpochSink, Loss, SinkError, TrainConfig, TrainJob,
    TrainOutcome, TrainState,
};
#[doc(hidden)]
pub use train::{train_with, HeadKernel, Hooks};

/// Picks a Candle device from a name: `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<candle_core::Device, Error> {
    match check_device(name)? {
        None => Ok(candle_core::Device::Cpu),
        Some(ordinal) => candle_core::Device::new_cuda(ordinal).map_err(|e| Error::Device(format!("{name}: {e}"))),
    }
}

/// Whether `name` names a device this binary can run on, without opening
/// it: `None` for the CPU, the ordinal of a CUDA device.
pub fn check_device(name: &str) -> Result<Option<usize>, Error> {
    match name {
        "cpu" => Ok(None),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = match cuda.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse().map_err(|_| Error::Device(format!("bad device `{name}`: expected cuda:N")))?,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Device(format!(
                    "`{name}` asked for, but this binary was built without CUDA support (rebuild with --features cuda)"
                )));
            }
            Ok(Some(ordinal))
        }
        other => Err(Error::Device(format!("unknown device `{other}`: expected cpu, cuda or cuda:N"))),
    }
}
