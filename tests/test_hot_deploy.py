"""Hot deploy (issue #13): components copied into, replaced in or removed from a running worker's task
directory are picked up without a restart; a broken replacement keeps the old version serving.

Celeriac only: a Python worker has no task directory to watch.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
from celery.exceptions import NotRegistered

from conftest import CELERIAC_TASKS, wait_until
from test_remote_control import EventCapture

pytestmark = [pytest.mark.timeout(240), pytest.mark.celeriac_only]

COMPONENT = CELERIAC_TASKS / "tasks.wasm" if CELERIAC_TASKS.is_dir() else CELERIAC_TASKS


def version(data: bytes) -> str:
    """The worker's component version: the first 12 hex digits of the file's SHA-256."""
    return hashlib.sha256(data).hexdigest()[:12]


def another_version(data: bytes, tag: bytes) -> bytes:
    """The same component with a custom section appended: valid, and of another version."""
    name = b"celeriac-test-version"
    content = bytes([len(name)]) + name + tag
    return data + bytes([0, len(content)]) + content


def deploy(directory, name: str, data: bytes) -> None:
    """Write under a dot name, then rename into place (the documented convention)."""
    tmp = directory / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, directory / name)


@pytest.fixture
def task_dir(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    shutil.copy(COMPONENT, d / "tasks.wasm")
    return d


def test_a_component_copied_into_a_running_worker_is_served_without_a_restart(worker, client, task_dir):
    w = worker(app=task_dir)
    assert client.tasks["add"].delay(1, 2).get(timeout=10) == 3
    deploy(task_dir, "extra.wasm", COMPONENT.read_bytes())
    assert wait_until(lambda: "extra.wasm: version" in w.log_text(), timeout=10), w.tail()
    assert client.app.send_task("extra.add", (20, 22)).get(timeout=10) == 42
    assert w.alive


def test_a_broken_replacement_keeps_the_old_version_serving(worker, client, task_dir):
    w = worker(app=task_dir)
    deploy(task_dir, "tasks.wasm", b"\0asm this is not a component")
    assert wait_until(lambda: "keeps serving" in w.log_text(), timeout=10), w.tail()
    assert client.tasks["add"].delay(2, 2).get(timeout=10) == 4
    # Truncated: the first half of a real component.
    data = COMPONENT.read_bytes()
    deploy(task_dir, "tasks.wasm", data[: len(data) // 2])
    assert wait_until(lambda: w.count("keeps serving") >= 2, timeout=10), w.tail()
    assert client.tasks["add"].delay(3, 3).get(timeout=10) == 6
    assert w.alive


def test_replacing_a_component_under_load_loses_nothing_and_later_calls_run_the_new_version(
        worker, client, task_dir):
    old = COMPONENT.read_bytes()
    new = another_version(old, b"v2")
    w = worker(app=task_dir, extra_args=["-E"], concurrency=2)
    with EventCapture(client.app) as cap:
        results = [client.tasks["add"].delay(i, i) for i in range(1000)]
        deploy(task_dir, "tasks.wasm", new)
        assert [r.get(timeout=60) for r in results] == [2 * i for i in range(1000)]
        assert wait_until(lambda: f"version {version(new)} replaces {version(old)}" in w.log_text(), timeout=10)
        after = client.tasks["add"].delay(5, 5)
        assert after.get(timeout=10) == 10
        assert wait_until(lambda: any(e.get("uuid") == after.id and e["type"] == "task-succeeded"
                                      for e in cap.events), timeout=10)
    done = [e for e in cap.events if e["type"] == "task-succeeded"]
    versions = {e["component_version"] for e in done}
    assert versions <= {version(old), version(new)}
    assert next(e for e in done if e["uuid"] == after.id)["component_version"] == version(new)


def test_a_stored_result_names_the_version_of_the_component_that_produced_it(worker, client, task_dir):
    old = COMPONENT.read_bytes()
    new = another_version(old, b"v3")
    w = worker(app=task_dir)
    before = client.tasks["add"].delay(1, 1)
    assert before.get(timeout=10) == 2
    deploy(task_dir, "tasks.wasm", new)
    assert wait_until(lambda: f"version {version(new)} replaces {version(old)}" in w.log_text(), timeout=10)
    after = client.tasks["add"].delay(2, 2)
    assert after.get(timeout=10) == 4
    failed = client.app.send_task("tasks.fail", ("boom",))
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=10)
    # Read back as stored (not from the client's cache): Celery keeps the key it does not know.
    meta = client.app.backend.get_task_meta
    assert meta(before.id, cache=False)["component_version"] == version(old)
    assert meta(after.id, cache=False)["component_version"] == version(new)
    assert meta(failed.id, cache=False)["component_version"] == version(new)
    assert meta(failed.id, cache=False)["status"] == "FAILURE"


def test_a_removed_component_ends_in_not_registered_for_new_calls(worker, client, task_dir):
    w = worker(app=task_dir)
    deploy(task_dir, "extra.wasm", COMPONENT.read_bytes())
    assert wait_until(lambda: "extra.wasm: version" in w.log_text(), timeout=10), w.tail()
    assert client.app.send_task("extra.mul", (6, 7)).get(timeout=10) == 42
    (task_dir / "extra.wasm").unlink()
    assert wait_until(lambda: "no longer served" in w.log_text(), timeout=10), w.tail()
    with pytest.raises(NotRegistered):
        client.app.send_task("extra.add", (1, 1)).get(timeout=10)
    assert client.tasks["add"].delay(1, 1).get(timeout=10) == 2
