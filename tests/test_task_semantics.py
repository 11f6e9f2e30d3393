"""Celery task semantics: rate limits, every ``task_routes`` form, expiry checked at start (issue #16).

Rate limits are Celery's per-worker token bucket (``rate_limit`` from
``task_annotations``, ``"*"`` included, and ``task_default_rate_limit``), but
precise and non-blocking: Celery 5.7 takes ~26 s for 60 calls at ``20/s`` and
holds unlimited tasks behind them, so the precision test is ``standin_xfail``.
Routes are checked against Celery's own router: each TOML form is given to
``celeriac call`` and its Python equivalent to ``app.amqp.router``, and the
message must land where Celery would put it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from celery.result import AsyncResult

from conftest import CELERIAC_BIN, REPO_ROOT, _base_env, wait_until

RATE = 20.0
CALLS = 60
#: The last of 60 calls at 20/s may start 59/20 s after the first (capacity-1 bucket).
MIN_SPAN = (CALLS - 1) / RATE


def wait_all(results, timeout):
    deadline = time.monotonic() + timeout
    for r in results:
        r.get(timeout=max(0.1, deadline - time.monotonic()))


# --------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------

def test_a_rate_limit_is_never_exceeded(worker, client):
    """60 calls at 20/s take at least 59/20 s: the limit holds (Celery too)."""
    worker(concurrency=4, config='[task_annotations."tasks.add"]\nrate_limit = "20/s"\n')
    assert client.add.delay(0, 0).get(timeout=30) == 0   # warm up; its token is long back
    time.sleep(1.0)
    start = time.monotonic()
    results = [client.add.delay(i, i) for i in range(CALLS)]
    wait_all(results, 120)
    elapsed = time.monotonic() - start
    assert elapsed >= MIN_SPAN, f"60 calls at 20/s finished in {elapsed:.2f}s: the limit was exceeded"
    assert [r.get() for r in results] == [2 * i for i in range(CALLS)]


@pytest.mark.standin_xfail("Celery 5.7 paces 60 calls at 20/s over ~26 s and holds unlimited tasks behind them "
                           "(rate-limited requests count against its prefetch window)")
def test_a_rate_limit_is_precise_and_holds_nothing_back(worker, client):
    """60 calls at 20/s finish within 30 % of 2.95 s; an unlimited task sent after them is not held back."""
    worker(concurrency=2, config='[task_annotations."tasks.add"]\nrate_limit = "20/s"\n')
    assert client.mul.delay(1, 1).get(timeout=30) == 1   # warm up the worker
    start = time.monotonic()
    adds = [client.add.delay(i, i) for i in range(CALLS)]
    unlimited = client.mul.delay(6, 7)
    assert unlimited.get(timeout=10) == 42
    unlimited_done = time.monotonic() - start
    pending = sum(1 for r in adds if not r.ready())
    assert pending > 0 and unlimited_done < MIN_SPAN / 2, \
        f"the unlimited task finished after {unlimited_done:.2f}s with {pending} rate-limited calls pending"
    wait_all(adds, 60)
    elapsed = time.monotonic() - start
    assert MIN_SPAN <= elapsed <= MIN_SPAN * 1.3, f"60 calls at 20/s took {elapsed:.2f}s (expected ~{MIN_SPAN}s)"


@pytest.mark.parametrize("config", [
    '[task_annotations."*"]\nrate_limit = "10/s"\n',
    'task_default_rate_limit = "10/s"\n',
], ids=["star-annotation", "task_default_rate_limit"])
def test_a_rate_limit_for_every_task(worker, client, config):
    """``"*"`` in task_annotations and task_default_rate_limit limit every task type, each on its own bucket."""
    worker(concurrency=4, config=config)
    assert client.add.delay(0, 0).get(timeout=30) == 0
    time.sleep(0.5)
    start = time.monotonic()
    muls = [client.mul.delay(i, 2) for i in range(11)]
    wait_all(muls, 60)
    assert time.monotonic() - start >= 1.0, "11 calls at 10/s finished in under a second"


def test_a_task_that_waits_for_its_token_past_its_expiry_is_revoked(worker, client):
    """At 1/s, the third call starts 2 s after the first: with expires=1.2 s it ends REVOKED."""
    worker(concurrency=2, config='[task_annotations."tasks.add"]\nrate_limit = "1/s"\n')
    assert client.mul.delay(1, 1).get(timeout=30) == 1
    results = [client.add.apply_async((i, i), expires=1.2) for i in range(3)]
    wait_until(lambda: all(r.ready() for r in results), 30, message="all three calls done")
    # Which call gets the third token depends on which event loop takes which message first.
    assert sorted(r.state for r in results) == ["REVOKED", "SUCCESS", "SUCCESS"]


def test_warm_shutdown_gives_back_rate_limited_tasks(worker, client):
    """Calls waiting for a token are requeued on SIGTERM, and run by the next worker."""
    w = worker(concurrency=2, config='[task_annotations."tasks.add"]\nrate_limit = "1/m"\n')
    results = [client.add.delay(i, 1) for i in range(4)]
    # One runs (whichever an event loop took first); the other three wait a minute for the next token.
    wait_until(lambda: any(r.ready() for r in results), 30, message="one call done")
    first = next(r for r in results if r.ready())
    assert first.get(timeout=1) == results.index(first) + 1
    waiting = [(i, r) for i, r in enumerate(results) if r is not first]
    time.sleep(0.5)
    w.stop(grace=20)
    assert w.proc.returncode is not None
    assert [r.state for _, r in waiting] == ["PENDING"] * 3
    # Given back (kombu restores a stopping worker's unacknowledged messages to the queue).
    wait_until(lambda: client.redis.client.llen("celery") == 3, 15, message="three messages back in the queue")
    worker(concurrency=2)
    assert [r.get(timeout=30) for _, r in waiting] == [i + 1 for i, _ in waiting]


def test_a_worker_consuming_two_queues_serves_both_in_turn(worker, client):
    """``-Q a,b`` with a backlog on ``a``: ``b``'s tasks are not held behind it (kombu rotates the
    queues it polls; Celeriac's fetch takes them in turn). What a platform with a queue per tenant
    relies on."""
    backlog = [client.app.send_task("tasks.sleep", args=(0.01,), queue="a") for _ in range(300)]
    late = [client.mul.apply_async((i, 2), queue="b") for i in range(5)]
    w = worker(queues="a,b", concurrency=1)
    assert [r.get(timeout=60) for r in late] == [2 * i for i in range(5)]
    done_before = sum(1 for r in backlog if r.ready())
    assert done_before < 100, f"b's 5 tasks waited for {done_before} of a's 300"
    wait_all(backlog, 120)
    assert w.alive


@pytest.mark.celeriac_only
def test_a_cluster_rate_limit_holds_across_two_workers(worker, client):
    """``cluster_rate_limit = "10/s"``: two workers share one bucket in Redis, so 30 calls take at least
    29/10 s between them — where a per-worker limit would let them through twice as fast (Celery has no
    cluster-wide limit: its most-requested missing feature)."""
    config = '[task_annotations."tasks.add"]\ncluster_rate_limit = "10/s"\n'
    w1 = worker(concurrency=2, config=config, name="one@%h")
    w2 = worker(concurrency=2, config=config, name="two@%h")
    assert client.mul.delay(1, 1).get(timeout=30) == 1
    start = time.monotonic()
    results = [client.add.delay(i, i) for i in range(30)]
    wait_all(results, 60)
    elapsed = time.monotonic() - start
    assert [r.get() for r in results] == [2 * i for i in range(30)]
    assert elapsed >= 29 / 10, f"30 calls at 10/s across two workers finished in {elapsed:.2f}s"
    done = [w.count(re.compile(r"Task tasks\.add\[[^\]]+\] succeeded")) for w in (w1, w2)]
    assert sum(done) == 30 and min(done) > 0, f"both workers took part: {done}"


# --------------------------------------------------------------------------
# Expiry checked when the task starts
# --------------------------------------------------------------------------

def test_a_task_that_waits_for_a_slot_past_its_expiry_is_revoked(worker, client):
    """One slot busy for 2 s; a task received meanwhile with expires=1 s must not run."""
    worker(concurrency=1)
    assert client.mul.delay(1, 1).get(timeout=30) == 1
    busy = client.sleep.delay(2)
    time.sleep(0.3)
    late = client.add.apply_async((1, 2), expires=1.0)
    assert busy.get(timeout=30) == 2
    wait_until(late.ready, 15, message="the expired task to be settled")
    assert late.state == "REVOKED"


# --------------------------------------------------------------------------
# task_routes in every form
# --------------------------------------------------------------------------

def celery_queue(routes, task):
    """Where Celery's own router sends ``task`` with ``task_routes = routes``."""
    from celery import Celery
    app = Celery("routes", broker="memory://", set_as_current=False)
    app.conf.task_routes = routes
    try:
        route = app.amqp.router.route({}, task)
        return route["queue"].name, route.get("priority")
    finally:
        app.close()


ROUTE_FORMS = {
    # id: (TOML, the Python value Celery takes, {task: queue})
    "string": ('[task_routes]\n"tasks.add" = "low-priority"\n',
               {"tasks.add": "low-priority"},
               {"tasks.add": "low-priority", "tasks.mul": "celery"}),
    "dict": ('[task_routes."tasks.add"]\nqueue = "high"\npriority = 3\n',
             {"tasks.add": {"queue": "high", "priority": 3}},
             {"tasks.add": "high", "tasks.mul": "celery"}),
    "glob": ('[task_routes]\n"tasks.m*" = "globbed"\n"tasks.add" = "exact"\n',
             {"tasks.m*": "globbed", "tasks.add": "exact"},
             {"tasks.add": "exact", "tasks.mul": "globbed", "tasks.div": "celery"}),
    "regex": ('[task_routes]\n\'re:tasks\\.(mul|div)\' = "arith"\n',
              {re.compile(r"tasks\.(mul|div)"): "arith"},
              {"tasks.mul": "arith", "tasks.div": "arith", "tasks.add": "celery"}),
    "list": ('[[task_routes]]\n"tasks.add" = "first"\n[[task_routes]]\n"tasks.*" = "second"\n'
             '"tasks.add" = "never"\n',
             [{"tasks.add": "first"}, {"tasks.*": "second", "tasks.add": "never"}],
             {"tasks.add": "first", "tasks.mul": "second"}),
}


def queued_message(redis_client, task_id):
    """The message with ``task_id`` in any Redis list, and the list's name."""
    for key in redis_client.scan_iter(count=1000):
        if redis_client.type(key) != b"list" or key.startswith((b"_kombu", b"unacked")):
            continue
        for raw in redis_client.lrange(key, 0, -1):
            msg = json.loads(raw)
            if msg.get("headers", {}).get("id") == task_id:
                return key.decode(), msg
    return None, None


@pytest.mark.celeriac_only  # `celeriac call` is what is tested; Celery's router is the oracle in the test
@pytest.mark.parametrize("form", list(ROUTE_FORMS))
def test_celeriac_call_routes_as_celery_does(form, redis_server, celeriac_cli, tmp_path):
    text, python_routes, expected = ROUTE_FORMS[form]
    config = tmp_path / "routes.toml"
    config.write_text(text)
    for task, queue in expected.items():
        celery_dest, celery_priority = celery_queue(python_routes, task)
        assert celery_dest == queue, f"test table disagrees with Celery: {task} -> {celery_dest}"
        out = celeriac_cli("call", task, "1", "2", "--config", str(config))
        assert out.returncode == 0, out.stderr
        task_id = out.stdout.strip().splitlines()[-1]
        key, msg = queued_message(redis_server.client, task_id)
        assert key is not None and key.split("\x06\x16")[0] == queue, f"{task} went to {key!r}, Celery: {queue!r}"
        assert msg["properties"]["delivery_info"]["routing_key"] == queue
        if celery_priority is not None:
            assert msg["properties"]["priority"] == celery_priority
        redis_server.client.delete(key)


def test_check_config_accepts_the_seed_celeryconfig(tmp_path):
    """The first-steps celeryconfig translated to TOML (string route, rate-limit annotation)."""
    seed = tmp_path / "celeryconfig.toml"
    seed.write_text(
        'broker_url = "pyamqp://"\nresult_backend = "rpc://"\ntask_serializer = "json"\n'
        'result_serializer = "json"\naccept_content = ["json"]\ntimezone = "Europe/Oslo"\nenable_utc = true\n'
        '[task_routes]\n"tasks.add" = "low-priority"\n'
        '[task_annotations."tasks.add"]\nrate_limit = "10/m"\n')
    out = subprocess.run([str(CELERIAC_BIN), "check-config", str(seed)], capture_output=True, text=True,
                         env=_base_env(), cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "low-priority" in out.stdout and "10/m" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[task_annotations."tasks.add"]\nrate_limit = "10/d"\n')
    out = subprocess.run([str(CELERIAC_BIN), "check-config", str(bad)], capture_output=True, text=True,
                         env=_base_env(), cwd=REPO_ROOT, timeout=60)
    assert out.returncode != 0 and "10/d" in out.stderr, out.stderr


@pytest.mark.parametrize("form", ["string", "dict", "glob", "list"])
def test_the_worker_routes_what_it_publishes(form, worker, client):
    """A ``link`` callback the worker sends goes where the worker's task_routes say (as a Celery worker's does)."""
    routes = {
        "string": '[task_routes]\n"tasks.mul" = "routed"\n',
        "dict": '[task_routes."tasks.mul"]\nqueue = "routed"\n',
        "glob": '[task_routes]\n"tasks.m*" = "routed"\n',
        "list": '[[task_routes]]\n"tasks.div" = "other"\n[[task_routes]]\n"tasks.mul" = "routed"\n',
    }[form]
    worker(concurrency=2, queues="celery", config=routes)
    parent = client.add.apply_async((2, 2), link=client.mul.s(10))
    assert parent.get(timeout=30) == 4
    child_id = parent.children[0].id if parent.children else None
    wait_until(lambda: client.redis.client.llen("routed") == 1, 15, message="the callback in queue 'routed'")
    msg = json.loads(client.redis.client.lindex("routed", 0))
    assert msg["headers"]["task"] == "tasks.mul"
    if child_id:
        assert msg["headers"]["id"] == child_id
    assert AsyncResult(msg["headers"]["id"], app=client.app).state == "PENDING"
    client.redis.client.delete("routed")

