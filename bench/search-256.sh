#!/usr/bin/env bash
# Issue 12's search benchmark: 256 random trials x 14 epochs on features of
# the paper's size (bench/search-256.toml), with and without ASHA
# (bench/search-256-asha.toml), through `sweep run` on the release build,
# RUNS times each, in turn, each on a fresh database beside one feature cache
# computed beforehand (untimed). Prints each run's wall seconds, the epochs
# trained and the best job; then the medians.
#
#   cargo build --release --locked && bash bench/search-256.sh [WORK_DIR] [RUNS] [PARALLEL]
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${SWEEP:-$PWD/target/release/sweep}
work=${1:-/tmp/search-256}
runs=${2:-3}
parallel=${3:-$(nproc)}
mkdir -p "$work"
rm -f "$work"/run-*.db*

# The backbone pass once, untimed.
source bench/search-features.sh
search_features "$sweep" "$work"

declare -A walls
for run in $(seq 1 "$runs"); do
    for file in ${FILES:-search-256 search-256-asha}; do
        db="$work/run-$file-$run.db"
        start=$(date +%s.%N)
        "$sweep" --db "$db" -q run "bench/$file.toml" --cache-dir "$work/cache" --parallel "$parallel" > /dev/null
        end=$(date +%s.%N)
        wall=$(echo "$end - $start" | bc)
        walls[$file]+="$wall "
        epochs=$(sqlite3 "$db" "SELECT count(*) FROM epochs")
        head_seconds=$(sqlite3 "$db" "SELECT printf('%.1f', sum(seconds)) FROM epochs")
        best=$("$sweep" --db "$db" best --format json | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["job_id"][:16], b["score"])' 2>/dev/null || echo "?")
        echo "run $run $file: wall ${wall} s, ${epochs} epochs, ${head_seconds} head-seconds, best ${best}"
        [ -n "${KEEP:-}" ] || rm -f "$db" "$db"-*
    done
done
for file in ${FILES:-search-256 search-256-asha}; do
    median=$(printf '%s\n' ${walls[$file]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$file: median wall ${median} s of ${runs} (--parallel ${parallel})"
done
