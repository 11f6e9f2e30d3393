#!/usr/bin/env python3
"""Celeriac vs Celery: the benchmark harness (run it through ``bench/run.sh``).

Why this exists: Celeriac claims to be a faster, smaller drop-in for a Celery
worker. This script measures that claim on the machine it runs on, with the
same Python Celery client code and the same Redis for both workers, and
reports — it never asserts a time.

What it does, in order (see README.md for the details and the flags):

1. builds what it measures (``make tasks-rust``, ``cargo build --release -p celeriac
   -p celeriac-bench``) unless ``--no-build``;
2. starts its own ``redis-server`` on a free loopback port (no persistence);
3. the ceiling of the box: ``redis-benchmark`` for the commands one task costs,
   unpipelined and with ``-P 16``, and the sandbox micro-benchmark
   (``celeriac-bench sandbox``: instantiate + call per ``tasks.add``);
4. for each repeat, for each worker (Celery prefork -c 2, ``celeriac worker``
   -c 2), in turn:
   * drain with results: N messages published first, then the worker starts;
     timed from the first message it takes off the queue until N results are
     stored (DBSIZE of the result db);
   * latency: sequential ``add.delay(i, i).get()`` round trips;
   * end-to-end: publisher and worker together, from the first publish until
     N results are stored;
   * drain with ``ignore_result``: as above, until the queue and ``unacked``
     are empty;
   * the worker's memory during the load phases (whole process tree: summed
     VmRSS and PSS, sampled every 100 ms);
5. prints one table (min / median / max over the repeats, and the ratio of the
   medians Celeriac / Celery) and writes everything, raw figures included, to
   ``bench/results/<timestamp>.json``; worker logs go next to it.

Every process it starts runs in its own process group and is stopped on exit,
on error and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CELERIAC = ROOT / "target" / "release" / "celeriac"
CELERIAC_BENCH = ROOT / "target" / "release" / "celeriac-bench"
TASKS_DIR = ROOT / "target" / "tasks"
QUEUE = "celery"
WORKERS = ("celery", "celeriac")
LABELS = {"celery": "Celery prefork -c2", "celeriac": "Celeriac -c2"}


def log(msg: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# --------------------------------------------------------------------------
# Processes: each in its own session/process group, all stopped at exit.
# --------------------------------------------------------------------------

class Processes:
    """Spawns child processes in new process groups and stops them all."""

    def __init__(self) -> None:
        self.live: dict[int, tuple[str, subprocess.Popen]] = {}
        self.lock = threading.Lock()

    def spawn(self, name: str, cmd: list[str], log_path: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        kw.setdefault("stdout", out)
        kw.setdefault("stderr", out if log_path else subprocess.DEVNULL)
        p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        if log_path:
            out.close()  # the child holds its own descriptor
        with self.lock:
            self.live[p.pid] = (name, p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 20.0) -> None:
        """SIGTERM the process group (a warm shutdown for both workers), then
        SIGKILL whatever is left of it."""
        with self.lock:
            self.live.pop(p.pid, None)
        if p.poll() is None:
            _killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        _killpg(p.pid, signal.SIGKILL)  # stragglers (pool children), if any
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        with self.lock:
            procs = [p for _, p in self.live.values()]
        for p in procs:
            self.stop(p, timeout=5.0)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


PROCS = Processes()
atexit.register(PROCS.stop_all)


def _on_signal(signum, _frame):
    # SystemExit unwinds through the finally blocks, then atexit stops the rest.
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Memory of a process tree.
# --------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by a process tree (live processes)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def _kb_field(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples the summed VmRSS and PSS of a process tree every `interval` s.

    For Celery prefork the tree is the main process plus its pool processes.
    Summed RSS counts pages shared between the forked processes once per
    process; PSS splits them, so it is the fairer figure for prefork.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.rss_peak_kb = self.pss_peak_kb = 0
        self.procs_seen = 0
        self.last_tree: list[int] = []

    def sample(self) -> None:
        tree = process_tree(self.pid)
        rss = sum(_kb_field(f"/proc/{p}/status", "VmRSS:") for p in tree)
        pss = sum(_kb_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree)
        with self.lock:
            self.rss_peak_kb = max(self.rss_peak_kb, rss)
            self.pss_peak_kb = max(self.pss_peak_kb, pss)
            self.procs_seen = max(self.procs_seen, len(tree))
            self.last_tree = tree

    def hwm_kb(self) -> int:
        """Summed VmHWM (each process's own peak RSS) of the current tree."""
        return sum(_kb_field(f"/proc/{p}/status", "VmHWM:") for p in process_tree(self.pid))

    def take(self) -> dict:
        """Peaks since the last take(), in MB; resets them."""
        self.sample()
        with self.lock:
            out = {"rss_peak_mb": self.rss_peak_kb / 1024, "pss_peak_mb": self.pss_peak_kb / 1024,
                   "processes": self.procs_seen}
            self.rss_peak_kb = self.pss_peak_kb = 0
        out["hwm_sum_mb"] = self.hwm_kb() / 1024
        return out

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()


# --------------------------------------------------------------------------
# Redis.
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a free loopback port, without persistence."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-bench-redis-"))
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
               "--dir", str(self.dir), "--protected-mode", "yes",
               # The publishers never read their pub/sub connection (a Celery client only
               # reads it inside .get()), so Redis must not drop it for a full buffer.
               "--client-output-buffer-limit", "pubsub 0 0 0"]
        self.proc = PROCS.spawn("redis-server", cmd, logdir / "redis-server.log")
        self.db0 = redis.Redis(host="127.0.0.1", port=self.port, db=0)
        self.db1 = redis.Redis(host="127.0.0.1", port=self.port, db=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.db0.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {logdir / 'redis-server.log'}")
                time.sleep(0.05)
        self.version = self.db0.info("server")["redis_version"]

    name = "redis"
    #: The result count is exact; "unacked" is kombu's hash.
    counts_unacked = True

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def broker_url(self) -> str:
        return self.url(0)

    @property
    def backend_url(self) -> str:
        return self.url(1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def publish_flags(self) -> list[str]:
        return []

    def counts(self) -> tuple[int, int, int]:
        """(queue length, unacked entries, keys in the result db)."""
        pipe = self.db0.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.hlen("unacked")
        queued, unacked = pipe.execute()
        return queued, unacked, self.db1.dbsize()

    def fresh(self) -> None:
        self.db0.flushall()

    def fresh_results(self) -> None:
        self.db1.flushdb()

    def stop(self) -> None:
        PROCS.stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


#: Where the AMQP benchmark's results go: a queue the harness declares and
#: counts (the tasks are published with ``reply_to`` naming it), so "N results
#: published" is one passive declare, like DBSIZE on Redis.
REPLY_QUEUE = "bench.replies"


class RabbitBench:
    """A private rabbitmq-server node (the test suite's ``RabbitServer``: free
    loopback ports, data in a temp dir, no plugins) and a fresh vhost, with the
    same questions the Redis harness asks: how many task messages are still
    queued, how many rpc:// results have been published."""

    name = "rabbitmq"
    #: A passive declare reports ready messages only (no management plugin):
    #: "queue empty" means every message was delivered; the last prefetch
    #: window may still be unacknowledged for a millisecond.
    counts_unacked = False

    def __init__(self, logdir: Path) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import RabbitServer  # the suite's harness; imports pytest
        self.dir = Path(tempfile.mkdtemp(prefix="celeriac-bench-rabbitmq-"))
        self.server = RabbitServer(self.dir)
        self.server.start()
        self.vhost = self.server.vhost()
        import amqp as pyamqp
        self.conn = pyamqp.Connection(host=f"127.0.0.1:{self.server.port}", userid="guest", password="guest",
                                      virtual_host=self.vhost)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.channel.queue_declare(REPLY_QUEUE, durable=True, auto_delete=False)
        self.version = self.server.ctl("eval", "rabbit_misc:version().").strip().strip('"')
        self.logdir = logdir

    @property
    def broker_url(self) -> str:
        return self.server.url(self.vhost)

    @property
    def backend_url(self) -> str:
        return "rpc://"

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def publish_flags(self) -> list[str]:
        return ["--reply-to", REPLY_QUEUE]

    def _ready(self, queue: str) -> int:
        _, count, _ = self.channel.queue_declare(queue, passive=True)
        return count

    def counts(self) -> tuple[int, int, int]:
        try:
            queued = self._ready(QUEUE)
        except Exception:  # not declared yet (nothing published)
            self.channel = self.conn.channel()
            queued = 0
        return queued, 0, self._ready(REPLY_QUEUE)

    def fresh(self) -> None:
        for q in (QUEUE, REPLY_QUEUE):
            try:
                self.channel.queue_purge(q)
            except Exception:
                self.channel = self.conn.channel()

    def fresh_results(self) -> None:
        self.channel.queue_purge(REPLY_QUEUE)

    def stop(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass
        self.server.stop()
        # The node's own logs are worth keeping next to the workers'.
        shutil.copytree(self.dir / "log", self.logdir / "rabbitmq-log", dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# The ceiling: redis-benchmark and the sandbox micro-benchmark.
# --------------------------------------------------------------------------

PAYLOAD_1K = "x" * 1000   # about one Celery task message
RESULT_300 = "r" * 300    # about one stored result

#: (label, command) — the Redis commands a task costs between client, broker and backend.
REDIS_COMMANDS = [
    ("PING (baseline)", ["PING"]),
    ("LPUSH 1KB (publish)", ["LPUSH", "bench:q", PAYLOAD_1K]),
    ("BRPOP (receive)", ["BRPOP", "bench:q", "0.1"]),
    ("RPOP", ["RPOP", "bench:q"]),
    ("SETEX 300B (result)", ["SETEX", "celery-task-meta-__rand_int__", "86400", RESULT_300]),
    ("PUBLISH 300B (result)", ["PUBLISH", "celery-task-meta-x", RESULT_300]),
    ("ZADD (unacked_index)", ["ZADD", "unacked_index", "1700000000.5", "tag:__rand_int__"]),
    ("HSET 1KB (unacked)", ["HSET", "unacked", "tag:__rand_int__", PAYLOAD_1K]),
    ("EVAL ZADD+HSET (ack script)", ["EVAL", "redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) "
                                     "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1",
                                     "2", "bench:ez", "bench:eh", "1700000000", "tag:__rand_int__", "v"]),
]


def redis_benchmark(server: RedisServer, n: int) -> list[dict]:
    """Requests/s for each command, unpipelined and with -P 16 (50 clients)."""
    rows = []
    for label, command in REDIS_COMMANDS:
        row = {"command": label}
        for key, extra in (("rps", []), ("rps_p16", ["-P", "16"])):
            if command[0] == "BRPOP":
                # Fill the list first so BRPOP never blocks.
                subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-n", str(n),
                                "-P", "16", "-q", "LPUSH", "bench:q", "x"], check=True, capture_output=True)
            cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-n", str(n), "-c", "50",
                   "-r", "100000", "--csv", *extra, *command]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row[key] = _parse_redis_benchmark_csv(out)
        rows.append(row)
        server.db0.flushall()
    return rows


def _parse_redis_benchmark_csv(out: str) -> float | None:
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) >= 2 and cells[0].strip('"') != "test":
            try:
                return float(cells[1].strip('"'))
            except ValueError:
                continue
    return None


def amqp_floor(server: "RabbitBench", args: argparse.Namespace, logdir: Path, python: str) -> dict:
    """The ceiling over RabbitMQ: `celeriac-bench amqp-floor` drains the same N
    Celery messages doing only what any worker must (receive with the worker's
    prefetch window, publish the rpc:// reply under confirms, ack once it is
    confirmed), with the raw frame codec and with lapin. Same drain phases as the
    workers, same counting."""
    out: dict = {"prefetch": 4 * args.concurrency}
    for client in ("raw", "lapin"):
        suite = Suite(f"floor-{client}", server, args, logdir, python)
        out[client] = {
            "drain": suite.drain(ignore_result=False, keep_running=False)[0],
            "drain_noresult": suite.drain(ignore_result=True, keep_running=False)[0],
        }
    return out


def sandbox_bench(n: int) -> dict:
    """Runs `celeriac-bench sandbox` and returns its JSON report."""
    out = subprocess.run([str(CELERIAC_BENCH), "sandbox", "--n", str(n), "-A", str(TASKS_DIR), "--json"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


# --------------------------------------------------------------------------
# One worker under test.
# --------------------------------------------------------------------------

class PhaseError(RuntimeError):
    pass


class Suite:
    """Runs every phase for one worker kind against one Redis."""

    def __init__(self, kind: str, server: RedisServer, args: argparse.Namespace, logdir: Path,
                 python: str, tasks_dir: Path = TASKS_DIR, worker_args: tuple[str, ...] = ()) -> None:
        """`tasks_dir` and `worker_args` (extra `celeriac worker` flags) let
        `bench/languages.py` run the same phases on other task components."""
        self.kind, self.server, self.args, self.logdir, self.python = kind, server, args, logdir, python
        self.tasks_dir, self.worker_args = tasks_dir, worker_args
        self.env = dict(os.environ, BENCH_BROKER_URL=server.broker_url, BENCH_RESULT_BACKEND=server.backend_url,
                        PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
        # Errors only: RUST_BACKTRACE makes wasmtime capture host backtraces.
        self.env.pop("RUST_BACKTRACE", None)
        self.env.pop("RUST_LOG", None)
        self.run_no = 0
        self.cpu_mark = (0.0, 0.0)

    # -- helpers ----------------------------------------------------------

    def worker_cmd(self) -> list[str]:
        if self.kind.startswith("floor-"):
            # Not a worker: the least one can do per message (see amqp_floor).
            return [str(CELERIAC_BENCH), "amqp-floor", "--url", self.server.broker_url, "--queue", QUEUE,
                    "--prefetch", str(4 * self.args.concurrency), "--client", self.kind.removeprefix("floor-")]
        if self.kind == "celery":
            return [str(Path(self.python).parent / "celery"), "-A", "benchtasks", "worker", "--pool=prefork",
                    "-c", str(self.args.concurrency), "-l", "WARNING",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"]
        return [str(CELERIAC), "worker", "-A", str(self.tasks_dir), "--broker", self.server.broker_url,
                "--result-backend", self.server.backend_url, "-c", str(self.args.concurrency), "-l", "WARNING",
                *self.worker_args]

    def start_worker(self, tag: str) -> tuple[subprocess.Popen, MemorySampler, float]:
        self.run_no += 1
        log_path = self.logdir / f"{self.kind}-{self.run_no:02d}-{tag}.log"
        t_spawn = time.time()
        p = PROCS.spawn(f"{self.kind} worker", self.worker_cmd(), log_path, cwd=HERE, env=self.env)
        sampler = MemorySampler(p.pid)
        sampler.start()
        p.log_path = log_path  # type: ignore[attr-defined]
        return p, sampler, t_spawn

    def stop_worker(self, p: subprocess.Popen, sampler: MemorySampler) -> None:
        sampler.stop()
        PROCS.stop(p)

    def client(self, *argv: str, wait: bool = True):
        cmd = [self.python, str(HERE / "client.py"), *argv]
        if wait:
            r = subprocess.run(cmd, cwd=HERE, env=self.env, capture_output=True, text=True)
            if r.returncode != 0:
                raise PhaseError(f"client {' '.join(argv)} failed:\n{r.stderr[-3000:]}")
            return json.loads(r.stdout)
        return PROCS.spawn("client", cmd, None, cwd=HERE, env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)

    def start_publishers(self, n: int, ignore_result: bool) -> list[subprocess.Popen]:
        """--publishers client processes, sharing the N messages between them."""
        k = self.args.publishers
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        flags = ["--ignore-result"] if ignore_result else self.server.publish_flags()
        return [self.client("publish", "--n", str(m), *flags, wait=False) for m in shares if m]

    def finish_publishers(self, pubs: list[subprocess.Popen], n: int) -> dict:
        """Waits for the publishers; first/last publish time over all of them."""
        outs = []
        for pub in pubs:
            out_s, err_s = pub.communicate(timeout=max(120.0, n / 50))
            if pub.returncode != 0:
                raise PhaseError(f"publisher failed:\n{err_s[-3000:]}")
            outs.append(json.loads(out_s))
        first, last = min(o["first"] for o in outs), max(o["last"] for o in outs)
        return {"first": first, "last": last, "per_s": n / max(last - first, 1e-9)}

    def publish(self, n: int, ignore_result: bool) -> dict:
        pubs = self.start_publishers(n, ignore_result)
        try:
            return self.finish_publishers(pubs, n)
        finally:
            for pub in pubs:
                PROCS.stop(pub)

    def counts(self) -> tuple[int, int, int]:
        """(queued task messages, unacked, results stored or published)."""
        return self.server.counts()

    def wait_for(self, p: subprocess.Popen, done, n: int, first=None) -> tuple[float | None, float]:
        """Polls every few ms until done(counts) holds; returns (time first(counts)
        held, time done). Gives up when nothing progresses for --stall seconds."""
        t_first = None
        last_progress, last_state = time.monotonic(), None
        while True:
            c = self.counts()
            now = time.time()
            if t_first is None and first is not None and first(c):
                t_first = now
                self.cpu_mark = self.cpu_snapshot(p)
            if done(c):
                return t_first, now
            if c != last_state:
                last_state, last_progress = c, time.monotonic()
            elif time.monotonic() - last_progress > self.args.stall:
                raise PhaseError(f"no progress for {self.args.stall:.0f} s (queue, unacked, results = {c}, "
                                 f"n = {n}); see {p.log_path}")  # type: ignore[attr-defined]
            if p.poll() is not None:
                raise PhaseError(f"{self.kind} worker exited with {p.returncode}; see {p.log_path}")  # type: ignore[attr-defined]
            time.sleep(0.004)

    def cpu_snapshot(self, p: subprocess.Popen) -> tuple[float, float]:
        """(worker tree CPU s, broker server CPU s) so far."""
        return tree_cpu_s(p.pid), tree_cpu_s(self.server.pid)

    def cpu_per_task(self, p: subprocess.Popen, mark: tuple[float, float], n: int) -> dict:
        """CPU microseconds per task of the worker and of the broker server since `mark`."""
        w, r = self.cpu_snapshot(p)
        return {"worker_cpu_us_per_task": (w - mark[0]) / n * 1e6, "broker_cpu_us_per_task": (r - mark[1]) / n * 1e6}

    # -- phases -----------------------------------------------------------

    def drain(self, ignore_result: bool, keep_running: bool):
        """Publish N first, then start the worker and time it draining them."""
        n = self.args.n
        self.server.fresh()
        pub = self.publish(n, ignore_result)
        queued, _, _ = self.counts()
        deadline = time.monotonic() + 10
        while queued != n and time.monotonic() < deadline:
            # RabbitMQ routes asynchronously: the last publishes may not be counted yet.
            time.sleep(0.05)
            queued, _, _ = self.counts()
        if queued != n:
            raise PhaseError(f"expected {n} queued messages after publishing, found {queued}")
        tag = "drain-noresult" if ignore_result else "drain"
        p, sampler, t_spawn = self.start_worker(tag)
        try:
            if ignore_result:
                done = lambda c: c[0] == 0 and c[1] == 0  # noqa: E731
            else:
                done = lambda c: c[2] >= n  # noqa: E731
            self.cpu_mark = self.cpu_snapshot(p)
            t_first, t_done = self.wait_for(p, done, n, first=lambda c: c[0] < n)
            mem = {**sampler.take(), **self.cpu_per_task(p, self.cpu_mark, n)}
            results = self.counts()[2]
            if not ignore_result and results != n:
                raise PhaseError(f"expected {n} results, found {results}")
            if ignore_result and results != 0:
                raise PhaseError(f"ignore_result, yet {results} results were stored")
            t_first = t_first or t_done
            secs = max(t_done - t_first, 1e-9)
            out = {"n": n, "startup_s": t_first - t_spawn, "drain_s": secs, "tasks_per_s": n / secs,
                   "publish_per_s": pub["per_s"], **mem}
        except BaseException:
            self.stop_worker(p, sampler)
            raise
        if keep_running:
            return out, (p, sampler)
        self.stop_worker(p, sampler)
        return out, None

    def latency(self) -> dict:
        r = self.client("latency", "--n", str(self.args.latency_n), "--warmup", str(self.args.latency_warmup))
        s = sorted(r["samples_ms"])
        return {"n": len(s), "p50_ms": _pct(s, 50), "p99_ms": _pct(s, 99), "mean_ms": statistics.fmean(s),
                "min_ms": s[0], "max_ms": s[-1]}

    def end_to_end(self, p: subprocess.Popen, sampler: MemorySampler) -> dict:
        """Worker running; publish N while it consumes; until N results stored."""
        n = self.args.n
        self.server.fresh_results()
        sampler.take()  # reset the peaks: this phase gets its own
        mark = self.cpu_snapshot(p)
        pubs = self.start_publishers(n, ignore_result=False)
        try:
            _, t_done = self.wait_for(p, lambda c: c[2] >= n, n)
            r = self.finish_publishers(pubs, n)
        finally:
            for pub in pubs:
                PROCS.stop(pub)
        secs = max(t_done - r["first"], 1e-9)
        return {"n": n, "e2e_s": secs, "tasks_per_s": n / secs, "publish_per_s": r["per_s"], **sampler.take(),
                **self.cpu_per_task(p, mark, n)}

    def run(self) -> dict:
        """All phases, two worker starts. Returns one repeat's figures."""
        res: dict = {"loadavg_start": loadavg()}
        log(f"{self.kind}: drain {self.args.n} (results on)")
        res["drain"], (p, sampler) = self.drain(ignore_result=False, keep_running=True)
        try:
            log(f"{self.kind}: latency x{self.args.latency_n}")
            res["latency"] = self.latency()
            log(f"{self.kind}: end-to-end {self.args.n}")
            res["e2e"] = self.end_to_end(p, sampler)
        finally:
            self.stop_worker(p, sampler)
        log(f"{self.kind}: drain {self.args.n} (ignore_result)")
        res["drain_noresult"], _ = self.drain(ignore_result=True, keep_running=False)
        res["loadavg_end"] = loadavg()
        return res


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    import math
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(k, len(sorted_values)) - 1]


# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------

#: (label, path into one repeat's result, format)
METRICS = [
    ("drain, results on (tasks/s)", ("drain", "tasks_per_s"), "{:,.0f}"),
    ("drain, ignore_result (tasks/s)", ("drain_noresult", "tasks_per_s"), "{:,.0f}"),
    ("end-to-end, results on (tasks/s)", ("e2e", "tasks_per_s"), "{:,.0f}"),
    ("  client publish rate in e2e (msg/s)", ("e2e", "publish_per_s"), "{:,.0f}"),
    ("  client publish rate, no worker (msg/s)", ("drain", "publish_per_s"), "{:,.0f}"),
    ("latency p50 (ms)", ("latency", "p50_ms"), "{:.2f}"),
    ("latency p99 (ms)", ("latency", "p99_ms"), "{:.2f}"),
    ("latency mean (ms)", ("latency", "mean_ms"), "{:.2f}"),
    ("worker CPU per task, drain (µs)", ("drain", "worker_cpu_us_per_task"), "{:,.0f}"),
    ("broker CPU per task, drain (µs)", ("drain", "broker_cpu_us_per_task"), "{:,.0f}"),
    ("worker CPU per task, ignore_result (µs)", ("drain_noresult", "worker_cpu_us_per_task"), "{:,.0f}"),
    ("broker CPU per task, ignore_result (µs)", ("drain_noresult", "broker_cpu_us_per_task"), "{:,.0f}"),
    ("start -> first message taken (s)", ("drain", "startup_s"), "{:.2f}"),
    ("RSS peak, drain (MB, tree sum)", ("drain", "rss_peak_mb"), "{:.1f}"),
    ("RSS peak, e2e (MB, tree sum)", ("e2e", "rss_peak_mb"), "{:.1f}"),
    ("PSS peak, drain (MB, tree sum)", ("drain", "pss_peak_mb"), "{:.1f}"),
    ("VmHWM after drain (MB, tree sum)", ("drain", "hwm_sum_mb"), "{:.1f}"),
    ("processes in worker tree", ("drain", "processes"), "{:.0f}"),
    ("load avg (1 min) at start", ("loadavg_start", 0), "{:.2f}"),
]


def _get(d, path):
    for k in path:
        if d is None:
            return None
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for label, path, fmt in METRICS:
        row = {"metric": label, "format": fmt}
        for kind in WORKERS:
            vals = [v for v in (_get(r, path) for r in runs.get(kind, [])) if isinstance(v, (int, float))]
            row[kind] = ({"min": min(vals), "median": statistics.median(vals), "max": max(vals), "values": vals}
                         if vals else None)
        a, b = row.get("celeriac"), row.get("celery")
        row["ratio"] = (a["median"] / b["median"]) if a and b and b["median"] else None
        rows.append(row)
    return rows


def _cell(stat: dict | None, fmt: str) -> str:
    if not stat:
        return "n/a"
    if len(stat["values"]) == 1:
        return fmt.format(stat["median"])
    return " / ".join(fmt.format(stat[k]) for k in ("min", "median", "max"))


def render(report: dict) -> str:
    lines = []
    meta = report["meta"]
    r = report["config"]
    lines.append(f"Celeriac vs Celery — {meta['timestamp']} — {meta['cpus']} CPUs, {meta['broker']} "
                 f"{meta['broker_version']} (results: {meta['result_backend']}), "
                 f"celery {meta['celery_version']}, commit {meta['git_commit']}{' (dirty)' if meta['git_dirty'] else ''}")
    lines.append(f"N = {r['n']}, latency n = {r['latency_n']}, repeats = {r['repeat']}, -c {r['concurrency']}, "
                 f"publishers = {r['publishers']}; "
                 f"{'celeriac worker ' + r['celeriac_args'] + '; ' if r.get('celeriac_args') else ''}"
                 f"load average {meta['loadavg_start']} at start, {meta.get('loadavg_end')} at end")
    lines.append("cells: min / median / max over the repeats (one value when repeat = 1); "
                 "ratio = median Celeriac / median Celery")
    lines.append("")
    rows = report["summary"]
    w0 = max(len(x["metric"]) for x in rows)
    cells = [(x["metric"], _cell(x.get("celery"), x["format"]), _cell(x.get("celeriac"), x["format"]),
              f"{x['ratio']:.2f}x" if x["ratio"] is not None else "n/a") for x in rows]
    head = ("metric", LABELS["celery"], LABELS["celeriac"], "ratio")
    w1 = max(len(head[1]), *(len(c[1]) for c in cells))
    w2 = max(len(head[2]), *(len(c[2]) for c in cells))
    fmt = f"{{:<{w0}}}  {{:>{w1}}}  {{:>{w2}}}  {{:>8}}"
    lines.append(fmt.format(*head))
    lines.append(fmt.format("-" * w0, "-" * w1, "-" * w2, "-" * 8))
    lines.extend(fmt.format(*c) for c in cells)

    if report.get("redis_benchmark"):
        lines.append("")
        lines.append(f"Ceiling: redis-benchmark, 50 clients, n = {report['config']['redis_benchmark_n']} (requests/s)")
        lines.append(f"{'command':<30} {'unpipelined':>12} {'-P 16':>12}")
        for row in report["redis_benchmark"]:
            a = f"{row['rps']:,.0f}" if row.get("rps") else "n/a"
            b = f"{row['rps_p16']:,.0f}" if row.get("rps_p16") else "n/a"
            lines.append(f"{row['command']:<30} {a:>12} {b:>12}")

    fl = report.get("amqp_floor")
    if fl:
        lines.append("")
        lines.append(f"Ceiling: celeriac-bench amqp-floor (receive, rpc reply under confirms, multiple ack; no task), "
                     f"prefetch {fl['prefetch']}")
        lines.append(f"{'client':<8} {'phase':<14} {'tasks/s':>9} {'client CPU µs':>14} {'broker CPU µs':>14}")
        for client in ("raw", "lapin"):
            for phase, label in (("drain", "rpc results"), ("drain_noresult", "ignore_result")):
                d = fl.get(client, {}).get(phase)
                if d:
                    lines.append(f"{client:<8} {label:<14} {d['tasks_per_s']:>9,.0f} "
                                 f"{d['worker_cpu_us_per_task']:>14,.0f} {d['broker_cpu_us_per_task']:>14,.0f}")

    sb = report.get("sandbox")
    if sb:
        lines.append("")
        lines.append(f"Ceiling: sandbox instantiate + call per {sb['task']}, {sb['n']} calls, {sb['runtime']} (µs)")
        lines.append(f"{'config':<16} {'mean':>7} {'p50':>7} {'p99':>7} {'inner':>7} {'cpu':>7} {'calls/s/core':>13}")
        for v in sb["results"]:
            lines.append(f"{v['config']:<16} {v['mean_us']:>7.1f} {v['p50_us']:>7.1f} {v['p99_us']:>7.1f} "
                         f"{v['inner_mean_us']:>7.1f} {v['cpu_us_per_call']:>7.1f} {v['calls_per_sec']:>13,.0f}")
        lines.append("(mean/p50/p99: Sandbox::call incl. new Store + result parse; inner: instantiate + call; "
                     "cpu: thread CPU time per call)")
    if report.get("errors"):
        lines.append("")
        lines.append("Errors (figures missing above):")
        lines.extend(f"  {e}" for e in report["errors"])
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------

def build() -> None:
    log("building: make tasks-rust")
    # Build output goes to stderr: stdout is for the table.
    subprocess.run(["make", "tasks-rust"], cwd=ROOT, check=True, stdout=sys.stderr)
    log("building: cargo build --release -p celeriac -p celeriac-bench (first time: 6-8 min on 2 cores)")
    subprocess.run(["cargo", "build", "--release", "-p", "celeriac", "-p", "celeriac-bench"], cwd=ROOT, check=True,
                   stdout=sys.stderr)


def git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Celeriac vs Celery benchmark (see bench/README.md).")
    ap.add_argument("--n", type=int, default=None, help="messages per drain / end-to-end phase (default 20000)")
    ap.add_argument("--repeat", type=int, default=None, help="repeats; min / median / max reported (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=2000, repeat 1, fewer round trips")
    ap.add_argument("--latency-n", type=int, default=None, help="sequential round trips (default 1000)")
    ap.add_argument("--latency-warmup", type=int, default=50)
    ap.add_argument("--publishers", type=int, default=1,
                    help="client processes publishing in parallel (default 1; the N messages are shared)")
    ap.add_argument("--concurrency", "-c", type=int, default=2, help="worker concurrency (default 2)")
    ap.add_argument("--workers", default="celery,celeriac", help="which workers to measure (default both)")
    ap.add_argument("--broker", choices=("redis", "amqp"), default="redis",
                    help="redis (results in Redis) or amqp (a private RabbitMQ node, rpc:// results)")
    ap.add_argument("--sandbox-n", type=int, default=None, help="calls per sandbox configuration (default 20000)")
    ap.add_argument("--redis-benchmark-n", type=int, default=None, help="requests per redis-benchmark run")
    ap.add_argument("--no-build", action="store_true", help="use the existing release build and target/tasks")
    ap.add_argument("--no-redis-benchmark", action="store_true")
    ap.add_argument("--no-sandbox", action="store_true")
    ap.add_argument("--no-floor", action="store_true", help="--broker amqp: skip the amqp-floor ceiling")
    ap.add_argument("--celeriac-args", default="",
                    help="extra `celeriac worker` flags, e.g. '--max-calls-per-instance 1000' (kept instances)")
    ap.add_argument("--stall", type=float, default=60.0, help="give a phase up after this many seconds without progress")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path (default bench/results/<timestamp>.json)")
    a = ap.parse_args()
    a.n = a.n or (2000 if a.quick else 20000)
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.latency_n = a.latency_n or (200 if a.quick else 1000)
    a.sandbox_n = a.sandbox_n or (5000 if a.quick else 20000)
    a.redis_benchmark_n = a.redis_benchmark_n or (20000 if a.quick else 100000)
    if a.publishers < 1 or a.n < 1 or a.repeat < 1:
        ap.error("--n, --repeat and --publishers must be at least 1")
    a.workers = [w.strip() for w in a.workers.split(",") if w.strip()]
    for w in a.workers:
        if w not in WORKERS:
            ap.error(f"unknown worker {w!r}; choose from {', '.join(WORKERS)}")
    return a


def main() -> int:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if args.broker == "redis" and (not shutil.which("redis-server") or not shutil.which("redis-benchmark")):
        sys.exit("redis-server / redis-benchmark not found: run bench/run.sh (it installs them) "
                 "or `apt-get install -y redis-server`")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = args.out or RESULTS / f"{stamp}.json"
    logdir = RESULTS / f"{stamp}-logs"
    logdir.mkdir(parents=True, exist_ok=True)

    if not args.no_build:
        build()
    for f in (CELERIAC, CELERIAC_BENCH, TASKS_DIR / "tasks.wasm"):
        if not f.exists():
            sys.exit(f"{f} is missing: run without --no-build")

    import celery
    report: dict = {
        "meta": {
            "timestamp": stamp, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "celery_version": celery.__version__,
            "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "loadavg_start": loadavg(),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "errors": [],
    }
    report["config"]["celery_worker_flags"] = "--pool=prefork -c N -l WARNING --without-gossip --without-mingle --without-heartbeat"
    runs: dict[str, list[dict]] = {w: [] for w in args.workers}
    server = RabbitBench(logdir) if args.broker == "amqp" else RedisServer(logdir)
    report["meta"].update(broker=server.name, broker_version=server.version, result_backend=server.backend_url)
    log(f"{server.name} {server.version} at {server.broker_url}; logs in {logdir}")
    try:
        if not args.no_redis_benchmark and args.broker == "redis":
            log("ceiling: redis-benchmark")
            report["redis_benchmark"] = redis_benchmark(server, args.redis_benchmark_n)
        if not args.no_sandbox:
            log(f"ceiling: sandbox micro-benchmark ({args.sandbox_n} calls per configuration)")
            report["sandbox"] = sandbox_bench(args.sandbox_n)
        python = sys.executable
        if args.broker == "amqp" and not args.no_floor:
            log(f"ceiling: amqp-floor, raw and lapin, drains of {args.n}")
            try:
                report["amqp_floor"] = amqp_floor(server, args, logdir, python)
            except PhaseError as e:
                report["errors"].append(f"amqp-floor: {e}")
        for rep in range(args.repeat):
            for kind in args.workers:
                log(f"repeat {rep + 1}/{args.repeat}: {LABELS[kind]}")
                try:
                    extra = tuple(shlex.split(args.celeriac_args)) if kind == "celeriac" else ()
                    runs[kind].append(Suite(kind, server, args, logdir, python, worker_args=extra).run())
                except PhaseError as e:
                    msg = f"repeat {rep + 1}, {kind}: {e}"
                    log(msg)
                    report["errors"].append(msg)
    finally:
        report["meta"]["loadavg_end"] = loadavg()
        report["runs"] = runs
        report["summary"] = summarize(runs)
        server.stop()
        out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {out_path}\nlogs: {logdir}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: stopping every process the harness started")
        sys.exit(130)
