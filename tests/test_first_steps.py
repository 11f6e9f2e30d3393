"""Celery's first-steps session, played by a stock Python client against celeriac."""

import re
import time

import pytest
from celery import group

from conftest import new_task_id


def test_add_round_trip(worker, client):
    w = worker()
    result = client.add.delay(4, 4)
    assert result.get(timeout=30) == 8
    assert result.ready() is True
    assert result.successful() is True
    assert result.state == "SUCCESS"
    meta = client.redis.meta(result.id)
    assert meta is not None, "no celery-task-meta key in db 1"
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 8
    assert meta["task_id"] == result.id
    # The result has the default TTL (result_expires = 1 day), like Celery.
    ttl = client.redis.results.ttl(client.result_key(result.id))
    assert 0 < ttl <= 86400
    # Celery-style log lines.
    w.wait_for_log(rf"Task tasks\.add\[{re.escape(result.id)}\] received")
    w.wait_for_log(rf"Task tasks\.add\[{re.escape(result.id)}\] succeeded in \d+(\.\d+)?s: 8\b")


def test_ready_is_false_until_the_task_ran(worker, client):
    # One slot, busy with a 1 s sleep, so the add cannot have run when we look.
    worker(concurrency=1)
    busy = client.sleep.delay(1)
    result = client.add.delay(4, 4)
    assert result.ready() is False
    assert result.state == "PENDING"
    deadline = time.monotonic() + 30
    while not result.ready():
        assert time.monotonic() < deadline, "add(4, 4) never became ready"
        time.sleep(0.05)
    assert result.get(timeout=1) == 8
    busy.get(timeout=30)
    assert busy.state == "SUCCESS"


def test_type_error_is_a_real_type_error(worker, client):
    w = worker()
    result = client.add.delay(4, "a")
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    exc = info.value
    assert isinstance(exc, TypeError)
    assert type(exc) is TypeError, f"got {type(exc).__module__}.{type(exc).__qualname__}"

    assert result.state == "FAILURE"
    assert result.failed() is True
    again = result.get(propagate=False, timeout=5)
    assert type(again) is TypeError
    tb = result.traceback
    assert isinstance(tb, str) and tb.strip(), f"traceback: {tb!r}"
    assert "Traceback" in tb
    assert "add" in tb, f"traceback does not name the wasm function: {tb!r}"

    meta = client.redis.meta(result.id)
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "TypeError"
    assert meta["result"]["exc_module"] == "builtins"
    w.wait_for_log(rf"Task tasks\.add\[{re.escape(result.id)}\] raised unexpected: TypeError\(")


def test_forget_deletes_the_result(worker, client):
    worker()
    result = client.add.delay(2, 2)
    assert result.get(timeout=30) == 4
    key = client.result_key(result.id)
    assert client.redis.results.exists(key) == 1
    result.forget()
    assert client.redis.results.exists(key) == 0


def test_other_tasks(worker, client):
    worker()
    assert client.mul.delay(6, 7).get(timeout=30) == 42
    assert client.xsum.delay([1, 2, 3, 4]).get(timeout=30) == 10
    assert client.add.apply_async(kwargs={"x": 3, "y": 4}).get(timeout=30) == 7
    assert client.div.delay(7, 2).get(timeout=30) == 3.5


@pytest.mark.timeout(240)
def test_group_of_1000(worker, client):
    worker()
    res = group(client.add.s(i, i) for i in range(1000))()
    assert res.get(timeout=180) == [2 * i for i in range(1000)]


def test_unknown_task_is_not_registered(worker, client):
    w = worker()
    result = client.app.send_task("tasks.nope", args=[1])
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    assert type(info.value).__name__ == "NotRegistered", repr(info.value)
    assert result.state == "FAILURE"
    w.wait_for_log(r"Received unregistered task of type 'tasks\.nope'")
    # ... and the worker is still serving.
    assert client.add.delay(1, 1).get(timeout=30) == 2


def test_ignore_result_writes_nothing(worker, client):
    w = worker()
    task_id = new_task_id()
    key = client.result_key(task_id)
    pubsub = client.redis.results.pubsub()
    pubsub.subscribe(key)
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        client.add.apply_async((1, 2), ignore_result=True, task_id=task_id)
        w.wait_for_log(rf"Task tasks\.add\[{re.escape(task_id)}\] succeeded in \S+: 3\b")
        # A later task finishing proves the worker is past the first one's bookkeeping.
        assert client.add.delay(5, 5).get(timeout=30) == 10
        assert client.redis.results.exists(key) == 0
        time.sleep(0.5)
        assert client.redis.results.exists(key) == 0
        msg = pubsub.get_message(timeout=0.5)
        assert msg is None, f"something was PUBLISHed on {key}: {msg!r}"
    finally:
        pubsub.close()
