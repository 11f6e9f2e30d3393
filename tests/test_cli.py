"""The ``celeriac`` command line with Celery's shape: ``call``, ``result``, ``purge``, ``report``, every
``celery worker`` option, global options before the subcommand, and hints for misused options."""

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import CELERIAC_BIN, CELERIAC_TASKS, REPO_ROOT, ManagedProcess, _base_env, wait_until

pytestmark = pytest.mark.celeriac_only

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_call_wait_prints_the_result(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.add", "4", "4", "--wait", "--timeout", "30")
    assert out.returncode == 0, f"rc={out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert last_line(out.stdout) == "8", out.stdout


def test_call_without_wait_prints_an_id_that_result_can_read(worker, celeriac_cli, client):
    worker()
    out = celeriac_cli("call", "tasks.mul", "6", "7")
    assert out.returncode == 0, out.stderr
    m = UUID_RE.search(out.stdout)
    assert m, f"no task id printed: {out.stdout!r}"
    task_id = m.group(0)
    from celery.result import AsyncResult
    assert AsyncResult(task_id, app=client.app).get(timeout=30) == 42
    res = celeriac_cli("result", task_id)
    assert res.returncode == 0, res.stderr
    assert last_line(res.stdout) == "42", res.stdout


def test_result_of_a_python_client_task(worker, celeriac_cli, client):
    worker()
    r = client.add.delay(20, 22)
    assert r.get(timeout=30) == 42
    out = celeriac_cli("result", r.id)
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "42", out.stdout


def test_call_with_kwargs_queue_and_countdown(worker, celeriac_cli):
    worker(queues="cli")
    out = celeriac_cli("call", "tasks.add", "--kwargs", json.dumps({"x": 1, "y": 2}), "--queue", "cli",
                       "--countdown", "1", "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "3", out.stdout


def test_call_wait_on_failure_is_nonzero(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.div", "1", "0", "--wait", "--timeout", "30")
    assert out.returncode != 0, out.stdout
    assert "ZeroDivisionError" in out.stdout + out.stderr


def test_call_json_arguments(worker, celeriac_cli):
    worker()
    out = celeriac_cli("call", "tasks.xsum", "[1, 2, 3]", "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert last_line(out.stdout) == "6", out.stdout


# --------------------------------------------------------------------------
# Celery's command-line shape (issue #14)
# --------------------------------------------------------------------------

def run_celeriac(*args: str, cwd: Path | str = REPO_ROOT, input: str | None = None,
                 timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``celeriac ARGS`` exactly as given (no broker flags appended)."""
    return subprocess.run([str(CELERIAC_BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env=_base_env(), cwd=cwd, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def queued(redis_server, queue: str = "celery") -> list[dict]:
    """The kombu envelopes waiting in a Redis queue, oldest first."""
    return [json.loads(m) for m in reversed(redis_server.client.lrange(queue, 0, -1))]


def body_of(envelope: dict) -> list:
    return json.loads(base64.b64decode(envelope["body"]))


def test_global_options_are_accepted_before_the_subcommand_as_celery_5_requires(redis_server, tmp_path, client):
    argv = [str(CELERIAC_BIN), "-A", str(CELERIAC_TASKS), "-b", redis_server.url(0),
            "--result-backend", redis_server.url(1), "worker", "-l", "INFO"]
    proc = ManagedProcess("celeriac-global-opts", argv, tmp_path / "worker.log", env=_base_env(), cwd=REPO_ROOT)
    try:
        proc.start().wait_ready()
        out = run_celeriac("-b", redis_server.url(0), "--result-backend", redis_server.url(1),
                           "call", "tasks.add", "2", "3", "--wait", "--timeout", "30")
        assert out.returncode == 0, out.stderr
        assert last_line(out.stdout) == "5"
        # And after the subcommand, as before.
        out = run_celeriac("call", "tasks.add", "1", "1", "--wait", "-b", redis_server.url(0),
                           "--result-backend", redis_server.url(1))
        assert last_line(out.stdout) == "2", out.stderr
    finally:
        proc.stop()


def test_workdir_changes_directory_before_anything_else(tmp_path):
    out = run_celeriac("--workdir", str(tmp_path), "purge", "-f")
    assert out.returncode == 0, out.stderr
    # No broker configured: the embedded default, ./celeriac.sqlite, is opened in --workdir.
    assert (tmp_path / "celeriac.sqlite").exists()
    assert out.stdout.strip() == "No messages purged from 1 queue."


# Not in the repository (the worker runs in it): a file of its own in the system's temp directory.
STATE_DB = os.path.join(tempfile.gettempdir(), f"celeriac-test-cli-{os.getpid()}.state")

MOOT = [
    (["-P", "prefork"], "-P prefork: every task call runs in its own WebAssembly sandbox"),
    (["--pool=threads"], "-P threads: every task call runs in its own WebAssembly sandbox"),
    (["-P", "solo"], "concurrency: 1 "),
    (["-c", "auto"], "concurrency: "),
    (["--autoscale", "6,2"], "concurrency: 6 "),
    (["-O", "fair"], "-O fair: messages always go to a free slot"),
    (["--max-tasks-per-child", "100"], "every call already gets a fresh sandbox instance"),
    (["--max-memory-per-child", "200000"], "capped by --max-memory instead"),
    (["--soft-time-limit", "5"], "cannot catch SoftTimeLimitExceeded"),
    (["--time-limit", "30"], None),
    (["--pool-start-method", "spawn"], "no child processes are started"),
    (["-E"], None),
    (["--events"], None),
    (["--task-events"], None),
    (["--without-gossip", "--without-mingle", "--without-heartbeat", "--heartbeat-interval", "5"], None),
    (["-S", STATE_DB], f"state database {STATE_DB}: 0 revoked task id(s) restored"),
    (["-X", "elsewhere"], None),
    (["-I", "proj.tasks"], "no Python modules are imported"),
    (["-B"], "run `celery -A proj beat` next to this worker"),
    (["--executable", "/usr/bin/python3"], "no Python executable to override"),
    (["--prefetch-multiplier", "2"], None),
    (["--disable-prefetch"], "worker_prefetch_multiplier = 1"),
    (["--uid", str(os.getuid()), "--gid", str(os.getgid())], None),
    (["--umask", "022"], None),
    (["-C"], None),
    (["--loader", "celery.loaders.app:AppLoader", "--skip-checks"], None),
    (["-q"], None),
]


@pytest.mark.parametrize("args,explanation", MOOT, ids=[" ".join(a) for a, _ in MOOT])
def test_each_celery_worker_option_is_accepted_and_explained_where_moot(worker, client, args, explanation):
    w = worker(extra_args=args)
    assert client.add.delay(2, 2).get(timeout=30) == 4
    log = w.log_text()
    if explanation:
        assert explanation in log, log
    if args == ["-c", "auto"]:
        n = int(re.search(r"concurrency: (\d+)", log).group(1))
        assert 1 <= n <= len(os.sched_getaffinity(0))
    if args == ["-q"]:
        assert "[tasks]" not in log, "-q must suppress the banner"


def test_an_unknown_pool_is_refused_with_celerys_choices(celeriac_cli):
    out = celeriac_cli("worker", "-A", str(CELERIAC_TASKS), "-P", "fork")
    assert out.returncode != 0
    assert "prefork, eventlet, gevent, solo, processes, threads, custom" in out.stderr


def test_a_pidfile_holds_the_pid_refuses_a_second_worker_and_goes_at_exit(worker, tmp_path):
    pidfile = tmp_path / "w.pid"
    first = worker(extra_args=["--pidfile", str(pidfile)])
    assert pidfile.read_text().strip() == str(first.pid)
    second = worker(extra_args=["--pidfile", str(pidfile)], wait_ready=False)
    wait_until(lambda: not second.alive, 30, message="the second worker to refuse")
    assert second.returncode != 0
    assert f"Pidfile ({pidfile}) already exists." in second.log_text()
    assert f"Seems we're already running? (pid: {first.pid})" in second.log_text()
    assert first.terminate() == 0
    assert not pidfile.exists()


def test_a_stale_pidfile_is_replaced_with_celerys_message(worker, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "w.pid"
    pidfile.write_text(f"{dead.pid}\n")
    w = worker(extra_args=["--pidfile", str(pidfile)])
    assert "Stale pidfile exists - Removing it." in w.log_text()
    assert pidfile.read_text().strip() == str(w.pid)


def test_detach_runs_the_worker_in_the_background_with_pidfile_and_logfile(redis_server, client, tmp_path):
    pidfile, logfile = tmp_path / "%n.pid", tmp_path / "%n.log"
    out = run_celeriac("-A", str(CELERIAC_TASKS), "-b", redis_server.url(0), "--result-backend",
                       redis_server.url(1), "worker", "-D", "-n", "bg@%h", "--pidfile", str(pidfile),
                       "-f", str(logfile), "-l", "INFO", timeout=30)
    assert out.returncode == 0, out.stderr
    pid_path, log_path = tmp_path / "bg.pid", tmp_path / "bg.log"
    try:
        wait_until(lambda: pid_path.exists() and log_path.exists() and "ready" in log_path.read_text(), 60,
                   message="the detached worker to be ready")
        pid = int(pid_path.read_text())
        assert client.add.delay(20, 22).get(timeout=30) == 42
        assert "Task tasks.add[" in log_path.read_text()
    finally:
        if pid_path.exists():
            os.kill(int(pid_path.read_text()), signal.SIGTERM)
    wait_until(lambda: not pid_path.exists(), 60, message="the detached worker to exit and remove its pidfile")
    assert pid != os.getpid()


def test_logfile_receives_the_log_lines(worker, client, tmp_path):
    logfile = tmp_path / "worker.log"
    worker(extra_args=["-f", str(logfile)], wait_ready=False)
    wait_until(lambda: logfile.exists() and "ready" in logfile.read_text(), 60, message="ready in --logfile")
    assert client.add.delay(1, 2).get(timeout=30) == 3
    wait_until(lambda: "succeeded in" in logfile.read_text(), 10, message="the task's line in --logfile")


def test_exclude_queues_leaving_nothing_is_refused(celeriac_cli):
    out = celeriac_cli("worker", "-A", str(CELERIAC_TASKS), "-Q", "a", "-X", "a")
    assert out.returncode != 0
    assert "leaves no queue to consume" in out.stderr


# -- purge -------------------------------------------------------------------

def test_purge_erases_the_default_queue_with_celerys_line(redis_server, celeriac_cli):
    for i in range(3):
        assert celeriac_cli("call", "tasks.add", str(i), "1").returncode == 0
    assert redis_server.client.llen("celery") == 3
    out = celeriac_cli("purge", "-f")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Purged 3 messages from 1 known task queue."
    assert redis_server.client.llen("celery") == 0
    again = celeriac_cli("purge", "-f")
    assert again.stdout.strip() == "No messages purged from 1 queue."


def test_purge_asks_first_and_keeps_the_messages_on_no(redis_server):
    url = redis_server.url(0)
    assert run_celeriac("-b", url, "call", "tasks.add", "1", "1").returncode == 0
    out = run_celeriac("-b", url, "purge", input="n\n")
    assert out.returncode != 0
    assert "This will remove all tasks from queue: celery." in out.stdout
    assert "(to skip this prompt use the -f option)" in out.stdout
    assert redis_server.client.llen("celery") == 1
    out = run_celeriac("-b", url, "purge", input="yes\n")
    assert out.returncode == 0, out.stderr
    assert "Purged 1 message from 1 known task queue." in out.stdout


def test_purge_takes_queues_and_excludes(redis_server, celeriac_cli):
    for q in ["a", "a", "b", "c"]:
        assert celeriac_cli("call", "tasks.add", "1", "1", "--queue", q).returncode == 0
    out = celeriac_cli("purge", "-f", "-Q", "a,b,c", "-X", "c")
    assert out.stdout.strip() == "Purged 3 messages from 2 known task queues.", out.stderr
    assert redis_server.client.llen("c") == 1


def test_purge_counts_on_the_sqlite_broker(tmp_path):
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    for i in range(2):
        assert run_celeriac("-b", url, "call", "tasks.add", str(i), "1").returncode == 0
    out = run_celeriac("-b", url, "purge", "-f")
    assert out.stdout.strip() == "Purged 2 messages from 1 known task queue.", out.stderr
    out = run_celeriac("-b", url, "purge", "-f")
    assert out.stdout.strip() == "No messages purged from 1 queue."


def test_purge_counts_on_rabbitmq_with_queue_purge(rabbitmq_server):
    vhost = rabbitmq_server.vhost()
    url = rabbitmq_server.url(vhost)
    for i in range(3):
        out = run_celeriac("-b", url, "call", "tasks.add", str(i), "1")
        assert out.returncode == 0, out.stderr
    # A queue that does not exist holds nothing, as `celery purge` counts it.
    out = run_celeriac("-b", url, "purge", "-f", "-Q", "celery,missing")
    assert out.stdout.strip() == "Purged 3 messages from 2 known task queues.", out.stderr
    assert rabbitmq_server.queue_counts(vhost)["celery"] == (0, 0)


def test_worker_purge_erases_waiting_messages_before_consuming(worker, redis_server, celeriac_cli, client):
    ids = [last_line(celeriac_cli("call", "tasks.add", "1", str(i)).stdout) for i in range(2)]
    w = worker(extra_args=["--purge"])
    assert "purge: Erased 2 messages from the queue." in w.log_text()
    assert client.add.delay(1, 1).get(timeout=30) == 2
    for task_id in ids:
        assert redis_server.results.get(client.result_key(task_id)) is None, "a purged task ran"


# -- call --------------------------------------------------------------------

def test_call_with_celerys_options_sends_what_a_celery_client_sends(redis_server, celeriac_cli, client):
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    expires = datetime(2030, 1, 3, 3, 4, 5, tzinfo=timezone.utc)
    out = celeriac_cli("call", "tasks.add", "-a", "[1, 2]", "-k", '{"z": 3}', "--eta", eta.isoformat(),
                       "--expires", expires.isoformat())
    assert out.returncode == 0, out.stderr
    client.app.send_task("tasks.add", args=[1, 2], kwargs={"z": 3}, eta=eta, expires=expires)
    ours, theirs = queued(redis_server)
    for key in ["eta", "expires", "argsrepr", "kwargsrepr", "task", "retries", "timelimit"]:
        assert ours["headers"][key] == theirs["headers"][key], key
    assert ours["headers"]["eta"] == "2030-01-02T03:04:05+00:00"
    assert body_of(ours)[:2] == body_of(theirs)[:2] == [[1, 2], {"z": 3}]


def test_call_expires_in_seconds_and_countdown(redis_server, celeriac_cli):
    before = datetime.now(timezone.utc)
    out = celeriac_cli("call", "tasks.add", "1", "1", "--countdown", "60", "--expires", "120")
    assert out.returncode == 0, out.stderr
    h = queued(redis_server)[0]["headers"]
    eta, exp = datetime.fromisoformat(h["eta"]), datetime.fromisoformat(h["expires"])
    assert timedelta(seconds=59) < eta - before < timedelta(seconds=65)
    assert timedelta(seconds=119) < exp - before < timedelta(seconds=125)


def test_call_with_exchange_and_routing_key_follows_kombus_bindings(redis_server, celeriac_cli, client, worker):
    from kombu import Exchange, Queue
    routed = Queue("routed", Exchange("ex", type="direct"), routing_key="rk")
    with client.app.connection_for_write() as conn:
        routed(conn.default_channel).declare()
    out = celeriac_cli("call", "tasks.add", "1", "2", "--exchange", "ex", "--routing-key", "rk")
    assert out.returncode == 0, out.stderr
    client.app.send_task("tasks.add", args=[1, 2], exchange="ex", routing_key="rk")
    ours, theirs = queued(redis_server, "routed")
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"] == \
        {"exchange": "ex", "routing_key": "rk"}
    worker(queues="routed")
    for task_id in [UUID_RE.search(out.stdout).group(0), theirs["headers"]["id"]]:
        from celery.result import AsyncResult
        assert AsyncResult(task_id, app=client.app).get(timeout=30) == 3


def test_a_lone_routing_key_is_ignored_as_celery_ignores_it_with_a_warning(redis_server, celeriac_cli):
    out = celeriac_cli("call", "tasks.add", "1", "2", "--routing-key", "rk")
    assert out.returncode == 0, out.stderr
    assert "--routing-key without --exchange is ignored" in out.stderr
    assert redis_server.client.llen("celery") == 1


# -- result ------------------------------------------------------------------

def test_result_traceback_prints_the_stored_traceback_and_none_for_a_success(worker, celeriac_cli, client):
    worker()
    failed = client.div.delay(1, 0)
    ok = client.add.delay(2, 2)
    assert ok.get(timeout=30) == 4
    with pytest.raises(ZeroDivisionError):
        failed.get(timeout=30)
    out = celeriac_cli("result", failed.id, "--traceback")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError" in out.stdout
    out = celeriac_cli("result", ok.id, "--traceback")
    assert last_line(out.stdout) == "None"
    out = celeriac_cli("result", ok.id, "--task", "tasks.add")
    assert out.returncode == 0 and last_line(out.stdout) == "4", out.stderr
    out = celeriac_cli("result", ok.id, "-t", "tasks.add")
    assert last_line(out.stdout) == "4", out.stderr


# -- hints -------------------------------------------------------------------

HINTS = [
    (["call", "tasks.add", "1", "-Q", "q"], "--queue NAME"),
    (["-l", "INFO", "worker"], "goes after the subcommand"),
    (["beat"], "it works against Celeriac"),
    (["list", "bindings"], "celery -b URL list bindings"),
    (["call", "tasks.add", "-k", "x=1"], """write -k '{"x": 1}'"""),
    (["call", "tasks.add", "-a", "4"], "-a/--args takes one JSON array"),
    (["call", "tasks.add", "4", "-a", "[4]"], "not both"),
    (["call", "tasks.add", "--eta", "10"], "use --countdown"),
    (["worker", "--autoscale", "3,10"], "MAX,MIN"),
    (["worker", "-c", "many"], "'auto'"),
    (["purge", "-y"], "-f/--force"),
]


@pytest.mark.parametrize("args,hint", HINTS, ids=[" ".join(a) for a, _ in HINTS])
def test_a_misused_option_gets_a_hint_pointing_at_the_right_one(args, hint):
    out = run_celeriac(*args)
    assert out.returncode != 0
    assert hint in out.stderr, out.stderr


def test_help_names_the_celery_commands_left_to_the_celery_cli():
    out = run_celeriac("--help")
    assert "use the celery CLI; it works against Celeriac" in out.stdout
    for command in ["purge", "report", "worker", "call", "result"]:
        assert command in out.stdout


def test_report_masks_passwords():
    out = run_celeriac("-b", "redis://:s3cret@localhost:6379/0", "--result-backend",
                       "redis://user:s3cret@localhost:6379/1", "report")
    assert out.returncode == 0, out.stderr
    assert "celeriac:" in out.stdout and "s3cret" not in out.stdout
