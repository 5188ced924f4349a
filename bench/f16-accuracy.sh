#!/usr/bin/env bash
# Issue 17: the accuracy effect of `feature_dtype = "f16"`. The same sweep
# (generated images, ResNet-18 at 32 px, random weights; IMAGES images in 10
# classes, 80/20 split; lr 0.003, 0.01, 0.03; 8 epochs) with f32 and with
# f16 features; prints each job's best valid accuracy and the entries' sizes.
# Usage: bench/f16-accuracy.sh   Env: SWEEP (default target/release/sweep),
# IMAGES (default 2000), WORK (scratch dir).
set -euo pipefail
sweep=${SWEEP:-target/release/sweep}
work=${WORK:-$(mktemp -d)}
images=${IMAGES:-2000}
mkdir -p "$work"
for dtype in f32 f16; do
    cat > "$work/$dtype.toml" <<TOML
name = "accuracy-$dtype"
[data]
layout = "synthetic"
classes = 10
images = $images
width = 40
height = 32
valid_fraction = 0.2
[model]
backbone = "resnet18"
weights = "random"
image_size = 32
feature_dtype = "$dtype"
[train]
batch_size = 16
epochs = 8
[grid]
lr = [0.003, 0.01, 0.03]
TOML
    SWEEP_DB="$work/sweep.db" "$sweep" run "$work/$dtype.toml" --cache-dir "$work/cache" --format json 2> /dev/null |
        python3 -c 'import json,sys; [print(sys.argv[1], r["lr"], r["best_valid_acc"], r["best_epoch"]) for r in sorted(json.load(sys.stdin), key=lambda r: r["lr"])]' "$dtype"
done
ls -l "$work"/cache/*.safetensors | awk '{print $5, $9}'
