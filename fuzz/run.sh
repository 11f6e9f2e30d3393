#!/usr/bin/env bash
# fuzz/run.sh: build the fuzz targets (cargo fuzz) and run each for N inputs,
# printing per target the inputs run, crashes and time.
#
#   fuzz/run.sh                 # every target for 1,000,000 inputs
#   fuzz/run.sh -n 5000000      # each for 5 M inputs
#   fuzz/run.sh --smoke         # each for a few seconds (SMOKE_SECS, default 5)
#   fuzz/run.sh --wire          # only the wire group (what CI runs, with --smoke)
#   fuzz/run.sh envelope events # only these targets
#   FUZZ_SANITIZER=address fuzz/run.sh   # with ASan (nightly; slower build and runs)
#
# Two groups, each its own cargo workspace: the wire parsers in fuzz/ (built on
# the celeriac-protocol crate alone, ~4 min from scratch) and the config files
# in fuzz/config (the whole celeriac crate, wasmtime included, ~20 min).
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
groups=(. config)
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke_secs="${SMOKE_SECS:-5}" ;;
        --wire) groups=(.) ;;
        -n) runs="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) targets+=("$1") ;;
    esac
    shift
done

names_in() { sed -n 's/^name = "\(.*\)"$/\1/p' "$1/Cargo.toml" | grep -v '^celeriac-fuzz'; }
# The group (directory) of each target asked for; every target of the groups when none is named.
declare -A group_of=()
for g in . config; do
    while read -r t; do group_of[$t]=$g; done < <(names_in "$g")
done
if [ ${#targets[@]} -eq 0 ]; then
    for g in "${groups[@]}"; do mapfile -t -O "${#targets[@]}" targets < <(names_in "$g"); done
fi
declare -A needed=()
for t in "${targets[@]}"; do
    if [ -z "${group_of[$t]:-}" ]; then
        echo "unknown target: $t (known: ${!group_of[*]})" >&2
        exit 2
    fi
    needed[${group_of[$t]}]=1
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# Release, debug assertions on (integer overflow panics too). No sanitizer by
# default, which builds on stable Rust: the crates are safe Rust, libFuzzer
# still catches panics, aborts, stack overflows, timeouts and out-of-memory.
# A sanitizer needs nightly (`cargo +nightly fuzz`).
sanitizer="${FUZZ_SANITIZER:-none}"
toolchain=()
[ "$sanitizer" != none ] && toolchain=(+nightly)
for g in "${!needed[@]}"; do
    echo "building the targets in fuzz/$g (sanitizer: $sanitizer)..."
    start=$(date +%s)
    # --fuzz-dir: cargo-fuzz would otherwise find fuzz/ from anywhere below the repository.
    if ! cargo "${toolchain[@]}" fuzz build --fuzz-dir "$g" -O -a --sanitizer "$sanitizer" >build.log 2>&1; then
        tail -40 build.log >&2
        echo "build failed (fuzz/build.log)" >&2
        exit 2
    fi
    echo "built in $(( $(date +%s) - start ))s"
done

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
    "${group_of[$t]}/target/x86_64-unknown-linux-gnu/release/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
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
