#!/usr/bin/env python3
"""Where a Celeriac worker's instructions go per task, counted by callgrind.

Why this exists: wall-clock profiles (`perf record`) on a 2-core box shared by
Redis, the worker and the client move with the load; callgrind counts the
worker's own user-space instructions, which are the same from run to run. This
script runs the release worker under `valgrind --tool=callgrind` with
instrumentation off while it starts (loading and compiling the component is not
per-task work), switches it on, lets a stock Celery client publish N
`add(i, i)` messages while the worker drains them, switches it off once N
results are stored, and prints instructions per task for the parts of the
work, inclusive (a row counts everything called beneath it; rows overlap where
noted). Kernel time (syscalls, loopback TCP) is not counted by callgrind: see
the CPU-per-task rows of `bench/run.sh` for the whole.

    bench/run.sh --callgrind            # N = 2000
    bench/run.sh --callgrind --n 5000 --keep out.callgrind

Needs valgrind (`apt-get install valgrind`). Takes about a minute after the build.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import PROCS, RedisServer, _on_signal, build  # noqa: E402  (the harness's Redis, process registry, build)

WORKER = ROOT / "target" / "release" / "celeriac"
TASKS = ROOT / "target" / "tasks"

#: (label, regex on callgrind's function name, note). Inclusive costs.
ROWS = [
    ("sandbox: instantiate the component", r"TaskComponentPre<_T>::instantiate_async::\{\{closure\}\}$", ""),
    ("sandbox: call into the guest", r"TypedFunc<Params,Return>::call_impl$", ""),
    ("sandbox: drop the store, reset the pool slot", r"drop_in_place<wasmtime::runtime::store::StoreInner<", ""),
    ("sandbox: new store (limits, WASI context)", r"^celeriac::sandbox::Sandbox::store$", ""),
    ("JSON parsing (envelope, body, result)", r"^serde_json::de::from_trait$", "overlaps the decode rows"),
    ("message: TaskMessage::decode", r"^celeriac::protocol::message::TaskMessage::decode$", ""),
    ("message: envelope to raw message (headers copy, base64)", r"Envelope::to_raw_message$", ""),
    ("message: the guest's request context", r"^celeriac::worker::request::request_context$", ""),
    ("result: build the meta", r"^celeriac::protocol::result::ResultMeta::to_value$", ""),
    ("result: serialize (Python-style JSON)", r"^celeriac::protocol::content::Serializer::encode$", ""),
    ("redis client: parse replies", r"PipelineSink<T>::poll_read$", ""),
    ("redis client: write commands", r"PipelineSink<T> as futures_sink::Sink<.*>>::poll_flush$", ""),
    ("redis client: encode pipelines", r"^redis::pipeline::encode_pipeline$", ""),
    ("acknowledgements (RedisBroker::ack)", r"RedisBroker::ack::\{\{closure\}\}$", ""),
    ("log span per task (tags guest output)", r"TaskTagLayer as tracing_subscriber::layer::Layer<S>>::on_new_span$", ""),
    ("malloc (mimalloc), everywhere", r"^mi_malloc_aligned$", "cross-cutting"),
    ("memset, everywhere", r"^__memset_\w+$", "cross-cutting"),
    ("memcpy, everywhere", r"^__memcpy_\w+$", "cross-cutting"),
]


def parse_callgrind(path: Path) -> tuple[int, dict[str, int]]:
    """Total instructions and each function's inclusive count from a callgrind file."""
    names: dict[str, str] = {}
    self_cost: collections.Counter[str] = collections.Counter()
    callee_cost: collections.Counter[str] = collections.Counter()

    def name_of(spec: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if not m:
            return spec
        ident, name = m.groups()
        if name:
            names[ident] = name
        return names.get(ident, ident)

    current = callee = None
    in_call = False
    with path.open() as f:
        for line in f:
            if line.startswith("fn="):
                current = name_of(line[3:].strip())
            elif line.startswith("cfn="):
                callee = name_of(line[4:].strip())
            elif line.startswith("calls="):
                in_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) < 2 or current is None:
                    continue
                cost = int(parts[1])
                if in_call:
                    if callee != current:  # a recursive call is already in the caller's own costs
                        callee_cost[current] += cost
                    in_call = False
                else:
                    self_cost[current] += cost
    inclusive = {fn: self_cost[fn] + callee_cost[fn] for fn in set(self_cost) | set(callee_cost)}
    return sum(self_cost.values()), inclusive


def report(total: int, inclusive: dict[str, int], n: int) -> str:
    lines = [f"callgrind: {total / n:,.0f} instructions per task in the worker's user space "
             f"({total:,} for {n:,} tasks)", ""]
    width = max(len(label) for label, _, _ in ROWS)
    for label, pattern, note in ROWS:
        rx = re.compile(pattern)
        cost = max((v for fn, v in inclusive.items() if rx.search(fn)), default=None)
        if cost is None:  # renamed or inlined away: say so rather than print a zero
            lines.append(f"  {label:<{width}}  {'not found':>9}  (no function matches {pattern!r})")
            continue
        suffix = f"   ({note})" if note else ""
        lines.append(f"  {label:<{width}}  {cost / n:>9,.0f}  {cost / total * 100:5.1f} %{suffix}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="tasks to profile (default 2000)")
    ap.add_argument("--keep", type=Path, help="keep the callgrind output file here")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is missing: apt-get install -y valgrind", file=sys.stderr)
        return 1
    if not args.no_build:
        build()
    tmp = Path(tempfile.mkdtemp(prefix="celeriac-callgrind-"))
    server = RedisServer(tmp)
    out = tmp / "callgrind.out"
    worker = None
    try:
        broker, backend = server.url(0), server.url(1)
        worker = PROCS.spawn("celeriac (callgrind)", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            str(WORKER), "worker", "-A", str(TASKS), "--broker", broker, "--result-backend", backend,
            "-c", "2", "-l", "WARNING"], tmp / "worker.log")
        r0, r1 = redis.Redis.from_url(broker), redis.Redis.from_url(backend)
        # The worker declares its queue once the component is loaded (under
        # valgrind the compiled-code cache may not match: a minute or so).
        deadline = time.monotonic() + 600
        while not r0.exists("_kombu.binding.celery"):
            if worker.poll() is not None or time.monotonic() > deadline:
                print((tmp / "worker.log").read_text(), file=sys.stderr)
                raise RuntimeError("the worker did not come up under valgrind")
            time.sleep(0.5)
        time.sleep(3)  # its event loops connect

        os.environ["BENCH_BROKER_URL"], os.environ["BENCH_RESULT_BACKEND"] = broker, backend
        from benchtasks import add, app  # the bench's stock Celery client app (tasks.add)
        subprocess.run(["callgrind_control", "-i", "on", str(worker.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        with app.producer_or_acquire() as producer:
            for i in range(args.n):
                add.apply_async((i, i), producer=producer)
        while r1.dbsize() < args.n:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"only {r1.dbsize()} of {args.n} results after 10 minutes")
            time.sleep(0.05)
        subprocess.run(["callgrind_control", "-i", "off", str(worker.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["callgrind_control", "-d", str(worker.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.stop(worker, timeout=60)
        dumps = sorted(tmp.glob("callgrind.out*"), key=lambda p: p.stat().st_size)
        dump = dumps[-1]  # the explicit dump (the exit dump holds only what came after "off")
        total, inclusive = parse_callgrind(dump)
        print(report(total, inclusive, args.n))
        if args.keep:
            shutil.copy(dump, args.keep)
            print(f"\ncallgrind output kept in {args.keep} (callgrind_annotate {args.keep})")
        return 0
    finally:
        if worker is not None:
            PROCS.stop(worker, timeout=5)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
