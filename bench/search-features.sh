# Sourced by the CPU search benchmarks: `search_features SWEEP WORK` computes
# the features of bench/search-256.toml once (a sweep of the same data and
# model with one job of one epoch) into WORK/cache, and skips it when
# WORK/cache.done says it was done.
search_features() {
    local sweep=$1 work=$2
    [ -e "$work/cache.done" ] && return 0
    sed -e 's/^trials = 256/trials = 1/' -e 's/^epochs = 14/epochs = 1/' -e 's/^name = .*/name = "features"/' \
        bench/search-256.toml > "$work/features.toml"
    "$sweep" --db "$work/features.db" -q run "$work/features.toml" --cache-dir "$work/cache" > /dev/null
    touch "$work/cache.done"
}
