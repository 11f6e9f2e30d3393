#!/usr/bin/env bash
# bench/run.sh — the one command that runs the Celeriac vs Celery benchmark.
#
# Why this exists: the harness (bench.py) needs redis-server/redis-benchmark
# and a Python environment with Celery; this script provides both from a clean
# clone, then hands over to bench.py with all the arguments:
#   * installs redis-server (or, with --broker amqp, rabbitmq-server) with apt-get
#     if it is missing (as root, Debian);
#   * creates bench/.venv (git-ignored) and installs bench/requirements.txt
#     into it, again only when that file changed;
#   * exec's bench/.venv/bin/python bench/bench.py "$@" (so Ctrl-C reaches the
#     harness directly, which stops everything it started).
#
# Examples:  bench/run.sh --quick      bench/run.sh      bench/run.sh --n 50000 --repeat 5
#            bench/run.sh --callgrind    (instructions per task, bench/profile.py)
#            bench/run.sh --languages [--n 20000]  (per-language table, bench/languages.py)
#            bench/run.sh --broker amqp [--quick]   (over a private RabbitMQ node, rpc:// results)
#            bench/run.sh --tenants [--flood 20000]  (tenant B's wait behind tenant A's flood, bench/tenants.py)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"

# `apt_install PKG WHAT`: install a Debian package (as root), or say how and stop.
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$2 is missing: install it (apt-get install -y $1) and rerun" >&2
        exit 1
    fi
    echo "[bench] installing $1 with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# Which broker the harness will start (bench.py reads --broker itself).
broker=redis
prev=
for arg in "$@"; do
    case "$prev/$arg" in
        --broker/*) broker="$arg" ;;
    esac
    case "$arg" in
        --broker=*) broker="${arg#--broker=}" ;;
    esac
    prev="$arg"
done

if [ "$broker" = amqp ]; then
    if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
        apt_install rabbitmq-server rabbitmq-server
        service rabbitmq-server stop >/dev/null 2>&1 || true   # the harness runs its own node
    fi
elif ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    # Debian's package may start a system-wide redis on 6379; the harness uses its own port anyway.
    apt_install redis-server redis-server
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bench] creating $VENV" >&2
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's own python3 ships venv separately.
        rm -rf "$VENV"
        apt_install python3-venv "python3's venv module"
        "$PYTHON" -m venv "$VENV"
    fi
fi
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[bench] installing bench/requirements.txt into $VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--callgrind" ]; then
    # Instructions per task under callgrind instead of the comparison (bench/profile.py).
    shift
    if ! command -v valgrind >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        echo "[bench] installing valgrind with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    fi
    exec "$VENV/bin/python" "$HERE/profile.py" "$@"
fi
if [ "${1:-}" = "--languages" ]; then
    # The per-language table (Rust, Python, JS... guests next to Celery prefork).
    shift
    exec "$VENV/bin/python" "$HERE/languages.py" "$@"
fi
if [ "${1:-}" = "--tenants" ]; then
    # A small tenant's wait behind another tenant's flood (bench/tenants.py).
    shift
    exec "$VENV/bin/python" "$HERE/tenants.py" "$@"
fi
exec "$VENV/bin/python" "$HERE/bench.py" "$@"
