"""The Celery app of the benchmark, shared by both sides of the comparison.

Why this exists: Celeriac is measured against Celery with *the same client
code*, so one module defines the app the client publishes with
(``bench/client.py``) and the app the Python Celery worker runs
(``celery -A benchtasks worker ...``). The task is registered as ``tasks.add``,
the name ``target/tasks/tasks.wasm`` serves, so the very same messages go to
either worker.

The broker and result backend URLs come from the environment
(``BENCH_BROKER_URL``, ``BENCH_RESULT_BACKEND``), set by ``bench/bench.py`` to
its own redis-server. Everything else is Celery's default (JSON, protocol 2,
``result_expires`` one day, prefetch multiplier 4, early acks).
"""

import os
import sys

from celery import Celery, signals

app = Celery(
    "benchtasks",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/1"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="tasks.add")
def add(x, y):
    """``add(x, y)``: the sum, like Celery's first-steps task."""
    return x + y


# The same task under two tenants' names, for bench/tenants.py (a.tasks.add on
# queue a, b.tasks.add on queue b).
@app.task(name="a.tasks.add")
def tenant_a_add(x, y):
    return x + y


@app.task(name="b.tasks.add")
def tenant_b_add(x, y):
    return x + y


@signals.worker_ready.connect
def _say_ready(sender=None, **_kwargs):
    """Print Celery's "ready." line even at ``-l WARNING`` (Celery logs it at
    INFO), so the worker's log shows when it started consuming."""
    print(f"{getattr(sender, 'hostname', 'celery')} ready.", file=sys.stderr, flush=True)
