#!/usr/bin/env bash
# The project's test command (run from anywhere): builds the guest tasks and
# the worker, runs the Rust unit tests, then the Python integration tests.
#   bash tests/run-all.sh            # everything
#   PYTEST_ARGS="-k first_steps" bash tests/run-all.sh
# Needs: cargo + wasm32-wasip2 target, redis-server on PATH, and .venv with
# tests/requirements.txt (created here if missing; .ci/run does all of it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n===== %s =====\n' "$*"; }
failed=()

section "make tasks (guest components -> target/tasks/)"
make tasks

section "make test-tasks (hostile test-only components -> target/test-tasks/)"
make test-tasks

section "cargo build -p celeriac -p celeriac-bench (the bench binary: tests/test_bench_languages.py)"
cargo build -p celeriac -p celeriac-bench

section "cargo test -p celeriac-protocol -p celeriac -p celeriac-bench (unit tests, capture tests, sandbox tests against target/tasks)"
if ! cargo test -p celeriac-protocol -p celeriac -p celeriac-bench; then
    failed+=("cargo test -p celeriac-protocol -p celeriac -p celeriac-bench")
fi

# A separate invocation: testing the SDK in the same one would unify features
# of shared dependencies differently and rebuild wasmtime a second time.
section "cargo test -p celeriac-sdk -p celeriac-sdk-macros (guest SDK on the host)"
if ! cargo test -p celeriac-sdk -p celeriac-sdk-macros; then
    failed+=("cargo test (sdk)")
fi

section "pytest tests/ (integration: Python Celery client <-> celeriac worker <-> redis)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
# shellcheck disable=SC2086
if ! .venv/bin/python -m pytest tests -q -p no:cacheprovider ${PYTEST_ARGS:-}; then
    failed+=("pytest")
fi

section "summary"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test stages passed"
