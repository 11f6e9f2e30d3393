#!/usr/bin/env bash
# bench/chaos.sh — the one command that runs the chaos suite (bench/chaos.py, issue #15).
#
# Why this exists: the suite needs redis-server, rabbitmq-server, iproute2 (ip netns) and a
# Python environment with Celery; this script provides them from a clean clone, as
# bench/run.sh does (same bench/.venv, same bench/requirements.txt), then hands over:
#   * installs redis-server / rabbitmq-server / iproute2 with apt-get if missing (as root, Debian);
#   * creates bench/.venv (git-ignored) and installs bench/requirements.txt, only when it changed;
#   * exec's the venv's python bench/chaos.py "$@".
# It never rebuilds the worker: it runs $CELERIAC_BIN (default target/debug/celeriac).
#
# Examples:  bench/chaos.sh --quick          (1,000 tasks, one event of each kind, ~6 min for all 10 runs)
#            bench/chaos.sh --scenario kill --transport redis      (10,000 tasks)
#            CELERIAC_BIN=target/release/celeriac bench/chaos.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CHAOS_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$2 is missing: install it (apt-get install -y $1) and rerun" >&2
        exit 1
    fi
    echo "[chaos] installing $1 with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-server
command -v ip >/dev/null 2>&1 || apt_install iproute2 "the ip command"
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    apt_install rabbitmq-server rabbitmq-server
    service rabbitmq-server stop >/dev/null 2>&1 || true   # the suite runs its own node
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[chaos] creating $VENV" >&2
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        apt_install python3-venv "python3's venv module"
        "$PYTHON" -m venv "$VENV"
    fi
fi
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[chaos] installing bench/requirements.txt into $VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" > "$stamp"
fi
exec "$VENV/bin/python" "$HERE/chaos.py" "$@"
