#!/usr/bin/env python3
"""Fair scheduling across tenants: how long a small tenant waits behind a flood.

Why this exists: a platform runs many tenants on one worker fleet, and one
tenant flooding its queue must not starve the others (issue #13). Tenant A
enqueues ``--flood`` tasks (default 20,000) to its queue ``a``; tenant B then
enqueues ``--b`` tasks (default 20) to its queue ``b``; only then does the
worker start, with ``-c 2``, consuming both queues. Reported for each worker:
B's wait per task (its result's ``date_done`` minus the moment the worker took
its first message, so start-up time does not count; p50, p99, max), A's
backlog still queued when B's last task was done, and how long A's whole
flood took from the worker's start.

Celeriac serves ``a.tasks.add`` and ``b.tasks.add`` from a task directory with
one tenant per subdirectory (``a/tasks.wasm``, ``b/tasks.wasm``, each with a
``tenant.toml`` naming its queue), so it consumes both queues without ``-Q``.
The reference is Celery prefork ``-c 2 -Q a,b`` running the same task names
(``bench/benchtasks.py``), which also cycles its queues. The client is a stock
Celery app routing by ``task_routes``. Nothing is asserted; the figures are
printed and written to ``bench/results/tenants-<stamp>.json``.

Run it through ``bench/run.sh --tenants [--flood N] [--no-build]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (RedisServer, PROCS, build, CELERIAC)

ROUTES = {"a.*": {"queue": "a"}, "b.*": {"queue": "b"}}


def client_app(server: "bench.RedisServer"):
    from celery import Celery

    app = Celery("tenants", broker=server.broker_url, backend=server.backend_url, set_as_current=False)
    app.conf.update(task_routes=ROUTES, broker_connection_retry_on_startup=True)
    return app


def run_one(kind: str, server: "bench.RedisServer", args, logdir: Path, tasks_dir: Path) -> dict:
    server.fresh()
    app = client_app(server)
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(args.flood):
            app.send_task("a.tasks.add", (i, i), ignore_result=True, producer=producer)
    flood_s = time.perf_counter() - t0
    sent = []
    for i in range(args.b):
        sent.append((time.time(), app.send_task("b.tasks.add", (i, 1))))
    if kind == "celery":
        cmd = [str(Path(sys.executable).parent / "celery"), "-A", "benchtasks", "worker", "--pool=prefork",
               "-c", "2", "-Q", "a,b", "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = dict(os.environ, BENCH_BROKER_URL=server.broker_url, BENCH_RESULT_BACKEND=server.backend_url)
    else:
        cmd = [str(bench.CELERIAC), "worker", "-A", str(tasks_dir), "--broker", server.broker_url,
               "--result-backend", server.backend_url, "-c", "2", "-l", "WARNING"]
        env = None
    started = time.perf_counter()
    proc = bench.PROCS.spawn(f"{kind} worker", cmd, logdir / f"tenants-{kind}.log", cwd=HERE, env=env)
    try:
        # Serving from the first message the worker takes (start-up time is not a tenant's wait).
        deadline = time.time() + 120
        while server.db0.llen("a") == args.flood and server.db0.llen("b") == args.b and time.time() < deadline:
            time.sleep(0.001)
        serving = time.time()
        waits = []
        for when, r in sent:
            r.get(timeout=600)
            done = r.date_done
            if done.tzinfo is None:
                done = done.replace(tzinfo=dt.timezone.utc)
            waits.append(done.timestamp() - max(when, serving))
        left = server.db0.llen("a")
        while server.db0.llen("a") > 0:
            time.sleep(0.05)
        drained_s = time.perf_counter() - started
    finally:
        bench.PROCS.stop(proc)
        app.close()
    waits.sort()
    return {
        "worker": kind,
        "b_wait_p50_s": statistics.median(waits),
        "b_wait_p99_s": waits[min(len(waits) - 1, int(0.99 * len(waits)))],
        "b_wait_max_s": waits[-1],
        "a_left_when_b_done": left,
        "a_drain_s": drained_s,
        "flood_publish_s": flood_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="B's wait behind A's flood, Celeriac vs Celery (bench/tenants.py)")
    ap.add_argument("--flood", type=int, default=20_000, help="tenant A's tasks (default 20000)")
    ap.add_argument("--b", type=int, default=20, help="tenant B's tasks (default 20)")
    ap.add_argument("--workers", default="celery,celeriac")
    ap.add_argument("--no-build", action="store_true", help="use the existing release build and target/tasks")
    args = ap.parse_args()
    if not args.no_build:
        bench.build()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = HERE / "results" / f"tenants-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    tasks_dir = Path(tempfile.mkdtemp(prefix="celeriac-bench-tenants-"))
    for t in ("a", "b"):
        (tasks_dir / t).mkdir()
        shutil.copy(bench.ROOT / "target" / "tasks" / "tasks.wasm", tasks_dir / t / "tasks.wasm")
        (tasks_dir / t / "tenant.toml").write_text(f'queue = "{t}"\n')
    server = bench.RedisServer(logdir)
    rows = []
    try:
        for kind in args.workers.split(","):
            rows.append(run_one(kind, server, args, logdir, tasks_dir))
            r = rows[-1]
            print(f"{kind:9} B wait p50 {r['b_wait_p50_s'] * 1000:8.1f} ms  p99 {r['b_wait_p99_s'] * 1000:8.1f} ms  "
                  f"max {r['b_wait_max_s'] * 1000:8.1f} ms | A left when B done {r['a_left_when_b_done']:6} of "
                  f"{args.flood} | A drained in {r['a_drain_s']:6.2f} s", flush=True)
    finally:
        server.stop()
        bench.PROCS.stop_all()
        shutil.rmtree(tasks_dir, ignore_errors=True)
    out = HERE / "results" / f"tenants-{stamp}.json"
    out.write_text(json.dumps({"flood": args.flood, "b": args.b, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
