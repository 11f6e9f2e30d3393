"""Malformed messages pushed straight onto the ``celery`` list.

A Python worker loses or dies on several of these (observed when the Redis
wire captures in tests/fixtures/redis were made). Celeriac must log each one at WARNING/ERROR level, drop it (no
poison message left in ``unacked``) and keep serving.
"""

import base64
import json
import re
import time
import uuid

import pytest

LOG_PROBLEM = re.compile(r"\b(WARN|WARNING|ERROR|CRITICAL)\b")


def envelope(body: bytes | str, headers: dict, *, content_type="application/json", tag=None) -> dict:
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode()
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {
            "correlation_id": headers.get("id", ""),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag or str(uuid.uuid4()),
        },
    }


def task_headers(task_id: str, task="tasks.add") -> dict:
    return {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None, "argsrepr": "(2, 2)", "kwargsrepr": "{}",
            "origin": "gen0@test", "ignore_result": False}


GOOD_BODY = json.dumps([[2, 2], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


def _env_case(body, headers, task_id):
    tag = str(uuid.uuid4())
    return json.dumps(envelope(body, headers, tag=tag)).encode(), task_id, tag.encode()


def build_cases() -> dict:
    """name -> (raw bytes to LPUSH, task id in its headers or None, marker to look for in ``unacked``)."""
    cases = {
        "not-json": (b"this is not json {", None, b"this is not json"),
        "json-but-not-an-envelope": (b'[1, 2, "three-garbage"]', None, b"three-garbage"),
    }
    tid = str(uuid.uuid4())
    cases["bad-base64-body"] = _env_case("!!! not base64 ###", task_headers(tid), tid)
    hdr = task_headers(str(uuid.uuid4()))
    del hdr["id"], hdr["task"]
    cases["headers-without-id-and-task"] = _env_case(GOOD_BODY, hdr, None)
    tid = str(uuid.uuid4())
    cases["body-not-json"] = _env_case(b"\x00\x01 not json", task_headers(tid), tid)
    tid = str(uuid.uuid4())
    two = json.dumps([[2, 2], {}]).encode()  # kills a Python worker
    cases["two-element-body"] = _env_case(two, task_headers(tid), tid)
    return cases


CASES = build_cases()


# These kill a Python worker ("Unrecoverable error"); celeriac must survive them.
KILLS_PYTHON_WORKER = {"not-json", "json-but-not-an-envelope", "bad-base64-body", "two-element-body"}


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=pytest.mark.standin_xfail("kills a Python worker"))
    if name in KILLS_PYTHON_WORKER else name
    for name in CASES])
def test_malformed_message_is_logged_and_dropped(case, worker, client, redis_server):
    raw, task_id, marker = CASES[case]
    w = worker()
    before = len(w.log_text())
    redis_server.client.lpush("celery", raw)

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if redis_server.client.llen("celery") == 0 and LOG_PROBLEM.search(w.log_text()[before:]):
            break
        time.sleep(0.05)
    assert redis_server.client.llen("celery") == 0, "the worker did not consume the message"
    new_log = w.log_text()[before:]
    assert LOG_PROBLEM.search(new_log), f"nothing logged at WARNING/ERROR for {case}:\n{new_log}"
    assert w.alive, f"worker died on {case} (rc={w.returncode})"

    # Still serving, and the next message in FIFO order was the good one.
    assert client.add.delay(2, 2).get(timeout=30) == 4
    assert w.alive

    # Not left behind as a poison message for the restore sweep.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not any(marker in v for v in redis_server.client.hvals("unacked")):
            break
        time.sleep(0.1)
    assert not any(marker in v for v in redis_server.client.hvals("unacked")), "left in unacked"

    if case == "two-element-body":
        meta = redis_server.meta(task_id)
        assert meta is not None, "no FAILURE result written for the 2-element body"
        assert meta["status"] == "FAILURE", meta
        assert meta["task_id"] == task_id
        assert "exc_type" in meta["result"], meta
        from celery.result import AsyncResult
        r = AsyncResult(task_id, app=client.app)
        assert r.state == "FAILURE"
    if task_id is not None:
        # Never reported as a success.
        meta = redis_server.meta(task_id)
        assert meta is None or meta["status"] == "FAILURE", meta


@pytest.mark.timeout(60)
@pytest.mark.celeriac_only  # Celery has no bound on a message's size or argument count
def test_a_message_over_a_configured_bound_fails_naming_the_bound_and_the_worker_keeps_serving(worker, client):
    w = worker(config="[message_limits]\nmax_size = \"4KiB\"\nmax_args = 100\n")
    big = client.xsum.delay(list(range(2000)))  # ~10 KB of arguments
    with pytest.raises(Exception) as info:
        big.get(timeout=30)
    assert big.state == "FAILURE"
    assert "the body is" in str(info.value) and "message_limits.max_size" in str(info.value), info.value
    many = client.app.send_task("tasks.xsum", args=list(range(150)))  # send_task: no client-side signature check
    with pytest.raises(Exception) as info:
        many.get(timeout=30)
    assert "message_limits.max_args" in str(info.value), info.value
    w.wait_for_log(r"message too large: the body is \d+, the limit is 4096", timeout=5)
    assert client.xsum.delay(list(range(100))).get(timeout=30) == 4950
    assert w.alive
