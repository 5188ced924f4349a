#!/usr/bin/env bash
# The whole GPU benchmark in one prepared run, for the GPU machine, each
# part under its own time limit so that what ran comes back when a later
# part does not finish:
#   1. fused heads (issue 12): bench/search-256.toml's trials on CUDA,
#      K = 1, 8, 64, 256 heads as one group, and 8 trained alone
#      (`--no-fuse`); the PyTorch head loop on the same GPU beside them;
#   2. the backbone pass (issues 8, 17): `sweep bench --device cuda` for
#      f32, f16 and bf16 on 10,222 generated JPEGs of 500x375;
#   3. the paper's loop and the features loop in PyTorch on the same data;
#   4. (PARTS=pass) the pass through `sweep run`: plain, short of device
#      memory, split over two backbones.
#
# Here:   bash ../shared/gpu/build-cuda.sh -p sweep-cli      (makes gpu-bundle/)
# There:  OUT=$OUT bash bench/gpu-bench.sh                   (writes $OUT/*)
#         PARTS="fused" OUT=$OUT bash bench/gpu-bench.sh     (part 1 only; "fused backbone pytorch": all)
# Budget: about 8 minutes on an H200 (measured: parts 1-3 286 s, part 1
# alone 245 s with K = 256 stopped at its limit); part 4 adds three passes
# of at most 60 s each (not yet run on a GPU; on a CPU, with the `cuda`
# devices read as `cpu`, it runs as written: halvings logged, features
# identical). For issue 17's open figures: PARTS="backbone pass".
# Data: parts 2-4 share $DATA (10,222 generated JPEGs, made by part 2).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/sweep-gpu-bench}"
DATA="${DATA:-/tmp/sweep-bench-data}"
WORK="${WORK:-/tmp/sweep-gpu-work}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for p in /opt/torch/.venv/bin/python python3; do
    if "$p" -c "import torch, torchvision" 2>/dev/null; then PY="$p"; break; fi
  done
fi
PARTS="${PARTS:-fused backbone pytorch pass}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT" "$WORK"
# A program, not a function, so that `timeout` can run it.
printf '#!/usr/bin/env bash\nexec bash %q/gpu-bundle/run-on-gpu.sh sweep "$@"\n' "$PWD" > "$WORK/sweep"
chmod +x "$WORK/sweep"
sweep() { "$WORK/sweep" "$@"; }
# limit SECONDS NAME CMD...: runs CMD, its output appended to $OUT/log.txt
# (few files: the GPU machine sends back at most 8).
limit() {
  local seconds=$1 name=$2
  shift 2
  local start end rc
  start=$(date +%s%N)
  echo "=== $name: $*" >> "$OUT/log.txt"
  timeout -k 5 "$seconds" "$@" >> "$OUT/log.txt" 2>&1
  rc=$?
  end=$(date +%s%N)
  echo "$name rc=$rc wall_ms=$(( (end - start) / 1000000 ))" | tee -a "$OUT/walls.txt"
}

nvidia-smi -L | tee "$OUT/card.txt" || true
nproc >> "$OUT/card.txt"

# 1. Fused heads. The features once (untimed beyond its line), then each K.
if part fused; then
trials_file() { # K FILE
  sed -e "s/^trials = 256/trials = $1/" bench/search-256.toml > "$2"
}
sed -e 's/^trials = 256/trials = 1/' -e 's/^epochs = 14/epochs = 1/' -e 's/^name = .*/name = "features"/' \
  bench/search-256.toml > "$WORK/features.toml"
limit 90 features "$WORK/sweep" --db "$WORK/features.db" -q run "$WORK/features.toml" --cache-dir "$WORK/cache" --device cuda
for k in 1 8 64 256; do
  trials_file "$k" "$WORK/k$k.toml"
  limit "$([ "$k" = 256 ] && echo 150 || echo 90)" "fused-k$k" "$WORK/sweep" --db "$WORK/fused-k$k.db" -q run "$WORK/k$k.toml" --cache-dir "$WORK/cache" \
    --device cuda --parallel 1 --fuse --format json
done
limit 75 alone-k8 "$WORK/sweep" --db "$WORK/alone-k8.db" -q run "$WORK/k8.toml" --cache-dir "$WORK/cache" \
  --device cuda --parallel 1 --no-fuse --format json
limit 45 asha-k256 "$WORK/sweep" --db "$WORK/asha.db" -q run bench/search-256-asha.toml --cache-dir "$WORK/cache" \
  --device cuda --parallel 1 --fuse --format json
for db in fused-k8 alone-k8; do
  echo "=== $db table" >> "$OUT/log.txt"
  sweep --db "$WORK/$db.db" table --format json >> "$OUT/log.txt" 2>&1 || true
done
if [ -n "$PY" ]; then
  limit 45 pytorch-head "$PY" bench/pytorch_head.py --device cuda --epochs 4
fi
fi

# 2. The backbone pass.
if part backbone; then
[ -f "$DATA/labels.csv" ] || limit 60 synth "$WORK/sweep" synth --out "$DATA"
limit 150 sweep-bench "$WORK/sweep" bench --device cuda --data "$DATA" --work-dir "$WORK/bench" --dtypes f32,f16,bf16 \
  --backbone-batch 64 --backbone-batches 20
fi

# 4. The backbone pass through `sweep run` (issue 17), cold cache each time:
#    plain; with the device short of memory (SWEEP_DEVICE_MEMORY_MB: the
#    batch is halved until it fits); split over two backbones on the one GPU
#    (`--device cuda:0,cuda:0`). Each run's features are compared with the
#    plain run's (`cmp` of the cache entries; on a GPU the products may pick
#    other algorithms for other batch sizes, so a difference is reported, not
#    fatal), and its pass's images/s are in `sweep status`.
if part pass; then
  [ -f "$DATA/labels.csv" ] || limit 60 synth "$WORK/sweep" synth --out "$DATA"
  printf 'name = "pass"\n[data]\nlayout = "kaggle"\nroot = "%s"\nvalid_fraction = 0.1\n[model]\nbackbone = "resnet50"\nweights = "random"\nimage_size = 224\n[train]\nepochs = 1\nbatch_size = 16\nworkers = 2\n' \
    "$DATA" > "$WORK/pass.toml"
  for run in plain short split; do
    rm -rf "$WORK/pass-$run"
    case $run in
      plain) vars=() flags=(--device cuda) ;;
      short) vars=(SWEEP_DEVICE_MEMORY_MB=300) flags=(--device cuda) ;;
      split) vars=() flags=(--device cuda:0,cuda:0) ;;
    esac
    limit 60 "pass-$run" env "${vars[@]}" "$WORK/sweep" --db "$WORK/pass-$run/s.db" -v run "$WORK/pass.toml" \
      --cache-dir "$WORK/pass-$run/cache" --no-sanity-check "${flags[@]}"
    sweep --db "$WORK/pass-$run/s.db" status >> "$OUT/log.txt" 2>&1 || true
  done
  grep -h "out of memory\|split across" "$OUT/log.txt" | tail -5
  for run in short split; do
    for f in "$WORK/pass-plain/cache"/*.safetensors; do
      cmp -s "$f" "$WORK/pass-$run/cache/$(basename "$f")" && echo "pass-$run: features identical to plain" \
        || echo "pass-$run: features differ from plain (or missing)"
    done | tee -a "$OUT/log.txt"
  done
fi

# 3. PyTorch, the paper's loop and the features loop, decoding on every core.
if part pytorch && [ -n "$PY" ] && [ -f "$DATA/labels.csv" ]; then
  limit 120 pytorch-reference "$PY" bench/pytorch_reference.py --data "$DATA" --device cuda --paper-epochs 1 \
    --epochs 14 --batch-size 16 --workers "$(nproc)"
elif part pytorch; then
  echo "no python with torch and torchvision, or no data: PyTorch side skipped" | tee -a "$OUT/log.txt"
fi
cat "$OUT/walls.txt"
