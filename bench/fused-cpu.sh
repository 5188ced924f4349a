#!/usr/bin/env bash
# Issue 12's fused-heads table on the CPU: bench/search-256.toml's first K
# random trials (K = 1, 8, 64, 256) for EPOCHS epochs on features of the
# paper's size, trained as one group (`--fuse --parallel 1`: one group,
# Candle's products on every core) and alone (`--no-fuse`, one job a core,
# sweep's one-thread kernels), RUNS times in turn, each on a fresh database
# beside one feature cache computed beforehand (untimed). Prints each run's
# wall seconds and head-seconds, then the medians per trial-epoch. Alone
# runs twice: one job a core (`no-fuse`) and one job at a time on one core
# (`no-fuse-1`). With PYTHON set to a Python with torch, each round also
# runs PyTorch's loop on one head (bench/pytorch_head.py, 3 epochs) with 1
# and with 2 threads, for the side-by-side figure.
#
#   cargo build --release --locked && bash bench/fused-cpu.sh [WORK_DIR] [RUNS] [EPOCHS]
#   PYTHON=/path/to/venv/bin/python KS="8 64" bash bench/fused-cpu.sh /tmp/fused-cpu 3 1
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${SWEEP:-$PWD/target/release/sweep}
work=${1:-/tmp/fused-cpu}
runs=${2:-3}
epochs=${3:-2}
mkdir -p "$work"
# The backbone pass once, untimed.
source bench/search-features.sh
search_features "$sweep" "$work"
declare -A walls
for run in $(seq 1 "$runs"); do
    for k in ${KS:-1 8 64 256}; do
        sed -e "s/^trials = 256/trials = $k/" -e "s/^epochs = 14/epochs = $epochs/" bench/search-256.toml > "$work/k$k.toml"
        for mode in fuse no-fuse no-fuse-1; do
            db="$work/run-$mode-$k-$run.db"
            rm -f "$db" "$db"-*
            case $mode in
                fuse) args=(--fuse --parallel 1) ;;
                no-fuse) args=(--no-fuse) ;;
                no-fuse-1) args=(--no-fuse --parallel 1) ;;
            esac
            start=$(date +%s.%N)
            "$sweep" --db "$db" -q run "$work/k$k.toml" --cache-dir "$work/cache" "${args[@]}" > /dev/null
            end=$(date +%s.%N)
            wall=$(echo "$end - $start" | bc)
            walls[$mode-$k]+="$wall "
            head=$(sqlite3 "$db" "SELECT printf('%.2f', sum(seconds)) FROM epochs")
            echo "run $run K=$k $mode: wall ${wall} s, head-seconds ${head}"
            rm -f "$db" "$db"-*
        done
    done
    if [ -n "${PYTHON:-}" ]; then
        for threads in 1 2; do
            epoch=$("$PYTHON" bench/pytorch_head.py --epochs 3 --threads "$threads" 2>/dev/null | tail -1 | sed -e 's/.*batch 16: \([0-9.]*\) s\/epoch.*/\1/')
            walls[pytorch-$threads]+="$epoch "
            echo "run $run pytorch, $threads thread(s): ${epoch} s an epoch"
        done
    fi
done
for k in ${KS:-1 8 64 256}; do
    for mode in fuse no-fuse no-fuse-1; do
        median=$(printf '%s\n' ${walls[$mode-$k]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "K=$k $mode: median wall ${median} s of ${runs}, $(echo "scale=4; $median / ($k * $epochs)" | bc) s per trial-epoch"
    done
done
if [ -n "${PYTHON:-}" ]; then
    for threads in 1 2; do
        median=$(printf '%s\n' ${walls[pytorch-$threads]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "pytorch, one head at a time, $threads thread(s): median ${median} s per trial-epoch"
    done
fi
