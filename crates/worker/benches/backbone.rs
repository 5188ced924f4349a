//! Backbone throughput on the CPU: `Backbone::forward` on seeded random
//! weights, `[B, 3, S, S]` input, images per second.
//!
//! ```sh
//! cargo bench -p sweep-worker --bench backbone -- [ARCH] [BATCH] [SIZE] [ITERS] [IMPL]
//! ```
//!
//! Defaults: resnet50, batch 16, 224x224, 5 timed passes after one warm-up,
//! IMPL `sweep` (our backbone), `sweep-bf16` (ours with `dtype = "bf16"`:
//! AMX tiles or AVX-512 BF16 where the CPU has them, else f32; `SWEEP_CPU_BF16` caps). IMPL `candle-transformers` times
//! candle-transformers' ResNet (candle's own NCHW conv2d, batch norms not
//! folded) on the same weights, as a baseline.
//! `bench/pytorch_backbone.py` times torchvision on the same shapes; run the
//! two alternately (A B A B) and compare the ratio, since other work on the
//! machine moves both.

#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use sweep_worker::{random_weights, Arch, Backbone, DType, ModelConfig, Weights};

/// One timed implementation: images in, features out.
type Forward = dyn Fn(&Tensor) -> Result<Tensor, Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; keep only our positional arguments.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arch_name = args.first().map(String::as_str).unwrap_or("resnet50");
    let arch = Arch::from_name(arch_name).ok_or_else(|| format!("unknown arch `{arch_name}`"))?;
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(224);
    let iters: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let cfg = ModelConfig {
        arch,
        weights: Weights::Random { seed: 0 },
        image_size: size,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: sweep_worker::ChannelOrder::Rgb,
        dtype: DType::F32,
        feature_dtype: sweep_worker::FeatureDType::F32,
    };
    let device = Device::Cpu;
    let imp = args.get(4).map(String::as_str).unwrap_or("sweep");
    let forward: Box<Forward> = match imp {
        "sweep" => {
            let backbone = Backbone::load(&cfg, &device)?;
            Box::new(move |x| Ok(backbone.forward(x)?))
        }
        "sweep-bf16" => {
            match sweep_worker::bf16_kernel() {
                Ok(kernel) => println!("note: sweep-bf16 computes on {}", kernel.name()),
                Err(why) => println!("note: {why}: sweep-bf16 computes in f32"),
            }
            let backbone = Backbone::load(&ModelConfig { dtype: DType::BF16, ..cfg.clone() }, &device)?;
            Box::new(move |x| Ok(backbone.forward(x)?))
        }
        "candle-transformers" => {
            use candle_transformers::models::resnet;
            let vb = candle_nn::VarBuilder::from_tensors(random_weights(arch, 0)?, candle_core::DType::F32, &device);
            let net = match arch {
                Arch::Resnet18 => resnet::resnet18_no_final_layer(vb)?,
                Arch::Resnet34 => resnet::resnet34_no_final_layer(vb)?,
                Arch::Resnet50 => resnet::resnet50_no_final_layer(vb)?,
                Arch::Resnet50V1 => return Err("candle-transformers has no resnet50-v1".into()),
            };
            Box::new(move |x| Ok(net.forward(x)?))
        }
        other => return Err(format!("unknown IMPL `{other}`: sweep, sweep-bf16 or candle-transformers").into()),
    };
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &device)?;
    forward(&x)?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..iters {
        let start = Instant::now();
        let ys = forward(&x)?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(ys.dims(), &[batch, arch.feature_dim()]);
        rates.push(batch as f64 / secs);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let threads = candle_core::utils::get_num_threads();
    println!(
        "{imp} {} batch {batch} {size}x{size} threads {threads}: median {median:.2} images/s (min {:.2}, max {:.2}, {iters} passes)",
        arch.name(),
        rates[0],
        rates[rates.len() - 1],
    );
    Ok(())
}
