"""Tasks that send tasks, and canvases nested inside continuations.

A component sends a signature with the SDK's ``signature(...).delay()`` and replaces itself with
``replace(sig)`` — Celery's ``add.delay(x, y)`` inside a task and ``raise self.replace(sig)`` — when the
worker grants it ``send_tasks = true`` in ``task_annotations``. The Python client sees the same ids,
results and lineage as with a Python worker: these tests pass in stand-in mode
(``CELERIAC_TEST_STANDIN=python``, tests/standin_tasks.py has the same three tasks), except the grant
check, which is Celeriac's own.
"""

import pytest
from celery import chain, chord, group

#: What lets the example component's spawn/replaced/fanout send tasks.
GRANT = '[task_annotations."*"]\nsend_tasks = true\n'


def test_a_task_sends_a_child_task_that_names_it_as_its_parent(worker, client):
    worker(config=GRANT)
    parent = client.app.send_task("tasks.spawn", args=(2, 3))
    child_id = parent.get(timeout=30)
    assert client.app.AsyncResult(child_id).get(timeout=30) == 5
    assert client.redis.meta(child_id)["parent_id"] == parent.id
    # The parent's stored result lists the child, as Celery's trail does.
    assert client.redis.meta(parent.id)["children"] == [[[child_id, None], None]]
    assert [c.id for c in client.app.AsyncResult(parent.id).children] == [child_id]


def test_a_child_sent_from_a_chain_step_names_the_workflows_root_and_its_sender(worker, client):
    worker(config=GRANT)
    result = chain(client.add.si(1, 1), client.app.signature("tasks.spawn_context", immutable=True))()
    child_id = result.get(timeout=30)
    ctx = client.app.AsyncResult(child_id).get(timeout=30)
    # root: the chain's first task; parent: the task that sent it.
    assert ctx["root_id"] == result.parent.id
    assert ctx["parent_id"] == result.id


def test_a_task_replaced_by_a_chain_ends_with_the_chains_result_under_its_own_id(worker, client):
    worker(config=GRANT)
    result = client.app.send_task("tasks.replaced", args=(4,))
    # replaced(4) became add(4, 1) | mul(10): the client waiting on replaced gets (4 + 1) * 10.
    assert result.get(timeout=30) == 50
    meta = client.redis.meta(result.id)
    assert meta["status"] == "SUCCESS"
    # The chain's last step took the replaced task's id; its parent is the chain's first step,
    # itself a child of the replaced task.
    first = client.app.AsyncResult(meta["parent_id"])
    assert first.get(timeout=10) == 5
    assert client.redis.meta(first.id)["parent_id"] == result.id


def test_a_task_sends_a_chord_and_returns_its_bodys_id(worker, client):
    worker(config=GRANT, concurrency=2)
    body_id = client.app.send_task("tasks.fanout", args=(6,)).get(timeout=30)
    assert client.app.AsyncResult(body_id).get(timeout=60) == sum(2 * i for i in range(6))


@pytest.mark.celeriac_only
def test_a_task_without_the_grant_cannot_send_and_gets_a_permission_error(worker, client):
    w = worker()
    result = client.app.send_task("tasks.spawn", args=(2, 3))
    with pytest.raises(PermissionError, match="send_tasks"):
        result.get(timeout=30)
    w.wait_for_log(r"tasks\.spawn tried to send a task without the send_tasks grant", timeout=10)
    # Nothing was sent: the only task the worker received is spawn.
    assert w.count(r"Task tasks\.add\[") == 0


def test_a_group_as_a_chain_step_runs_as_a_chord_inside_the_chain(worker, client):
    worker(concurrency=2)
    # The client turns group | xsum into a chord, which travels in add's message; the worker sends it.
    result = chain(client.add.s(1, 1), group(client.add.s(1), client.add.s(2)), client.xsum.s())()
    assert result.get(timeout=60) == (2 + 1) + (2 + 2)


def test_a_chain_inside_a_group_and_a_chord_with_a_chain_body(worker, client):
    worker(concurrency=2)
    g = group(chain(client.add.s(1, 1), client.mul.s(3)), client.add.s(5, 5))()
    assert g.get(timeout=60) == [6, 10]
    result = chord([client.add.s(1, 1), client.add.s(2, 2)])(client.xsum.s() | client.mul.s(10))
    assert result.get(timeout=60) == 60


def test_a_chain_ending_in_a_group_hands_the_result_to_every_member(worker, client):
    worker(concurrency=2)
    result = chain(client.add.s(2, 2), group(client.mul.s(2), client.mul.s(3)))()
    assert result.get(timeout=60) == [8, 12]
