"""Intermediate states (PROGRESS, STARTED) and the worker's configuration sources."""

import json
import time

import pytest

from conftest import new_task_id


def collect_published(pubsub, until_status="SUCCESS", timeout=30.0):
    """Read JSON messages from a result-channel subscription until ``until_status``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg is None or msg["type"] != "message":
            continue
        value = json.loads(msg["data"])
        seen.append(value)
        if value.get("status") == until_status:
            return seen
    pytest.fail(f"no {until_status} published within {timeout}s; saw {[m.get('status') for m in seen]}")


def subscribe(client, task_id):
    pubsub = client.redis.results.pubsub()
    pubsub.subscribe(client.result_key(task_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    return pubsub


def test_progress_states_are_published_before_success(worker, client):
    worker()
    task_id = new_task_id()
    pubsub = subscribe(client, task_id)
    try:
        result = client.progress.apply_async((5,), task_id=task_id)
        seen = collect_published(pubsub)
    finally:
        pubsub.close()
    statuses = [m.get("status") for m in seen]
    assert "PROGRESS" in statuses, statuses
    assert statuses[-1] == "SUCCESS"
    assert statuses.index("PROGRESS") < statuses.index("SUCCESS"), statuses
    for m in seen:
        assert m.get("task_id") == task_id, m
    result.get(timeout=10)
    assert result.state == "SUCCESS"


def test_task_track_started(worker, client):
    worker(config="task_track_started = true\n")
    task_id = new_task_id()
    pubsub = subscribe(client, task_id)
    try:
        result = client.sleep.apply_async((0.5,), task_id=task_id)
        seen = collect_published(pubsub)
    finally:
        pubsub.close()
    statuses = [m.get("status") for m in seen]
    assert statuses[0] == "STARTED", statuses
    assert statuses[-1] == "SUCCESS", statuses
    result.get(timeout=10)
    assert result.state == "SUCCESS"


def test_no_started_state_by_default(worker, client):
    worker()
    task_id = new_task_id()
    pubsub = subscribe(client, task_id)
    try:
        client.sleep.apply_async((0.2,), task_id=task_id)
        seen = collect_published(pubsub)
    finally:
        pubsub.close()
    assert [m.get("status") for m in seen] == ["SUCCESS"]


def test_result_expires(worker, client):
    worker(config="result_expires = 60\n")
    result = client.add.delay(1, 2)
    assert result.get(timeout=30) == 3
    ttl = client.redis.results.ttl(client.result_key(result.id))
    assert 0 < ttl <= 60, ttl


def test_broker_and_backend_from_config_file(worker, client, redis_server):
    worker(broker_flags=False, config=(
        f'broker_url = "{redis_server.url(0)}"\n'
        f'result_backend = "{redis_server.url(1)}"\n'))
    assert client.add.delay(20, 22).get(timeout=30) == 42


@pytest.mark.celeriac_only
def test_broker_and_backend_from_env(worker, client, redis_server):
    worker(broker_flags=False, env={"CELERIAC_BROKER_URL": redis_server.url(0),
                                    "CELERIAC_RESULT_BACKEND": redis_server.url(1)})
    assert client.add.delay(20, 22).get(timeout=30) == 42


def test_queues_and_task_routes(worker, celery_app):
    """A worker started with -Q serves only those queues; task_routes on the client pick the queue."""
    w = worker(queues="wasm,other")
    c = celery_app(task_routes={"tasks.mul": {"queue": "other"}})
    assert c.add.apply_async((1, 2), queue="wasm").get(timeout=30) == 3
    assert c.mul.delay(3, 3).get(timeout=30) == 9          # routed to "other"
    stray = c.add.delay(5, 5)                              # default queue "celery": nobody serves it
    time.sleep(1.0)
    assert stray.state == "PENDING"
    assert c.redis.client.llen("celery") == 1
    assert stray.id not in w.log_text()


def test_worker_name_in_banner(worker):
    w = worker(name="wasm1@testhost")
    assert "wasm1@testhost" in w.log_text()
