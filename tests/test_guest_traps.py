"""Guest errors and traps as a Python client sees them.

One worker serves the whole module. After every failing task the same worker
must still answer ``add(1, 1)``.
"""

import re
import time

import pytest

TRAPS_CONFIG = """\
[task_annotations]
"tasks.spin" = { time_limit = 1 }
"""


@pytest.fixture(scope="module")
def trap_worker(module_worker_factory):
    return module_worker_factory(concurrency=2, config=TRAPS_CONFIG)


def assert_still_serving(worker, client):
    assert worker.alive, f"worker died (rc={worker.returncode})"
    assert client.add.delay(1, 1).get(timeout=30) == 2


def failure_of(result, timeout=60):
    with pytest.raises(Exception) as info:
        result.get(timeout=timeout)
    assert result.state == "FAILURE"
    return info.value


def test_zero_division(trap_worker, client):
    exc = failure_of(client.div.delay(1, 0))
    assert type(exc) is ZeroDivisionError, repr(exc)
    assert_still_serving(trap_worker, client)


def test_value_error(trap_worker, client):
    result = client.fail.delay("bad")
    exc = failure_of(result)
    assert type(exc) is ValueError, repr(exc)
    assert str(exc) == "bad"
    assert exc.args == ("bad",)
    assert "fail" in (result.traceback or "")
    assert_still_serving(trap_worker, client)


def test_panic(trap_worker, client):
    result = client.panic.delay("boom")
    exc = failure_of(result)
    assert "boom" in str(exc), repr(exc)
    tb = result.traceback or ""
    assert "panic" in tb, f"traceback does not mention the panic: {tb!r}"
    assert_still_serving(trap_worker, client)


@pytest.mark.timeout(90)
def test_spin_hits_the_annotated_time_limit(trap_worker, client):
    started = time.monotonic()
    result = client.spin.delay()
    exc = failure_of(result, timeout=30)
    elapsed = time.monotonic() - started
    assert type(exc).__name__ == "TimeLimitExceeded", repr(exc)
    assert elapsed < 20, f"time_limit=1 but the task ran {elapsed:.1f}s"
    trap_worker.wait_for_log(rf"tasks\.spin\[{re.escape(result.id)}\]")
    assert_still_serving(trap_worker, client)


@pytest.mark.timeout(120)
def test_hog_is_a_memory_error(trap_worker, client):
    exc = failure_of(client.hog.delay(), timeout=60)
    assert type(exc) is MemoryError, repr(exc)
    assert_still_serving(trap_worker, client)


@pytest.mark.timeout(120)
def test_deep_is_a_recursion_error(trap_worker, client):
    exc = failure_of(client.deep.delay(), timeout=60)
    assert type(exc) is RecursionError, repr(exc)
    assert_still_serving(trap_worker, client)


@pytest.mark.timeout(90)
def test_spin_honours_the_message_time_limit(worker, client):
    """No annotation: the ``timelimit`` header of the message alone must stop it."""
    w = worker(concurrency=1)
    started = time.monotonic()
    exc = failure_of(client.spin.apply_async(time_limit=1), timeout=30)
    assert type(exc).__name__ == "TimeLimitExceeded", repr(exc)
    assert time.monotonic() - started < 20
    assert_still_serving(w, client)


@pytest.mark.timeout(120)
def test_traps_do_not_leak(trap_worker, client):
    """A burst of trapping tasks interleaved with adds: every add still right."""
    bad = [client.deep.delay() for _ in range(3)] + [client.panic.delay(f"p{i}") for i in range(5)]
    good = [client.add.delay(i, i) for i in range(50)]
    assert [r.get(timeout=60) for r in good] == [2 * i for i in range(50)]
    for r in bad:
        r.get(timeout=60, propagate=False)
        assert r.state == "FAILURE"
    assert_still_serving(trap_worker, client)
