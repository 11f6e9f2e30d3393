"""The embedded default: kombu's SQLAlchemy transport and Celery's database
backend on one SQLite file (``sqla+sqlite:///`` / ``db+sqlite:///``).

No Redis here: these tests start workers on a file in the test's temp dir
(``broker_flags=False`` plus a config naming the file), or with no broker
configured at all in a temp working directory. Formats: kombu's SQLAlchemy transport and Celery's
database backend, as runtime/src/broker/sqlite.rs and backend/database.rs describe them.
"""

from __future__ import annotations

import collections
import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (CELERIAC_BIN, CELERIAC_TASKS, STANDIN, ManagedProcess, WorkerFactory, _base_env, close_apps,
                      declare_tasks, wait_until)

RECEIVED = re.compile(r"Task tasks\.add\[([0-9a-f-]{36})\] received")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "celeriac.sqlite"


def config(db: Path, extra: str = "") -> str:
    return f'broker_url = "sqla+sqlite:///{db}"\nresult_backend = "db+sqlite:///{db}"\n{extra}'


@pytest.fixture
def sqlite_worker(tmp_path):
    """Factory: ``sqlite_worker(config=TOML, concurrency=2)`` -> ManagedProcess (no Redis involved)."""
    factory = WorkerFactory(None, tmp_path)  # type: ignore[arg-type]  # broker_flags=False: never used

    def start(**kw) -> ManagedProcess:
        return factory(broker_flags=False, **kw)

    yield start
    factory.stop_all()


@pytest.fixture
def sqlite_client():
    """Factory: a stock Celery 5.7 client on ``sqla+sqlite:///<file>`` / ``db+sqlite:///<file>``."""
    from celery import Celery

    made = []

    def make(db: Path):
        app = Celery("tasks", broker=f"sqla+sqlite:///{db}", backend=f"db+sqlite:///{db}", set_as_current=False)
        app.conf.update(broker_connection_retry_on_startup=True)
        made.append(app)
        return app, declare_tasks(app)

    yield make
    close_apps(made)


def query(db: Path, sql: str, *args):
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def wait_rows_deleted(db: Path) -> None:
    """Acknowledged messages are deleted (kombu, and so the Python stand-in, keeps them forever)."""
    if STANDIN != "python":
        wait_until(lambda: query(db, "SELECT count(*) FROM kombu_message")[0][0] == 0, 10,
                   message="acknowledged rows to be deleted")


def results(db: Path, ids: list[str]) -> dict[str, tuple[str, object]]:
    """task_id -> (status, decoded JSON result) from celery_taskmeta."""
    out = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        rows = query(db, f"SELECT task_id, status, result FROM celery_taskmeta WHERE task_id IN "
                         f"({','.join('?' * len(part))})", *part)
        for tid, status, result in rows:
            out[tid] = (status, None if result is None else json.loads(result))
    return out


# --------------------------------------------------------------------------
# A stock Python client
# --------------------------------------------------------------------------

def test_python_client_gets_results_and_exceptions(sqlite_worker, sqlite_client, db):
    sqlite_worker(config=config(db), concurrency=2)
    app, t = sqlite_client(db)

    assert t["add"].delay(4, 4).get(timeout=30) == 8

    result = t["add"].delay(4, "a")
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    assert type(info.value) is TypeError, f"got {type(info.value).__module__}.{type(info.value).__qualname__}"
    assert result.state == "FAILURE"
    tb = result.traceback
    assert isinstance(tb, str) and "Traceback" in tb and "add" in tb, f"traceback: {tb!r}"

    # The row is Celery 5.7's: JSON bytes in `result`, naive UTC `date_done`.
    (status, raw, date_done, traceback), = query(
        db, "SELECT status, result, date_done, traceback FROM celery_taskmeta WHERE task_id = ?", result.id)
    assert status == "FAILURE"
    exc = json.loads(raw)
    assert (exc["exc_type"], exc["exc_module"]) == ("TypeError", "builtins")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", date_done), date_done
    assert traceback == tb

    wait_rows_deleted(db)


@pytest.mark.celeriac_only
def test_pickled_results_for_celery_5_6_clients(sqlite_worker, sqlite_client, db):
    """``?result_format=pickle`` on the worker's backend URL (the clients keep the plain URL):
    Celery <= 5.6 clients can only unpickle ``result``; 5.7 reads pickles too."""
    import pickle

    cfg = f'broker_url = "sqla+sqlite:///{db}"\nresult_backend = "db+sqlite:///{db}?result_format=pickle"\n'
    sqlite_worker(config=cfg, concurrency=2)
    app, t = sqlite_client(db)
    ok = t["add"].delay(4, 4)
    assert ok.get(timeout=30) == 8
    (raw,), = query(db, "SELECT result FROM celery_taskmeta WHERE task_id = ?", ok.id)
    assert raw[:2] == b"\x80\x02" and pickle.loads(raw) == 8

    bad = t["fail"].delay("boom")
    with pytest.raises(ValueError, match="boom"):
        bad.get(timeout=30)
    assert "Traceback" in bad.traceback

    ctx = app.send_task("tasks.context")
    value = ctx.get(timeout=30)
    assert isinstance(value, dict) and value["id"] == ctx.id
    (raw,), = query(db, "SELECT result FROM celery_taskmeta WHERE task_id = ?", ctx.id)
    assert pickle.loads(raw) == value


# --------------------------------------------------------------------------
# Two workers on one file
# --------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_two_workers_share_one_file_without_duplicates_or_loss(sqlite_worker, sqlite_client, db):
    n = 1000
    w1 = sqlite_worker(config=config(db), concurrency=2, name="one@%h")
    w2 = sqlite_worker(config=config(db), concurrency=2, name="two@%h")
    app, t = sqlite_client(db)
    with app.producer_or_acquire() as producer:
        ids = [t["add"].apply_async((i, i), producer=producer).id for i in range(n)]

    def all_done():
        r = results(db, ids)
        return len(r) == n and all(s == "SUCCESS" for s, _ in r.values())

    wait_until(all_done, 120, interval=0.5,
               message=lambda: f"{n} results (have {len(results(db, ids))})")
    got = results(db, ids)
    assert [got[tid][1] for tid in ids] == [2 * i for i in range(n)]

    # Each message ran exactly once, across both workers.
    def received():
        return collections.Counter(RECEIVED.findall(w1.log_text()) + RECEIVED.findall(w2.log_text()))

    wait_until(lambda: sum(received().values()) >= n, 10, message="every received line in the logs")
    counts = received()
    dupes = {tid: c for tid, c in counts.items() if c > 1}
    assert not dupes, f"{len(dupes)} tasks ran more than once"
    assert set(counts) == set(ids)
    share = (len(RECEIVED.findall(w1.log_text())), len(RECEIVED.findall(w2.log_text())))
    assert min(share) > 0, f"one worker did everything: {share}"
    for w in (w1, w2):
        assert "database is locked" not in w.log_text()
    wait_rows_deleted(db)


# --------------------------------------------------------------------------
# kill -9 with claimed messages
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
@pytest.mark.timeout(120)
def test_kill_9_with_claimed_messages_loses_none(sqlite_worker, sqlite_client, db):
    cfg = config(db, "task_acks_late = true\n[broker_transport_options]\nvisibility_timeout = 3\n")
    first = sqlite_worker(config=cfg, concurrency=1, name="first@%h")
    app, t = sqlite_client(db)
    ids = [t["sleep"].delay(1).id for _ in range(8)]

    # Let the first worker finish one task and hold some more (running + prefetched).
    first.wait_for_log(r"Task tasks\.sleep\[[0-9a-f-]+\] succeeded", timeout=30)
    claimed = query(db, "SELECT count(*) FROM kombu_message WHERE visible = 0")[0][0]
    assert claimed >= 2, f"only {claimed} claimed rows at kill time; the test proves nothing"
    first.kill()
    done_at_kill = sum(1 for s, _ in results(db, ids).values() if s == "SUCCESS")
    assert done_at_kill < len(ids)

    second = sqlite_worker(config=cfg, concurrency=2, name="second@%h")
    wait_until(lambda: sum(1 for s, _ in results(db, ids).values() if s == "SUCCESS") == len(ids), 60,
               interval=0.25, message=lambda: f"all {len(ids)} sleep tasks to succeed after kill -9")
    assert second.count(r"Restored \d+ unacknowledged message") >= 1
    wait_until(lambda: query(db, "SELECT count(*) FROM kombu_message")[0][0] == 0, 10,
               message="every message acknowledged")
    assert query(db, "SELECT count(*) FROM celeriac_claim")[0][0] == 0


# --------------------------------------------------------------------------
# No broker configured at all: a file in the current directory
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
def test_no_broker_configured_runs_on_a_local_file(tmp_path, sqlite_client):
    home = tmp_path / "project"
    home.mkdir()
    env = _base_env()
    proc = ManagedProcess("celeriac-default", [CELERIAC_BIN, "worker", "-A", CELERIAC_TASKS, "--loglevel=INFO",
                                               "-c", "2"], tmp_path / "worker.log", env=env, cwd=home).start()
    try:
        proc.wait_ready()
        file = home / "celeriac.sqlite"
        log = proc.log_text()
        assert f"sqla+sqlite:///celeriac.sqlite ({file})" in log, log
        assert f"db+sqlite:///celeriac.sqlite ({file})" in log, log
        assert proc.count(r"Not available on the \w+ transport: remote control.*events.*priorities") == 1

        def cli(*args):
            return subprocess.run([str(CELERIAC_BIN), *args], cwd=home, env=env, capture_output=True, text=True,
                                  timeout=60, stdin=subprocess.DEVNULL)

        started = time.monotonic()
        r = cli("call", "tasks.add", "4", "4", "--wait", "--timeout", "30")
        elapsed = time.monotonic() - started
        assert (r.returncode, r.stdout.strip()) == (0, "8"), r
        assert elapsed < 5, f"round trip took {elapsed:.2f}s"
        task_id = r.stderr.strip().splitlines()[-1]

        r = cli("result", task_id)
        assert (r.returncode, r.stdout.strip()) == (0, "8"), r

        # A Python client pointed at the same file reads the same result.
        app, _ = sqlite_client(file)
        assert app.AsyncResult(task_id).get(timeout=10) == 8
    finally:
        proc.stop()


# --------------------------------------------------------------------------
# Chords on the database backend: celery.chord_unlock
# --------------------------------------------------------------------------

def test_a_chord_on_the_database_backend_completes_through_chord_unlock(sqlite_worker, sqlite_client, db):
    """The database backend counts no chords: the client sends ``celery.chord_unlock``, which polls the
    header every second and then sends the body (or fails it with ``ChordError``)."""
    from celery import chord

    sqlite_worker(config=config(db), concurrency=2)
    app, t = sqlite_client(db)
    result = chord(t["add"].s(i, i) for i in range(5))(t["xsum"].s())
    assert result.get(timeout=60) == sum(2 * i for i in range(5))

    failing = chord([t["add"].s(1, 1), t["fail"].s("boom")])(t["xsum"].s())
    with pytest.raises(Exception) as info:
        failing.get(timeout=60, propagate=True)
    # The body's own row: ChordError naming the member that failed, the body never run.
    wait_until(lambda: results(db, [failing.id]).get(failing.id, ("",))[0] == "FAILURE", 30,
               message="the chord body to be failed")
    status, exc = results(db, [failing.id])[failing.id]
    assert exc["exc_type"] == "ChordError", exc
    assert info.value is not None


def test_a_chord_a_task_sends_on_the_database_backend_completes_too(sqlite_worker, sqlite_client, db):
    sqlite_worker(config=config(db, '[task_annotations."*"]\nsend_tasks = true\n'), concurrency=2)
    app, _ = sqlite_client(db)
    body_id = app.send_task("tasks.fanout", args=(4,)).get(timeout=30)
    assert app.AsyncResult(body_id).get(timeout=60) == sum(2 * i for i in range(4))


def test_a_worker_consuming_two_queues_serves_both_in_turn(sqlite_worker, sqlite_client, db):
    """A backlog on queue ``a`` does not hold back ``b`` (kombu's SQLAlchemy transport rotates its
    queue cycle; Celeriac's claim deals messages out in turns)."""
    app, t = sqlite_client(db)
    backlog = [app.send_task("tasks.sleep", args=(0.01,), queue="a") for _ in range(200)]
    late = [t["mul"].apply_async((i, 2), queue="b") for i in range(5)]
    sqlite_worker(config=config(db), queues="a,b", concurrency=1)
    assert [r.get(timeout=60) for r in late] == [2 * i for i in range(5)]
    done_before = len([s for s, _ in results(db, [r.id for r in backlog]).values() if s == "SUCCESS"])
    assert done_before < 100, f"b's 5 tasks waited for {done_before} of a's 200"
