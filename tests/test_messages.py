"""Issue #14, "Messages that tell the truth and the next step": what the
worker and the CLI say when a Celery user's habits meet Celeriac — ``-A``
given a Python module or an empty directory, an unregistered task, a
``call --wait`` that times out on the default broker, Ctrl+C (warm and cold
shutdown), compiling a component, a Python type error and an int that does
not fit 64 bits."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CELERIAC_BIN, CELERIAC_TASKS, REPO_ROOT, _base_env, wait_until


def celeriac(*args: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the celeriac binary in ``cwd`` with no broker option and no CELERIAC_* variable."""
    if not CELERIAC_BIN.exists():
        pytest.fail(f"celeriac binary not found at {CELERIAC_BIN}", pytrace=False)
    return subprocess.run([str(CELERIAC_BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env=_base_env(), cwd=cwd, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# -A: what was looked for, what was found, what to do
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
@pytest.mark.parametrize("command", [["worker"], ["tasks"], ["run", "tasks.add", "1", "2"]])
def test_a_python_module_name_given_to_a_says_what_it_found_and_to_build_the_wasm_directory(tmp_path, command):
    (tmp_path / "tasks.py").write_text("from celery import Celery\napp = Celery('tasks')\n")
    out = celeriac(command[0], "-A", "tasks", *command[1:], cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    err = out.stderr
    assert f"-A tasks: no such directory or .wasm file (looked for {tmp_path / 'tasks'})" in err, err
    assert "Found tasks.py, a Python module" in err, err
    assert "make tasks" in err and "-A target/tasks" in err, err


@pytest.mark.celeriac_only
def test_a_python_file_given_to_a_is_named_as_a_python_module(tmp_path):
    (tmp_path / "tasks.py").write_text("")
    out = celeriac("tasks", "-A", "tasks.py", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "tasks.py is a Python module, not a WebAssembly component" in out.stderr, out.stderr
    assert "-A target/tasks" in out.stderr, out.stderr


@pytest.mark.celeriac_only
def test_an_empty_directory_given_to_a_says_it_is_empty_and_points_at_the_built_components(tmp_path):
    (tmp_path / "empty").mkdir()
    out = celeriac("worker", "-A", "empty", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert f"no .wasm component in {tmp_path / 'empty'} (it is empty)" in out.stderr, out.stderr
    # Run from the project, the message names the components `make tasks` built.
    out = celeriac("tasks", "-A", str(tmp_path / "empty"), cwd=REPO_ROOT)
    assert out.returncode != 0, out.stdout
    assert "target/tasks holds tasks.wasm: use -A target/tasks" in out.stderr, out.stderr


# --------------------------------------------------------------------------
# NotRegistered: the file that would serve it, the prefixed name, what is served
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
def test_an_unregistered_bare_name_is_logged_with_the_prefixed_name_and_stays_a_not_registered_failure(
        worker, client):
    w = worker()
    result = client.app.send_task("add", args=[1, 2])
    with pytest.raises(Exception) as info:
        result.get(timeout=30)
    # The client sees what a Celery worker stores: NotRegistered('add').
    assert type(info.value).__name__ == "NotRegistered", repr(info.value)
    assert info.value.args == ("add",), info.value.args
    w.wait_for_log(r"Received unregistered task of type 'add'")
    log = w.log_text()
    assert "'add' has no component prefix" in log, w.tail()
    assert "Did you mean 'tasks.add'?" in log, w.tail()


@pytest.mark.celeriac_only
def test_an_unregistered_task_names_the_file_that_would_serve_it(worker, client):
    w = worker()
    client.app.send_task("proj.tasks.add", args=[1, 2])
    client.app.send_task("tasks.nope", args=[1])
    w.wait_for_log(r"Received unregistered task of type 'tasks\.nope'")
    w.wait_for_log(r"Received unregistered task of type 'proj\.tasks\.add'")
    log = w.log_text()
    assert "It would be served by proj/tasks.wasm in the worker's tasks directory (-A), which has no such " \
           "file (nor proj.tasks.wasm)." in log, w.tail()
    assert "Did you mean 'tasks.add'?" in log, w.tail()
    assert re.search(r"tasks\.wasm is loaded but has no task 'nope'; it serves tasks\.\w+, ", log), w.tail()


@pytest.mark.celeriac_only
def test_run_with_a_bare_task_name_suggests_the_prefixed_one(tmp_path):
    out = celeriac("run", "-A", str(CELERIAC_TASKS), "add", "1", "2", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "task add is not registered" in out.stderr, out.stderr
    assert "Did you mean 'tasks.add'?" in out.stderr, out.stderr


@pytest.mark.celeriac_only
def test_run_and_tasks_apply_the_config_a_worker_would_read_in_that_directory(tmp_path):
    # ./celeryconfig.py, as the worker reads it: a time limit set in task_annotations holds for `run` too,
    # and `tasks` lists it.
    (tmp_path / "celeryconfig.py").write_text('task_annotations = {"tasks.sleep": {"time_limit": 0.5}}\n')
    listing = celeriac("tasks", "-A", str(CELERIAC_TASKS), cwd=tmp_path)
    assert re.search(r"tasks\.sleep .* time_limit=0\.5s", listing.stdout), listing.stdout
    assert re.search(r"tasks\.add .* time_limit=300s", listing.stdout), listing.stdout
    out = celeriac("run", "-A", str(CELERIAC_TASKS), "tasks.sleep", "5", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "TimeLimitExceeded: task exceeded its time limit of 0.5s" in out.stderr, out.stderr
    # --config names another file; a broken one is an error naming it, not a silent default.
    (tmp_path / "other.toml").write_text('[task_annotations."tasks.sleep"]\ntime_limit = "soon"\n')
    out = celeriac("--config", "other.toml", "run", "-A", str(CELERIAC_TASKS), "tasks.sleep", "0", cwd=tmp_path)
    assert out.returncode != 0 and "other.toml" in out.stderr, out.stderr


@pytest.mark.celeriac_only
def test_run_grants_send_tasks_as_configured_and_says_what_it_did_not_send(tmp_path):
    (tmp_path / "celeryconfig.py").write_text('task_annotations = {"tasks.spawn": {"send_tasks": True}}\n')
    out = celeriac("run", "-A", str(CELERIAC_TASKS), "tasks.spawn", "2", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r'"[0-9a-f-]{36}"\n', out.stdout), out.stdout  # the child's id, as in a worker
    assert "the task sent tasks.add[2,3]; not sent: celeriac run has no broker" in out.stderr, out.stderr
    # A config celeriac cannot read says where it came from and how to name another.
    (tmp_path / "celeryconfig.py").write_text("import os\n")
    out = celeriac("run", "-A", str(CELERIAC_TASKS), "tasks.add", "1", "2", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "read celeryconfig.py from the current directory" in out.stderr and "--config" in out.stderr, out.stderr


# --------------------------------------------------------------------------
# celeriac call --wait on the default broker
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
def test_call_wait_timing_out_on_the_default_broker_names_the_sqlite_file_in_this_directory(tmp_path):
    out = celeriac("call", "tasks.add", "1", "2", "--wait", "--timeout", "1", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    err = out.stderr
    assert "within 1s: no worker has run it yet" in err, err
    assert f"the SQLite file {tmp_path / 'celeriac.sqlite'}, in this directory" in err, err
    assert "no --broker" in err, err


# --------------------------------------------------------------------------
# Ctrl+C: warm, then cold shutdown
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
@pytest.mark.timeout(120)
def test_the_first_ctrl_c_prints_celerys_warm_shutdown_lines(worker, client):
    w = worker()
    assert client.add.delay(1, 1).get(timeout=30) == 2
    w.signal(signal.SIGINT)
    w.wait_for_log(r"worker: Hitting Ctrl\+C again will initiate cold shutdown, terminating all running tasks!")
    w.wait_for_log(r"worker: Warm shutdown \(MainProcess\)")
    wait_until(lambda: not w.alive, 30)
    assert w.returncode == 0


COLD_CONFIG = """\
task_acks_late = {acks_late}
worker_prefetch_multiplier = 1

[broker_transport_options]
# Long: only a message the worker put back itself comes back within the test.
visibility_timeout = 3600
"""


@pytest.mark.celeriac_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("acks_late, said", [
    ("true", r"its message was put back on the queue \(task_acks_late\) and runs again"),
    ("false", r"a copy was sent back to queue 'celery' and it runs again"),
])
def test_a_cold_shutdown_puts_the_running_task_back_and_says_so(worker, client, acks_late, said):
    config = COLD_CONFIG.format(acks_late=acks_late)
    first = worker(concurrency=1, config=config)
    running = client.sleep.delay(4)
    first.wait_for_log(rf"Task tasks\.sleep\[{re.escape(running.id)}\] received")
    time.sleep(0.5)  # running now
    first.signal(signal.SIGINT)
    first.wait_for_log(r"worker: Warm shutdown \(MainProcess\)")
    first.signal(signal.SIGINT)
    first.wait_for_log(r"worker: Cold shutdown \(MainProcess\)")
    first.wait_for_log(rf"Task tasks\.sleep\[{re.escape(running.id)}\] terminated by cold shutdown; .*{said}")
    wait_until(lambda: not first.alive, 30)
    assert client.redis.meta(running.id) is None, "a task stopped by a cold shutdown has no result"
    # The next worker runs it: nothing was lost.
    worker(concurrency=1, config=config)
    assert running.get(timeout=60) == 4


# --------------------------------------------------------------------------
# Compiling a component: a progress line on a cache miss, silence on a hit
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
@pytest.mark.timeout(180)
def test_compiling_a_component_is_announced_with_its_size_and_time_and_a_cached_start_is_silent(
        worker, client, tmp_path):
    config = f'[sandbox]\ncache_dir = "{tmp_path / "cache"}"\n'
    first = worker(config=config)
    first.wait_for_log(r"compiling tasks\.wasm \([\d.]+ [KM]iB\)…")
    first.wait_for_log(r"compiled tasks\.wasm in [\d.]+s")
    assert client.add.delay(1, 2).get(timeout=30) == 3
    first.stop()
    second = worker(config=config)
    assert client.add.delay(2, 2).get(timeout=30) == 4
    assert "compiling tasks.wasm" not in second.log_text(), second.tail()


@pytest.mark.celeriac_only
@pytest.mark.timeout(180)
def test_the_compiled_component_cache_is_pruned_at_start_up_but_never_what_is_in_use(worker, client, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / ("0" * 64 + ".cwasm")
    stale.write_bytes(b"\0" * 4096)
    old = time.time() - 90 * 24 * 3600
    import os
    os.utime(stale, (old, old))
    first = worker(config=f'[sandbox]\ncache_dir = "{cache}"\ncache_max_age = 86400\n')
    first.wait_for_log(r"pruned 1 compiled component\(s\)")
    assert not stale.exists()
    assert client.add.delay(1, 2).get(timeout=30) == 3
    assert list(cache.glob("*.cwasm")), "the artifact in use was pruned"


# --------------------------------------------------------------------------
# Python's types and ints
# --------------------------------------------------------------------------

@pytest.mark.celeriac_only
def test_a_type_error_names_python_types_not_rust_ones(worker, client):
    worker()
    with pytest.raises(TypeError) as info:
        client.add.delay(4, "a").get(timeout=30)
    assert str(info.value) == "add() argument 'y' must be int, not str"
    with pytest.raises(TypeError) as info:
        client.xsum.delay("abc").get(timeout=30)
    assert "must be list[int or float], not str" in str(info.value)
    assert not re.search(r"i64|Vec<|Number", str(info.value)), str(info.value)


@pytest.mark.standin_xfail("Python ints do not overflow: stock Celery returns 9223372036854775808")
@pytest.mark.timeout(120)
def test_an_int_sum_past_64_bits_is_an_overflow_error_not_a_wrapped_negative(worker, client):
    worker()
    result = client.add.delay(9223372036854775807, 1)
    with pytest.raises(OverflowError) as info:
        result.get(timeout=30)
    assert type(info.value) is OverflowError
    assert "9223372036854775807 + 1" in str(info.value)
    assert client.mul.delay(2**62, 4).get(timeout=30, propagate=False).__class__ is OverflowError
    assert client.add.delay(2**62, 2**61).get(timeout=30) == 2**62 + 2**61


@pytest.mark.standin_xfail("Python ints are unbounded: stock Celery adds them")
@pytest.mark.timeout(120)
def test_an_int_argument_wider_than_64_bits_is_an_overflow_error(worker, client):
    worker()
    with pytest.raises(OverflowError) as info:
        client.add.delay(2**70, 1).get(timeout=30)
    assert "Python int too large to convert to C long" in str(info.value)
    with pytest.raises(OverflowError):
        client.add.delay(2**63, 1).get(timeout=30)
