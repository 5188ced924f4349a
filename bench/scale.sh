#!/usr/bin/env bash
# Issue 17: how cost grows with the data set. For each size N, a sweep of one
# job (ResNet-18 features, 512 floats an image; 120 classes; batch 16; 3
# epochs) trains on a cache entry of N images written by `sweep
# synth-features` (seeded random features under the key the sweep's backbone
# pass would write: no million-image pass). Reported: the entry's write time,
# the head epoch's seconds (median of the 3 epochs), and the run's peak
# anonymous memory (RssAnon, sampled every 5 ms) and peak resident set
# (VmHWM: the mapped features' pages count there, as the page cache holds
# them). Then the backbone pass per image, on BACKBONE_IMAGES generated
# images at 32 px through ResNet-18 (a real pass, no cache).
#
# Usage: bench/scale.sh [SIZES...]   (default: 10000 100000 1000000)
# Env: SWEEP (the binary; default target/release/sweep), RUN_SWEEP (the
#      binary that runs the sweeps, to compare another build; default SWEEP),
#      WORK (scratch dir),
#      BACKBONE_IMAGES (default 10000; 0 skips the pass).
set -euo pipefail
sweep=${SWEEP:-target/release/sweep}
run_sweep=${RUN_SWEEP:-$sweep}
work=${WORK:-$(mktemp -d)}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
mkdir -p "$work"

sweep_file() { # N NAME
    cat <<TOML
name = "$2"
[data]
layout = "synthetic"
classes = 120
images = $1
width = 32
height = 32
valid_fraction = 0.1
[model]
backbone = "resnet18"
weights = "random"
image_size = 32
[train]
batch_size = 16
epochs = 3
lr = 0.01
TOML
}

# Runs "$@" and prints its peak RssAnon and VmHWM in MiB, sampled every 5 ms.
watch_memory() {
    python3 - "$@" <<'PY'
import subprocess, sys, tempfile, time
log = tempfile.TemporaryFile()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=log)
anon = hwm = 0
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/status"):
            key, _, value = line.partition(":")
            if key == "RssAnon": anon = max(anon, int(value.split()[0]))
            if key == "VmHWM": hwm = max(hwm, int(value.split()[0]))
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    time.sleep(0.005)
log.seek(0)
err = log.read().decode()
if p.returncode != 0 or "reused from the cache" not in err:
    sys.exit(f"the run failed or ran a backbone pass:\n{err}")
print(f"{anon / 1024:.1f} {hwm / 1024:.1f}")
PY
}

printf '| images | entry (MiB) | entry written (s) | head epoch (s) | s per 1k train images | peak RssAnon (MiB) | peak VmHWM (MiB) |\n|---|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
    dir="$work/n$n"
    rm -rf "$dir" && mkdir -p "$dir"
    sweep_file "$n" "scale-$n" > "$dir/sweep.toml"
    start=$(date +%s.%N)
    "$sweep" synth-features "$dir/sweep.toml" --cache-dir "$dir/cache" 2> /dev/null
    written=$(echo "$(date +%s.%N) - $start" | bc)
    entry=$(du -m "$dir"/cache/*.safetensors | cut -f1)
    read -r anon hwm < <(SWEEP_DB="$dir/sweep.db" watch_memory "$run_sweep" run "$dir/sweep.toml" --cache-dir "$dir/cache" --parallel 1)
    job=$(SWEEP_DB="$dir/sweep.db" "$run_sweep" table --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["job_id"])')
    epoch=$(SWEEP_DB="$dir/sweep.db" "$run_sweep" show "$job" --format json |
        python3 -c 'import json,statistics,sys; print("%.3f" % statistics.median(e["seconds"] for e in json.load(sys.stdin)))')
    per=$(python3 -c "print(f'{$epoch / ($n * 0.9) * 1000:.4f}')")
    printf '| %s | %s | %.1f | %s | %s | %s | %s |\n' "$n" "$entry" "$written" "$epoch" "$per" "$anon" "$hwm"
    rm -rf "$dir/cache"
done

backbone=${BACKBONE_IMAGES:-10000}
if [ "$backbone" -gt 0 ]; then
    dir="$work/backbone"
    rm -rf "$dir" && mkdir -p "$dir"
    sweep_file "$backbone" "backbone-$backbone" | sed 's/^epochs = 3/epochs = 1/' > "$dir/sweep.toml"
    SWEEP_DB="$dir/sweep.db" "$sweep" run "$dir/sweep.toml" --cache-dir "$dir/cache" 2>&1 | grep -o 'backbone pass of .*' || true
fi
