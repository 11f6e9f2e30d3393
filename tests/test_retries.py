"""Retries, declared task options and exceptions with several arguments
(``celeriac:task@0.2.0``, issue #16), seen by a stock Celery client through
real Redis.

``tasks.flaky(n)`` asks for a retry (``Retry::after(0.1).because(ValueError)``)
until it has been retried ``n`` times and declares ``max_retries = 3``;
``tasks.autoflaky(n)`` raises ``ValueError``, which its declared
``autoretry_for`` turns into retries with a 1 s backoff; ``tasks.expected_fail``
raises ``ExpectedException('Task expected to fail', 'test')``;
``tasks.limited`` declares ``rate_limit = "2/s"``. The stand-in Python worker
has the same tasks (tests/standin_tasks.py), written as Celery users write them.
"""

from __future__ import annotations

import re
import time

import pytest
from celery.result import AsyncResult

from conftest import wait_until


def test_a_task_that_retries_succeeds_after_its_retries(worker, client):
    worker(concurrency=2)
    r = client.app.send_task("tasks.flaky", args=(2,))
    assert r.get(timeout=30) == 2
    assert r.state == "SUCCESS"


def test_the_retry_state_is_visible_while_the_task_waits(worker, client):
    worker(concurrency=2)
    # Two retries, each 0.1 s away: RETRY must be stored in between.
    r = client.app.send_task("tasks.flaky", args=(3,))
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and r.state != "SUCCESS":
        seen.add(r.state)
        if r.state == "RETRY":
            exc = r.result
            assert isinstance(exc, ValueError), exc
            assert str(exc).startswith("flaky: attempt ")
        time.sleep(0.01)
    assert r.get(timeout=5) == 3
    assert "RETRY" in seen, seen


def test_exhausted_retries_fail_with_the_original_exception(worker, client):
    worker(concurrency=2)
    r = client.app.send_task("tasks.flaky", args=(10,))
    with pytest.raises(ValueError) as e:
        r.get(timeout=30)
    # max_retries = 3: the 4th attempt (retries == 3) fails.
    assert str(e.value) == "flaky: attempt 4 of 11"


def test_max_retries_in_task_annotations_overrides_what_the_task_declares(worker, client):
    worker(concurrency=2, config='[task_annotations."tasks.flaky"]\nmax_retries = 1\n')
    r = client.app.send_task("tasks.flaky", args=(10,))
    with pytest.raises(ValueError) as e:
        r.get(timeout=30)
    # max_retries = 1 (declared: 3): the 2nd attempt (retries == 1) fails.
    assert str(e.value) == "flaky: attempt 2 of 11"


def test_autoretry_for_retries_a_listed_exception_with_backoff(worker, client):
    worker(concurrency=2)
    started = time.monotonic()
    r = client.app.send_task("tasks.autoflaky", args=(2,))
    assert r.get(timeout=30) == 2
    # Two retries with a backoff of min(1, 1 * 2**retries) = 1 s each.
    assert time.monotonic() - started >= 1.9


def test_an_exception_with_two_arguments_comes_back_with_both(worker, client):
    worker(concurrency=2)
    r = client.app.send_task("tasks.expected_fail")
    with pytest.raises(Exception) as e:
        r.get(timeout=30)
    assert type(e.value).__name__ == "ExpectedException"
    assert e.value.args == ("Task expected to fail", "test")


def test_a_declared_rate_limit_holds_tasks_back(worker, client):
    worker(concurrency=4)
    client.app.send_task("tasks.add", args=(1, 1)).get(timeout=30)  # the worker is up
    started = time.monotonic()
    results = [client.app.send_task("tasks.limited") for _ in range(5)]
    assert [r.get(timeout=30) for r in results] == [True] * 5
    # 2/s, a full bucket of one: the 5th starts 2 s after the first.
    assert time.monotonic() - started >= 1.8


@pytest.mark.celeriac_only
def test_an_annotation_overrides_the_declared_rate_limit(worker, client):
    worker(concurrency=4, config='[task_annotations."tasks.limited"]\nrate_limit = "100/s"\n')
    client.app.send_task("tasks.add", args=(1, 1)).get(timeout=30)
    started = time.monotonic()
    results = [client.app.send_task("tasks.limited") for _ in range(5)]
    assert [r.get(timeout=30) for r in results] == [True] * 5
    assert time.monotonic() - started < 1.5


@pytest.mark.timeout(180)
def test_a_retry_celeriac_sends_is_run_by_a_python_worker(worker, python_worker, client):
    """Celeriac runs attempt 0 and sends the retry (same id, retries 1, countdown 3 s); it stops before
    the retry is due and gives the message back; a Python worker runs the retry from Celeriac's message."""
    w = worker()
    r = client.app.send_task("tasks.flaky", args=(1, 3.0))
    w.wait_for_log(rf"Task tasks\.flaky\[{r.id}\] retry", timeout=30)
    w.stop()
    py = python_worker(queues="celery", name="py@%h")
    assert r.get(timeout=60) == 1
    assert re.search(rf"tasks\.flaky\[{re.escape(r.id)}\] succeeded", py.log_text())


@pytest.mark.timeout(180)
def test_a_retry_a_python_worker_sends_is_run_by_celeriac(worker, python_worker, client):
    py = python_worker(queues="celery", name="py@%h")
    r = client.app.send_task("tasks.flaky", args=(1, 3.0))
    py.wait_for_log(rf"Task tasks\.flaky\[{r.id}\] retry", timeout=30)
    py.stop()
    w = worker()
    assert r.get(timeout=60) == 1
    w.wait_for_log(rf"Task tasks\.flaky\[{r.id}\] succeeded", timeout=30)
