"""Canvas: chains, links (callbacks and errbacks), groups and chords sent by a stock
Python client; the Celeriac worker publishes the continuations itself."""

import re

import pytest

from celery import chain, chord, group


def test_chain_passes_each_result_on(worker, client):
    w = worker()
    result = chain(client.add.s(2, 2), client.add.s(4), client.mul.s(8))()
    assert result.get(timeout=30) == 64
    # Every step is its own task with its lineage: parent = previous step, root = first.
    assert result.parent.get(timeout=10) == 8
    first = result.parent.parent
    assert first.get(timeout=10) == 4
    meta = client.redis.meta(result.id)
    assert meta["parent_id"] == result.parent.id
    # The first step's stored result names the next step as its child.
    assert client.redis.meta(first.id)["children"] == [[[result.parent.id, None], None]]
    assert w.count(re.compile(r"Task tasks\.(add|mul)\[[^\]]+\] succeeded")) == 3


def test_immutable_signatures_keep_their_arguments(worker, client):
    worker()
    assert (client.add.si(1, 1) | client.mul.si(3, 3))().get(timeout=30) == 9


def test_link_callback_receives_the_result(worker, client):
    worker()
    result = client.add.apply_async((2, 2), link=client.mul.s(10))
    assert result.get(timeout=30) == 4
    child = result.children[0]
    assert child.get(timeout=30) == 40
    assert client.redis.meta(child.id)["parent_id"] == result.id


def test_link_error_errback_gets_the_failed_task_id(worker, client):
    w = worker()
    # The errback is the old style: called with the failed task's id.
    result = client.fail.apply_async(("bad",), link_error=client.app.signature("tasks.log"))
    try:
        result.get(timeout=30)
    except ValueError:
        pass
    else:
        raise AssertionError("fail() did not raise")
    w.wait_for_log(rf"Task tasks\.log\[[^\]]+\] succeeded", timeout=30)
    assert w.count(re.compile(rf"stdout: {re.escape(result.id)}")) == 1


def test_group_results_in_order(worker, client):
    worker()
    assert group(client.add.s(i, i) for i in range(20))().get(timeout=60) == [2 * i for i in range(20)]


def test_chord_body_gets_every_header_result(worker, client):
    worker()
    result = chord(client.add.s(i, i) for i in range(10))(client.xsum.s())
    assert result.get(timeout=60) == sum(2 * i for i in range(10))


def test_chord_with_a_failing_member_fails_its_body(worker, client):
    w = worker()
    header = [client.add.s(1, 1), client.fail.s("boom"), client.add.s(2, 2)]
    result = chord(header)(client.xsum.s())
    # Like Celery, get() re-raises the failed member's own error first...
    try:
        result.get(timeout=60)
    except ValueError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("the chord body ran although a member failed")
    # ...and the body itself is stored as failed with a ChordError, without running.
    meta = client.redis.wait_for_states([result.id], states=("FAILURE",), timeout=30)[0]
    assert meta["result"]["exc_type"] == "ChordError"
    assert meta["result"]["exc_module"] == "celery.exceptions"
    assert w.count(re.compile(r"Task tasks\.xsum\[")) == 0


def test_map_calls_the_task_once_per_item_and_returns_the_list(worker, client):
    """``xsum.map(items)`` is a ``celery.map`` message: Celery's builtin task."""
    worker()
    assert client.xsum.map([[1, 2], [3, 4, 5]]).delay().get(timeout=30) == [3, 12]


def test_starmap_and_chunks_call_the_task_with_each_items_arguments(worker, client):
    worker()
    assert client.add.starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    # chunks: the client splits the items into a group of celery.starmap tasks.
    pairs = list(zip(range(7), range(7)))
    assert client.add.chunks(pairs, 3).delay().get(timeout=30) == [[0, 2, 4], [6, 8, 10], [12]]


def test_a_failing_item_fails_the_whole_starmap_with_its_exception(worker, client):
    worker()
    result = client.div.starmap([(1, 1), (1, 0)]).delay()
    try:
        result.get(timeout=30)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the ZeroDivisionError of the second item did not reach the client")
    assert result.state == "FAILURE"


def test_accumulate_returns_its_arguments_or_the_one_at_index(worker, client):
    worker()
    assert client.app.send_task("celery.accumulate", args=(1, 2, 3)).get(timeout=30) == [1, 2, 3]
    assert client.app.send_task("celery.accumulate", args=(1, 2, 3), kwargs={"index": 1}).get(timeout=30) == 2


def test_the_old_group_builtin_sends_its_tasks_as_one_group(worker, client):
    """``celery.group`` (Celery keeps it for backwards compatibility): its tasks sent under its group id."""
    worker(concurrency=2)
    # partial_args (10,) go before each task's own: add(10, i).
    g = group(client.add.s(i) for i in range(3))
    res = g.freeze()
    client.app.send_task("celery.group", args=([dict(t) for t in g.tasks], res.as_tuple(), res.id, [10])).get(timeout=30)
    assert res.get(timeout=30) == [10, 11, 12]


def test_celery_chain_sent_as_a_task_is_not_implemented_as_in_celery(worker, client):
    worker()
    with pytest.raises(NotImplementedError, match="chain is not a real task"):
        client.app.send_task("celery.chain", args=()).get(timeout=30)


def test_the_chunks_builtin_sends_a_group_of_starmaps(worker, client):
    worker(concurrency=2)
    r = client.app.send_task("celery.chunks", args=(dict(client.add.s()), [[1, 2], [3, 4], [5, 6]], 2))
    (gid, _), members = r.get(timeout=30)
    results = [client.app.AsyncResult(m[0][0]).get(timeout=30) for m in members]
    assert results == [[3, 7], [11]]


def test_a_failed_chord_calls_its_bodys_errback_with_the_bodys_id(worker, client):
    """Celery 5.7's ``chord_error_from_stack``: the body fails with ``ChordError`` and its ``link_error``
    errbacks are called (old style: with the body's id)."""
    w = worker(concurrency=2)
    body = client.xsum.s()
    body.link_error(client.app.signature("tasks.log"))
    result = chord([client.add.s(1, 1), client.fail.s("boom")])(body)
    with pytest.raises(Exception):
        result.get(timeout=60)
    w.wait_for_log(rf"stdout: {re.escape(result.id)}", timeout=30)


def test_a_chord_inside_a_chain_passes_its_result_on(worker, client):
    worker(concurrency=2)
    result = chain(client.add.s(1, 1), chord([client.add.s(1), client.add.s(2)], client.xsum.s()), client.mul.s(10))()
    assert result.get(timeout=60) == ((2 + 1) + (2 + 2)) * 10


def test_a_saved_group_result_is_restored_by_another_client(worker, client):
    worker(concurrency=2)
    res = group(client.add.s(i, i) for i in range(4))()
    res.save()
    restored = client.app.GroupResult.restore(res.id)
    assert restored.get(timeout=60) == [0, 2, 4, 6]
