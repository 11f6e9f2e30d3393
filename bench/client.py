"""The Celery client side of the benchmark: publishes ``tasks.add`` messages
and measures round-trip latency, with a stock Celery client.

Why this exists: ``bench/bench.py`` runs it as a separate process (with the
harness's venv Python) so that publishing, and the pub/sub subscriptions a
Celery client opens for every task it sends with results on, never share a
process or a Redis connection with the harness's own polling. It prints one
JSON object on stdout.

    python client.py publish --n 20000 [--ignore-result] [--reply-to QUEUE]
        -> {"n", "first", "last"}   (time.time() of the first and last publish)
    python client.py latency --n 1000 [--warmup 50]
        -> {"n", "samples_ms": [...]}   (sequential add.delay(i, i).get())

Publishing uses ``add.apply_async`` with one producer taken from the app's
pool, i.e. exactly what Celery puts on the wire, one LPUSH per task.
"""

import argparse
import json
import sys
import time

from benchtasks import add, app


def publish(n: int, ignore_result: bool, reply_to: str | None) -> dict:
    """Send ``add(i, i)`` for i in 0..n with one shared producer; with
    ``reply_to`` (rpc://), results go to that queue instead of this client's."""
    options = {"ignore_result": True} if ignore_result else {}
    if reply_to:
        options["reply_to"] = reply_to
    with app.producer_or_acquire() as producer:
        # The first publish connects and declares the queue: not timed apart,
        # it is part of what a client pays.
        first = time.time()
        for i in range(n):
            add.apply_async((i, i), producer=producer, **options)
        last = time.time()
    return {"n": n, "first": first, "last": last}


def latency(n: int, warmup: int, timeout: float) -> dict:
    """``add.delay(i, i).get()`` n times in a row; milliseconds per round trip."""
    for i in range(warmup):
        add.delay(i, i).get(timeout=timeout)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        value = add.delay(i, i).get(timeout=timeout)
        samples.append((time.perf_counter() - t) * 1e3)
        if value != 2 * i:
            raise SystemExit(f"add({i}, {i}) returned {value!r}")
    return {"n": n, "warmup": warmup, "samples_ms": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish", help="publish N add(i, i) messages")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--ignore-result", action="store_true")
    p.add_argument("--reply-to", default=None, help="rpc:// results to this queue (the harness counts it)")
    l = sub.add_parser("latency", help="N sequential add.delay(i, i).get()")
    l.add_argument("--n", type=int, default=1000)
    l.add_argument("--warmup", type=int, default=50)
    l.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    if args.cmd == "publish":
        out = publish(args.n, args.ignore_result, args.reply_to)
    else:
        out = latency(args.n, args.warmup, args.timeout)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
