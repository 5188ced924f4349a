#!/usr/bin/env bash
# The whole GPU benchmark in one prepared run (issue #8), for the GPU machine:
# both tools on the same generated data (10,222 JPEGs of 500x375, 120 classes).
#
# Here:   bash ../shared/gpu/build-cuda.sh -p sweep-cli      (makes gpu-bundle/)
# There:  OUT=$OUT bash bench/gpu-bench.sh                   (writes $OUT/*.json)
# Budget: about 5 minutes on an H100 (synth ~30 s, sweep bench ~2 min, PyTorch ~2 min).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/sweep-gpu-bench}"
DATA="${DATA:-/tmp/sweep-bench-data}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for p in /opt/torch/.venv/bin/python python3; do
    if "$p" -c "import torch, torchvision" 2>/dev/null; then PY="$p"; break; fi
  done
fi
mkdir -p "$OUT"
run() { bash gpu-bundle/run-on-gpu.sh sweep "$@"; }

nvidia-smi -L | tee "$OUT/card.txt" || true
[ -f "$DATA/labels.csv" ] || run synth --out "$DATA"
run bench --device cuda --data "$DATA" --work-dir /tmp/sweep-bench-work --dtypes f32,f16,bf16 \
  --backbone-batch 64 --backbone-batches 20 > "$OUT/sweep.json"
cat "$OUT/sweep.json"
if [ -n "$PY" ]; then
  "$PY" bench/pytorch_reference.py --data "$DATA" --device cuda --paper-epochs 1 --epochs 14 \
    --batch-size 16 --workers 2 > "$OUT/pytorch.json"
  cat "$OUT/pytorch.json"
else
  echo "no python with torch and torchvision found: PyTorch side skipped" | tee "$OUT/pytorch.json"
fi
