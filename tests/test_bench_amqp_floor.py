"""`celeriac-bench amqp-floor`, the AMQP ceiling of `bench/run.sh --broker amqp`.

Why this exists: the floor consumer is what the benchmark compares the worker
with over RabbitMQ ("the least any worker can do per message"). If it dropped
replies, acknowledged before a reply was confirmed, or replied to a message that
ignores its result, its rate would be a ceiling of nothing. These tests drive
both of its clients (the raw frame codec and lapin) with a stock Celery client
on a private RabbitMQ node: every `rpc://` caller gets its reply, an
`ignore_result` message is acknowledged without one, and the queue ends empty
with nothing left unacknowledged. Nothing here measures speed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import Celery

from conftest import ManagedProcess, bench_binary, close_apps, declare_tasks, wait_until

REPLIES = "floor.replies"

pytestmark = [pytest.mark.celeriac_only, pytest.mark.timeout(120)]


def _bench_binary() -> Path:
    exe = bench_binary()
    if exe is None:
        pytest.fail("celeriac-bench is not built (cargo build -p celeriac-bench)")
    return exe


@pytest.mark.parametrize("client", ["raw", "lapin"])
def test_the_floor_consumer_replies_to_every_rpc_caller_and_acknowledges_everything(rabbitmq_server, tmp_path,
                                                                                       client):
    vhost = rabbitmq_server.vhost()
    url = rabbitmq_server.url(vhost)
    app = Celery("tasks", broker=url, backend="rpc://", set_as_current=False)
    try:
        t = declare_tasks(app)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_declare(REPLIES, durable=True, auto_delete=False)
        # Queued before the consumer starts (the first deliveries then come with consume-ok).
        results = [t["add"].delay(i, i) for i in range(50)]
        # Replies of these would go to REPLIES, where they can be counted.
        for i in range(50):
            t["add"].apply_async((i, i), ignore_result=True, reply_to=REPLIES)
        for i in range(10):
            t["add"].apply_async((i, i), reply_to=REPLIES)
        floor = ManagedProcess(f"amqp-floor ({client})",
                               [str(_bench_binary()), "amqp-floor", "--url", url, "--queue", "celery",
                                "--prefetch", "8", "--client", client],
                               tmp_path / "floor.log").start()
        try:
            # The floor does not run tasks: its reply says SUCCESS with Celery's result for add(4, 4).
            assert [r.get(timeout=30) for r in results] == [8] * 50
            wait_until(lambda: rabbitmq_server.queue_counts(vhost).get("celery") == (0, 0), 30,
                       message="the celery queue drained and acknowledged")
            time.sleep(0.5)
            assert floor.alive, floor.tail()
            # Ten replies, none for the 50 that ignore their result.
            assert rabbitmq_server.queue_counts(vhost)[REPLIES] == (10, 0)
        finally:
            floor.stop()
    finally:
        close_apps([app])
