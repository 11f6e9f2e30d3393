#!/usr/bin/env bash
# fuzz/run.sh: build every fuzz target once (cargo fuzz, nightly) and run each
# for N inputs, printing per target the inputs run, crashes and time.
#
#   fuzz/run.sh                 # each target for 1,000,000 inputs
#   fuzz/run.sh -n 5000000      # each for 5 M inputs
#   fuzz/run.sh --smoke         # each for a few seconds (CI)
#   fuzz/run.sh envelope events # only these targets
#   FUZZ_SANITIZER=address fuzz/run.sh   # with ASan (slower build and runs)
#
# Seeds are read from fuzz/corpus/<target>/ (fuzz/seed.py writes them from the
# Celery captures); what libFuzzer learns goes to fuzz/work/<target>/ so the
# committed seeds stay small. A crash stops that target (libFuzzer's own
# behaviour) and leaves its input in fuzz/artifacts/<target>/; the script goes
# on to the next target and exits 1 at the end when any target crashed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PATH="$HOME/.cargo/bin:$PATH"

runs=1000000
smoke_secs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke_secs="${SMOKE_SECS:-5}" ;;
        -n) runs="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^celeriac-fuzz$')
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# Release, debug assertions on (integer overflow panics too). No sanitizer by
# default: the crate is safe Rust, libFuzzer still catches panics, aborts,
# stack overflows, timeouts and out-of-memory, and the build of wasmtime with
# ASan on two cores is several times slower.
sanitizer="${FUZZ_SANITIZER:-none}"
echo "building ${#targets[@]} targets (sanitizer: $sanitizer)..."
start=$(date +%s)
if ! cargo +nightly fuzz build -O -a --sanitizer "$sanitizer" >build.log 2>&1; then
    tail -40 build.log >&2
    echo "build failed (fuzz/build.log)" >&2
    exit 2
fi
echo "built in $(( $(date +%s) - start ))s"

bin_dir="target/x86_64-unknown-linux-gnu/release"
if [ -n "$smoke_secs" ]; then
    limit=(-max_total_time="$smoke_secs")
else
    limit=(-runs="$runs")
fi

failed=0
printf '%-18s %12s %8s %8s\n' target inputs crashes seconds
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    log="work/$t.log"
    t0=$EPOCHREALTIME
    "$bin_dir/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "work/$t" "corpus/$t" >"$log" 2>&1
    rc=$?
    secs=$(awk "BEGIN { print $EPOCHREALTIME - $t0 }")
    # "Done 1000000 runs in 93 second(s)", or the last "#123456 ..." status line before a crash.
    inputs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -z "$inputs" ] && inputs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$log" | tail -1)
    [ -z "$inputs" ] && inputs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    crashes=0
    if [ $rc -ne 0 ]; then
        crashes=1
        failed=1
    fi
    printf '%-18s %12s %8s %8.1f\n' "$t" "${inputs:-?}" "$crashes" "$secs"
    if [ $crashes -ne 0 ]; then
        grep -m1 -E 'panicked at|ERROR: libFuzzer|deadly signal|timeout|out-of-memory' "$log" | sed 's/^/    /'
        grep -m1 'Test unit written to' "$log" | sed 's/^/    /'
    fi
done
exit $failed
