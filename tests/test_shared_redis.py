"""A Python Celery worker and a Celeriac worker share one Redis, on different queues."""

import re

import pytest


@pytest.mark.timeout(180)
def test_python_and_celeriac_workers_share_redis(worker, python_worker, celery_app):
    py = python_worker(queues="py", name="py@%h")
    wasm = worker(queues="wasm", name="wasm@localhost")
    c = celery_app()

    hellos = [c.app.send_task("pytasks.hello", args=[f"n{i}"], queue="py") for i in range(20)]
    adds = [c.add.apply_async((i, i), queue="wasm") for i in range(20)]

    assert [r.get(timeout=60) for r in adds] == [2 * i for i in range(20)]
    assert [r.get(timeout=60) for r in hellos] == [f"hello n{i}" for i in range(20)]

    py_log, wasm_log = py.log_text(), wasm.log_text()
    # Nobody stole the other's messages (a stolen one would at least be logged
    # as received / unregistered by the wrong worker).
    assert "tasks.add" not in py_log, "the Python worker saw a tasks.add message"
    assert "pytasks.hello" not in wasm_log, "the celeriac worker saw a pytasks.hello message"
    assert "unregistered" not in py_log.lower()
    assert "unregistered" not in wasm_log.lower()
    for r in adds:
        assert re.search(rf"tasks\.add\[{re.escape(r.id)}\] succeeded", wasm_log), r.id
    for r in hellos:
        assert re.search(rf"pytasks\.hello\[{re.escape(r.id)}\] succeeded", py_log), r.id
    assert py.alive and wasm.alive
    # Both queues drained.
    assert c.redis.client.llen("py") == 0
    assert c.redis.client.llen("wasm") == 0
