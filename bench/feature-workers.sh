#!/usr/bin/env bash
# The backbone pass shared by W `sweep worker`s on one machine (issue 13):
# submits a sweep of one small job over generated images, starts W workers
# (one thread each: RAYON_NUM_THREADS=1), and waits for all of them.
# Usage: bench/feature-workers.sh W [IMAGES] [SHARD_IMAGES]; run from the repo
# root after `cargo build -p sweep-cli` (the
# dev profile builds Candle and the worker at opt-level 3) or with SWEEP_BIN.
# Prints the wall seconds.
set -euo pipefail
workers=${1:?workers}
images=${2:-1024}
shard=${3:-128}
sweep=${SWEEP_BIN:-target/debug/sweep}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/pass.toml" <<TOML
name = "pass"
[data]
layout = "synthetic"
classes = 4
images = $images
width = 96
height = 96
valid_fraction = 0.25
[model]
backbone = "resnet18"
weights = "random"
image_size = 96
[train]
batch_size = 32
epochs = 1
TOML
export SWEEP_DB="$dir/sweep.db" RAYON_NUM_THREADS=1
id=$("$sweep" -q submit "$dir/pass.toml")
start=$(date +%s.%N)
pids=()
for _ in $(seq 1 "$workers"); do
  "$sweep" -q worker --sweep "$id" --shard-images "$shard" --idle-exit 0 &
  pids+=($!)
done
wait "${pids[@]}"
end=$(date +%s.%N)
python3 -c "print(f'{$workers} workers: {$end - $start:.2f} s')"
