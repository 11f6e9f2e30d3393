#!/usr/bin/env bash
# Installs the guest-language toolchains `celeriac build` calls (issue #12), for
# CI (.ci/run, as root on a clean Debian 12) and for developers of this
# repository. Idempotent: what is already there is kept.
#
#   bash scripts/install-toolchains.sh              # every language below
#   bash scripts/install-toolchains.sh python       # only these
#
# Sections (each a function install_<lang>):
#   rust    the wasm32-wasip2 target (rustup)
#   python  componentize-py 0.25.1 into the repository's .venv (created if
#           missing); the Makefile puts .venv/bin on PATH for `celeriac build`.
#           Outside this repository: `pip install componentize-py==0.25.1`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPONENTIZE_PY_VERSION=0.25.1

install_rust() {
    if ! command -v rustup >/dev/null 2>&1; then
        echo "rustup is not installed: curl --proto '=https' -sSf https://sh.rustup.rs | sh" >&2
        return 1
    fi
    rustup target add wasm32-wasip2
}

install_python() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if .venv/bin/componentize-py --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
        echo "componentize-py $COMPONENTIZE_PY_VERSION already in .venv"
    else
        .venv/bin/python -m pip install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    .venv/bin/componentize-py --version
}

ALL=(rust python)
langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=("${ALL[@]}")
for lang in "${langs[@]}"; do
    if ! declare -F "install_$lang" >/dev/null; then
        echo "unknown language '$lang' (known: ${ALL[*]})" >&2
        exit 2
    fi
    printf -- '--- %s toolchain\n' "$lang"
    "install_$lang"
done
