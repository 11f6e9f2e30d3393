"""A quick Celeriac-vs-Celery measurement over RabbitMQ (pyamqp:// + rpc://).

Why this exists: ``bench/bench.py`` measures the Redis transport only; until it
grows ``--broker amqp``, this script gives comparable numbers for AMQP with the
same client code on both sides. It starts a private RabbitMQ node (the test
suite's ``RabbitServer``: free loopback ports, temp dir, no plugins) and, for
each worker, a fresh vhost:

* drain: N ``tasks.add`` messages published first (``ignore_result``), then the
  worker starts; from its ready line, time until the queue is empty;
* end to end: N ``add.delay`` published with one producer while the worker
  runs, then every rpc result collected;
* latency: sequential ``add.delay(i, i).get()`` round trips (p50 / p99).

    .venv/bin/python bench/amqp_quick.py [--n 5000] [--latency-n 200] [--bin target/release/celeriac]

The Python worker is ``celery -A standin_tasks worker -c 2`` (prefork), the
stand-in of the test suite, with the same task names.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import ManagedProcess, RabbitServer, _base_env  # noqa: E402


def queue_ready(server: RabbitServer, vhost: str, queue: str = "celery") -> int:
    import amqp as pyamqp
    conn = pyamqp.Connection(host=f"127.0.0.1:{server.port}", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        ch = conn.channel()
        _, count, _ = ch.queue_declare(queue, durable=True, auto_delete=False)
        ch.close()
        return count
    finally:
        conn.close()


def start_worker(kind: str, server: RabbitServer, vhost: str, tmp: Path, binary: Path) -> ManagedProcess:
    url = server.url(vhost)
    if kind == "celeriac":
        argv = [str(binary), "worker", "-A", str(REPO / "target" / "tasks"), "--broker", url, "--result-backend",
                "rpc://", "-c", "2", "--loglevel=INFO"]
        env = _base_env({k: v for k, v in os.environ.items() if k.startswith("CELERIAC_")})
        cwd = REPO
    else:
        cfg = tmp / f"{vhost}.toml"
        cfg.write_text(f'broker_url = "{url}"\nresult_backend = "rpc://"\n')
        argv = [sys.executable, "-m", "celery", "-A", "standin_tasks", "worker", "-c", "2", "--loglevel=INFO",
                "--without-mingle", "--without-gossip", "--without-heartbeat", "-n", f"bench-{vhost}@%h"]
        env = _base_env({"PYTHONPATH": str(REPO / "tests"), "STANDIN_CONFIG": str(cfg)})
        cwd = REPO / "tests"
    proc = ManagedProcess(f"{kind}-worker", argv, tmp / f"{kind}-{vhost}.log", env=env, cwd=cwd).start()
    proc.wait_ready(60)
    return proc


def client(server: RabbitServer, vhost: str):
    from celery import Celery
    app = Celery("tasks", broker=server.url(vhost), backend="rpc://", set_as_current=False)

    @app.task(name="tasks.add")
    def add(x, y):
        return x + y

    return app, add


def measure(kind: str, server: RabbitServer, args, tmp: Path) -> dict:
    out: dict = {"worker": kind}
    # Drain: messages first, then the worker.
    vhost = server.vhost()
    app, add = client(server, vhost)
    with app.producer_or_acquire() as producer:
        for i in range(args.n):
            add.apply_async((i, i), producer=producer, ignore_result=True)
    w = start_worker(kind, server, vhost, tmp, args.bin)
    start = time.monotonic()
    left = queue_ready(server, vhost)
    while queue_ready(server, vhost) > 0:
        time.sleep(0.02)
    out["drain_tasks_per_s"] = left / (time.monotonic() - start)
    out["drain_note"] = f"{left} messages still queued when the worker logged ready"
    # End to end with rpc results, same worker.
    start = time.monotonic()
    with app.producer_or_acquire() as producer:
        results = [add.apply_async((i, i), producer=producer) for i in range(args.n)]
    published = time.monotonic()
    for i, r in enumerate(results):
        assert r.get(timeout=300) == 2 * i
    end = time.monotonic()
    out["e2e_tasks_per_s"] = args.n / (end - start)
    out["publish_msgs_per_s"] = args.n / (published - start)
    # Latency.
    samples = []
    for i in range(args.latency_n):
        t0 = time.perf_counter()
        assert add.delay(i, i).get(timeout=30) == 2 * i
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    out["latency_p50_ms"] = statistics.median(samples)
    out["latency_p99_ms"] = samples[int(len(samples) * 0.99) - 1]
    w.stop()
    app.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--bin", type=Path, default=REPO / "target" / "debug" / "celeriac")
    ap.add_argument("--workers", default="celeriac,celery")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="celeriac-amqp-bench-"))
    server = RabbitServer(tmp / "rabbitmq")
    server.start()
    try:
        rows = [measure(k, server, args, tmp) for k in args.workers.split(",")]
    finally:
        server.stop()
    print(json.dumps({"n": args.n, "bin": str(args.bin), "cpus": os.cpu_count(),
                      "loadavg": os.getloadavg(), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
