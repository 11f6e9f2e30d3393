"""Crashes, restarts and shutdowns: no task is lost."""

import re
import time

import pytest

from conftest import wait_until

RECEIVED = r"Task tasks\.\w+\[[0-9a-f-]+\] received"

ACKS_LATE_CONFIG = """\
task_acks_late = true
worker_prefetch_multiplier = 1

[broker_transport_options]
visibility_timeout = 3
"""


@pytest.mark.timeout(240)
def test_acks_late_survives_sigkill(worker, client, redis_server):
    """kill -9 mid-run with task_acks_late: a new worker re-runs what was lost.

    The killed worker's in-flight messages sit in the ``unacked`` hash. We wait
    longer than ``visibility_timeout`` (3 s) before starting the new worker, so
    its startup restore sweep (what Celery/kombu do at startup) must put them
    back on the queue; no 100 s periodic sweep is needed.
    """
    first = worker(concurrency=2, config=ACKS_LATE_CONFIG)
    ids = [client.sleep.delay(0.5).id for _ in range(20)]

    first.wait_for_log(RECEIVED, count=3, timeout=60)
    first.kill()
    done_at_kill = sum(1 for m in redis_server.metas(ids) if m and m.get("status") == "SUCCESS")
    assert done_at_kill < 20, "every task finished before the kill; the test proves nothing"
    # Something was in flight and unacknowledged when the worker died.
    assert redis_server.client.hlen("unacked") >= 1, "no unacked message after kill -9 (acks_late?)"

    time.sleep(3 + 1.5)  # > visibility_timeout
    second = worker(concurrency=2, config=ACKS_LATE_CONFIG)
    metas = redis_server.wait_for_states(ids, ("SUCCESS",), timeout=90, watch=[second])
    assert [m["task_id"] for m in metas] == ids
    assert second.alive
    # Everything acknowledged at the end.
    deadline = time.monotonic() + 10
    while redis_server.client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_server.client.hlen("unacked") == 0


@pytest.mark.timeout(300)
@pytest.mark.standin_xfail("celery 5.7 dies with AttributeError('NoneType'...'hostname') when redis restarts")
def test_redis_restart_under_load(redis_factory, worker, celery_app):
    """Restart redis-server while the worker is busy; it reconnects and nothing is lost.

    This test's redis runs with ``--appendonly yes --appendfsync always`` (and
    its own --dir): the session redis runs with ``--save '' --appendonly no``,
    where a restart would drop every queued message and "all complete" would be
    impossible for any worker.
    """
    server = redis_factory(persistent=True)
    w = worker(concurrency=2, redis=server)
    c1 = celery_app(redis=server)

    first: list[tuple[str, int]] = []
    for i in range(300):
        first.append((c1.add.delay(i, i).id, 2 * i))
        if i % 30 == 0:  # a little slow work so the restart lands mid-run
            first.append((c1.sleep.delay(0.3).id, None))
    w.wait_for_log(r"Task tasks\.\w+\[[0-9a-f-]+\] succeeded", timeout=60)

    server.restart()
    done = sum(1 for m in server.metas([t for t, _ in first]) if m and m.get("status") == "SUCCESS")
    print(f"{done}/{len(first)} tasks had finished when redis came back")

    c2 = celery_app(redis=server)  # fresh connections for the second batch
    second = [(c2.add.delay(1000 + i, i).id, 1000 + 2 * i) for i in range(300)]

    everything = first + second
    metas = server.wait_for_states([t for t, _ in everything], ("SUCCESS",), timeout=180, watch=[w])
    for (task_id, expected), meta in zip(everything, metas):
        if expected is not None:
            assert meta["result"] == expected, (task_id, meta)
    assert w.alive, "the worker died when redis restarted"


@pytest.mark.timeout(120)
def test_warm_shutdown_finishes_the_running_task(worker, client):
    """SIGTERM: the running task completes, the worker exits 0, queued work is not lost."""
    w = worker(concurrency=1)
    running = client.sleep.delay(2)
    waiting = [client.add.delay(i, 100) for i in range(3)]
    w.wait_for_log(rf"Task tasks\.sleep\[{re.escape(running.id)}\] received", timeout=30)
    time.sleep(0.5)  # let it start running
    t0 = time.monotonic()
    rc = w.terminate(timeout=30)
    assert rc == 0, f"worker exit code {rc} after SIGTERM"
    assert time.monotonic() - t0 < 30
    meta = client.redis.meta(running.id)
    assert meta is not None and meta["status"] == "SUCCESS", meta
    running.get(timeout=5)
    assert running.state == "SUCCESS"
    # Tasks that had not started are either done or back on the queue: a new
    # worker finishes them (the old one must have restored any it prefetched).
    worker(concurrency=1)
    assert [r.get(timeout=30) for r in waiting] == [100, 101, 102]


IDLE_CONFIG = """\
task_acks_late = {acks_late}

[broker_transport_options]
visibility_timeout = 2
"""


def _idle(w, seconds: float = 1.5) -> None:
    """Let a fresh worker settle into its blocking wait on the empty queues."""
    time.sleep(seconds)
    assert w.alive


@pytest.mark.timeout(120)
def test_idle_worker_records_an_acks_late_task_before_running_it(worker, client, redis_server):
    """A message the idle worker got from its blocking wait is in ``unacked``
    while an ``acks_late`` task runs, so kill -9 mid-run does not lose it."""
    first = worker(concurrency=1, config=IDLE_CONFIG.format(acks_late="true"))
    _idle(first)
    r = client.sleep.delay(3)
    first.wait_for_log(rf"Task tasks\.sleep\[{re.escape(r.id)}\] received", timeout=30)
    wait_until(lambda: redis_server.client.hlen("unacked") == 1, timeout=5,
               message="the running acks_late task in unacked")
    first.kill()
    time.sleep(2 + 1)  # > visibility_timeout: the next worker's startup sweep restores it
    worker(concurrency=1, config=IDLE_CONFIG.format(acks_late="true"))
    assert r.get(timeout=30) == 3
    wait_until(lambda: redis_server.client.hlen("unacked") == 0, timeout=10, message="unacked to empty")


@pytest.mark.timeout(120)
def test_idle_worker_records_a_task_waiting_for_its_eta(worker, client, redis_server):
    """A countdown task taken while idle is held until its ETA: it must be in
    ``unacked`` meanwhile (even with early acks), so kill -9 does not lose it."""
    first = worker(concurrency=1, config=IDLE_CONFIG.format(acks_late="false"))
    _idle(first)
    r = client.add.apply_async((20, 22), countdown=6)
    first.wait_for_log(rf"Task tasks\.add\[{re.escape(r.id)}\] received", timeout=30)
    wait_until(lambda: redis_server.client.hlen("unacked") == 1, timeout=5,
               message="the task waiting for its ETA in unacked")
    first.kill()
    time.sleep(2 + 1)
    worker(concurrency=1, config=IDLE_CONFIG.format(acks_late="false"))
    assert r.get(timeout=30) == 42


@pytest.mark.timeout(60)
def test_idle_worker_early_ack_leaves_no_bookkeeping(worker, client, redis_server):
    """With early acks, a task the idle worker starts at once is acknowledged as
    it starts: nothing of it stays in ``unacked`` / ``unacked_index``."""
    w = worker(concurrency=2)
    _idle(w)
    for i in range(20):
        assert client.add.delay(i, i).get(timeout=10) == 2 * i
    wait_until(lambda: redis_server.client.hlen("unacked") == 0
               and redis_server.client.zcard("unacked_index") == 0, timeout=5, message="no bookkeeping left")


class _Monitor:
    """Every command the Redis server runs, in order, from a ``MONITOR``
    connection read by a background thread (``[db lua]`` marks commands run
    inside a script)."""

    def __init__(self, redis_server):
        import threading

        self.lines: list[str] = []
        self._conn = redis_server.client.connection_pool.get_connection("MONITOR")
        self._conn.send_command("MONITOR")
        assert self._conn.read_response() in (b"OK", "OK")
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                line = self._conn.read_response()
            except Exception:
                return
            self.lines.append(line.decode() if isinstance(line, bytes) else str(line))

    def stop(self) -> list[str]:
        self._stop = True
        self._conn.disconnect()
        self._thread.join(timeout=5)
        return self.lines


@pytest.mark.timeout(60)
@pytest.mark.celeriac_only  # kombu's own worker pops with BRPOP: this is where Celeriac goes further
def test_an_idle_worker_never_takes_a_message_off_its_queue_without_recording_it(worker, client, redis_server):
    """The idle worker waits without taking (``BLMOVE celery celery RIGHT
    RIGHT`` leaves the message in place), then pops and records in one
    script: no bare ``BRPOP``/``RPOP`` ever leaves a message only in the
    worker's memory, where ``kill -9`` would lose it (bench/chaos.sh found
    one task lost per kill that way)."""
    w = worker(concurrency=1)
    _idle(w)
    monitor = _Monitor(redis_server)
    blmove = re.compile(r'"BLMOVE" "celery" "celery" "RIGHT" "RIGHT"')
    try:
        r = client.add.delay(20, 22)
        assert r.get(timeout=10) == 42
        # The wait that was pending when MONITOR started is not in its output: wait for the
        # next one, which the worker sends once idle again (it may come after the result).
        wait_until(lambda: any(blmove.search(ln) for ln in list(monitor.lines)), timeout=10,
                   message="the idle worker to wait with BLMOVE")
    finally:
        lines = monitor.stop()
    outside_scripts = [ln for ln in lines if " lua]" not in ln]
    pops = [ln for ln in outside_scripts if re.search(r'"(BRPOP|RPOP|BLMPOP|LPOP)"', ln, re.I)]
    assert pops == [], pops
    scripted = [ln for ln in lines if " lua]" in ln]
    rpop = next(i for i, ln in enumerate(scripted) if '"RPOP" "celery"' in ln)
    assert any('"HSET" "unacked"' in ln for ln in scripted[rpop:rpop + 4]), scripted[rpop:rpop + 4]


@pytest.mark.timeout(60)
@pytest.mark.celeriac_only  # Celery's prefork pool acknowledges once the child has accepted the task
def test_an_early_ack_reaches_redis_before_the_task_starts(worker, client, redis_server):
    """With early acks (Celery's default), a task runs at most once: its ack is
    written before it starts (the ``STARTED`` state, with
    ``task_track_started``, is stored after it), so a worker killed mid-task
    leaves nothing for a restore sweep to run again."""
    w = worker(concurrency=1, config="task_track_started = true\n")
    _idle(w)
    monitor = _Monitor(redis_server)
    try:
        r = client.sleep.delay(0.5)
        assert r.get(timeout=10) == 0.5
    finally:
        lines = monitor.stop()
    ack = next(i for i, ln in enumerate(lines) if '"HDEL" "unacked"' in ln)
    started = next(i for i, ln in enumerate(lines) if f"celery-task-meta-{r.id}" in ln and "STARTED" in ln)
    assert ack < started, lines[min(ack, started):max(ack, started) + 1]
