#!/usr/bin/env bash
# Seconds per head epoch through `sweep run`, at the paper's size: two of
# bench/search-256.toml's trials x 5 epochs, one job slot, on the feature
# cache bench/search-256.sh computes (made here first if missing). Prints
# the median of the 10 epochs' recorded seconds (train and valid pass) for
# each binary given, in turn, ROUNDS times: an A/B of two builds under one
# load.
#
#   bash bench/head-epoch.sh [BINARY...]   (default target/release/sweep)
#   env: WORK (default /tmp/search-256), ROUNDS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/search-256}
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=("$PWD/target/release/sweep")
if [ ! -e "$work/cache.done" ]; then
    # The backbone pass once, as bench/search-256.sh makes it.
    mkdir -p "$work"
    sed -e 's/^trials = 256/trials = 1/' -e 's/^epochs = 14/epochs = 1/' -e 's/^name = .*/name = "features"/' \
        bench/search-256.toml > "$work/features.toml"
    "${binaries[0]}" --db "$work/features.db" -q run "$work/features.toml" --cache-dir "$work/cache" > /dev/null
    touch "$work/cache.done"
fi
sed -e 's/^trials = 256/trials = 2/' -e 's/^epochs = 14/epochs = 5/' -e 's/^name = .*/name = "head-epoch"/' \
    bench/search-256.toml > "$work/head-epoch.toml"
for round in $(seq 1 "${ROUNDS:-2}"); do
    for sweep in "${binaries[@]}"; do
        db="$work/head-epoch.db"
        rm -f "$db" "$db"-*
        "$sweep" --db "$db" -q run "$work/head-epoch.toml" --cache-dir "$work/cache" --parallel 1 > /dev/null
        median=$(sqlite3 "$db" "SELECT seconds FROM epochs ORDER BY seconds" |
            awk '{a[NR] = $1} END {printf "%.4f", a[int((NR + 1) / 2)]}')
        echo "round $round $sweep: head epoch ${median} s (median of 10)"
        rm -f "$db" "$db"-*
    done
done
