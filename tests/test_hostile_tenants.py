"""Hostile tenants (issue #9): a tenant's component attacks the *host side* around the guest.

Every attack runs against a real ``celeriac worker -c 2`` whose task directory
holds the example ``tasks.wasm`` (good traffic, ``tasks.add``) plus hostile
components built by ``make test-tasks`` (``tests/hostile-tasks`` and
``tests/hostile-gen/gen.py``, into ``target/test-tasks/``). Each test asserts

* a clear outcome: a FAILURE whose exception, as a stock Celery 5.7 client
  raises it, is bounded / escaped / safe, or a load-time refusal (an ERROR
  ``cannot load <path>: <reason>`` line and ``NotRegistered`` for its tasks);
* the worker stays alive and its RSS (``/proc/<pid>/status`` VmRSS sampled
  every 20 ms, plus VmHWM) stays under ``RSS_BOUND``;
* a stream of good ``tasks.add`` calls sent during the attack all complete;
  their p50/p99 latency is printed (``-s`` shows it), never asserted.

A watchdog kills a worker whose RSS passes ``RSS_KILL`` (to protect a shared
machine from an unbounded worker) and the test then fails saying so.

Every threshold and marker is in the block below, so aligning with the worker
is a one-place change. Settings the worker does not know yet (its config
refuses unknown keys) are dropped with a printed note, so that an unbounded
worker shows what the attack does to it rather than a config error.

With ``CELERIAC_TEST_STANDIN=python`` only the head-of-line test runs (it uses
``tasks.sleep`` / ``tasks.spin``, which the stand-in has); the rest needs wasm
components.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import conftest
from conftest import CELERIAC_BIN, REPO_ROOT, STANDIN, ManagedProcess

# ===========================================================================
# Thresholds and markers: the one place to align with the worker
# ===========================================================================

#: Exception message and traceback each at most this many bytes (``[sandbox] max_error_size``).
MAX_ERROR_SIZE = 64 * 1024
#: Slack over MAX_ERROR_SIZE for the truncation marker and the host's own traceback lines.
ERROR_SLACK = 4 * 1024
#: What an exception class name must look like after sanitising.
EXC_TYPE_RE = re.compile(r"[A-Za-z0-9_]{1,128}")
#: Marker inside a cut message / traceback.
MARK_TRUNCATED = "bytes truncated"
#: Module of the stand-in for a guest exception the client must not trust.
STANDIN_EXC_MODULE = "celeriac.exceptions"
#: Success result JSON text limit (``max_result_size``) and parsed-size estimate (``max_result_memory``).
MAX_RESULT_SIZE = 8 << 20
MAX_RESULT_MEMORY = 64 << 20
#: The exception of a result over either limit.
RESULT_TOO_BIG = ("kombu.exceptions", "EncodeError")
#: Guest output per call (host log + stdout + stderr together), then one line with MARK_OUTPUT.
MAX_LOG_LINES = 1000
MAX_LOG_BYTES = 1 << 20
MARK_OUTPUT = "output truncated"
#: tasks(): at most this many names, each matching TASK_NAME_RE, no duplicates.
MAX_TASKS_PER_COMPONENT = 1000
TASK_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Component files larger than this are refused before reading.
MAX_COMPONENT_SIZE = 64 << 20
#: A load refusal: an ERROR line ``cannot load <path>: <reason>``.
CANNOT_LOAD = r"ERROR.*cannot load (?:\S*/)?{name}: "
#: The worker process's RSS bound with -c 2, throughout every attack.
RSS_BOUND = 512 << 20
#: Watchdog: a worker above this is killed at once (protects the shared machine).
RSS_KILL = 3 << 30
#: Settings written under [sandbox] for the compile-bomb tests: the time budget, and (second case) a
#: memory budget that trips long before a generous time budget does.
BOMB_SANDBOX = {"compile_timeout": 5}
BOMB_MEMORY_SANDBOX = {"compile_timeout": 60, "compile_memory": "768MiB"}
#: Settings for the "still compiling" test (a budget the slow component fits in).
SLOW_SANDBOX = {"compile_timeout": 120}
#: Wall-clock limit of the hostile sleep/spin tasks (``[task_annotations]``).
ATTACK_TIME_LIMIT = 3
#: Wall-clock limit of the hostile log task: long enough that an uncapped worker shows the volume
#: (the flood test runs until this limit when output is never cut).
LOG_TIME_LIMIT = 10
#: Limit of the attacker in the head-of-line test (the issue's case is 10 s).
HOL_TIME_LIMIT = 6
#: How long the worker may take to say ready (a slow component must not hold it).
READY_TIMEOUT = 30.0
#: How long to wait for one result.
RESULT_TIMEOUT = 60.0
#: How long a refusal may take to be logged once the worker is ready (compile bombs: their budget + this).
REFUSAL_TIMEOUT = 20.0
#: Good traffic: one ``tasks.add`` every GOOD_INTERVAL seconds during an attack.
GOOD_INTERVAL = 0.05
GOOD_DRAIN_TIMEOUT = 60.0

#: Sizes of the attacks (the issue's figures, or past them).
BIG_MESSAGE = 100 << 20          # finding 1: 100 MiB exception message
BIG_TYPE_NAME = 20 << 20         # finding 1: 20 MiB exception class name
BIG_TRACEBACK = 32 << 20
EMPTY_OBJECTS = (MAX_RESULT_SIZE - 2) // 3   # finding 2: `[{},{},...]` just under 8 MiB of text
QUEUED_RESULT_BOMBS = 24                     # finding 2: 24 queued
FLOOD_LINES, FLOOD_LINE_BYTES = 3_000_000, 64  # finding 3: runs until its time limit if never cut

TEST_TASKS = REPO_ROOT / "target" / "test-tasks"
GOOD_COMPONENT = conftest.CELERIAC_TASKS / "tasks.wasm"

# The worker's real ready line (a forged "... ready." from a guest must not count).
REAL_READY = re.compile(r"^\[[^\]\n]*\] (?!celeriac@forged)\S+@\S+ ready", re.M)

celeriac_only = pytest.mark.celeriac_only


# ===========================================================================
# Helpers
# ===========================================================================

def vm_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of ``pid`` in bytes ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class RssMonitor(threading.Thread):
    """Samples a worker's RSS; kills it above RSS_KILL."""

    def __init__(self, proc: ManagedProcess):
        super().__init__(daemon=True, name=f"rss-{proc.pid}")
        self.proc = proc
        self.peak = 0
        self.killed = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and self.proc.alive:
            rss = vm_status(self.proc.pid).get("VmRSS", 0)
            self.peak = max(self.peak, rss)
            if rss > RSS_KILL:
                self.killed = rss
                self.proc.signal(9)
                return
            time.sleep(0.02)

    def reset(self) -> None:
        """Start a new measurement (also resets the kernel's VmHWM where allowed)."""
        self.peak = vm_status(self.proc.pid).get("VmRSS", 0)
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def peak_now(self) -> int:
        return max(self.peak, vm_status(self.proc.pid).get("VmHWM", 0))

    def stop(self) -> None:
        self._halt.set()


def mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


_KNOWN_KEYS: dict[str, bool] = {}
DROPPED_KEYS: list[str] = []


def sandbox_key_known(key: str, value) -> bool:
    """Whether this worker accepts ``[sandbox] key`` (asked once, with ``celeriac check-config``)."""
    if key not in _KNOWN_KEYS:
        probe = Path(f"/tmp/celeriac-keyprobe-{os.getpid()}-{key}.toml")
        probe.write_text(f"[sandbox]\n{key} = {toml_value(value)}\n")
        try:
            r = subprocess.run([str(CELERIAC_BIN), "check-config", str(probe)], capture_output=True, text=True,
                               timeout=30, env=conftest._base_env())
            _KNOWN_KEYS[key] = not (r.returncode != 0 and "unknown" in (r.stdout + r.stderr))
        finally:
            probe.unlink(missing_ok=True)
        if not _KNOWN_KEYS[key]:
            DROPPED_KEYS.append(key)
            print(f"\nNOTE: this worker does not know [sandbox] {key}; running without it")
    return _KNOWN_KEYS[key]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def worker_config(tmp: Path, sandbox: dict | None = None, annotations: dict[str, dict] | None = None) -> str:
    """TOML for the worker: its own compile cache (never a bomb from a previous run), plus settings."""
    lines = ["[sandbox]", f"cache_dir = {toml_value(tmp / 'compile-cache')}"]
    for k, v in (sandbox or {}).items():
        if STANDIN == "python" or sandbox_key_known(k, v):
            lines.append(f"{k} = {toml_value(v)}")
    lines.append("")
    lines.append("[task_annotations]")
    for task, opts in (annotations or {}).items():
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in opts.items())
        lines.append(f'"{task}" = {{ {inner} }}')
    return "\n".join(lines) + "\n"


def artifact(rel: str) -> Path:
    path = TEST_TASKS / rel
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test-tasks` first", pytrace=False)
    return path


class Hostile:
    """A worker on a task directory of our making, with its RSS monitor."""

    def __init__(self, proc: ManagedProcess, tasks_dir: Path, monitor: RssMonitor | None, redis=None):
        self.redis = redis
        self.proc = proc
        self.dir = tasks_dir
        self.monitor = monitor

    @property
    def alive(self) -> bool:
        return self.proc.alive

    def raw_log(self) -> bytes:
        try:
            return self.proc.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log(self) -> str:
        return self.proc.log_text()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_watchdog()
            if REAL_READY.search(self.log()):
                return
            if not self.proc.alive:
                pytest.fail(f"worker exited (rc={self.proc.returncode}) before ready\n{self.proc.tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready within {timeout:.0f}s: start-up is held by a component "
                            f"(peak RSS {mib(self.peak())})\n{self.proc.tail()}", pytrace=False)
            time.sleep(0.05)

    def check_watchdog(self) -> None:
        if self.monitor is not None and self.monitor.killed:
            pytest.fail(f"worker RSS reached {mib(self.monitor.killed)}: killed by the test's watchdog "
                        f"(bound {mib(RSS_BOUND)})", pytrace=False)

    def peak(self) -> int:
        return 0 if self.monitor is None else self.monitor.peak_now()

    def reset_peak(self) -> None:
        if self.monitor is not None:
            self.monitor.reset()

    def assert_healthy(self, what: str) -> None:
        """Alive, not killed by the watchdog, RSS under the bound (figure printed)."""
        self.check_watchdog()
        assert self.proc.alive, f"worker died during {what} (rc={self.proc.returncode})"
        if self.monitor is not None:
            peak = self.peak()
            print(f"\n[{what}] worker peak RSS {mib(peak)}")
            assert peak < RSS_BOUND, f"{what}: worker RSS reached {mib(peak)} (bound {mib(RSS_BOUND)})"

    def wait_refused(self, name: str, timeout: float = REFUSAL_TIMEOUT) -> str:
        """Wait for the ERROR ``cannot load <name>: <reason>`` line; return it."""
        rx = re.compile(CANNOT_LOAD.format(name=re.escape(name)) + r".*")
        deadline = time.monotonic() + timeout
        while True:
            self.check_watchdog()
            m = rx.search(self.log())
            if m:
                return m.group(0)
            if not self.proc.alive:
                pytest.fail(f"worker died (rc={self.proc.returncode}) before refusing {name}\n{self.proc.tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"no `cannot load {name}: <reason>` ERROR line within {timeout:.0f}s\n"
                            f"{self.proc.tail()}", pytrace=False)
            time.sleep(0.1)


def start_hostile(worker, tmp_path: Path, files: dict[str, Path | bytes | None], *, concurrency: int = 2,
                  sandbox: dict | None = None, annotations: dict | None = None, wait_ready: bool = True,
                  setup=None) -> Hostile:
    """A task directory with ``tasks.wasm`` (good traffic) plus ``files`` (name -> source path or bytes),
    then ``setup(dir)`` for special files; a worker on it; its RSS monitor."""
    tasks_dir = tmp_path / f"tasks-{len(worker.started)}"
    if tasks_dir.exists():
        shutil.rmtree(tasks_dir)
    tasks_dir.mkdir()
    shutil.copyfile(GOOD_COMPONENT, tasks_dir / "tasks.wasm")
    for name, src in files.items():
        dest = tasks_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dest.write_bytes(src)
        elif src is not None:
            shutil.copyfile(src, dest)
    if setup is not None:
        setup(tasks_dir)
    config = worker_config(tmp_path, sandbox, annotations)
    saved = conftest.CELERIAC_TASKS
    conftest.CELERIAC_TASKS = tasks_dir
    try:
        proc = worker(concurrency=concurrency, config=config, wait_ready=False)
    finally:
        conftest.CELERIAC_TASKS = saved
    monitor = None
    if STANDIN != "python":
        monitor = RssMonitor(proc)
        monitor.start()
    h = Hostile(proc, tasks_dir, monitor, redis=worker.redis)
    CURRENT[:] = [h]
    if wait_ready:
        h.wait_ready()
    return h


#: The worker the running test attacks (set by start_hostile / the attack fixture): waits fail fast when it dies.
CURRENT: list["Hostile"] = []


def outcome(result, timeout: float = RESULT_TIMEOUT):
    """(value, exception) of ``result.get()``; any BaseException is caught (a KeyboardInterrupt or
    SystemExit that a guest made the client raise must fail this test, not end pytest)."""
    w = CURRENT[-1] if CURRENT else None
    if w is not None and w.redis is not None:
        deadline = time.monotonic() + timeout
        while True:
            meta = w.redis.meta(result.id)
            if meta is not None and meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                break
            w.check_watchdog()
            if not w.alive:
                pytest.fail(f"worker died (rc={w.proc.returncode}) before {result.id} finished\n{w.proc.tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"no result for {result.id} within {timeout:.0f}s (peak RSS {mib(w.peak())})",
                            pytrace=False)
            time.sleep(0.05)
        timeout = 30
    try:
        return result.get(timeout=timeout), None
    except BaseException as e:  # noqa: BLE001 - that is the point
        if type(e).__name__ == "TimeoutError" and "operation timed out" in str(e):
            pytest.fail(f"no result for {result.id} within {timeout:.0f}s", pytrace=False)
        return None, e


def failure(result, timeout: float = RESULT_TIMEOUT) -> BaseException:
    value, exc = outcome(result, timeout)
    assert exc is not None, f"expected a FAILURE, got SUCCESS {str(value)[:200]!r}"
    assert result.state == "FAILURE", result.state
    return exc


def assert_catchable(exc: BaseException) -> None:
    from celery.exceptions import SecurityError
    assert isinstance(exc, Exception), (f"the client raised {type(exc).__module__}.{type(exc).__name__}, "
                                        f"which `except Exception` does not catch")
    assert not isinstance(exc, SecurityError), f"the client raised SecurityError: {exc}"


def assert_not_registered(client, task: str) -> None:
    from celery.exceptions import NotRegistered
    exc = failure(client.app.send_task(task, args=(1, 2)))
    assert isinstance(exc, NotRegistered), f"{task}: expected NotRegistered, got {type(exc).__name__}: {exc!r}"


class GoodTraffic(threading.Thread):
    """``tasks.add(i, i)`` every GOOD_INTERVAL seconds from a client of its own; results polled in Redis."""

    def __init__(self, celery_app, redis_server):
        super().__init__(daemon=True, name="good-traffic")
        self.client = celery_app()
        self.redis = redis_server
        self.sent: dict[str, tuple[int, float]] = {}
        self.done: dict[str, tuple[str, object, float]] = {}
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def __enter__(self) -> "GoodTraffic":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(GOOD_DRAIN_TIMEOUT + 10)

    def _poll(self) -> None:
        pending = [t for t in self.sent if t not in self.done]
        for t, meta in zip(pending, self.redis.metas(pending)):
            if meta is not None and meta.get("status") in ("SUCCESS", "FAILURE"):
                self.done[t] = (meta["status"], meta.get("result"), time.monotonic() - self.sent[t][1])

    def run(self) -> None:
        try:
            i, next_send = 0, 0.0
            while not self._halt.is_set():
                now = time.monotonic()
                if now >= next_send:
                    r = self.client.app.send_task("tasks.add", args=(i, i))
                    self.sent[r.id] = (i, time.monotonic())
                    i += 1
                    next_send = now + GOOD_INTERVAL
                self._poll()
                time.sleep(0.005)
            deadline = time.monotonic() + GOOD_DRAIN_TIMEOUT
            while len(self.done) < len(self.sent) and time.monotonic() < deadline:
                if CURRENT and not CURRENT[-1].alive:
                    break
                self._poll()
                time.sleep(0.005)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.error = e

    def check(self, what: str) -> None:
        """Every good call completed with the right value; prints p50/p99 (never asserted)."""
        assert self.error is None, f"good traffic client failed: {self.error!r}"
        lat = sorted(d[2] for d in self.done.values())
        if lat:
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"\n[{what}] good tasks.add: {len(lat)}/{len(self.sent)} done, "
                  f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        missing = len(self.sent) - len(self.done)
        assert missing == 0, f"{what}: {missing} of {len(self.sent)} good tasks.add calls never completed"
        wrong = [(self.sent[t][0], d) for t, d in self.done.items() if d[0] != "SUCCESS" or d[1] != 2 * self.sent[t][0]]
        assert not wrong, f"{what}: good calls failed or were wrong: {wrong[:5]}"


def done_at(redis_server, task_id: str) -> datetime:
    """The stored ``date_done`` of a result, parsed (string order is not time order for every format)."""
    return datetime.fromisoformat(redis_server.meta(task_id)["date_done"])


def task_lines(raw: bytes, task_id: str) -> list[bytes]:
    """Lines of the worker log that mention ``task_id``."""
    tid = task_id.encode()
    return [line for line in raw.split(b"\n") if tid in line]


# ===========================================================================
# Fixtures
# ===========================================================================

class CallWorkers:
    """The call-time attacks share one worker (tasks.wasm + hostile.wasm, -c 2); a worker that an earlier
    attack killed or left above the RSS bound is replaced, so each test measures its own attack."""

    def __init__(self, factory, tmp: Path):
        self.factory, self.tmp, self.current = factory, tmp, None

    def get(self) -> Hostile:
        h = self.current
        if h is not None and h.alive and vm_status(h.proc.pid).get("VmRSS", 0) < RSS_BOUND:
            return h
        if h is not None:
            print(f"\nNOTE: replacing the call-time worker ({'bloated' if h.alive else 'dead'} after an earlier attack)")
            h.proc.stop(grace=2)
            if h.monitor is not None:
                h.monitor.stop()
        self.current = start_hostile(
            self.factory, self.tmp, {"hostile.wasm": artifact("hostile.wasm")},
            annotations={"hostile.sleep": {"time_limit": ATTACK_TIME_LIMIT},
                         "hostile.spin": {"time_limit": ATTACK_TIME_LIMIT},
                         "hostile.log": {"time_limit": LOG_TIME_LIMIT}})
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.proc.stop(grace=5)
            if self.current.monitor is not None:
                self.current.monitor.stop()
            self.current = None


#: The live CallWorkers (at most one): stopped before any test that starts a worker of its own, since
#: every worker consumes the same `celery` queue (a second one would answer that test's messages).
_CALL_WORKERS: list[CallWorkers] = []


@pytest.fixture(scope="module")
def call_workers(module_worker_factory, tmp_path_factory):
    if STANDIN == "python":
        pytest.skip("needs the celeriac binary")
    workers = CallWorkers(module_worker_factory, tmp_path_factory.mktemp("hostile-calls"))
    _CALL_WORKERS.append(workers)
    yield workers
    workers.stop()
    _CALL_WORKERS.remove(workers)


@pytest.fixture(autouse=True)
def _one_worker_at_a_time(request):
    if "worker" in request.fixturenames:
        for workers in _CALL_WORKERS:
            workers.stop()
    yield


@pytest.fixture
def attack(call_workers, client, celery_app, redis_server):
    """Per test: the call-time worker (alive, under the bound), its RSS peak reset, a good-traffic stream."""
    w = call_workers.get()
    w.reset_peak()
    CURRENT[:] = [w]
    with GoodTraffic(celery_app, redis_server) as good:
        yield w, good
    if w.monitor is not None:
        print(f"\n[attack] worker peak RSS {mib(w.peak())}{'' if w.alive else ' (worker dead)'}")
    good.check("good traffic")


def send(client, task: str, *args):
    return client.app.send_task(f"hostile.{task}", args=args)


# ===========================================================================
# Finding 1 and 5: failure results
# ===========================================================================

@celeriac_only
@pytest.mark.timeout(180)
def test_a_100_MiB_exception_message_is_cut_to_max_error_size_keeping_head_and_tail(attack, client, redis_server):
    w, _ = attack
    before = len(w.raw_log())
    r = send(client, "raise_message", BIG_MESSAGE)
    exc = failure(r, timeout=120)
    assert type(exc) is ValueError, f"a guest ValueError must stay builtins.ValueError, got {type(exc)!r}"
    msg = str(exc)
    assert len(msg.encode()) <= MAX_ERROR_SIZE + ERROR_SLACK, f"message is {len(msg)} bytes"
    assert MARK_TRUNCATED in msg
    assert msg.startswith("HEAD") and msg.endswith("TAIL"), "head and tail of the message must be kept"
    stored = redis_server.results.get(redis_server.result_key(r.id)) or b""
    assert len(stored) <= 2 * (MAX_ERROR_SIZE + ERROR_SLACK), f"{len(stored)} bytes stored in Redis"
    logged = len(w.raw_log()) - before
    assert logged <= 4 * (MAX_ERROR_SIZE + ERROR_SLACK), f"{logged} bytes of log for one failure"
    w.assert_healthy("100 MiB exception message")


@celeriac_only
@pytest.mark.timeout(180)
def test_a_20_MiB_exception_class_name_reaches_the_client_as_a_short_safe_name(attack, client, redis_server):
    w, _ = attack
    r = send(client, "raise_type_name", BIG_TYPE_NAME)
    exc = failure(r, timeout=120)
    assert_catchable(exc)
    assert EXC_TYPE_RE.fullmatch(type(exc).__name__), f"class name of {len(type(exc).__name__)} characters"
    meta = redis_server.meta(r.id)
    assert EXC_TYPE_RE.fullmatch(meta["result"]["exc_type"]), "stored exc_type is not a short safe name"
    assert len(r.traceback or "") <= MAX_ERROR_SIZE + ERROR_SLACK
    w.assert_healthy("20 MiB exception class name")


@celeriac_only
@pytest.mark.timeout(180)
def test_a_32_MiB_guest_traceback_is_cut_keeping_head_and_tail(attack, client):
    w, _ = attack
    r = send(client, "raise_traceback", BIG_TRACEBACK)
    exc = failure(r, timeout=120)
    assert type(exc) is ValueError
    tb = r.traceback or ""
    assert len(tb.encode()) <= MAX_ERROR_SIZE + ERROR_SLACK, f"traceback is {len(tb)} bytes"
    assert MARK_TRUNCATED in tb
    assert "TBHEAD" in tb and "TBTAIL" in tb, "head and tail of the guest traceback must be kept"
    assert tb.rstrip().endswith("ValueError: long traceback"), tb[-300:]
    w.assert_healthy("32 MiB traceback")


#: (module the guest gives, class name the guest gives, class name the client must see)
UNTRUSTED_EXCEPTIONS = [
    (None, "SystemExit", "SystemExit"),
    ("builtins", "SystemExit", "SystemExit"),
    (None, "KeyboardInterrupt", "KeyboardInterrupt"),
    ("builtins", "GeneratorExit", "GeneratorExit"),
    ("builtins", "BaseException", "BaseException"),
    ("builtins", "BaseExceptionGroup", "BaseExceptionGroup"),
    ("celery.exceptions", "WorkerShutdown", "WorkerShutdown"),
    ("celery.exceptions", "WorkerTerminate", "WorkerTerminate"),
    ("celery.exceptions", "SystemTerminate", "SystemTerminate"),
    ("celery.worker.state", "WorkerShutdown", "WorkerShutdown"),
    ("celery.worker.state", "WorkerTerminate", "WorkerTerminate"),
    ("asyncio", "CancelledError", "CancelledError"),
    ("asyncio.exceptions", "CancelledError", "CancelledError"),
    ("os", "system", "system"),
    ("subprocess", "Popen", "Popen"),
    ("builtins", "object", "object"),
    ("builtins", "ValueError.__class__", None),
    (None, "os.system", None),
    ("tasks", "InvoiceNotFound", "InvoiceNotFound"),
    (None, "Bad\nName\x1b[31m", None),
]


@celeriac_only
@pytest.mark.parametrize("module,exc_type,seen", UNTRUSTED_EXCEPTIONS,
                         ids=[f"{m}.{t}".encode("unicode_escape").decode() for m, t, _ in UNTRUSTED_EXCEPTIONS])
def test_a_guest_exception_the_client_must_not_trust_becomes_a_catchable_stand_in(attack, client, redis_server,
                                                                                   module, exc_type, seen):
    w, _ = attack
    r = send(client, "raise_as", module, exc_type, "hostile message")
    exc = failure(r)
    assert_catchable(exc)
    meta = redis_server.meta(r.id)["result"]
    assert meta["exc_module"] == STANDIN_EXC_MODULE, f"stored exc_module {meta['exc_module']!r}"
    assert EXC_TYPE_RE.fullmatch(type(exc).__name__), repr(type(exc).__name__)
    if seen is not None:
        assert type(exc).__name__ == seen
    # An unrelated .get() on the same client afterwards is not poisoned (SecurityError came from any get).
    value, later = outcome(client.add.delay(20, 22))
    assert later is None and value == 42, f"a later unrelated get() raised {later!r}"
    w.assert_healthy(f"exception {module}.{exc_type!r}")


@celeriac_only
def test_a_long_multibyte_exception_message_is_cut_on_character_boundaries(attack, client):
    w, _ = attack
    text = "\U0001F600" * 300_000 + "end"          # 1.2 MB of 4-byte characters
    exc = failure(send(client, "raise_as", None, "ValueError", text))
    assert type(exc) is ValueError
    msg = str(exc)
    assert len(msg.encode()) <= MAX_ERROR_SIZE + ERROR_SLACK and MARK_TRUNCATED in msg
    assert msg.startswith("\U0001F600") and msg.endswith("end"), (msg[:20], msg[-20:])
    assert "\ufffd" not in msg, "a character was split by the cut"
    w.assert_healthy("multibyte exception message")


#: Exceptions that stay real: (module, type, the class the client must raise).
TRUSTED_EXCEPTIONS = [
    (None, "ValueError", "builtins.ValueError"),
    ("builtins", "KeyError", "builtins.KeyError"),
    (None, "ZeroDivisionError", "builtins.ZeroDivisionError"),
    ("billiard.exceptions", "SoftTimeLimitExceeded", "billiard.exceptions.SoftTimeLimitExceeded"),
]


@celeriac_only
@pytest.mark.parametrize("module,exc_type,cls", TRUSTED_EXCEPTIONS, ids=[t for _, t, _ in TRUSTED_EXCEPTIONS])
def test_a_guest_builtin_or_celery_task_exception_stays_the_real_class(attack, client, module, exc_type, cls):
    exc = failure(send(client, "raise_as", module, exc_type, "fine"))
    assert f"{type(exc).__module__}.{type(exc).__name__}" == cls


# ===========================================================================
# Finding 2: results that amplify on the host
# ===========================================================================

def _assert_encode_error(exc: BaseException) -> None:
    mod, name = RESULT_TOO_BIG
    assert (type(exc).__module__, type(exc).__name__) == (mod, name), f"expected {mod}.{name}, got {exc!r}"


@celeriac_only
@pytest.mark.timeout(240)
def test_24_queued_results_of_millions_of_empty_objects_fail_with_EncodeError_within_the_memory_bound(
        attack, client):
    w, _ = attack
    results = [send(client, "result_objects", EMPTY_OBJECTS) for _ in range(QUEUED_RESULT_BOMBS)]
    for r in results:
        exc = failure(r, timeout=180)
        _assert_encode_error(exc)
    w.assert_healthy(f"{QUEUED_RESULT_BOMBS} x [{{}},...] results of {mib(3 * EMPTY_OBJECTS)}")


@celeriac_only
def test_a_result_text_over_max_result_size_fails_with_EncodeError(attack, client):
    w, _ = attack
    _assert_encode_error(failure(send(client, "result_string", MAX_RESULT_SIZE + 1024)))
    w.assert_healthy("result over max_result_size")


@celeriac_only
def test_a_result_nested_100k_deep_fails_without_hurting_the_worker(attack, client):
    w, _ = attack
    assert_catchable(failure(send(client, "result_nested", 100_000)))
    w.assert_healthy("result nested 100k deep")


@celeriac_only
def test_ordinary_results_under_the_limits_still_succeed(attack, client):
    value, exc = outcome(send(client, "result_objects", 1000))
    assert exc is None and value == [{}] * 1000, exc
    value, exc = outcome(send(client, "result_string", 1 << 20))
    assert exc is None and value == "y" * (1 << 20), exc


# ===========================================================================
# Findings 3 and 4: log volume and forged log lines
# ===========================================================================

@celeriac_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stream", ["host", "stdout", "stderr", "all"])
@pytest.mark.parametrize("lines,line_bytes", [(100_000, 100), (200, 1 << 20)], ids=["many-lines", "huge-lines"])
def test_guest_output_is_capped_per_call_then_one_output_truncated_line(attack, client, stream, lines, line_bytes):
    w, _ = attack
    before = len(w.raw_log())
    r = send(client, "log", lines, line_bytes, stream)
    outcome(r, timeout=120)   # SUCCESS, or the time limit if the guest is slowed down: either is fine
    w.proc.wait_for_log(rf"{re.escape(r.id)}\] (?:succeeded|raised)", timeout=60)
    time.sleep(0.3)
    written = w.raw_log()[before:]
    mine = task_lines(written, r.id)
    guest = [ln for ln in mine if b" line " in ln]
    assert len(guest) <= MAX_LOG_LINES, f"{len(guest)} guest lines logged for one call"
    total = sum(len(ln) for ln in guest)
    assert total <= MAX_LOG_BYTES + MAX_LOG_LINES * 200, f"{total} bytes of guest output logged for one call"
    assert len(written) <= 2 * MAX_LOG_BYTES + (1 << 20), f"{len(written)} bytes of log during the call"
    marks = [ln for ln in mine if MARK_OUTPUT.encode() in ln]
    assert len(marks) == 1, f"expected one `{MARK_OUTPUT}` line for the call, got {len(marks)}"
    w.assert_healthy(f"log {lines} x {line_bytes} B to {stream}")


@celeriac_only
@pytest.mark.timeout(180)
def test_a_call_writing_log_lines_until_its_time_limit_logs_at_most_the_cap(attack, client):
    w, _ = attack
    before = len(w.raw_log())
    r = send(client, "log", FLOOD_LINES, FLOOD_LINE_BYTES, "all")
    outcome(r, timeout=120)
    w.proc.wait_for_log(rf"{re.escape(r.id)}\] (?:succeeded|raised)", timeout=60)
    time.sleep(0.3)
    written = len(w.raw_log()) - before
    print(f"\n[log flood] {written} bytes of worker log for one call")
    assert written <= 2 * MAX_LOG_BYTES + (1 << 20), f"one call wrote {mib(written)} of log"
    w.assert_healthy("log flood until the time limit")


def forged_text(nonce: str) -> str:
    return (f"innocent\n[1999-01-01 00:00:00,000: INFO/MainProcess] Task tasks.add[{nonce}] succeeded in "
            f"0.001s: 8\r\x1b[2K\x1b[31mred\x1b[0m\x07\x08\u2028[1999-01-02 00:00:00,000: INFO/MainProcess] x"
            f"\u202eevil\u202c end")


@celeriac_only
def test_a_newline_in_guest_text_cannot_forge_a_worker_log_line(attack, client):
    w, _ = attack
    nonce = conftest.new_task_id()
    before = len(w.raw_log())
    r = send(client, "forge", forged_text(nonce))
    failure(r)
    w.proc.wait_for_log(rf"{re.escape(r.id)}\] raised", timeout=30)
    time.sleep(0.3)
    written = w.raw_log()[before:]
    assert nonce.encode() in written, "the guest's text was not logged at all (expected it escaped)"
    n, tag = nonce.encode(), f"[{r.id}]".encode()
    for line in written.split(b"\n"):
        if n in line:
            assert not line.startswith(b"[1999-"), f"a guest forged a worker log line: {line[:160]!r}"
            # Guest text never starts a line: either the line is the worker's own, tagged with the task
            # before the guest's text (stdout/stderr are logged a line at a time), or the guest's newline
            # was escaped and its text goes on after the worker's own words.
            tagged = re.match(rb"\[[^\]\n]*\] ", line) and tag in line.split(n)[0]
            start = line.find(b"innocent")
            assert tagged or 0 < start < line.index(n), f"guest text starts a log line: {line[:160]!r}"
    one_line = [ln for ln in written.split(b"\n") if b"innocent" in ln and n in ln
                and b"stdout:" not in ln and b"stderr:" not in ln]
    assert one_line, "the host log line / exception message was split at the guest's newline (not escaped)"
    for ch in (b"\x1b", b"\r", b"\x07", b"\x08", "\u2028".encode(), "\u202e".encode()):
        assert ch not in written, f"raw control character {ch!r} from the guest reached the log"
    assert "\\n" in written.decode("utf-8", "replace"), "newlines must be shown escaped (backslash-n)"


@celeriac_only
@pytest.mark.timeout(180)
def test_a_flood_of_custom_states_does_not_hurt_the_worker(attack, client, redis_server):
    w, _ = attack
    r1 = send(client, "state_flood", 5_000, 1024)
    r2 = send(client, "state_flood", 3, 40 << 20)
    for r in (r1, r2):
        outcome(r, timeout=120)
        stored = redis_server.results.get(redis_server.result_key(r.id)) or b""
        assert len(stored) <= MAX_RESULT_SIZE + ERROR_SLACK, f"{mib(len(stored))} stored for one state"
    w.assert_healthy("update_state flood")


# ===========================================================================
# Finding 6: tasks() output
# ===========================================================================

#: Modes of tests/hostile-tasks whose tasks() must get the component refused.
REFUSED_MODES = ["dup4m", "uniq4m", "over1001", "dotted", "colon", "newline", "control", "long129", "dupes",
                 "empty", "bigname", "trap", "spin"]


@celeriac_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", REFUSED_MODES)
def test_a_component_whose_tasks_list_is_hostile_is_refused_at_load(worker, tmp_path, client, celery_app,
                                                                     redis_server, mode):
    h = start_hostile(worker, tmp_path, {"evil.wasm": artifact(f"modes/{mode}.wasm")}, wait_ready=False)
    h.wait_ready()
    with GoodTraffic(celery_app, redis_server) as good:
        line = h.wait_refused("evil.wasm")
        print(f"\n[{mode}] {line[:300]}")
        assert_not_registered(client, "evil.add")
    good.check(f"tasks() {mode}")
    log = h.raw_log()
    assert len(log) < 256 * 1024, f"{len(log)} bytes of log (banner) for one refused component"
    assert b"\x1b" not in log and b"\x07" not in log, "control characters from a task name reached the log"
    assert not re.search(rb"^\[2026-11-30 10:00:00,000", log, re.M), "a task name forged a log line"
    h.assert_healthy(f"tasks() {mode}")


@celeriac_only
def test_a_component_with_exactly_the_maximum_number_of_task_names_loads(worker, tmp_path, client):
    h = start_hostile(worker, tmp_path, {"evil.wasm": artifact("modes/max1000.wasm")})
    name = ("t999-" + "_" * 128)[:128]
    assert TASK_NAME_RE.fullmatch(name)
    value, exc = outcome(client.app.send_task(f"evil.{name}"))
    assert exc is None and value == name, exc
    h.assert_healthy("tasks() with 1000 names of 128 characters")


# ===========================================================================
# Findings 8 and 9: files
# ===========================================================================

def _sparse(d: Path) -> None:
    with open(d / "huge.wasm", "wb") as f:
        f.write(b"\0asm\x0d\0\x01\0")
        f.truncate(2 << 30)


def _outside(d: Path) -> Path:
    out = d.parent / f"outside-{d.name}"
    out.mkdir(exist_ok=True)
    shutil.copyfile(GOOD_COMPONENT, out / "tasks.wasm")
    return out / "tasks.wasm"


#: name -> (setup(dir), refused file name or None when it must be silently ignored, a task it must not serve)
FILE_CASES = {
    "sparse-2GiB": (_sparse, "huge.wasm", "huge.add"),
    "symlink-to-dev-zero": (lambda d: (d / "zero.wasm").symlink_to("/dev/zero"), "zero.wasm", "zero.add"),
    "symlink-to-dev-null": (lambda d: (d / "null.wasm").symlink_to("/dev/null"), "null.wasm", "null.add"),
    "fifo": (lambda d: os.mkfifo(d / "x.wasm"), "x.wasm", "x.add"),
    "symlink-escaping-the-dir": (lambda d: (d / "escape.wasm").symlink_to(_outside(d)), "escape.wasm", "escape.add"),
    "dangling-symlink": (lambda d: (d / "dangling.wasm").symlink_to(d / "missing.wasm"), "dangling.wasm",
                         "dangling.add"),
    "truncated": (lambda d: shutil.copyfile(artifact("bad/truncated.wasm"), d / "trunc.wasm"), "trunc.wasm",
                  "trunc.add"),
    "garbage": (lambda d: shutil.copyfile(artifact("bad/garbage.wasm"), d / "garbage.wasm"), "garbage.wasm",
                "garbage.add"),
    "empty": (lambda d: shutil.copyfile(artifact("bad/empty.wasm"), d / "empty.wasm"), "empty.wasm", "empty.add"),
    "not-wasm": (lambda d: shutil.copyfile(artifact("bad/notwasm.wasm"), d / "script.wasm"), "script.wasm",
                 "script.add"),
    "core-module": (lambda d: shutil.copyfile(artifact("bad/core-module.wasm"), d / "core.wasm"), "core.wasm",
                    "core.add"),
    "lying-section-length": (lambda d: shutil.copyfile(artifact("bad/lying-length.wasm"), d / "liar.wasm"),
                             "liar.wasm", "liar.add"),
    "dotfile": (lambda d: shutil.copyfile(GOOD_COMPONENT, d / ".hidden.wasm"), None, ".hidden.add"),
    "tmp-file": (lambda d: shutil.copyfile(artifact("bad/garbage.wasm"), d / "half.wasm.tmp"), None, "half.add"),
    "directory-symlink-loop": (lambda d: (d / "loop").symlink_to(d), None, "loop.loop.loop.tasks.add"),
}


@celeriac_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_an_unusable_file_is_refused_without_blocking_start_up(worker, tmp_path, client, celery_app, redis_server,
                                                               case):
    setup, refused, task = FILE_CASES[case]
    h = start_hostile(worker, tmp_path, {}, setup=setup, wait_ready=False)
    h.wait_ready()
    with GoodTraffic(celery_app, redis_server) as good:
        if refused is not None:
            print(f"\n[{case}] {h.wait_refused(refused)[:300]}")
        assert_not_registered(client, task)
    good.check(case)
    if refused is None:
        assert "cannot load" not in h.log(), "an ignored file must not even be reported"
    h.assert_healthy(case)


@celeriac_only
def test_a_symlink_to_a_component_inside_the_directory_is_served(worker, tmp_path, client):
    h = start_hostile(worker, tmp_path, {}, setup=lambda d: (d / "alias.wasm").symlink_to("tasks.wasm"))
    value, exc = outcome(client.app.send_task("alias.add", args=(2, 3)))
    assert exc is None and value == 5, exc
    h.assert_healthy("symlink inside the directory")


@celeriac_only
def test_a_task_prefix_with_two_owners_is_refused_for_both(worker, tmp_path, client):
    h = start_hostile(worker, tmp_path, {"billing/invoices.wasm": GOOD_COMPONENT,
                                         "billing.invoices.wasm": artifact("hostile.wasm")})
    deadline = time.monotonic() + REFUSAL_TIMEOUT
    rx = re.compile(r".*(?:billing/invoices\.wasm.*billing\.invoices\.wasm|"
                    r"billing\.invoices\.wasm.*billing/invoices\.wasm).*")
    while not rx.search(h.log()):
        assert time.monotonic() < deadline, f"no log line names both owners of billing.invoices\n{h.proc.tail()}"
        time.sleep(0.1)
    print("\n" + rx.search(h.log()).group(0)[:300])
    assert_not_registered(client, "billing.invoices.add")
    assert_not_registered(client, "billing.invoices.raise_as")
    value, exc = outcome(client.add.delay(1, 1))
    assert exc is None and value == 2
    h.assert_healthy("prefix collision")


# ===========================================================================
# Finding 7: compilation
# ===========================================================================

@celeriac_only
@pytest.mark.timeout(240)
@pytest.mark.parametrize("bomb,budget", [("ifs60k", BOMB_SANDBOX), ("funcs999k", BOMB_SANDBOX),
                                         ("funcs999k", BOMB_MEMORY_SANDBOX)],
                         ids=["ifs60k-time", "funcs999k-time", "funcs999k-memory"])
def test_a_compile_bomb_is_refused_within_its_budget_without_holding_start_up(worker, tmp_path, client, celery_app,
                                                                             redis_server, bomb, budget):
    h = start_hostile(worker, tmp_path, {"bomb.wasm": artifact(f"bombs/{bomb}.wasm")}, sandbox=budget,
                      wait_ready=False)
    h.wait_ready()
    with GoodTraffic(celery_app, redis_server) as good:
        value, exc = outcome(client.add.delay(2, 2))
        assert exc is None and value == 4, exc
        print(f"\n[{bomb}] {h.wait_refused('bomb.wasm', timeout=budget['compile_timeout'] + REFUSAL_TIMEOUT)[:300]}")
        assert_not_registered(client, "bomb.add")
    good.check(bomb)
    h.assert_healthy(f"compile bomb {bomb}")


@celeriac_only
@pytest.mark.timeout(240)
def test_tasks_of_a_component_still_compiling_wait_for_it_while_others_are_served(worker, tmp_path, client,
                                                                                 redis_server):
    h = start_hostile(worker, tmp_path, {"slow.wasm": artifact("bombs/ifs20k.wasm")}, sandbox=SLOW_SANDBOX,
                      wait_ready=False)
    h.wait_ready()
    slow = client.app.send_task("slow.add", args=(2, 3))
    good = client.add.delay(1, 1)
    value, exc = outcome(good)
    assert exc is None and value == 2, exc
    value, exc = outcome(slow, timeout=180)
    assert exc is None and value == 5, f"a task of a component still compiling must wait for it, got {exc!r}"
    t_good = done_at(redis_server, good.id)
    t_slow = done_at(redis_server, slow.id)
    print(f"\n[slow compile] tasks.add done {t_good}, slow.add done {t_slow}")
    assert t_good < t_slow, "tasks.add waited for another component's compilation"
    h.assert_healthy("a slow component compiling")


# ===========================================================================
# Finding 10: head-of-line blocking (also checked against the stand-in)
# ===========================================================================

@pytest.mark.timeout(180)
@pytest.mark.parametrize("attacker", ["sleep", "spin"])
def test_a_call_running_until_its_limit_does_not_strand_good_tasks(worker, tmp_path, client, redis_server, attacker):
    h = start_hostile(worker, tmp_path, {}, annotations={f"tasks.{attacker}": {"time_limit": HOL_TIME_LIMIT}})
    bad = client.sleep.delay(600) if attacker == "sleep" else client.spin.delay()
    # Let the attacker start and its loop prefetch, then keep the good traffic coming.
    h.proc.wait_for_log(rf"{re.escape(bad.id)}\] received", timeout=30)
    goods = []
    for i in range(40):
        goods.append((i, client.add.delay(i, i)))
        time.sleep(0.05)
    for i, r in goods:
        value, exc = outcome(r, timeout=HOL_TIME_LIMIT * 4)
        assert exc is None and value == 2 * i, exc
    exc = failure(bad, timeout=HOL_TIME_LIMIT * 4)
    assert type(exc).__name__ == "TimeLimitExceeded", repr(exc)
    t_bad = done_at(redis_server, bad.id)
    late = [i for i, r in goods if done_at(redis_server, r.id) > t_bad]
    print(f"\n[{attacker}] {len(goods)} good calls, {len(late)} completed only after the attacker hit its limit")
    assert not late, (f"{len(late)} good tasks (#{late[:8]}) waited for the {attacker} call to reach its "
                      f"{HOL_TIME_LIMIT}s limit")
    h.assert_healthy(f"head-of-line {attacker}")
