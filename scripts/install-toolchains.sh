#!/usr/bin/env bash
# Installs the guest-language toolchains `celeriac build` calls (issue #12), for
# CI (.ci/run, as root on a clean Debian 12) and for developers of this
# repository. Idempotent: what is already there is kept.
#
#   bash scripts/install-toolchains.sh              # every language below
#   bash scripts/install-toolchains.sh python c     # only these
#
# Sections (each a function install_<lang>):
#   rust    the wasm32-wasip2 target (rustup)
#   python  componentize-py 0.25.1 into the repository's .venv (created if
#           missing); the Makefile puts .venv/bin on PATH for `celeriac build`.
#           Outside this repository: `pip install componentize-py==0.25.1`.
#   c       Debian's clang, lld, wasi-libc and the wasm32 compiler runtime (apt,
#           ~7 s). celeriac generates the C bindings and encodes the component itself.
#   zig     ziglang 0.17.1 from PyPI into the repository's .venv (~15 s, 411 MB);
#        `celeriac build` runs `python3 -m ziglang` (the Makefile and the tests put
#        .venv/bin on PATH), or `zig` from the PATH, or $CELERIAC_ZIG. The first
#        Zig build compiles Zig's translate-c and wasi-libc (~1-2 min, cached in ~/.cache/zig).
#   js      componentize-qjs 0.4.5 (npm, ~40 MB) into example-tasks/js/node_modules,
#        exactly what a user's `npm install` does in a project from the template.
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

ZIGLANG_VERSION=0.17.1
COMPONENTIZE_QJS_VERSION=0.4.5

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_c() {
    apt_install clang lld wasi-libc libclang-rt-dev-wasm32
    clang --version | head -1
}

install_zig() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ "$(.venv/bin/python -m ziglang version 2>/dev/null)" = "$ZIGLANG_VERSION" ]; then
        echo "ziglang $ZIGLANG_VERSION already in .venv"
    else
        .venv/bin/python -m pip install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
    fi
    echo "zig $(.venv/bin/python -m ziglang version)"
}

install_js() {
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local bin=example-tasks/js/node_modules/.bin/componentize-qjs
    if [ -x "$bin" ] && grep -q "\"version\": \"$COMPONENTIZE_QJS_VERSION\"" \
            example-tasks/js/node_modules/componentize-qjs/package.json 2>/dev/null; then
        echo "componentize-qjs $COMPONENTIZE_QJS_VERSION already in example-tasks/js/node_modules"
    else
        (cd example-tasks/js && npm install --no-audit --no-fund --loglevel=error)
    fi
    echo "componentize-qjs $COMPONENTIZE_QJS_VERSION: $bin"
}

ALL=(rust python c zig js)
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
