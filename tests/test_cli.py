"""``celeriac call`` and ``celeriac result`` against a running worker."""

import json
import re

import pytest

pytestmark = pytest.mark.celeriac_only

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_call_wait_prints_the_result(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.add", "4", "4", "--wait", "--timeout", "30")
    assert out.returncode == 0, f"rc={out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert last_line(out.stdout) == "8", out.stdout


def test_call_without_wait_prints_an_id_that_result_can_read(worker, celeriac_cli, client):
    worker()
    out = celeriac_cli("call", "tasks.mul", "6", "7")
    assert out.returncode == 0, out.stderr
    m = UUID_RE.search(out.stdout)
    assert m, f"no task id printed: {out.stdout!r}"
    task_id = m.group(0)
    from celery.result import AsyncResult
    assert AsyncResult(task_id, app=client.app).get(timeout=30) == 42
    res = celeriac_cli("result", task_id)
    assert res.returncode == 0, res.stderr
    assert last_line(res.stdout) == "42", res.stdout


def test_result_of_a_python_client_task(worker, celeriac_cli, client):
    worker()
    r = client.add.delay(20, 22)
    assert r.get(timeout=30) == 42
    out = celeriac_cli("result", r.id)
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "42", out.stdout


def test_call_with_kwargs_queue_and_countdown(worker, celeriac_cli):
    worker(queues="cli")
    out = celeriac_cli("call", "tasks.add", "--kwargs", json.dumps({"x": 1, "y": 2}), "--queue", "cli",
                       "--countdown", "1", "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "3", out.stdout


def test_call_wait_on_failure_is_nonzero(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.div", "1", "0", "--wait", "--timeout", "30")
    assert out.returncode != 0, out.stdout
    assert "ZeroDivisionError" in out.stdout + out.stderr


def test_call_json_arguments(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.xsum", "[1, 2, 3]", "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "6", out.stdout
