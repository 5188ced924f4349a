//! A backbone batch that does not fit in the device's memory: recognised,
//! so the pass halves the batch and goes on, and forced, so that path can
//! be tested and measured on purpose: `SWEEP_DEVICE_MEMORY_MB=N` leaves the
//! pass N MiB of the device for a batch. On a CUDA device the rest of its
//! free memory is taken for the pass's duration (the out-of-memory errors
//! are then the driver's own); on a CPU a batch whose activations would
//! need more than N MiB is refused with the same kind of error before its
//! forward pass.

use candle_core::Device;

use crate::backbone::ModelConfig;
use crate::Error;

/// The variable that forces a smaller device memory on the pass.
pub(crate) const LIMIT_VAR: &str = "SWEEP_DEVICE_MEMORY_MB";

/// What the message of an out-of-memory error holds: CUDA's
/// (`CUDA_ERROR_OUT_OF_MEMORY, "out of memory"`) and the forced limit's.
const OUT_OF_MEMORY: &str = "out of memory";

/// `SWEEP_DEVICE_MEMORY_MB` in bytes, if set; a value that is not a whole
/// number of MiB is an error naming the variable.
pub fn forced_limit() -> Result<Option<u64>, Error> {
    match std::env::var(LIMIT_VAR) {
        Err(_) => Ok(None),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(mb) if mb > 0 => Ok(Some(mb << 20)),
            _ => Err(Error::Device(format!("{LIMIT_VAR}={text}: expected a whole number of MiB above 0"))),
        },
    }
}

/// Whether `error` says the device ran out of memory: CUDA's driver
/// (`CUDA_ERROR_OUT_OF_MEMORY`), cuBLAS's workspace (`CUBLAS_STATUS_ALLOC_FAILED`)
/// or the forced limit.
pub(crate) fn is_out_of_memory(error: &Error) -> bool {
    match error {
        Error::Candle(e) => {
            let message = e.to_string();
            ["OUT_OF_MEMORY", "ALLOC_FAILED", OUT_OF_MEMORY].iter().any(|m| message.contains(m))
        }
        Error::Device(message) => message.contains(OUT_OF_MEMORY),
        _ => false,
    }
}

/// What a batch of `images` images holds in the backbone at its widest: the
/// block's input (kept for the residual), its middle and its output, each
/// as wide as the widest activation of a ResNet (64 channels at half the
/// image's side, or 256 at a quarter: 16 x side² values), in the pass's
/// precision. An estimate for the forced limit on a CPU, where nothing else
/// bounds a batch.
pub(crate) fn batch_bytes(model: &ModelConfig, images: usize) -> u64 {
    let side = model.image_size as u64;
    let bytes = match model.dtype {
        crate::DType::F32 => 4,
        crate::DType::F16 | crate::DType::BF16 => 2,
    };
    (images as u64).saturating_mul(3 * 16 * side * side * bytes)
}

/// The forced limit applied to one device for as long as it is held.
pub(crate) struct Limit {
    /// On a CPU: the bytes a batch may take.
    cpu_bytes: Option<u64>,
    /// On a CUDA device: the memory taken so that only the limit is left free.
    #[cfg(feature = "cuda")]
    _ballast: Option<candle_core::cuda_backend::cudarc::driver::CudaSlice<u8>>,
}

impl Limit {
    /// A forced limit of `limit` bytes (from [`forced_limit`]) on `device`.
    pub(crate) fn on(device: &Device, limit: Option<u64>) -> Result<Limit, Error> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(cuda) => {
                let Some(limit) = limit else { return Ok(Limit { cpu_bytes: None, _ballast: None }) };
                let (free, _total) = cuda
                    .cuda_stream()
                    .context()
                    .mem_get_info()
                    .map_err(|e| Error::Device(format!("{device:?}: free memory: {e}")))?;
                let take = (free as u64).saturating_sub(limit) as usize;
                tracing::info!(free, take, "{LIMIT_VAR}: device memory taken so that the limit is what is left");
                let ballast = match take {
                    0 => None,
                    take => Some(cuda.alloc_zeros::<u8>(take)?),
                };
                Ok(Limit { cpu_bytes: None, _ballast: ballast })
            }
            _ => Ok(Limit {
                cpu_bytes: limit,
                #[cfg(feature = "cuda")]
                _ballast: None,
            }),
        }
    }

    /// Refuses, as out of memory, a batch over the limit on a CPU.
    pub(crate) fn check(&self, model: &ModelConfig, images: usize) -> Result<(), Error> {
        match self.cpu_bytes {
            Some(limit) if batch_bytes(model, images) > limit => Err(Error::Device(format!(
                "{OUT_OF_MEMORY}: a batch of {images} images needs about {} MiB, over the {} MiB of {LIMIT_VAR}",
                batch_bytes(model, images) >> 20,
                limit >> 20
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_and_forced_out_of_memory_errors_are_recognised() {
        // What candle's CUDA backend says (cudarc's DriverError, cuBLAS's status), and others.
        let cuda = candle_core::Error::Msg(r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#.to_owned());
        assert!(is_out_of_memory(&Error::Candle(cuda)));
        let cublas = candle_core::Error::Msg("cublas: CUBLAS_STATUS_ALLOC_FAILED".to_owned());
        assert!(is_out_of_memory(&Error::Candle(cublas)));
        let shape = candle_core::Error::Msg("shape mismatch in matmul".to_owned());
        assert!(!is_out_of_memory(&Error::Candle(shape)));
        assert!(!is_out_of_memory(&Error::Device("unknown device `tpu`".to_owned())));
        let forced = Limit {
            cpu_bytes: Some(batch_bytes(&model(), 4)),
            #[cfg(feature = "cuda")]
            _ballast: None,
        };
        forced.check(&model(), 4).unwrap();
        assert!(is_out_of_memory(&forced.check(&model(), 5).unwrap_err()));
    }

    fn model() -> ModelConfig {
        ModelConfig {
            arch: crate::Arch::Resnet50,
            weights: crate::Weights::Random { seed: 0 },
            image_size: 224,
            mean: [0.5; 3],
            std: [0.5; 3],
            channel_order: crate::ChannelOrder::Rgb,
            dtype: crate::DType::F32,
            feature_dtype: crate::FeatureDType::F32,
        }
    }
}
