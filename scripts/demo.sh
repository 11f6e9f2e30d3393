#!/usr/bin/env bash
# The main job on a fresh machine, setup included: build the example task
# component and the worker, start a worker on the embedded default (a local
# SQLite file, no Redis or RabbitMQ needed), send tasks.add(4, 4) exactly as a
# Celery client would, and print the result: 8.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

# The release build the README uses everywhere (`make install` reuses it).
make tasks-rust build
bin="$root/target/release/celeriac"

# Worker and client share ./celeriac.sqlite in a scratch directory, removed at exit.
work=$(mktemp -d)
worker=
cleanup() {
    if [ -n "$worker" ]; then
        kill "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
"$bin" -A "$root/target/tasks" worker --loglevel INFO >"$work/worker.log" 2>&1 &
worker=$!

echo "celeriac call tasks.add 4 4 --wait"
if ! "$bin" call tasks.add 4 4 --wait --timeout 60; then
    echo "the call failed; worker log:" >&2
    tail -n 30 "$work/worker.log" >&2
    exit 1
fi
