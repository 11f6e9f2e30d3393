"""Flower (pip ``flower``, 2.x) against a Celeriac worker over Redis (issue #11).

Each test starts Flower itself, as an operator would, on a free port —
``python -m celery -A standin_tasks -b <redis> --result-backend <redis> flower --port=N
--address=127.0.0.1`` with ``FLOWER_UNAUTHENTICATED_API=true`` — and talks to its HTTP API (and, in one
test, renders its workers page in headless Chromium). ``-A standin_tasks`` only gives Flower's app the
task names (Flower's rate-limit call refuses a task its own app does not know); Flower runs no task.

Where Flower's data comes from, which decides what each test can see:

* ``/api/workers`` holds the replies to ``inspect stats / active_queues / registered / conf`` (and, for one
  ``workername``, ``active / reserved / scheduled / revoked``) that Flower broadcasts at start-up and on
  ``?refresh=1``; a worker is listed once it answers, events or not.
* ``/api/tasks``, ``/api/workers?status=1`` and the workers page come from the events Flower receives:
  task events need ``-E``; a worker is *online* while its ``worker-heartbeat`` events keep coming.

Every test also runs against the Python stand-in (``CELERIAC_TEST_STANDIN=python``); those that need
worker heartbeats are ``standin_xfail``: the stand-in runs ``--without-heartbeat``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (READY_TIMEOUT, TESTS_DIR, ManagedProcess, _base_env, free_port,
                      wait_until)

pytestmark = pytest.mark.timeout(240)

NODE = "flower@test"
PY_NODE = "py@test"
#: Why the tests of a worker's online status are standin_xfail.
NO_HEARTBEAT = ("the stand-in runs --without-heartbeat: no worker-online, heartbeats every 2 s or worker-offline; "
                "Flower sees it online only for the 10 s after it answers Flower's one `heartbeat` request (or "
                "sends a task event), and only with -E (without, it has no event dispatcher at all)")


class Flower:
    """A Flower process and a small client for its HTTP API."""

    def __init__(self, redis_server, tmp_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "celery", "-A", "standin_tasks", "-b", redis_server.url(0),
                "--result-backend", redis_server.url(1), "flower", f"--port={self.port}", "--address=127.0.0.1",
                "--persistent=False", "--inspect_timeout=3000"]
        self.process = ManagedProcess(f"flower-{self.port}", argv, tmp_path / f"flower-{self.port}.log",
                                      env=_base_env({"FLOWER_UNAUTHENTICATED_API": "true",
                                                     "PYTHONPATH": str(TESTS_DIR)}),
                                      cwd=TESTS_DIR)

    def start(self) -> "Flower":
        self.process.start()

        def healthy() -> bool:
            if not self.process.alive:
                pytest.fail(f"flower exited (rc={self.process.returncode})\n{self.process.tail()}", pytrace=False)
            try:
                return self.request("GET", "/healthcheck")[1] == "OK"
            except OSError:
                return False

        wait_until(healthy, READY_TIMEOUT, interval=0.2, message=f"Flower's /healthcheck on port {self.port}")
        return self

    def request(self, method: str, path: str, params: dict | None = None, data: dict | None = None,
                timeout: float = 30.0) -> tuple[int, str]:
        """``(status, body)``; an HTTP error status is returned, not raised."""
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(self, path: str, **params) -> dict:
        status, body = self.request("GET", path, params)
        assert status == 200, f"GET {path} {params}: {status} {body}"
        return json.loads(body)

    def post(self, path: str, **data) -> tuple[int, str]:
        return self.request("POST", path, data=data)

    # -- what Flower knows --------------------------------------------------
    def workers(self, **params) -> dict:
        """``/api/workers`` asking Flower to inspect again (``refresh=1``), as its Refresh button does."""
        return self.get("/api/workers", refresh=1, **params)

    def wait_for_worker(self, name: str, *, keys=("stats", "registered", "active_queues", "conf"),
                        timeout: float = 30.0) -> dict:
        """Poll ``/api/workers`` until ``name`` is listed with every reply in ``keys``; its entry."""
        last: dict = {}

        def listed():
            nonlocal last
            last = self.workers()
            entry = last.get(name) or {}
            return entry if all(k in entry for k in keys) else None

        return wait_until(listed, timeout, interval=0.5,
                          message=lambda: f"Flower to list {name} with {keys}: {json.dumps(last)[:2000]}")

    def tasks(self, **params) -> dict:
        return self.get("/api/tasks", **params)

    def wait_for_task_states(self, expected: dict[str, str], timeout: float = 30.0) -> dict:
        """Poll ``/api/tasks`` until each task id in ``expected`` has that state; the tasks."""
        last: dict = {}

        def done():
            nonlocal last
            last = self.tasks()
            return last if all(last.get(i, {}).get("state") == s for i, s in expected.items()) else None

        return wait_until(done, timeout, interval=0.5, message=lambda: (
            f"Flower's task states {expected}: got "
            f"{ {i: last.get(i, {}).get('state') for i in expected} }"))

    def status(self) -> dict:
        """``/api/workers?status=1``: worker name -> online, from the events Flower received."""
        return self.get("/api/workers", status=1)

    def stop(self) -> None:
        self.process.stop(grace=5)


@pytest.fixture
def flower(redis_server, tmp_path):
    """Factory: ``flower()`` starts Flower on the session redis (start the workers first)."""
    started: list[Flower] = []

    def start() -> Flower:
        f = Flower(redis_server, tmp_path).start()
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def inspect(client, method: str, *args, node: str = NODE):
    reply = getattr(client.app.control.inspect(destination=[node], timeout=5), method)(*args)
    assert reply and node in reply, f"{method}: no reply from {node}: {reply!r}"
    return reply[node]


# --------------------------------------------------------------------------
# /api/workers
# --------------------------------------------------------------------------

def test_flower_lists_the_worker_with_its_stats_registered_tasks_and_queues(worker, client, flower):
    w = worker(name=NODE, concurrency=2, extra_args=["-E"])
    assert client.tasks["add"].delay(4, 4).get(timeout=20) == 8
    f = flower()

    entry = f.wait_for_worker(NODE)
    stats = entry["stats"]
    assert stats["pid"] == w.pid
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["total"] == {"tasks.add": 1}
    assert stats["broker"]["transport"] == "redis" and stats["broker"]["port"] == client.redis.port
    assert "alternates" not in stats["broker"], "Flower drops the broker's alternates (its issue #1512)"
    assert stats["rusage"]["maxrss"] > 0 and int(stats["clock"]) > 0
    assert {"tasks.add", "tasks.fail", "tasks.spin", "tasks.sleep"} <= set(entry["registered"])
    assert [q["name"] for q in entry["active_queues"]] == ["celery"]
    assert isinstance(entry["conf"], dict) and entry["conf"]

    # One worker asked by name: Flower fetches its task lists too.
    one = f.workers(workername=NODE)
    assert list(one) == [NODE]
    for key in ("active", "reserved", "scheduled", "revoked"):
        assert one[NODE][key] == [], (key, one[NODE][key])

    # The worker's own page renders every reply (a reply shape Flower cannot render gives a 500).
    status, html = f.request("GET", f"/worker/{urllib.parse.quote(NODE)}")
    assert status == 200, html[-3000:]
    assert NODE in html and "tasks.add" in html
    assert re.search(r"Max concurrency</td>\s*<td>2</td>", html), "the pool's max-concurrency is not on the page"

    # A name Flower never heard of is refused, not listed.
    status, _ = f.request("GET", "/api/workers", {"workername": "nobody@nowhere"})
    assert status == 404


def worker_rows(f: Flower) -> dict[str, dict]:
    """Flower's workers table (``/workers?json=1``): per worker, its heartbeat fields, its online status and
    how many events of each type Flower received from it."""
    return {row["hostname"]: row for row in f.get("/workers", json=1)["data"]}


@pytest.mark.standin_xfail(NO_HEARTBEAT)
def test_flower_keeps_the_worker_online_from_its_heartbeats_and_marks_it_offline_when_it_stops(worker, flower):
    w = worker(name=NODE)  # no -E: worker events go out all the same
    f = flower()
    wait_until(lambda: f.status().get(NODE) is True, timeout=20,
               message=lambda: f"Flower to show {NODE} online: {f.status()}")
    # Flower's event receiver asks every worker for one heartbeat when it connects (freq=5: online for
    # 10 s); only the worker's own heartbeats, every 2 s, keep it online past that.
    time.sleep(12)
    assert f.status().get(NODE) is True, "the worker went offline in Flower: its heartbeats stopped"
    row = worker_rows(f)[NODE]
    assert row["status"] is True and row["worker-heartbeat"] >= 5, row
    assert row["pid"] == w.pid and row["freq"] == 2.0 and len(row["loadavg"]) == 3, row
    assert row["sw_ident"] and row["sw_ver"] and row["sw_sys"], row

    assert w.terminate() == 0
    # worker-offline, the worker's last word, marks it offline at once (not after its heartbeats expire).
    wait_until(lambda: worker_rows(f)[NODE].get("worker-offline") == 1, timeout=10,
               message=lambda: f"Flower to receive worker-offline: {worker_rows(f)[NODE]}")
    assert f.status()[NODE] is False


# --------------------------------------------------------------------------
# /api/tasks
# --------------------------------------------------------------------------

def test_flower_shows_the_tasks_the_worker_ran_with_their_final_states(worker, client, flower):
    worker(name=NODE, extra_args=["-E"])
    f = flower()
    f.wait_for_worker(NODE, keys=("stats",))

    ok = client.tasks["add"].delay(4, 4)
    bad = client.tasks["fail"].delay("boom")
    assert ok.get(timeout=20) == 8
    with pytest.raises(ValueError):
        bad.get(timeout=20)

    tasks = f.wait_for_task_states({ok.id: "SUCCESS", bad.id: "FAILURE"})
    good = tasks[ok.id]
    assert good["name"] == "tasks.add" and good["worker"] == NODE
    assert good["args"] == "(4, 4)" and good["result"] == "8"
    assert good["received"] and good["started"] and good["succeeded"] and good["runtime"] >= 0
    failed = tasks[bad.id]
    assert failed["name"] == "tasks.fail" and failed["worker"] == NODE
    assert "ValueError" in failed["exception"] and "boom" in failed["exception"]
    assert failed["traceback"] and failed["failed"]

    # Flower's filters work on what the events said.
    assert list(f.tasks(state="FAILURE")) == [bad.id]
    assert list(f.tasks(workername=NODE, taskname="tasks.add")) == [ok.id]
    info = f.get(f"/api/task/info/{ok.id}")
    assert info["state"] == "SUCCESS" and info["worker"] == NODE
    # Flower counts the worker's task events.
    row = worker_rows(f)[NODE]
    assert row["task-received"] == 2 and row["task-succeeded"] == 1 and row["task-failed"] == 1, row


# --------------------------------------------------------------------------
# Flower's control calls
# --------------------------------------------------------------------------

def test_flowers_rate_limit_call_holds_a_second_add_back_while_the_first_runs(worker, client, flower):
    worker(name=NODE, concurrency=2, extra_args=["-E"])
    f = flower()
    f.wait_for_worker(NODE, keys=("stats",))

    status, body = f.post("/api/task/rate-limit/tasks.add", ratelimit="12/m", workername=NODE)
    assert status == 200, body
    assert json.loads(body) == {"message": "new rate limit set successfully"}
    assert "tasks.add [rate_limit=12/m]" in inspect(client, "registered", "rate_limit")

    # 12/m: one every 5 seconds. The first goes at once, the second waits for the next token.
    first, second = client.tasks["add"].delay(1, 1), client.tasks["add"].delay(2, 2)
    assert first.get(timeout=20) == 2
    time.sleep(1.5)
    assert second.state == "PENDING"
    assert second.get(timeout=30) == 4
    tasks = f.wait_for_task_states({first.id: "SUCCESS", second.id: "SUCCESS"})
    gap = tasks[second.id]["started"] - tasks[first.id]["started"]
    assert gap >= 4.0, f"the second add started {gap:.2f}s after the first; 12/m allows one per 5 s"

    # Flower passes the worker's error back.
    status, body = f.post("/api/task/rate-limit/tasks.add", ratelimit="ten per minute", workername=NODE)
    assert status == 403 and "Invalid rate limit string" in body, (status, body)
    status, body = f.post("/api/task/rate-limit/tasks.add", ratelimit="1/s", workername="nobody@nowhere")
    assert status == 404, (status, body)


def test_flowers_revoke_call_with_terminate_stops_a_running_spin(worker, client, flower):
    w = worker(name=NODE, concurrency=2, extra_args=["-E"])
    f = flower()
    f.wait_for_worker(NODE, keys=("stats",))

    spin = client.tasks["spin"].delay()
    assert wait_until(lambda: [r["id"] for r in inspect(client, "active")] == [spin.id], timeout=20)
    f.wait_for_task_states({spin.id: "STARTED"})

    # Flower parses terminate=true with its strtobool and sends `"terminate": 1`, not `true`: the worker
    # must test the flag for Python's truth, as Celery's panel does.
    status, body = f.post(f"/api/task/revoke/{spin.id}", terminate="true")
    assert status == 200 and json.loads(body) == {"message": f"Revoked '{spin.id}'"}, (status, body)
    assert wait_until(lambda: spin.state == "REVOKED", timeout=20), spin.state
    assert "terminated" in repr(spin.result)
    tasks = f.wait_for_task_states({spin.id: "REVOKED"})
    assert tasks[spin.id]["revoked"]
    assert spin.id in inspect(client, "revoked")
    assert inspect(client, "active") == []
    assert f"tasks.spin[{spin.id}] succeeded" not in w.log_text()
    # The worker keeps serving.
    assert client.tasks["add"].delay(2, 3).get(timeout=20) == 5


# --------------------------------------------------------------------------
# Flower's web page, in a real browser
# --------------------------------------------------------------------------

def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(binary: str, profile: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=_base_env())


def worker_row(dom: str, name: str) -> str | None:
    """The workers table's ``<tr>`` whose first cell names ``name``."""
    for row in re.findall(r"<tr\b[^>]*>.*?</tr>", dom, re.S):
        if name in row and "<td" in row:
            return row
    return None


@pytest.mark.standin_xfail(NO_HEARTBEAT)
def test_flowers_workers_page_in_headless_chromium_lists_the_worker_online(worker, client, flower, tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (.ci/run installs the Debian package: apt-get install -y chromium)")
    worker(name=NODE, extra_args=["-E"])
    f = flower()
    wait_until(lambda: f.status().get(NODE) is True, timeout=20,
               message=lambda: f"Flower to show {NODE} online: {f.status()}")
    ok = client.tasks["add"].delay(4, 4)
    assert ok.get(timeout=20) == 8
    f.wait_for_task_states({ok.id: "SUCCESS"})

    url = f"{f.base}/workers"
    page = run_chromium(binary, tmp_path / "chromium-profile", "--virtual-time-budget=5000", "--dump-dom", url)
    assert page.returncode == 0, page.stderr[-3000:]
    dom = page.stdout
    assert "workers-table" in dom, dom[-3000:]
    row = worker_row(dom, NODE)
    assert row is not None, f"no row for {NODE} in Flower's workers table:\n{dom[-5000:]}"
    assert re.search(r">\s*Online\s*<", row), f"{NODE} is not shown online:\n{row}"
    # The page's own figures, filled in by its script from /workers?json=1.
    for metric in ("workers-online", "workers-succeeded"):
        figure = re.search(rf'id="{metric}"[^>]*>\s*([^<]*)<', dom)
        assert figure and figure.group(1).strip() == "1", (metric, figure and figure.group(0))

    shot = tmp_path / "flower-workers.png"
    snap = run_chromium(binary, tmp_path / "chromium-profile", "--virtual-time-budget=5000",
                        f"--screenshot={shot}", "--window-size=1280,800", "--hide-scrollbars", url)
    assert snap.returncode == 0, snap.stderr[-3000:]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"\nFlower workers page screenshot: {shot}")


# --------------------------------------------------------------------------
# A mixed fleet
# --------------------------------------------------------------------------

def test_flower_shows_a_python_and_a_celeriac_worker_on_one_broker_with_their_tasks(
        worker, python_worker, client, flower):
    worker(name=NODE, extra_args=["-E"])
    # The fixture's Python worker runs --without-heartbeat: Flower lists it from its inspect replies and its
    # tasks from its task events (-E).
    python_worker(name=PY_NODE, extra_args=["-E"])
    f = flower()

    def both():
        workers = f.workers()
        return workers if all("stats" in workers.get(n, {}) and "registered" in workers.get(n, {})
                              for n in (NODE, PY_NODE)) else None

    workers = wait_until(both, timeout=30, interval=0.5, message="Flower to list both workers")
    assert "tasks.add" in workers[NODE]["registered"]
    assert "pytasks.hello" in workers[PY_NODE]["registered"] and "tasks.add" not in workers[PY_NODE]["registered"]
    assert workers[PY_NODE]["stats"]["pool"]["max-concurrency"] == 1
    assert [q["name"] for q in workers[PY_NODE]["active_queues"]] == ["py"]
    assert [q["name"] for q in workers[NODE]["active_queues"]] == ["celery"]

    wasm = client.tasks["add"].delay(2, 2)
    py = client.app.send_task("pytasks.hello", args=["flower"], queue="py")
    assert wasm.get(timeout=20) == 4
    py.get(timeout=20)
    tasks = f.wait_for_task_states({wasm.id: "SUCCESS", py.id: "SUCCESS"})
    assert tasks[wasm.id]["worker"] == NODE and tasks[py.id]["worker"] == PY_NODE
