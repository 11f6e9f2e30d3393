"""bench/chaos.py — the chaos suite of issue #15: no task is lost while things break.

What it reproduces: a stock Celery client sends N tasks (default 10,000) to a
``celeriac worker`` while, in turn,

* ``kill``      — the worker is killed with SIGKILL every 1–3 s and restarted at once;
* ``broker``    — the broker is restarted a few times (Redis with ``appendfsync always``,
                  RabbitMQ with the durable ``celery`` queue and persistent messages, so
                  the broker itself keeps every message it accepted);
* ``partition`` — the worker runs in its own network namespace joined to the host by a
                  veth pair (10.201.0.0/30, no other address), Redis listens on the host
                  end only, and the worker's end of the link is taken down for 5–30 s.

Why: "at least once" and "at most once" are claims about what happens when things
break. This counts, per scenario x transport x acks mode:

* **lost** — a sent task whose result never reached SUCCESS in the result backend
  within ``--drain`` seconds after the chaos stopped (split into: executed, per the
  worker logs, but no result stored; and never executed — with how many of those
  were received by an incarnation that was then killed);
* **executions per id** — every ``Task tasks.x[<id>] succeeded`` line of every worker
  incarnation's log (``-l INFO``; one log file per incarnation, kept). An id with more
  than one line ran more than once: at-least-once allows that with ``acks_late``
  after a kill; anywhere else it is reported as a violation;
* worker restarts, broker restarts / partitions, and the **time to recover**: from
  the restart / broker back / link up to the first ``succeeded`` (kill) or
  ``received`` (broker, partition: a new message consumed) line after it.

Messages whose publish raised (broker down) are published again with the same id;
a duplicate of such an id is attributed to the client, not the worker.

It is a benchmark-like suite, not part of the pytest run; bench/chaos.sh runs it.
Exit status: 1 if any task was lost (or a duplicate appeared where the mode does
not allow one), 2 if a scenario could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

import redis as redis_py  # noqa: E402
from conftest import (  # noqa: E402  (the test suite's broker harness)
    CELERIAC_BIN, CELERIAC_TASKS, ManagedProcess, RabbitServer, RedisServer, _base_env)

SUCCEEDED = re.compile(r"Task (tasks\.\w+)\[([0-9a-f-]{36})\] succeeded")
RECEIVED = re.compile(r"Task (tasks\.\w+)\[([0-9a-f-]{36})\] received")
LOGGED_RECEIVED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): INFO/MainProcess\] Task tasks\.\w+\[[0-9a-f-]{36}\] "
                             r"received", re.M)
RESULT_KEY = "celery-task-meta-{}"

NETNS = "celeriac-chaos"
VETH_HOST, VETH_NS = "cchaos-h", "cchaos-w"
ADDR_HOST, ADDR_NS = "10.201.0.1", "10.201.0.2"


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Brokers
# --------------------------------------------------------------------------

class NetnsRedis(RedisServer):
    """A persistent redis-server bound to the host end of the veth pair only."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, persistent=True)
        self.host = ADDR_HOST
        self.client = redis_py.Redis(host=self.host, port=self.port, db=0)
        self.results = redis_py.Redis(host=self.host, port=self.port, db=1)

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--bind") + 1] = ADDR_HOST
        # Protected mode refuses every non-loopback client; this address exists only on the veth pair.
        argv[argv.index("--protected-mode") + 1] = "no"
        return argv


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(argv), capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


class Netns:
    """The worker's network namespace and its veth link to the host."""

    def __init__(self):
        self.up = False

    @staticmethod
    def available() -> str | None:
        """None if ip netns + veth work here, else why not."""
        if shutil.which("ip") is None:
            return "the ip command is missing (iproute2)"
        probe = f"cprobe-{os.getpid()}"
        r = sh("ip", "netns", "add", probe, check=False)
        if r.returncode != 0:
            return f"ip netns add failed: {r.stderr.strip()}"
        try:
            r = sh("ip", "link", "add", "cprobe0", "type", "veth", "peer", "name", "cprobe1", check=False)
            if r.returncode != 0:
                return f"veth pairs cannot be made: {r.stderr.strip()}"
            sh("ip", "link", "del", "cprobe0", check=False)
        finally:
            sh("ip", "netns", "del", probe, check=False)
        return None

    def create(self) -> None:
        self.destroy()
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NETNS)
        sh("ip", "addr", "add", f"{ADDR_HOST}/30", "dev", VETH_HOST)
        sh("ip", "link", "set", VETH_HOST, "up")
        sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{ADDR_NS}/30", "dev", VETH_NS)
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        self.link(True)

    def link(self, up: bool) -> None:
        """Cut or restore the link: the worker's end goes down (its routes go with it; the
        host end loses carrier, so nothing crosses in either direction)."""
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up" if up else "down")
        self.up = up

    def destroy(self) -> None:
        sh("ip", "link", "del", VETH_HOST, check=False)
        sh("ip", "netns", "del", NETNS, check=False)


# --------------------------------------------------------------------------
# The worker and its incarnations
# --------------------------------------------------------------------------

class Worker:
    """``celeriac worker`` restarted as often as asked; one log file per incarnation."""

    def __init__(self, workdir: Path, broker: str, backend: str, config: Path, concurrency: int,
                 prefix: list[str] = ()):
        self.workdir, self.broker, self.backend = workdir, broker, backend
        self.config, self.concurrency, self.prefix = config, concurrency, list(prefix)
        self.incarnations: list[ManagedProcess] = []
        self.killed: list[ManagedProcess] = []
        self.kill_times: list[float] = []

    @property
    def current(self) -> ManagedProcess:
        return self.incarnations[-1]

    def start(self) -> ManagedProcess:
        n = len(self.incarnations)
        argv = self.prefix + [str(CELERIAC_BIN), "worker", "-A", str(CELERIAC_TASKS), "--broker", self.broker,
                              "--result-backend", self.backend, "-l", "INFO", "-c", str(self.concurrency),
                              "--config", str(self.config)]
        p = ManagedProcess(f"worker-{n}", argv, self.workdir / f"worker-{n:03d}.log", env=_base_env(),
                           cwd=REPO)
        p.start()
        self.incarnations.append(p)
        return p

    def kill(self) -> None:
        self.current.kill()
        self.killed.append(self.current)
        self.kill_times.append(time.time())

    def stop(self) -> None:
        for p in self.incarnations:
            p.stop(grace=15)

    def log_offset(self) -> int:
        try:
            return self.current.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_line(self, rx: re.Pattern, offset: int, until: float) -> float | None:
        """Poll the current incarnation's log from ``offset`` for ``rx``; monotonic time seen, or None."""
        while time.monotonic() < until:
            try:
                with open(self.current.log_path, "rb") as f:
                    f.seek(offset)
                    if rx.search(f.read().decode("utf-8", "replace")):
                        return time.monotonic()
            except FileNotFoundError:
                pass
            if not self.current.alive:
                return None
            time.sleep(0.02)
        return None


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------

class Publisher(threading.Thread):
    """Sends ``n`` tasks at a steady rate over ``seconds`` with a stock Celery client; a publish
    that raises (broker down) is retried with the same task id until it goes through."""

    def __init__(self, broker: str, backend: str, plan: list[tuple[str, str, tuple]], seconds: float):
        super().__init__(daemon=True)
        from celery import Celery
        # No result backend on the client: the harness reads results from Redis itself, and a backend
        # would make every send_task subscribe to its result channel (a third of the publish rate).
        self.app = Celery("chaos", broker=broker, set_as_current=False)
        self.app.conf.update(broker_connection_retry_on_startup=True, task_serializer="json",
                             task_publish_retry_policy={"max_retries": 2, "interval_start": 0,
                                                        "interval_step": 0.2, "interval_max": 0.5})
        self.plan, self.seconds = plan, seconds
        self.sent = 0
        self.retried: set[str] = set()
        self.sent_at: dict[str, float] = {}
        self.publish_errors = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            batch = 50
            for i in range(0, len(self.plan), batch):
                for task_id, name, args in self.plan[i:i + batch]:
                    while True:
                        try:
                            self.app.send_task(name, args=args, task_id=task_id)
                            self.sent_at[task_id] = time.time()
                            break
                        except Exception as e:  # noqa: BLE001 — broker down: retry this very message
                            self.publish_errors += 1
                            self.retried.add(task_id)
                            if self.publish_errors % 20 == 1:
                                log(f"publish failed ({type(e).__name__}: {e}); retrying")
                            time.sleep(0.5)
                    self.sent += 1
                due = start + self.seconds * (i + batch) / len(self.plan)
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------

@dataclass
class Run:
    scenario: str
    transport: str
    acks: str
    sent: int = 0
    succeeded: int = 0
    lost: list[str] = field(default_factory=list)
    lost_ran_no_result: list[str] = field(default_factory=list)
    lost_in_killed: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    dup_client: int = 0
    max_exec: int = 0
    worker_restarts: int = 0
    broker_events: int = 0
    recover: list[float] = field(default_factory=list)
    not_recovered: int = 0
    wall: float = 0.0
    publish_errors: int = 0
    skipped: str | None = None
    received_while_cut: int = 0
    logs: str = ""

    @property
    def dup_allowed(self) -> bool:
        return self.acks == "late"

    @property
    def dup_worker(self) -> int:
        return len(self.duplicates) - self.dup_client

    def failed(self, at_most_once_ok: bool) -> list[str]:
        if self.skipped:
            return []
        why = []
        unexplained = len(self.lost) - (len(self.lost_in_killed) if at_most_once_ok and self.acks == "early" else 0)
        if unexplained > 0:
            why.append(f"{unexplained} lost")
        if self.received_while_cut:
            why.append(f"{self.received_while_cut} messages received while the link was down: the partition "
                       "did not cut, the run proves nothing")
        if self.dup_worker and not self.dup_allowed:
            why.append(f"{self.dup_worker} ids ran more than once with early acks")
        return why


def make_plan(n: int, sleep_every: int, sleep_for: float) -> list[tuple[str, str, tuple]]:
    plan = []
    for i in range(n):
        if sleep_every and i % sleep_every == sleep_every - 1:
            plan.append((str(uuid.uuid4()), "tasks.sleep", (sleep_for,)))
        else:
            plan.append((str(uuid.uuid4()), "tasks.add", (i, i)))
    return plan


def worker_config(path: Path, acks: str, prefetch: int) -> Path:
    path.write_text(f"task_acks_late = {'true' if acks == 'late' else 'false'}\n"
                    f"worker_prefetch_multiplier = {prefetch}\n"
                    "\n[broker_transport_options]\n"
                    "# Redis: a dead incarnation's unacked messages go back after 5 s, not an hour.\n"
                    "visibility_timeout = 5\n"
                    "unacked_restore_interval = 2\n")
    return path


def results_done(results: redis_py.Redis, ids: list[str]) -> set[str]:
    done = set()
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        try:
            raws = results.mget([RESULT_KEY.format(t) for t in chunk])
        except redis_py.exceptions.RedisError:
            return done | set()  # backend briefly unreachable: count nothing from this chunk on
        for t, raw in zip(chunk, raws):
            if raw is not None and json.loads(raw).get("status") == "SUCCESS":
                done.add(t)
    return done


def run_one(args, scenario: str, transport: str, acks: str, root: Path, rabbit: RabbitServer | None) -> Run:
    """One run; whatever it started is stopped (and the namespace removed) however it ends."""
    cleanup: list = []
    try:
        return _run_one(args, scenario, transport, acks, root, rabbit, cleanup)
    finally:
        for undo in reversed(cleanup):
            try:
                undo()
            except BaseException as e:  # noqa: BLE001 — keep cleaning up
                log(f"cleanup: {type(e).__name__}: {e}")


def _run_one(args, scenario: str, transport: str, acks: str, root: Path, rabbit: RabbitServer | None,
             cleanup: list) -> Run:
    run = Run(scenario, transport, acks)
    wd = root / f"{scenario}-{transport}-{acks}"
    wd.mkdir(parents=True)
    run.logs = str(wd)
    rng = random.Random(args.seed)
    netns: Netns | None = None
    redis_srv: RedisServer | None = None
    backend_srv: RedisServer | None = None
    prefix: list[str] = []

    if scenario == "partition":
        if transport != "redis":
            run.skipped = "partition is run over Redis only (RabbitMQ's node binds loopback in this harness)"
            return run
        why = Netns.available()
        if why:
            run.skipped = f"ip netns unavailable: {why}"
            return run
        netns = Netns()
        cleanup.append(netns.destroy)
        netns.create()
        redis_srv = NetnsRedis(wd / "redis")
        cleanup.append(redis_srv.stop)
        redis_srv.start()
        prefix = ["ip", "netns", "exec", NETNS]
    elif transport == "redis":
        redis_srv = RedisServer(wd / "redis", persistent=True)
        cleanup.append(redis_srv.stop)
        redis_srv.start()

    if transport == "redis":
        broker_url, backend_url, results = redis_srv.url(0), redis_srv.url(1), redis_srv.results
    else:
        # Results in a persistent Redis of their own: the RabbitMQ restarts are the broker's chaos.
        backend_srv = RedisServer(wd / "results-redis", persistent=True)
        cleanup.append(backend_srv.stop)
        backend_srv.start()
        vhost = rabbit.vhost()
        broker_url, backend_url, results = rabbit.url(vhost), backend_srv.url(1), backend_srv.results

    worker = Worker(wd, broker_url, backend_url, worker_config(wd / "worker.toml", acks, args.prefetch),
                    args.concurrency, prefix)
    plan = make_plan(args.n, args.sleep_every, args.sleep_for)
    ids = [t for t, _, _ in plan]
    partitions: list[tuple[float, float]] = []  # (cut, restored), wall clock
    publisher = Publisher(broker_url, backend_url, plan, args.send_seconds)
    cleanup += [publisher.close, worker.stop]
    t0 = time.monotonic()
    try:
        worker.start().wait_ready(120)
        publisher.start()
        chaos_end = t0 + args.chaos_seconds
        if scenario == "kill":
            while ((time.monotonic() < chaos_end or publisher.is_alive())
                   and (args.max_events == 0 or run.worker_restarts < args.max_events)):
                time.sleep(rng.uniform(1.0, 3.0))
                worker.kill()
                restarted = time.monotonic()
                worker.start()
                run.worker_restarts += 1
                seen = worker.wait_line(SUCCEEDED, 0, restarted + 60)
                if seen is None:
                    run.not_recovered += 1
                else:
                    run.recover.append(seen - restarted)
        else:
            first = True
            while (time.monotonic() < chaos_end or publisher.is_alive()) and run.broker_events < args.max_events:
                time.sleep(rng.uniform(*args.gap) if not first else rng.uniform(2.0, 4.0))
                first = False
                if scenario == "broker":
                    if transport == "redis":
                        redis_srv.restart(down_for=rng.uniform(1.0, 3.0))
                    else:
                        rabbit.restart(down_for=rng.uniform(1.0, 3.0))
                    log(f"{transport} restarted")
                else:
                    down = rng.uniform(*args.partition)
                    netns.link(False)
                    cut_at = time.time()
                    log(f"link down for {down:.1f}s")
                    time.sleep(down)
                    netns.link(True)
                    partitions.append((cut_at, time.time()))
                    log("link up")
                back = time.monotonic()
                offset = worker.log_offset()
                run.broker_events += 1
                seen = worker.wait_line(RECEIVED, offset, back + args.recover_timeout)
                if seen is None:
                    run.not_recovered += 1
                    log(f"no message consumed within {args.recover_timeout:.0f}s of the {scenario} event"
                        f" (worker alive: {worker.current.alive})")
                else:
                    run.recover.append(seen - back)
        publisher.join()
        if publisher.error:
            raise publisher.error
        run.sent = publisher.sent
        run.publish_errors = publisher.publish_errors
        if not worker.current.alive:
            log(f"the worker is dead (rc={worker.current.returncode}) after the chaos; starting one more")
            worker.start()
            run.worker_restarts += 1
        log(f"chaos over after {time.monotonic() - t0:.0f}s; draining (up to {args.drain:.0f}s)")
        deadline = time.monotonic() + args.drain
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            done = results_done(results, pending)
            pending = [t for t in pending if t not in done]
            if pending:
                time.sleep(0.5)
        run.wall = time.monotonic() - t0
    finally:
        publisher.close()
        worker.stop()

    # -- count ------------------------------------------------------------
    executions: dict[str, int] = {}
    received_by_killed: set[str] = set()
    killed = set(id(p) for p in worker.killed)
    for p in worker.incarnations:
        text = p.log_text()
        for m in SUCCEEDED.finditer(text):
            executions[m.group(2)] = executions.get(m.group(2), 0) + 1
        if id(p) in killed:
            received_by_killed.update(m.group(2) for m in RECEIVED.finditer(text))
    # Proof that a partition cut: no message may be received from the broker while the link is down
    # (0.5 s of grace after the cut for a reply already on its way).
    for p in worker.incarnations:
        for m in LOGGED_RECEIVED.finditer(p.log_text()):
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            if any(cut + 0.5 < at < back for cut, back in partitions):
                run.received_while_cut += 1
    done = results_done(results, ids)
    run.succeeded = len(done)
    run.lost = [t for t in ids if t not in done]
    run.lost_ran_no_result = [t for t in run.lost if executions.get(t)]
    run.lost_in_killed = [t for t in run.lost if not executions.get(t) and t in received_by_killed]
    run.duplicates = {t: c for t, c in executions.items() if c > 1}
    run.dup_client = sum(1 for t in run.duplicates if t in publisher.retried)
    run.max_exec = max(executions.values(), default=0)
    index = {t: i for i, t in enumerate(ids)}
    (wd / "summary.json").write_text(json.dumps({
        "lost_detail": [{"id": t, "plan_index": index[t], "task": plan[index[t]][1],
                         "sent_at": time.strftime("%H:%M:%S", time.localtime(publisher.sent_at.get(t, 0)))
                         + f".{int(publisher.sent_at.get(t, 0) * 1000) % 1000:03d}"} for t in run.lost],
        "kills_at": [time.strftime("%H:%M:%S", time.localtime(k)) + f".{int(k * 1000) % 1000:03d}"
                     for k in worker.kill_times],
        "lost": run.lost, "lost_ran_no_result": run.lost_ran_no_result, "lost_in_killed": run.lost_in_killed,
        "duplicates": run.duplicates, "client_retried": sorted(publisher.retried),
        "recover": run.recover}, indent=1))
    return run


# --------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------

def table(runs: list[Run]) -> str:
    head = ["scenario", "transport", "acks", "sent", "succeeded", "lost", "dup ids", "max exec/id",
            "worker restarts", "broker events", "recover mean/max s", "wall s"]
    rows = []
    for r in runs:
        if r.skipped:
            rows.append([r.scenario, r.transport, r.acks, "skipped: " + r.skipped] + [""] * 8)
            continue
        lost = str(len(r.lost))
        if r.lost:
            lost += f" ({len(r.lost_ran_no_result)} ran/no result, {len(r.lost_in_killed)} rcvd by killed)"
        dup = str(len(r.duplicates))
        if r.dup_client:
            dup += f" ({r.dup_client} client re-publish)"
        rec = (f"{statistics.mean(r.recover):.2f} / {max(r.recover):.2f}" if r.recover else "-")
        if r.not_recovered:
            rec += f" ({r.not_recovered} not recovered)"
        events = {"broker": "restarts", "partition": "partitions"}.get(r.scenario)
        rows.append([r.scenario, r.transport, r.acks, str(r.sent), str(r.succeeded), lost, dup,
                     str(r.max_exec), str(r.worker_restarts),
                     f"{r.broker_events} {events}" if events else "0", rec, f"{r.wall:.0f}"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def main() -> int:
    # SIGTERM (e.g. timeout(1)) unwinds like Ctrl-C, so every server and worker started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1,000 tasks, one event of each kind (kill: a few), shorter windows")
    ap.add_argument("--n", type=int, help="tasks per run (default 10,000; --quick 1,000)")
    ap.add_argument("--scenario", action="append", choices=["kill", "broker", "partition"],
                    help="repeatable; default all three")
    ap.add_argument("--transport", action="append", choices=["redis", "amqp"], help="repeatable; default both")
    ap.add_argument("--acks", action="append", choices=["early", "late"], help="repeatable; default both")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    ap.add_argument("--sleep-every", type=int, default=20,
                    help="every Nth task is tasks.sleep (so kills land mid-task); 0 = only tasks.add")
    ap.add_argument("--sleep-for", type=float, default=0.2)
    ap.add_argument("--drain", type=float, help="seconds after the chaos for every result (default 180; --quick 60)")
    ap.add_argument("--recover-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--at-most-once-ok", action="store_true",
                    help="with early acks, do not fail on lost tasks received by an incarnation that was killed")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    args = ap.parse_args()

    args.n = args.n or (1000 if args.quick else 10000)
    args.drain = args.drain or (60.0 if args.quick else 180.0)
    # Chaos window: sending spans most of it, so events land while work flows.
    args.chaos_seconds = 20.0 if args.quick else 90.0
    args.send_seconds = args.chaos_seconds * 0.8
    args.max_events = 1 if args.quick else 4          # broker restarts / partitions per run
    args.gap = (3.0, 6.0) if args.quick else (8.0, 15.0)
    args.partition = (5.0, 8.0) if args.quick else (5.0, 30.0)
    kill_events = 3 if args.quick else 0              # 0 = until the chaos window ends
    scenarios = args.scenario or ["kill", "broker", "partition"]
    transports = args.transport or ["redis", "amqp"]
    acks_modes = args.acks or ["early", "late"]

    if not CELERIAC_BIN.exists():
        print(f"celeriac binary not found at {CELERIAC_BIN} (set CELERIAC_BIN)", file=sys.stderr)
        return 2
    if "partition" in scenarios and os.geteuid() != 0:
        print("the partition scenario needs root (ip netns); it will be skipped", file=sys.stderr)

    root = Path(tempfile.mkdtemp(prefix="celeriac-chaos-"))
    log(f"work directory {root}; binary {CELERIAC_BIN}")
    rabbit = None
    runs: list[Run] = []
    try:
        if "amqp" in transports and any(s != "partition" for s in scenarios):
            rabbit = RabbitServer(root / "rabbitmq").start()
        for scenario in scenarios:
            for transport in transports:
                for acks in acks_modes:
                    if scenario == "partition" and transport == "amqp":
                        r = Run(scenario, transport, acks,
                                skipped="over Redis only (the harness's RabbitMQ node binds 127.0.0.1)")
                        runs.append(r)
                        continue
                    saved = args.max_events
                    if scenario == "kill":
                        args.max_events = kill_events
                    log(f"=== {scenario} / {transport} / acks {acks}: {args.n} tasks ===")
                    try:
                        r = run_one(args, scenario, transport, acks, root, rabbit)
                    finally:
                        args.max_events = saved
                    if scenario == "partition" and r.skipped:
                        log(f"partition skipped: {r.skipped}")
                    runs.append(r)
                    log(f"done: sent {r.sent}, succeeded {r.succeeded}, lost {len(r.lost)}, "
                        f"dup ids {len(r.duplicates)}, logs {r.logs}")
    finally:
        if rabbit:
            rabbit.stop()

    print()
    print(f"Chaos suite, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, binary {CELERIAC_BIN}, "
          f"N={args.n}, -c {args.concurrency}, prefetch x{args.prefetch}, every {args.sleep_every}th task "
          f"tasks.sleep({args.sleep_for})")
    print(table(runs))
    bad = []
    for r in runs:
        for why in r.failed(args.at_most_once_ok):
            bad.append(f"{r.scenario}/{r.transport}/acks {r.acks}: {why}; details in {r.logs}/summary.json")
        for t in r.lost[:10]:
            print(f"  lost {r.scenario}/{r.transport}/{r.acks}: {t}"
                  f"{' (ran, no result)' if t in r.lost_ran_no_result else ''}"
                  f"{' (received by a killed incarnation)' if t in r.lost_in_killed else ''}")
    if bad:
        print("\nFAILED:\n  " + "\n  ".join(bad))
        print(f"logs kept in {root}")
        return 1
    if args.keep:
        print(f"logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
