"""The configuration a Celery user already has: celeryconfig.py, Celery's setting names and variables.

Issue #14: a Celery user's ``celeryconfig.py`` loads as it is, every Celery 5.7
setting name is known (honoured, ignored by the worker with a reason, or named
as not implemented yet), only real typos are refused (with the right
suggestion), Celery's ``CELERY_BROKER_URL`` is read, unknown ``CELERIAC_*``
variables and bad values name the variable, routes to queues nobody consumes
are pointed out at start-up, and no password is ever printed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import CELERIAC_BIN, CELERIAC_TASKS, REPO_ROOT, ManagedProcess, _base_env, free_port

pytestmark = pytest.mark.celeriac_only

#: Celery's First Steps ``celeryconfig.py``, verbatim.
SEED = """\
broker_url = 'pyamqp://'
result_backend = 'rpc://'

task_serializer = 'json'
result_serializer = 'json'
accept_content = ['json']
timezone = 'Europe/Oslo'
enable_utc = True
task_routes = {
    'tasks.add': 'low-priority',
}
task_annotations = {
    'tasks.add': {'rate_limit': '10/m'}
}
"""


def celeriac(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    if not CELERIAC_BIN.exists():
        pytest.fail(f"celeriac binary not found at {CELERIAC_BIN}", pytrace=False)
    return subprocess.run([str(CELERIAC_BIN), *args], capture_output=True, text=True, env=_base_env(env),
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=timeout)


def check_config(tmp_path: Path, text: str, name: str = "celeryconfig.py",
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(text)
    return celeriac("check-config", str(path), cwd=tmp_path, env=env)


def test_the_first_steps_celeryconfig_py_loads_as_it_is(tmp_path):
    out = check_config(tmp_path, SEED)
    assert out.returncode == 0, out.stderr
    for line in ['broker_url = "pyamqp://"', 'result_backend = "rpc://"', 'timezone = "Europe/Oslo"',
                 'enable_utc = true', '[task_routes."tasks.add"]\nqueue = "low-priority"',
                 '[task_annotations."tasks.add"]\nrate_limit = "10/m"']:
        assert line in out.stdout, f"{line!r} not in the effective settings:\n{out.stdout}"
    # The time zone is accepted and what it means here is said.
    assert "Europe/Oslo" in out.stderr and "UTC offsets" in out.stderr, out.stderr


def test_a_celeryconfig_py_in_the_current_directory_is_read_without_config(tmp_path):
    (tmp_path / "celeryconfig.py").write_text(SEED)
    out = celeriac("check-config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "celeryconfig.py" in out.stderr and 'broker_url = "pyamqp://"' in out.stdout, out.stderr


def test_a_worker_started_beside_a_celeryconfig_py_serves_what_it_configures(tmp_path, redis_server, client):
    """No --config, no --broker: the worker reads ./celeryconfig.py, as Celery's config_from_object would."""
    (tmp_path / "celeryconfig.py").write_text(
        f"broker_url = {redis_server.url(0)!r}\nresult_backend = {redis_server.url(1)!r}\n"
        "task_annotations = {'tasks.add': {'rate_limit': '100/s'}}\n")
    w = ManagedProcess("celeriac-worker-discovered", [CELERIAC_BIN, "worker", "-A", CELERIAC_TASKS, "-l", "INFO"],
                       tmp_path / "worker.log", env=_base_env(), cwd=tmp_path)
    try:
        w.start().wait_ready()
        assert "Reading celeryconfig.py from the current directory" in w.log_text(), w.tail()
        assert client.add.delay(4, 4).get(timeout=30) == 8
    finally:
        w.stop()


@pytest.mark.parametrize("source, where, why", [
    ("broker_url = 'redis://'\nimport os\n", "celeryconfig.py:2:", "an import"),
    ("x = 'redis://'\n\nbroker_url = x\n", "celeryconfig.py:3:", "a name (a variable)"),
    ("from kombu import Queue\n", "celeryconfig.py:1:", "an import"),
    ("task_queues = (\n    Queue('default'),\n)\n", "celeryconfig.py:2:", "a function call"),
    ("accept_content = [c for c in ('json',)]\n", "celeryconfig.py:1:", "a comprehension"),
    ("result_backend = f'redis://{1}'\n", "celeryconfig.py:1:", "an f-string"),
    ("broker_url = 'redis://'\ntask_routes = {\n", "celeryconfig.py:2:", ""),
])
def test_a_celeryconfig_py_construct_that_is_not_a_literal_is_refused_with_file_line_and_reason(
        tmp_path, source, where, why):
    out = check_config(tmp_path, source)
    assert out.returncode != 0, out.stdout
    assert where in out.stderr and why in out.stderr, out.stderr


def test_python_literals_read_as_python_reads_them(tmp_path):
    out = check_config(tmp_path, '"""My settings."""\n# a comment\nresult_expires = 60 * 60 * 24\n'
                                 "worker_prefetch_multiplier = +1\ntask_time_limit = -1.5\n"
                                 "broker_url = ('redis://localhost'\n              ':6379/0')\n"
                                 "accept_content = ('json', 'msgpack')\nresult_backend = None\n")
    assert out.returncode == 0, out.stderr
    assert "result_expires = 86400" in out.stdout and "worker_prefetch_multiplier = 1" in out.stdout
    assert "task_time_limit = -1.5" in out.stdout
    assert 'broker_url = "redis://localhost:6379/0"' in out.stdout
    assert "msgpack" in out.stdout and "result_backend" not in out.stdout, out.stdout


def test_settings_for_clients_and_python_workers_are_accepted_and_reported_once(tmp_path):
    out = check_config(tmp_path, SEED + "broker_connection_retry_on_startup = True\nresult_extended = True\n"
                                        "task_always_eager = False\nimports = ('proj.tasks',)\n"
                                        "beat_schedule = {}\nworker_max_tasks_per_child = 100\n"
                                        "CELERYD_POOL = 'prefork'\n")
    assert out.returncode == 0, out.stderr
    for name in ["broker_connection_retry_on_startup", "task_always_eager", "imports", "beat_schedule",
                 "worker_max_tasks_per_child", "worker_pool"]:
        lines = [line for line in out.stderr.splitlines() if line.startswith(f"warning: {name} ")]
        assert len(lines) == 1 and "ignored by the worker: " in lines[0], f"{name}:\n{out.stderr}"
    lines = [line for line in out.stderr.splitlines() if "result_extended" in line]
    assert len(lines) == 1 and "not implemented yet" in lines[0], out.stderr


def test_a_worker_reports_an_ignored_setting_once_at_start_up(worker):
    w = worker(config="broker_connection_retry_on_startup = true\nworker_pool = \"prefork\"\n")
    log = w.log_text()
    assert len(re.findall(r"broker_connection_retry_on_startup .*ignored by the worker", log)) == 1, w.tail()
    assert len(re.findall(r"worker_pool .*ignored by the worker", log)) == 1, w.tail()


@pytest.mark.parametrize("typo, suggestion", [
    ("task_default_rate_limt = '10/s'", "task_default_rate_limit"),
    ("broker_ulr = 'redis://'", "broker_url"),
    ("worker_max_task_per_child = 10", "worker_max_tasks_per_child"),
    ("CELERY_RESULT_BACKEN = 'redis://'", "CELERY_RESULT_BACKEND"),
])
def test_a_name_that_is_no_celery_setting_is_refused_with_the_closest_one(tmp_path, typo, suggestion):
    out = check_config(tmp_path, typo + "\n")
    assert out.returncode != 0, out.stdout
    assert f'did you mean "{suggestion}"?' in out.stderr, out.stderr


def test_old_uppercase_celery_names_are_read(tmp_path):
    out = check_config(tmp_path, "BROKER_URL = 'redis://h:6379/0'\nCELERY_RESULT_BACKEND = 'redis://h:6379/1'\n"
                                 "CELERYD_CONCURRENCY = 3\n")
    assert out.returncode == 0, out.stderr
    assert 'broker_url = "redis://h:6379/0"' in out.stdout and "worker_concurrency = 3" in out.stdout, out.stdout


def test_toml_stays_supported_and_celery_names_not_honoured_are_accepted_there_too(tmp_path):
    out = check_config(tmp_path, 'broker_url = "redis://h/0"\ntask_always_eager = true\n', name="celeriac.toml")
    assert out.returncode == 0, out.stderr
    assert 'broker_url = "redis://h/0"' in out.stdout and "task_always_eager" in out.stderr, out.stderr


def test_celery_broker_url_and_result_backend_override_the_config_as_in_celery(tmp_path):
    out = check_config(tmp_path, SEED, env={"CELERY_BROKER_URL": "redis://env:6379/0",
                                            "CELERY_RESULT_BACKEND": "redis://env:6379/1"})
    assert out.returncode == 0, out.stderr
    assert 'broker_url = "redis://env:6379/0"' in out.stdout
    assert 'result_backend = "redis://env:6379/1"' in out.stdout, out.stdout
    # Celeriac's own variable is the more specific one.
    out = check_config(tmp_path, SEED, env={"CELERY_BROKER_URL": "redis://env:6379/0",
                                            "CELERIAC_BROKER_URL": "redis://mine:6379/0"})
    assert 'broker_url = "redis://mine:6379/0"' in out.stdout, out.stdout


def test_a_worker_serves_the_broker_and_backend_of_celery_broker_url(worker, client, redis_server):
    worker(broker_flags=False, env={"CELERY_BROKER_URL": redis_server.url(0),
                                    "CELERY_RESULT_BACKEND": redis_server.url(1)})
    assert client.add.delay(4, 4).get(timeout=30) == 8


def test_an_unknown_celeriac_variable_is_a_warning_naming_the_closest_one(tmp_path):
    out = check_config(tmp_path, SEED, env={"CELERIAC_BROKER_ULR": "redis://h/0"})
    assert out.returncode == 0, out.stderr
    assert "CELERIAC_BROKER_ULR" in out.stderr and "did you mean CELERIAC_BROKER_URL?" in out.stderr, out.stderr
    # The program's own variables are no settings and draw no warning.
    out = check_config(tmp_path, SEED, env={"CELERIAC_BIN": "/x", "CELERIAC_TASKS": "/y"})
    assert "CELERIAC_BIN" not in out.stderr and "CELERIAC_TASKS" not in out.stderr, out.stderr


def test_a_bad_environment_value_names_the_variable_it_came_from(tmp_path):
    out = check_config(tmp_path, SEED, env={"CELERIAC_WORKER_CONCURRENCY": "many"})
    assert out.returncode != 0, out.stdout
    assert "environment variable CELERIAC_WORKER_CONCURRENCY" in out.stderr, out.stderr


def test_a_worker_says_which_routes_go_to_queues_it_does_not_consume(worker):
    w = worker(config='[task_routes]\n"tasks.add" = "low-priority"\n"tasks.m*" = "celery"\n')
    log = w.log_text()
    assert re.search(r"WARNING.*task_routes sends tasks\.add to queue \"low-priority\", which this worker does not "
                     r"consume.*-Q celery,low-priority", log), w.tail()
    assert "tasks.m*" not in log, w.tail()


def test_a_worker_consuming_every_routed_queue_gives_no_route_warning(worker):
    w = worker(queues="celery,low-priority", config='[task_routes]\n"tasks.add" = "low-priority"\n')
    assert "does not consume" not in w.log_text(), w.tail()


def test_amqp_passwords_are_masked_for_every_url_of_a_failover_list(worker):
    """The worker names the broker it cannot reach: every URL of the list, no password."""
    url = f"amqp://user:s3cret-one@127.0.0.1:{free_port()}//;amqp://user:s3cret-two@127.0.0.1:{free_port()}//"
    w = worker(broker_flags=False, extra_args=["--broker", url], wait_ready=False)
    w.wait_for_log(r"Trying again", timeout=30)
    log = w.log_text().split("\n", 1)[1]  # past the command line the harness writes first
    assert "s3cret" not in log, log
    assert re.search(r"Cannot connect to broker amqp://user:\*\*@127\.0\.0\.1:\d+//;amqp://user:\*\*@", log), log


def test_a_db_postgresql_password_is_masked_when_it_is_refused(tmp_path):
    out = celeriac("result", "0b5c1f6e-0000-4000-8000-000000000000",
                   "--broker", f"sqla+sqlite:///{tmp_path}/q.sqlite",
                   "--result-backend", "db+postgresql://scott:t1ger-pw@localhost/mydb", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "t1ger-pw" not in text and "db+postgresql://scott:**@localhost/mydb" in text, text


def test_check_config_masks_passwords_in_the_settings_it_prints(tmp_path):
    out = check_config(tmp_path, "broker_url = 'amqp://u:s3cret@h//'\n"
                                 "result_backend = 'redis://:s3cret@h:6379/1'\n"
                                 "security_key_password = 's3cret'\n")
    assert out.returncode == 0, out.stderr
    assert "security_key_password = \"********\"" in out.stdout, out.stdout
    assert "s3cret" not in out.stdout and "amqp://u:**@h//" in out.stdout, out.stdout
