#!/usr/bin/env bash
# The main job on a fresh machine, setup included: build the example task
# component and the worker, start a worker on the embedded default (a local
# SQLite file, no Redis or RabbitMQ needed), send tasks.add(4, 4) exactly as a
# Celery client would, and print the result: 8.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

make tasks
cargo build -p celeriac
bin="$root/target/debug/celeriac"

# Worker and client share ./celeriac.sqlite in a scratch directory.
work=$(mktemp -d)
cd "$work"
"$bin" worker -A "$root/target/tasks" --loglevel INFO >"$work/worker.log" 2>&1 &
worker=$!
trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true' EXIT

echo "celeriac call tasks.add 4 4 --wait   (worker log: $work/worker.log)"
if ! "$bin" call tasks.add 4 4 --wait --timeout 60; then
    echo "the call failed; worker log:" >&2
    tail -n 30 "$work/worker.log" >&2
    exit 1
fi
