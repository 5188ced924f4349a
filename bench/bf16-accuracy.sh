#!/usr/bin/env bash
# Issue 17: the accuracy effect of `dtype = "bf16"` (the backbone pass on AMX
# tiles where the CPU has them). The same sweep (generated images, random
# weights; IMAGES images in CLASSES classes, 80/20 split; lr 0.003, 0.01, 0.03;
# 8 epochs) with an f32 and a bf16 backbone pass; prints each job's best
# valid accuracy.
# Usage: bench/bf16-accuracy.sh   Env: SWEEP (default target/release/sweep),
# BACKBONE (default resnet18), SIZE (image size, default 32), IMAGES
# (default 2000), CLASSES (default 10), WORK (scratch dir), WEIGHTS (`random`, the default, or
# `calibrated`: seeded weights whose batch norms hold generated images'
# statistics and whose residual branches are scaled by GAMMA, default 0.3,
# made by `crates/worker/examples/calibrated-weights.rs`: a stand-in for
# trained weights).
set -euo pipefail
sweep=${SWEEP:-target/release/sweep}
work=${WORK:-$(mktemp -d)}
images=${IMAGES:-2000}
backbone=${BACKBONE:-resnet18}
size=${SIZE:-32}
mkdir -p "$work"
weights=random
if [ "${WEIGHTS:-random}" = calibrated ]; then
    weights="$work/calibrated-$backbone-$size.safetensors"
    cargo run --release --locked -q --example calibrated-weights -- "$backbone" "$size" "${GAMMA:-0.3}" "$weights"
fi
for dtype in f32 bf16; do
    cat > "$work/$dtype.toml" <<TOML
name = "accuracy-$dtype"
[data]
layout = "synthetic"
classes = ${CLASSES:-10}
images = $images
width = $((size * 5 / 4))
height = $size
valid_fraction = 0.2
[model]
backbone = "$backbone"
weights = "$weights"
image_size = $size
dtype = "$dtype"
[train]
batch_size = 16
epochs = 8
[grid]
lr = [0.003, 0.01, 0.03]
TOML
    SWEEP_DB="$work/sweep.db" "$sweep" run "$work/$dtype.toml" --cache-dir "$work/cache" --format json 2> "$work/$dtype.err" |
        python3 -c 'import json,sys; [print(sys.argv[1], r["lr"], r["best_valid_acc"], r["best_epoch"]) for r in sorted(json.load(sys.stdin), key=lambda r: r["lr"])]' "$dtype"
    grep -h "dtype bf16" "$work/$dtype.err" || true
done
