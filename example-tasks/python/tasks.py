"""The example Python task component: Celery's First Steps tasks, written as Celery users write them.

Built by ``make tasks-python`` (``celeriac build example-tasks/python -o
target/lang-tasks/python/tasks.wasm``), a worker with ``-A
target/lang-tasks/python`` serves ``tasks.add``, ``tasks.mul``, ``tasks.xsum``
and the tasks below that raise, trap, report progress or retry, which the
integration tests (tests/test_lang_python.py) drive with a stock Celery client.
"""

import os

from celeriac import Ignore, config, get_task_logger, http, task

logger = get_task_logger(__name__)


@task
def add(x, y):
    return x + y


@task
def mul(x, y):
    return x * y


@task
def xsum(numbers):
    return sum(numbers)


_calls = 0


@task
def calls():
    """How many calls this instance has served: always 1 by default (every call
    gets a fresh instance), counting up to the task's ``max_calls_per_instance``
    when the worker keeps instances between calls."""
    global _calls
    _calls += 1
    return _calls


@task
def fail():
    """Raises ValueError("bad value"): the client re-raises a builtins ValueError."""
    raise ValueError("bad value")


class InvoiceNotFound(Exception):
    """An exception class of the task's own: the client sees ``tasks.InvoiceNotFound``."""


@task
def lookup(invoice_id):
    raise InvoiceNotFound(f"no invoice {invoice_id}", invoice_id)


@task
def crash():
    """Traps, as a Rust panic does: os.abort() ends the instance, the worker reports a FAILURE."""
    os.abort()


@task(bind=True)
def progress(self, steps):
    """Reports PROGRESS after each step (Celery's update_state), logs, and returns its own task id."""
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": steps})
        logger.info("step %d of %d", i + 1, steps)
    return self.request.id


@task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, succeed_after):
    """Retries (countdown 0) until it has been retried ``succeed_after`` times, then returns the retry count."""
    if self.request.retries < succeed_after:
        raise self.retry(countdown=0, exc=ValueError(f"attempt {self.request.retries}"))
    return self.request.retries


@task(rate_limit="100/s", autoretry_for=(KeyError,), max_retries=1, default_retry_delay=0)
def declared(key):
    """Declares options (visible in the worker's task listing); a KeyError is retried once by the worker."""
    return {"a": 1}[key]


@task
def spawn(x, y):
    """Sends ``add(x, y)`` as a child task (Celery's ``add.delay(x, y)``) and returns its id.

    Needs the worker's grant: ``send_tasks = true`` in the task's ``task_annotations``."""
    return add.delay(x, y).id


@task(bind=True)
def replaced(self, x):
    """Replaces itself with ``add(x, 1) | mul(10)``: the client gets ``(x + 1) * 10`` (needs ``send_tasks``)."""
    raise self.replace(add.s(x, 1) | mul.s(10))


@task(bind=True)
def routing(self, ignore=False):
    """The queue the message came through (``self.request.delivery_info``); with ``ignore``, Celery's
    ``raise Ignore()``: nothing is stored."""
    if ignore:
        raise Ignore()
    return self.request.delivery_info["routing_key"]


@task
def setting(key):
    """A value of the tenant's ``[config]`` (its tenant.toml), ``"unset"`` when there is none."""
    return config(key, "unset")


@task
def fetch(url, payload=None, method=None, **options):
    """Sends ``method`` (GET, or POST when there is a ``payload``, sent as JSON) to ``url`` through the worker's
    wasi:http and returns ``[status, content-type, body]``; raises HTTPError for a 4xx/5xx. ``options`` are
    ``celeriac.http.request``'s (``params``, ``headers``, ``timeout``: 10 s unless given). The worker sends it only
    to a host the task's ``http_allow`` grants (``task_annotations``, or the tenant's ``tenant.toml``)."""
    options.setdefault("timeout", 10)
    r = http.request(method or ("POST" if payload is not None else "GET"), url, json=payload, **options)
    r.raise_for_status()
    return [r.status_code, r.headers.get("Content-Type"), r.text]
