"""Harness self-check only: a Python imitation of target/tasks/tasks.wasm.

With ``CELERIAC_TEST_STANDIN=python`` the ``worker`` fixture starts a real
Python Celery worker on this module instead of ``celeriac worker``, so the
harness and the assertions can be checked against stock Celery behaviour.
The worker's TOML config (same Celery setting names) is read from
``$STANDIN_CONFIG``. Sandbox-only keys (fuel, max_memory) are ignored.
"""
import os
import time
import tomllib

from celery import Celery, chord
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

app = Celery("tasks")
# Be as robust as celeriac must be: retry result writes across a redis restart.
app.conf.update(result_backend_always_retry=True, result_backend_max_retries=30)
_cfg = os.environ.get("STANDIN_CONFIG")
if _cfg:
    with open(_cfg, "rb") as f:
        app.conf.update(tomllib.load(f))
    if app.conf.task_serializer == "auth":
        # What a Celery app that signs its messages calls (celeriac reads the same settings).
        app.setup_security()


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.xsum")
def xsum(numbers):
    return sum(numbers)


@app.task(name="tasks.div")
def div(a, b):
    return a / b


@app.task(name="tasks.fail")
def fail(msg):
    raise ValueError(msg)


@app.task(name="tasks.panic")
def panic(msg):
    raise RuntimeError(f"task panicked: {msg}")


@app.task(name="tasks.spin")
def spin():
    while True:
        pass


@app.task(name="tasks.hog", bind=True)
def hog(self):
    # A real MemoryError makes the prefork pool shut the whole worker down, so
    # store the FAILURE a sandboxed worker would write and skip Celery's own.
    self.update_state(state="FAILURE", meta={"exc_type": "MemoryError", "exc_module": "builtins",
                                             "exc_message": ["simulated: memory limit exceeded"]})
    raise Ignore()


@app.task(name="tasks.deep")
def deep(n=0):
    return deep(n + 1)


@app.task(name="tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.progress", bind=True)
def progress(self, n):
    for i in range(n):
        self.update_state(state="PROGRESS", meta={"current": i, "total": n})
        time.sleep(0.05)
    return n


class ExpectedException(Exception):
    pass


@app.task(name="tasks.flaky", bind=True, max_retries=3, default_retry_delay=1)
def flaky(self, n, countdown=None):
    if self.request.retries < n:
        exc = ValueError("flaky: attempt %d of %d" % (self.request.retries + 1, n + 1))
        raise self.retry(exc=exc, countdown=0.1 if countdown is None else countdown)
    return self.request.retries


@app.task(name="tasks.autoflaky", bind=True, autoretry_for=(ValueError,), max_retries=5,
          retry_backoff=1, retry_backoff_max=1, retry_jitter=False)
def autoflaky(self, n):
    if self.request.retries < n:
        raise ValueError("autoflaky: attempt %d" % (self.request.retries + 1))
    return self.request.retries


@app.task(name="tasks.expected_fail")
def expected_fail():
    raise ExpectedException("Task expected to fail", "test")


@app.task(name="tasks.limited", rate_limit="2/s")
def limited():
    return True


@app.task(name="tasks.spawn")
def spawn(x, y):
    return add.delay(x, y).id


@app.task(name="tasks.replaced", bind=True)
def replaced(self, x):
    raise self.replace(add.s(x, 1) | mul.s(10))


@app.task(name="tasks.fanout")
def fanout(n):
    return chord(add.s(i, i) for i in range(n))(xsum.s()).id


@app.task(name="tasks.crunch")
def crunch(seconds):
    rounds = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(0.01)
            rounds += 1
    except SoftTimeLimitExceeded:
        return {"partial": True, "rounds": rounds}
    return {"partial": False, "rounds": rounds}


@app.task(name="tasks.give_up")
def give_up():
    # Celery interrupts the task with SoftTimeLimitExceeded at its soft limit; this one just waits for it.
    time.sleep(30)
    return "no limit"


@app.task(name="tasks.where_from", bind=True)
def where_from(self):
    return self.request.delivery_info


@app.task(name="tasks.ignored")
def ignored():
    raise Ignore()


@app.task(name="tasks.bounce", bind=True, acks_late=True)
def bounce(self):
    if self.request.delivery_info.get("redelivered"):
        return "redelivered"
    raise Reject(requeue=True)


@app.task(name="tasks.grow_chord", bind=True)
def grow_chord(self, x):
    self.add_to_chord(add.s(x, 100))
    return x


@app.task(name="tasks.routed", bind=True, queue="slow")
def routed(self):
    return self.request.delivery_info["routing_key"]


@app.task(name="tasks.context", bind=True)
def context(self):
    r = self.request
    return {"id": r.id, "name": r.task, "retries": r.retries, "root_id": r.root_id, "parent_id": r.parent_id,
            "group_id": r.group, "hostname": r.hostname}


@app.task(name="tasks.spawn_context")
def spawn_context():
    return context.delay().id


@app.task(name="tasks.log")
def log(msg):
    # Celery sends a task's stdout to its log as a WARNING line: "... stdout: <msg>" as Celeriac writes it.
    print(f"stdout: {msg}")
