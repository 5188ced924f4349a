#!/usr/bin/env bash
# Issue 17: the ResNet-50 backbone pass in bf16 against f32, and against
# PyTorch (torchvision, f32 and bf16 autocast), side by side: for 1 and 2
# threads, ROUNDS rounds of them in turn (sweep f32, sweep f32 on Candle's
# matrix product (SWEEP_CPU_F32=candle, as before the AVX-512 f32 kernel),
# sweep bf16, sweep bf16 on AVX-512 BF16 where the CPU also has AMX tiles,
# torch f32, torch bf16),
# each the median of ITERS timed batches after a warm-up; then the median
# of the rounds for each, and the ratios.
#
#   PYTHON=/path/to/python-with-torch bash bench/bf16.sh [BATCH] [ITERS] [ROUNDS]
#   (defaults: 32 3 3; without torch importable, the PyTorch columns are left out)
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-32}
iters=${2:-3}
rounds=${3:-3}
py=${PYTHON:-python3}
torch=1
"$py" -c 'import torch, torchvision' 2> /dev/null || { echo "no torch for $py: PyTorch left out"; torch=0; }
cargo bench --workspace --locked --bench backbone --no-run 2> /dev/null
# Whether the bf16 pass runs on AMX tiles (then the AVX-512 BF16 kernel is
# timed too, as a third side).
tiles=$(cargo bench --workspace --locked --bench backbone -- resnet50 1 32 1 sweep-bf16 2> /dev/null | grep -c "on AMX tiles" || true)
rate() { sed -n 's/.*median \([0-9.]*\) images\/s.*/\1/p'; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for threads in 1 2; do
    export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
    out=$(mktemp -d)
    for round in $(seq 1 "$rounds"); do
        cargo bench --workspace --locked --bench backbone -- resnet50 "$batch" 224 "$iters" sweep 2> /dev/null | rate >> "$out/sweep-f32"
        SWEEP_CPU_F32=candle cargo bench --workspace --locked --bench backbone -- resnet50 "$batch" 224 "$iters" sweep 2> /dev/null | rate >> "$out/sweep-f32-candle"
        cargo bench --workspace --locked --bench backbone -- resnet50 "$batch" 224 "$iters" sweep-bf16 2> /dev/null | rate >> "$out/sweep-bf16"
        if [ "$tiles" = 1 ]; then
            SWEEP_CPU_BF16=avx512 cargo bench --workspace --locked --bench backbone -- resnet50 "$batch" 224 "$iters" sweep-bf16 2> /dev/null | rate >> "$out/sweep-bf16-avx512"
        fi
        if [ $torch = 1 ]; then
            "$py" bench/pytorch_backbone.py resnet50 "$batch" 224 "$iters" f32 | rate >> "$out/torch-f32"
            "$py" bench/pytorch_backbone.py resnet50 "$batch" 224 "$iters" bf16 | rate >> "$out/torch-bf16"
        fi
    done
    echo "threads $threads, batch $batch, images/s (rounds: $(for f in "$out"/*; do echo -n "$(basename "$f") $(paste -sd/ "$f") "; done))"
    for side in sweep-f32 sweep-f32-candle sweep-bf16 sweep-bf16-avx512 torch-f32 torch-bf16; do
        [ -e "$out/$side" ] && echo "  $side median $(median < "$out/$side")"
    done
    s32=$(median < "$out/sweep-f32")
    s16=$(median < "$out/sweep-bf16")
    c32=$(median < "$out/sweep-f32-candle")
    echo "  sweep f32 / sweep f32 on Candle's product: $(echo "$s32 / $c32" | bc -l | cut -c1-5)"
    echo "  sweep bf16 / sweep f32: $(echo "$s16 / $s32" | bc -l | cut -c1-5)"
    if [ -e "$out/sweep-bf16-avx512" ]; then
        d16=$(median < "$out/sweep-bf16-avx512")
        echo "  sweep bf16 on AVX-512 BF16 / sweep f32: $(echo "$d16 / $s32" | bc -l | cut -c1-5)"
    fi
    if [ $torch = 1 ]; then
        t16=$(median < "$out/torch-bf16")
        t32=$(median < "$out/torch-f32")
        echo "  sweep bf16 / torch bf16: $(echo "$s16 / $t16" | bc -l | cut -c1-5)"
        echo "  sweep f32 / torch f32: $(echo "$s32 / $t32" | bc -l | cut -c1-5)"
    fi
    rm -r "$out"
done
