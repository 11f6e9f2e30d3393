"""Integration-test harness for Celeriac.

A stock Python Celery client talks to a real ``redis-server`` (started here on a
free loopback port) and to a ``celeriac worker`` subprocess. Everything binds to
127.0.0.1.

Fixtures (see tests/README.md):

* ``redis_server``  (session)  -- our own redis-server; ``.url(db)``, ``.client``,
                                  ``.results`` (db 1), ``.restart()``.
* ``redis_factory`` (function) -- start extra redis servers (e.g. with AOF).
* ``rabbitmq_server`` (session) -- a private RabbitMQ node on free ports;
                                  ``.url(vhost)``, ``.vhost()``, ``.restart()``,
                                  ``.close_connections(vhost, name)``, ``.log_text()``.
* ``worker``        (function) -- factory: start ``celeriac worker``.
* ``celery_app``    (function) -- factory: a real ``Celery`` client app.
* ``python_worker`` (function) -- factory: a real Python ``celery worker``
                                  (solo pool) serving ``tests/pytasks.py``.

Environment:

* ``CELERIAC_BIN``    path of the celeriac binary (default <repo>/target/debug/celeriac)
* ``CELERIAC_TASKS``  the ``-A`` argument (default <repo>/target/tasks)
* ``CELERIAC_TEST_STANDIN=python``  harness self-check: run a real Python
  Celery worker (tests/standin_tasks.py) wherever a celeriac worker is asked
  for. Tests marked ``celeriac_only`` are skipped in that mode.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import redis as redis_py

# --------------------------------------------------------------------------
# Constants a worker author may need to change in ONE place.
# --------------------------------------------------------------------------

#: Readiness: the worker log contains the word "ready" (Celery prints
#: ``celery@host ready.``).
READY_PATTERN = re.compile(r"\bready\b", re.IGNORECASE)
#: How long a worker may take to become ready.
READY_TIMEOUT = 60.0
#: Lines of log attached to a failing test / error message.
LOG_TAIL_LINES = 80

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CELERIAC_BIN = Path(os.environ.get("CELERIAC_BIN") or REPO_ROOT / "target" / "debug" / "celeriac")
CELERIAC_TASKS = Path(os.environ.get("CELERIAC_TASKS") or REPO_ROOT / "target" / "tasks")
STANDIN = os.environ.get("CELERIAC_TEST_STANDIN", "").strip().lower()
if STANDIN not in ("", "python"):
    raise RuntimeError(f"CELERIAC_TEST_STANDIN must be empty or 'python', not {STANDIN!r}")

RESULT_KEY = "celery-task-meta-{}"
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")



# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def bench_binary() -> Path | None:
    """The built ``celeriac-bench`` (release first, then debug), or None."""
    for profile in ("release", "debug"):
        exe = REPO_ROOT / "target" / profile / "celeriac-bench"
        if exe.exists():
            return exe
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {msg}", pytrace=False)
        time.sleep(interval)


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Managed subprocesses (workers, redis) with a log file
# --------------------------------------------------------------------------

#: Processes alive right now; their log tails are attached to failing tests.
_ACTIVE: list["ManagedProcess"] = []


class ManagedProcess:
    """A subprocess whose stdout+stderr go to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                         start_new_session=True)
        if self not in _ACTIVE:
            _ACTIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code. Fails the test if it does not exit in time."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM\n"
                        f"--- {self.name} log tail ---\n{self.tail()}", pytrace=False)

    def kill(self) -> int:
        """SIGKILL and wait; return the exit code."""
        self.signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """Cleanup: SIGTERM, then SIGKILL after ``grace`` seconds. Never fails."""
        try:
            if self.alive:
                self.signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.signal(signal.SIGKILL)
                    self.proc.wait(timeout=30)
        finally:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    # -- logs --------------------------------------------------------------
    def log_text(self) -> str:
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return ANSI_RE.sub("", raw.decode("utf-8", "replace"))

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_text(), lines)

    def count(self, pattern: str | re.Pattern) -> int:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return len(rx.findall(self.log_text()))

    def wait_for_log(self, pattern: str | re.Pattern, timeout: float = 30.0, count: int = 1) -> re.Match:
        """Wait until ``pattern`` (a regex) matched ``count`` times in the log; return the last match.

        Fails at once if the process exits without the log matching."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.alive
            matches = list(rx.finditer(self.log_text()))
            if len(matches) >= count:
                return matches[count - 1]
            if exited:
                pytest.fail(f"{self.name} exited (rc={self.returncode}) before its log matched "
                            f"{rx.pattern!r} x{count} (got {len(matches)})\n"
                            f"--- {self.name} log tail ---\n{self.tail()}", pytrace=False)
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {self.name} log to match "
                            f"{rx.pattern!r} x{count} (got {len(matches)})\n"
                            f"--- {self.name} log tail ---\n{self.tail()}", pytrace=False)
            time.sleep(0.05)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "ManagedProcess":
        self.wait_for_log(READY_PATTERN, timeout=timeout)
        return self

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.proc.pid if self.proc else None} log={self.log_path}>"


# --------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------

class RedisServer:
    """Our own redis-server on a free loopback port.

    ``persistent=True`` turns on the append-only file with ``appendfsync always``
    so that queued messages survive ``restart()``.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: ManagedProcess | None = None
        self.restarts = 0
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (apt-get install -y redis-server; .ci/run does it)",
                        pytrace=False)
        self.binary = binary
        self.client = redis_py.Redis(host=self.host, port=self.port, db=0)
        self.results = redis_py.Redis(host=self.host, port=self.port, db=1)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def redis(self, db: int = 0, **kw) -> redis_py.Redis:
        return redis_py.Redis(host=self.host, port=self.port, db=db, **kw)

    def _argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no",
                "--dir", str(self.workdir), "--save", "", "--logfile", "", "--protected-mode", "yes"]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def start(self, timeout: float = 20.0) -> "RedisServer":
        self.process = ManagedProcess(f"redis-server:{self.port}", self._argv(),
                                      self.workdir / "redis.log", cwd=self.workdir).start()
        probe = redis_py.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)

        def ping() -> bool:
            if not self.process.alive:
                pytest.fail(f"redis-server exited (rc={self.process.returncode})\n{self.process.tail()}",
                            pytrace=False)
            try:
                return bool(probe.ping())
            except redis_py.exceptions.RedisError:
                return False

        try:
            wait_until(ping, timeout, interval=0.05, message=f"redis-server PING on port {self.port}")
        finally:
            probe.close()
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM => redis flushes its AOF)."""
        if self.process is not None:
            if self.process.alive:
                self.process.terminate(timeout=20)
            self.process.stop()
        self.client.connection_pool.disconnect()
        self.results.connection_pool.disconnect()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start again on the same port (same --dir, so an AOF is reloaded)."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.restarts += 1
        self.start()

    def flushall(self) -> None:
        self.client.flushall()

    # result-backend helpers (db 1, JSON results) --------------------------
    def result_key(self, task_id: str) -> str:
        return RESULT_KEY.format(task_id)

    def meta(self, task_id: str) -> dict | None:
        raw = self.results.get(self.result_key(task_id))
        return None if raw is None else json.loads(raw)

    def metas(self, task_ids: list[str]) -> list[dict | None]:
        out: list[dict | None] = []
        for i in range(0, len(task_ids), 500):
            chunk = task_ids[i:i + 500]
            raws = self.results.mget([self.result_key(t) for t in chunk])
            out += [None if r is None else json.loads(r) for r in raws]
        return out

    def wait_for_states(self, task_ids: list[str], states: Iterable[str] = ("SUCCESS",),
                        timeout: float = 60.0, watch: Iterable["ManagedProcess"] = ()) -> list[dict]:
        """Poll db 1 until every task id has a stored result whose status is in ``states``.

        Fails early if a process in ``watch`` (e.g. the worker) exits."""
        states = set(states)
        watch = list(watch)
        last: list[dict | None] = []

        def done() -> bool:
            nonlocal last
            last = self.metas(task_ids)
            for proc in watch:
                if not proc.alive:
                    pytest.fail(f"{proc.name} exited (rc={proc.returncode}) while waiting for results\n"
                                f"--- {proc.name} log tail ---\n{proc.tail()}", pytrace=False)
            return all(m is not None and m.get("status") in states for m in last)

        def describe() -> str:
            missing = sum(1 for m in last if m is None)
            other: dict[str, int] = {}
            for m in last:
                if m is not None and m.get("status") not in states:
                    other[m.get("status")] = other.get(m.get("status"), 0) + 1
            return (f"{len(task_ids)} results in {sorted(states)}: {missing} missing, "
                    f"other states {other}")

        wait_until(done, timeout, interval=0.25, message=describe)
        return last  # type: ignore[return-value]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A session-wide redis-server (no persistence). Flushed before every test."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_redis(request):
    """Every test starts from an empty keyspace on the session redis."""
    if "redis_server" in request.fixturenames:
        server: RedisServer = request.getfixturevalue("redis_server")
        if server.process is not None and server.process.alive:
            server.flushall()
    yield


@pytest.fixture
def redis_factory(tmp_path):
    """Start extra redis servers: ``redis_factory(persistent=True)``."""
    servers: list[RedisServer] = []

    def make(persistent: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", persistent=persistent)
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        try:
            s.stop()
        except BaseException:
            if s.process is not None:
                s.process.stop(grace=0)


# --------------------------------------------------------------------------
# rabbitmq-server (a private node)
# --------------------------------------------------------------------------

RABBITMQ_BIN_DIR = Path("/usr/lib/rabbitmq/bin")


class RabbitServer:
    """Our own RabbitMQ node, never the system service: free loopback ports for
    AMQP, Erlang distribution and epmd, data and logs in ``workdir``, no plugins
    (no management listener). ``vhost()`` makes a fresh virtual host per test.

    Debian's ``/usr/sbin/rabbitmq-server`` switches to the rabbitmq user and
    its /var/lib data; the scripts in ``/usr/lib/rabbitmq/bin`` run as we are."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.host = "127.0.0.1"
        self.nodename = f"celeriac-test-{self.port}@localhost"
        self.process: ManagedProcess | None = None
        self.epmd: ManagedProcess | None = None
        server = RABBITMQ_BIN_DIR / "rabbitmq-server"
        if not server.exists():
            pytest.fail(f"{server} not found (apt-get install -y rabbitmq-server; .ci/run does it)", pytrace=False)
        (self.workdir / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.workdir / "log").mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        conf = (f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                "loopback_users = none\n"
                "log.console = false\n")
        #: TLS listener (amqps://), when openssl can make a CA and a localhost certificate.
        self.tls_port: int | None = None
        self.ca_file: Path | None = None
        if self._make_certificates():
            self.tls_port = free_port()
            conf += (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                     f"ssl_options.cacertfile = {self.ca_file}\n"
                     f"ssl_options.certfile = {self.workdir / 'server.pem'}\n"
                     f"ssl_options.keyfile = {self.workdir / 'server.key'}\n"
                     "ssl_options.verify = verify_none\n"
                     "ssl_options.fail_if_no_peer_cert = false\n")
        (self.workdir / "rabbitmq.conf").write_text(conf)

    def _make_certificates(self) -> bool:
        """A throw-away CA and a certificate for localhost / 127.0.0.1 signed by it."""
        openssl = shutil.which("openssl")
        if openssl is None:
            return False
        d = self.workdir
        (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        (d / "ca.cnf").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        steps = [
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.csr",
             "-subj", "/CN=celeriac-test-ca"],
            [openssl, "x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.pem", "-days", "3",
             "-extfile", "ca.cnf"],
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost"],
            [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "ext.cnf"],
        ]
        for argv in steps:
            if subprocess.run(argv, cwd=d, capture_output=True).returncode != 0:
                return False
        self.ca_file = d / "ca.pem"
        return True

    def env(self) -> dict[str, str]:
        return _base_env({
            "HOME": str(self.workdir),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })

    def url(self, vhost: str = "/") -> str:
        from urllib.parse import quote
        path = "/" if vhost == "/" else quote(vhost, safe="")
        return f"pyamqp://guest:guest@{self.host}:{self.port}/{path}"

    def start(self, timeout: float = 90.0) -> "RabbitServer":
        if self.epmd is None or not self.epmd.alive:
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            self.epmd = ManagedProcess(f"epmd:{self.epmd_port}", [epmd, "-port", str(self.epmd_port),
                                       "-address", "127.0.0.1"], self.workdir / "epmd.log",
                                       env=self.env()).start()
        self.process = ManagedProcess(f"rabbitmq-server:{self.port}", [str(RABBITMQ_BIN_DIR / "rabbitmq-server")],
                                      self.workdir / "rabbitmq.out", env=self.env(), cwd=self.workdir).start()
        import kombu

        def ready() -> bool:
            if not self.process.alive:
                pytest.fail(f"rabbitmq-server exited (rc={self.process.returncode})\n{self.process.tail()}",
                            pytrace=False)
            try:
                with kombu.Connection(self.url(), connect_timeout=1) as c:
                    c.connect()
                    return True
            except Exception:
                return False

        wait_until(ready, timeout, interval=0.25, message=f"rabbitmq-server on port {self.port}")
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run([str(RABBITMQ_BIN_DIR / "rabbitmqctl"), "-n", self.nodename, *args],
                             capture_output=True, text=True, env=self.env(), timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def vhost(self) -> str:
        """A fresh virtual host that guest may use; returns its name."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def queue_counts(self, vhost: str) -> dict[str, tuple[int, int]]:
        """``{queue: (ready, unacknowledged)}`` in ``vhost``."""
        out = self.ctl("list_queues", "-q", "-p", vhost, "name", "messages_ready", "messages_unacknowledged")
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def connections(self, vhost: str) -> list[tuple[str, str]]:
        """``[(pid, client-provided connection name)]`` of the connections to ``vhost``
        (the worker names its own ``<node> (consumer)`` and ``<node> (publisher)``)."""
        out = self.ctl("list_connections", "-q", "pid", "vhost", "client_properties")
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1] == vhost:
                name = re.search(r'\{"connection_name","([^"]*)"\}', parts[2])
                found.append((parts[0], name.group(1) if name else ""))
        return found

    def connection_states(self, vhost: str) -> list[str]:
        """The state of each connection to ``vhost``: ``running``, or ``blocking``/``blocked`` under a
        resource alarm (``blocked`` once the connection published into it)."""
        out = self.ctl("list_connections", "-q", "vhost", "state")
        return [parts[1] for parts in (line.split("\t") for line in out.splitlines())
                if len(parts) == 2 and parts[0] == vhost]

    def close_connections(self, vhost: str, name_contains: str) -> int:
        """Close (from the broker's side, ``connection.close`` 320) the connections to ``vhost`` whose
        client-provided name contains ``name_contains``; returns how many."""
        chosen = [pid for pid, name in self.connections(vhost) if name_contains in name]
        for pid in chosen:
            self.ctl("close_connection", pid, f"test: closing {name_contains}")
        return len(chosen)

    def log_text(self) -> str:
        """The node's log so far (all tests of the session)."""
        try:
            return (self.workdir / "log" / f"{self.nodename}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.alive:
                self.process.terminate(timeout=60)
            self.process.stop()
        if self.epmd is not None:
            self.epmd.stop(grace=5)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the node (keeping epmd) and start it again on the same ports and data."""
        if self.process is not None:
            if self.process.alive:
                self.process.terminate(timeout=60)
            self.process.stop()
        if down_for:
            time.sleep(down_for)
        self.start()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory):
    """A session-wide private RabbitMQ node (about 10 s to start); each test takes its own ``vhost()``."""
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------
# Celeriac worker
# --------------------------------------------------------------------------

def close_apps(apps) -> None:
    """Close the Celery client apps a test made (a broker already stopped is fine)."""
    for app in apps:
        try:
            app.close()
        except Exception:
            pass


def _base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Keep the developer's CELERIAC_* settings out of the worker: each test says
    # exactly what it configures.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env.setdefault("NO_COLOR", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _write_config(path: Path, config: str | None) -> Path | None:
    if config is None:
        return None
    try:
        tomllib.loads(config)
    except tomllib.TOMLDecodeError as e:  # a typo in a test, not a worker bug
        raise AssertionError(f"test config is not valid TOML: {e}\n{config}") from e
    path.write_text(config)
    return path


@dataclass
class WorkerFactory:
    """Starts workers; stops all of them at teardown."""

    redis: RedisServer
    tmp: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def __call__(self, *, queues: str | Iterable[str] | None = None, concurrency: int | None = None,
                 name: str | None = None, config: str | None = None, env: dict[str, str] | None = None,
                 extra_args: Iterable[str] = (), redis: RedisServer | None = None,
                 broker_flags: bool = True, wait_ready: bool = True,
                 ready_timeout: float = READY_TIMEOUT, app: Path | None = None) -> ManagedProcess:
        """Start ``celeriac worker``.

        ``config`` is TOML text (Celery setting names) written to a file and
        passed with ``--config``. ``broker_flags=False`` omits --broker and
        --result-backend (to test the config file / env vars instead). ``app`` is the
        task directory (default ``CELERIAC_TASKS``).
        """
        server = redis or self.redis
        n = len(self.started)
        config_path = _write_config(self.tmp / f"worker-{n}.toml", config)
        if isinstance(queues, (list, tuple, set)):
            queues = ",".join(queues)
        if STANDIN == "python":
            proc = self._standin(n, server, queues, concurrency, name, config_path, env, extra_args,
                                 broker_flags)
        else:
            if not CELERIAC_BIN.exists():
                pytest.fail(f"celeriac binary not found at {CELERIAC_BIN} "
                            f"(build it with `cargo build -p celeriac`, or set CELERIAC_BIN)", pytrace=False)
            argv: list[str] = [str(CELERIAC_BIN), "worker", "-A", str(app or CELERIAC_TASKS)]
            if broker_flags:
                argv += ["--broker", server.url(0), "--result-backend", server.url(1)]
            argv += ["--loglevel=INFO"]
            if concurrency is not None:
                argv += ["-c", str(concurrency)]
            if queues:
                argv += ["-Q", queues]
            if name:
                argv += ["-n", name]
            if config_path is not None:
                argv += ["--config", str(config_path)]
            argv += list(extra_args)
            proc = ManagedProcess(f"celeriac-worker-{n}", argv, self.tmp / f"worker-{n}.log",
                                  env=_base_env(env), cwd=REPO_ROOT)
        self.started.append(proc)
        proc.start()
        if wait_ready:
            proc.wait_ready(ready_timeout)
        return proc

    def _standin(self, n, server, queues, concurrency, name, config_path, env, extra_args, broker_flags):
        """Harness self-check: a real Python Celery (prefork) worker with the same tasks."""
        argv = [sys.executable, "-m", "celery", "-A", "standin_tasks"]
        if broker_flags:
            argv += ["-b", server.url(0), "--result-backend", server.url(1)]
        argv += ["worker", "--loglevel=INFO", "-c", str(concurrency or 2), "--without-mingle",
                 "--without-gossip", "--without-heartbeat", "-n", name or f"standin{n}@%h"]
        if queues:
            argv += ["-Q", queues]
        argv += list(extra_args)
        extra = dict(env or {})
        extra["PYTHONPATH"] = str(TESTS_DIR)
        if config_path is not None:
            extra["STANDIN_CONFIG"] = str(config_path)
        return ManagedProcess(f"standin-worker-{n}", argv, self.tmp / f"worker-{n}.log",
                              env=_base_env(extra), cwd=TESTS_DIR)

    def stop_all(self) -> None:
        for p in self.started:
            p.stop()


@pytest.fixture
def worker(redis_server, tmp_path):
    """Factory: ``worker(concurrency=2, queues="wasm", config=TOML, env={...})`` -> ManagedProcess."""
    factory = WorkerFactory(redis_server, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_worker_factory(redis_server, tmp_path_factory):
    """Like ``worker`` but lives for a whole test module (for cheap, independent checks)."""
    factory = WorkerFactory(redis_server, tmp_path_factory.mktemp("module-worker"))
    yield factory
    factory.stop_all()


# --------------------------------------------------------------------------
# Celery client app
# --------------------------------------------------------------------------

@dataclass
class CeleryClient:
    """A real ``Celery`` app plus the task objects declared on it."""

    app: Any
    redis: RedisServer
    tasks: dict[str, Any]

    def __getattr__(self, item: str) -> Any:
        try:
            return self.tasks[item]
        except KeyError:
            raise AttributeError(item) from None

    def result_key(self, task_id: str) -> str:
        return RESULT_KEY.format(task_id)


def declare_tasks(app) -> dict[str, Any]:
    """The tasks, declared as in Celery's first-steps guide. Bodies never run client-side."""

    @app.task(name="tasks.add")
    def add(x, y):
        return x + y

    @app.task(name="tasks.mul")
    def mul(x, y):
        return x * y

    @app.task(name="tasks.xsum")
    def xsum(numbers):
        return sum(numbers)

    @app.task(name="tasks.div")
    def div(a, b):
        return a / b

    @app.task(name="tasks.fail")
    def fail(msg):
        raise ValueError(msg)

    @app.task(name="tasks.panic")
    def panic(msg):
        raise RuntimeError(msg)

    @app.task(name="tasks.spin")
    def spin():
        while True:
            pass

    @app.task(name="tasks.hog")
    def hog():
        raise MemoryError()

    @app.task(name="tasks.deep")
    def deep():
        return deep()

    @app.task(name="tasks.sleep")
    def sleep(seconds):
        time.sleep(seconds)
        return seconds

    @app.task(name="tasks.progress")
    def progress(n):
        return n

    return {"add": add, "mul": mul, "xsum": xsum, "div": div, "fail": fail, "panic": panic, "spin": spin,
            "hog": hog, "deep": deep, "sleep": sleep, "progress": progress}


@pytest.fixture
def celery_app(redis_server):
    """Factory: ``celery_app(serializer="json", result_serializer="json", accept_content=None, redis=None, **conf)``."""
    from celery import Celery

    made: list[Any] = []

    def make(serializer: str = "json", *, result_serializer: str = "json",
             accept_content: list[str] | None = None, redis: RedisServer | None = None,
             **conf: Any) -> CeleryClient:
        server = redis or redis_server
        app = Celery("tasks", broker=server.url(0), backend=server.url(1), set_as_current=False)
        app.conf.update(
            task_serializer=serializer,
            result_serializer=result_serializer,
            accept_content=accept_content or sorted({"json", serializer, result_serializer}),
            broker_connection_retry_on_startup=True,
        )
        app.conf.update(conf)
        tasks = declare_tasks(app)
        made.append(app)
        return CeleryClient(app=app, redis=server, tasks=tasks)

    yield make
    for app in made:
        # Close the result listener and forget its subscriptions, so that
        # AsyncResult.__del__ later (maybe after redis is gone) does nothing
        # instead of retrying a reconnect.
        consumer = getattr(app.backend, "result_consumer", None)
        if consumer is not None:
            try:
                consumer.stop()
            except Exception:
                pass
            for attr in ("subscribed_to", "_pending_unsubscribe"):  # celery 5.7 internals
                getattr(consumer, attr, set()).clear()
            consumer._pubsub = None
        try:
            app.close()
        except Exception:
            pass


@pytest.fixture
def client(celery_app) -> CeleryClient:
    """The default JSON client on the session redis."""
    return celery_app()


# --------------------------------------------------------------------------
# A real Python Celery worker (the neighbour in the shared-Redis test)
# --------------------------------------------------------------------------

@pytest.fixture
def python_worker(redis_server, tmp_path):
    """Factory: ``python_worker(queues="py", name="py@%h", module="pytasks")`` -> ManagedProcess."""
    started: list[ManagedProcess] = []

    def start(*, queues: str = "py", name: str = "py@%h", module: str = "pytasks",
              redis: RedisServer | None = None, extra_args: Iterable[str] = ()) -> ManagedProcess:
        server = redis or redis_server
        n = len(started)
        argv = [sys.executable, "-m", "celery", "-A", module, "-b", server.url(0),
                "--result-backend", server.url(1), "worker", "--pool=solo", "-Q", queues, "-n", name,
                "--loglevel=INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
                *extra_args]
        proc = ManagedProcess(f"python-worker-{n}", argv, tmp_path / f"python-worker-{n}.log",
                              env=_base_env({"PYTHONPATH": str(TESTS_DIR)}), cwd=TESTS_DIR)
        started.append(proc)
        proc.start()
        proc.wait_ready(READY_TIMEOUT)
        return proc

    yield start
    for p in started:
        p.stop()


# --------------------------------------------------------------------------
# celeriac CLI (call / result)
# --------------------------------------------------------------------------

@pytest.fixture
def celeriac_cli(redis_server):
    """``celeriac_cli("call", "tasks.add", "4", "4", "--wait")`` -> CompletedProcess (text)."""

    def run(*args: str, timeout: float = 60.0, redis: RedisServer | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        if not CELERIAC_BIN.exists():
            pytest.fail(f"celeriac binary not found at {CELERIAC_BIN}", pytrace=False)
        server = redis or redis_server
        argv = [str(CELERIAC_BIN), *args, "--broker", server.url(0), "--result-backend", server.url(1)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_base_env(env),
                              cwd=REPO_ROOT, stdin=subprocess.DEVNULL)

    return run


# --------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "celeriac_only: needs the real celeriac binary "
                                       "(skipped with CELERIAC_TEST_STANDIN=python)")
    config.addinivalue_line("markers", "standin_xfail(reason): known to fail against the Python "
                                       "stand-in worker (a Celery limitation the Rust worker must not share)")


def pytest_collection_modifyitems(config, items):
    if STANDIN != "python":
        return
    for item in items:
        if item.get_closest_marker("celeriac_only"):
            item.add_marker(pytest.mark.skip(reason="needs the celeriac binary"))
        m = item.get_closest_marker("standin_xfail")
        if m:
            item.add_marker(pytest.mark.xfail(reason="python stand-in: " + (m.args[0] if m.args else ""),
                                              strict=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for proc in list(_ACTIVE):
            if proc.name.startswith(("redis-server", "rabbitmq-server", "epmd")) and proc.alive:
                continue  # only a crashed server is worth showing
            report.sections.append((f"{proc.name} log tail ({proc.log_path})", proc.tail()))
        server = item.funcargs.get("redis_server")
        if isinstance(server, RedisServer) and server.process is not None and server.process.alive:
            report.sections.append(("session redis at the failure", _redis_state(server)))


def _redis_state(server: "RedisServer", limit: int = 60) -> str:
    """What the session Redis holds when a test fails: where a task that never finished went (still
    queued, unacknowledged, or stored under another state)."""
    lines = []
    try:
        for db in (0, 1):
            r = server.redis(db, socket_timeout=5)
            keys = sorted(r.scan_iter(count=1000))
            lines.append(f"db {db}: {len(keys)} keys")
            for key in keys[:limit]:
                kind = r.type(key).decode()
                name = key.decode("utf-8", "replace")
                if kind == "list":
                    detail = f"{r.llen(key)} messages"
                elif kind == "hash":
                    detail = f"{r.hlen(key)} entries"
                elif kind == "zset":
                    detail = f"{r.zcard(key)} members"
                elif kind == "string" and name.startswith("celery-task-meta-"):
                    try:
                        meta = json.loads(r.get(key) or b"{}")
                        detail = f"{meta.get('status')} {str(meta.get('result'))[:80]}"
                    except ValueError:
                        detail = "unreadable"
                else:
                    detail = kind
                lines.append(f"  {name}: {detail}")
            if len(keys) > limit:
                lines.append(f"  ... and {len(keys) - limit} more")
            unacked = r.hgetall("unacked") if db == 0 else {}
            for tag, entry in list(unacked.items())[:10]:
                try:
                    headers = json.loads(entry)[0]["headers"]
                    lines.append(f"  unacked {tag.decode()}: {headers.get('task')}[{headers.get('id')}]")
                except (ValueError, KeyError, IndexError, TypeError):
                    lines.append(f"  unacked {tag.decode()}: unreadable")
    except Exception as e:  # a diagnostic must never hide the failure itself
        lines.append(f"(could not read redis: {e!r})")
    return "\n".join(lines)


@pytest.fixture
def sdk(monkeypatch):
    """The Python SDK (``sdk-python/celeriac``) imported on plain CPython, as a project's own unit tests
    import it, with an empty task registry; unloaded afterwards."""
    import importlib
    monkeypatch.syspath_prepend(str(REPO_ROOT / "sdk-python"))
    monkeypatch.delitem(sys.modules, "celeriac", raising=False)
    mod = importlib.import_module("celeriac")
    monkeypatch.setattr(mod, "REGISTRY", {})
    yield mod
    for name in [m for m in sys.modules if m == "celeriac" or m.startswith("celeriac.")]:
        sys.modules.pop(name)


def new_task_id() -> str:
    return str(uuid.uuid4())
