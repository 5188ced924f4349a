//! Writes weights that stand in for trained ones, for benchmarks: seeded
//! random weights whose batch norms hold the statistics of 48 generated
//! images (seed 100, ImageNet's normalisation), each residual branch's last
//! batch norm scaled by GAMMA first (`calibrated_weights_scaled`).
//!
//! ```sh
//! cargo run --release --example calibrated-weights -- ARCH SIZE GAMMA OUT.safetensors
//! ```
//! (used by `bench/bf16-accuracy.sh` with `WEIGHTS=calibrated`).

#![allow(clippy::print_stdout, missing_docs)]

use sweep_worker::{calibrated_weights_scaled, synthetic_image, Arch, ChannelOrder, SyntheticConfig, Transform};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch, size, gamma, out] = &args[..] else {
        return Err("usage: calibrated-weights ARCH SIZE GAMMA OUT.safetensors".into());
    };
    let arch = Arch::from_name(arch).ok_or_else(|| format!("unknown arch `{arch}`"))?;
    let size: usize = size.parse()?;
    let transform =
        Transform { size, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], channel_order: ChannelOrder::Rgb };
    let cfg = SyntheticConfig { classes: 8, images: 48, width: (size * 5 / 4) as u32, height: size as u32, seed: 100 };
    let images: Vec<_> = (0..cfg.images).map(|i| synthetic_image(&cfg, i)).collect();
    let tensors = calibrated_weights_scaled(arch, 5, gamma.parse()?, &images, &transform)?;
    candle_core::safetensors::save(&tensors, out)?;
    println!("wrote {out}");
    Ok(())
}
