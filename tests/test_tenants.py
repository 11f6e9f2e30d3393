"""Tenants (issue #13): one subdirectory of the task directory per tenant, with an optional ``tenant.toml``.

A real ``celeriac worker`` on a real Redis, driven by a stock Celery 5.7 client. Two tenants, ``acme`` and
``globex``, each with a copy of the example ``tasks.wasm`` (so ``acme.tasks.add``, ``globex.tasks.add``):

* a tenant's defaults (``[annotations]``) bound its calls, and the per-call accounting (fuel, sandbox and
  wall time, peak memory, tenant, component version) is in the worker's log line and in ``/metrics``
  labelled by tenant; a call that runs out of fuel accounts exactly its budget;
* its quotas hold on the worker: ``concurrency`` (its calls never overlap beyond it, another tenant's do)
  and ``rate_limit`` (one bucket for all its tasks);
* a tenant's own ``queue`` is consumed beside the others, taking turns: a tenant that floods its queue
  does not starve another's;
* outbound HTTP through ``wasi:http`` reaches only the hosts its ``http_allow`` lists, and a denied call
  is a ``PermissionError`` naming the host;
* its tasks read its ``[config]`` values (``celeriac:task/config``), which the worker never logs.

Celeriac only: a Python worker has no task directory, tenants or sandbox.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import threading
import time
import urllib.request

import pytest

import subprocess

from conftest import CELERIAC_BIN, CELERIAC_TASKS, REPO_ROOT, _base_env, free_port, wait_until
from test_remote_control import NODE, EventCapture, inspect

pytestmark = [pytest.mark.timeout(240), pytest.mark.celeriac_only]

COMPONENT = CELERIAC_TASKS / "tasks.wasm" if CELERIAC_TASKS.is_dir() else CELERIAC_TASKS
HTTP_COMPONENT = REPO_ROOT / "target" / "http-tasks" / "http.wasm"


def tenants(tmp_path, **tenant_toml: str):
    """A task directory with one tenant per keyword (its tenant.toml text; "" for none), each serving
    the example component as ``<tenant>.tasks.*``."""
    d = tmp_path / "tasks"
    for name, toml in tenant_toml.items():
        (d / name).mkdir(parents=True)
        shutil.copy(COMPONENT, d / name / "tasks.wasm")
        if toml:
            (d / name / "tenant.toml").write_text(toml)
    return d


def intervals(events, task: str) -> list[tuple[float, float]]:
    """(start, end) of each call of ``task`` seen in the events: from its ``task-started`` (sent as it takes its
    run slots, before the call) for the call's ``runtime`` (so it ends no later than the call did, which is
    before the slots are given back; ``task-succeeded`` itself is sent after that)."""
    names = {e["uuid"]: e.get("name") for e in events if e["type"] == "task-received"}
    started = {e["uuid"]: e["timestamp"] for e in events if e["type"] == "task-started"}
    runtime = {e["uuid"]: e["runtime"] for e in events if e["type"] == "task-succeeded"}
    return sorted((started[u], started[u] + runtime[u]) for u in runtime if names.get(u) == task and u in started)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_a_tenants_defaults_bound_its_calls_and_each_call_is_accounted_in_the_log_and_the_metrics(
        worker, client, tmp_path):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    app = tenants(tmp_path, acme="[annotations]\nfuel = 3_000_000\n", globex="")
    port = free_port()
    w = worker(app=app, extra_args=["--metrics", f"127.0.0.1:{port}"])
    assert client.app.send_task("acme.tasks.add", (2, 3)).get(timeout=10) == 5
    assert client.app.send_task("globex.tasks.add", (2, 3)).get(timeout=10) == 5
    spin = client.app.send_task("acme.tasks.spin")
    with pytest.raises(Exception) as raised:
        spin.get(timeout=30)
    assert "fuel" in str(raised.value).lower(), raised.value
    # globex has no fuel default of its own: its spin runs until the worker's (much larger) budget or time limit,
    # so only acme's is checked to end at exactly its tenant's budget.
    line = rf"Task acme\.tasks\.spin\[{re.escape(spin.id)}\] used fuel=(\d+) sandbox=\S+s wall=\S+s memory=(\d+) " \
           rf"tenant=acme version=([0-9a-f]{{12}})"
    assert wait_until(lambda: re.search(line, w.log_text()), timeout=10), w.tail()
    fuel, memory, version = re.search(line, w.log_text()).groups()
    assert int(fuel) == 3_000_000
    assert int(memory) >= 65536
    assert re.search(r"Task globex\.tasks\.add\[\S+\] used fuel=\d+ .* tenant=globex version=" + version, w.log_text())

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(name, **labels):
        found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert found, f"no {name} {labels} in:\n{text}"
        return found[0]

    assert value("celeriac_task_fuel_total", task="acme.tasks.spin", tenant="acme") == 3_000_000
    assert value("celeriac_tasks_total", task="acme.tasks.add", tenant="acme", state="SUCCESS") == 1
    assert value("celeriac_tasks_total", task="globex.tasks.add", tenant="globex", state="SUCCESS") == 1
    assert value("celeriac_tasks_total", task="acme.tasks.spin", tenant="acme", state="FAILURE") == 1


def test_a_tenants_concurrency_quota_holds_while_another_tenant_runs_in_parallel(worker, client, tmp_path):
    app = tenants(tmp_path, acme="concurrency = 1\n", globex="")
    worker(app=app, concurrency=4, extra_args=["-E"])
    with EventCapture(client.app) as cap:
        results = [client.app.send_task(f"{t}.tasks.sleep", (0.4,)) for t in ("acme", "globex") for _ in range(4)]
        for r in results:
            r.get(timeout=30)
        assert wait_until(lambda: sum(e["type"] == "task-succeeded" for e in cap.events) >= 8, timeout=10)
    acme, globex = intervals(cap.events, "acme.tasks.sleep"), intervals(cap.events, "globex.tasks.sleep")
    assert len(acme) == 4 and len(globex) == 4, cap.events
    assert most_at_once(acme) == 1, acme
    # The same tasks of a tenant without the quota overlap: the check above could fail.
    assert most_at_once(globex) >= 2, globex


def test_a_tenants_rate_limit_is_one_bucket_for_all_its_tasks(worker, client, tmp_path):
    app = tenants(tmp_path, acme='rate_limit = "10/s"\n', globex="")
    worker(app=app, concurrency=4, extra_args=["-E"])
    with EventCapture(client.app) as cap:
        acme = [client.app.send_task(f"acme.tasks.{n}", (1, 2)) for n in ("add", "mul") for _ in range(5)]
        globex = [client.app.send_task("globex.tasks.add", (1, 2)) for _ in range(10)]
        for r in acme + globex:
            r.get(timeout=30)
        assert wait_until(lambda: sum(e["type"] == "task-succeeded" for e in cap.events) >= 20, timeout=10)
    starts = sorted(s for n in ("add", "mul") for s, _ in intervals(cap.events, f"acme.tasks.{n}"))
    assert len(starts) == 10
    # Ten starts at 10/s, shared by add and mul: the last starts at least ~0.9 s after the first.
    assert starts[-1] - starts[0] >= 0.8, starts
    others = sorted(s for s, _ in intervals(cap.events, "globex.tasks.add"))
    assert len(others) == 10
    # The other tenant's ten start together: the check above could fail.
    assert others[-1] - others[0] < 0.5, others


def test_a_task_waiting_for_its_own_rate_limit_does_not_hold_up_its_tenants_other_tasks(worker, client, tmp_path):
    # acme: 1 task a second in all; acme.tasks.mul: 1 a minute of its own. Five muls are sent first: the
    # first runs, the other four wait minutes for their own tokens and must not book acme's next four
    # seconds meanwhile (which would hold the add back until then).
    app = tenants(tmp_path, acme='rate_limit = "1/s"\n')
    config = '[task_annotations."acme.tasks.mul"]\nrate_limit = "1/m"\n'
    worker(app=app, concurrency=4, extra_args=["-E"], config=config)
    with EventCapture(client.app) as cap:
        muls = [client.app.send_task("acme.tasks.mul", (i, 2)) for i in range(5)]
        # Whichever the two event loops took first runs; the others wait for mul's next token.
        assert wait_until(lambda: any(r.ready() for r in muls), timeout=10)
        first = next(r for r in muls if r.ready())
        assert first.get(timeout=1) == 2 * muls.index(first)
        add = client.app.send_task("acme.tasks.add", (1, 2))
        assert add.get(timeout=10) == 3
        assert wait_until(lambda: any(e["type"] == "task-succeeded" and e["uuid"] == add.id for e in cap.events),
                          timeout=10)
    (first_mul, _), = intervals(cap.events, "acme.tasks.mul")
    (add_start, _), = intervals(cap.events, "acme.tasks.add")
    # The add takes acme's second token (1 s after the first mul), not its sixth (5 s after).
    assert add_start - first_mul < 3, (first_mul, add_start)
    assert [r.state for r in muls if r is not first] == ["PENDING"] * 4


def test_a_tenant_flooding_its_queue_does_not_starve_another_tenants_queue(worker, celery_app, tmp_path):
    app = tenants(tmp_path, acme='queue = "acme"\n', globex='queue = "globex"\n')
    client = celery_app(task_routes={"acme.*": {"queue": "acme"}, "globex.*": {"queue": "globex"}})
    flood = 20_000
    # Each of A's calls takes at least 2 ms: with -c 2 its backlog lasts 20 s or more, far longer than B needs.
    with client.app.producer_or_acquire() as producer:
        for _ in range(flood):
            client.app.send_task("acme.tasks.sleep", (0.002,), ignore_result=True, producer=producer)
    b = [client.app.send_task("globex.tasks.add", (i, 1)) for i in range(20)]
    assert client.redis.redis(0).llen("acme") == flood
    worker(app=app, concurrency=2)
    assert [r.get(timeout=60) for r in b] == [i + 1 for i in range(20)]
    left = client.redis.redis(0).llen("acme")
    # All of B's tasks are done while most of A's backlog still waits (one queue after the other would
    # have drained all 20,000 first).
    assert left > flood // 2, f"only {left} of acme's {flood} tasks left when globex's 20 were done"



def test_a_tenant_flooding_its_queue_under_a_concurrency_quota_does_not_starve_another_tenant(
        worker, celery_app, tmp_path):
    # acme may run one call at a time. Without flow control its 20,000 messages would be taken as fast as
    # they come, fill the worker's 10,000 held places and then its prefetch window with calls that cannot
    # start, and globex's queue would not be read until some 10,000 of acme's had run one by one.
    app = tenants(tmp_path, acme='concurrency = 1\nqueue = "acme"\n', globex='queue = "globex"\n')
    client = celery_app(task_routes={"acme.*": {"queue": "acme"}, "globex.*": {"queue": "globex"}})
    flood = 20_000
    with client.app.producer_or_acquire() as producer:
        for _ in range(flood):
            client.app.send_task("acme.tasks.counter", producer=producer)
    w = worker(app=app, concurrency=2)
    assert wait_until(lambda: "its queue acme is paused" in w.log_text(), timeout=30), w.tail()
    b = [client.app.send_task("globex.tasks.add", (i, 1)) for i in range(20)]
    assert [r.get(timeout=60) for r in b] == [i + 1 for i in range(20)]
    # acme's results so far (globex's 20 are the rest): far fewer than the thousands it would have run first.
    acme_done = len(client.redis.redis(1).keys("celery-task-meta-*")) - 20
    assert 0 < acme_done < 2_000, f"{acme_done} of acme's tasks ran before globex's 20 were done"
    assert w.alive


def test_a_tenants_queue_paused_for_its_quotas_is_still_listed_by_inspect_active_queues(worker, celery_app, tmp_path):
    # One call at a time, each 2 s long: once 100 wait, acme's queue stays paused for minutes.
    app = tenants(tmp_path, acme='concurrency = 1\nqueue = "acme"\n', globex='queue = "globex"\n')
    client = celery_app(task_routes={"acme.*": {"queue": "acme"}, "globex.*": {"queue": "globex"}})
    with client.app.producer_or_acquire() as producer:
        for _ in range(150):
            client.app.send_task("acme.tasks.sleep", (2,), producer=producer)
    w = worker(app=app, concurrency=2, name=NODE)
    assert wait_until(lambda: "its queue acme is paused" in w.log_text(), timeout=30), w.tail()
    # Paused by the worker, not cancelled by an operator: still one of the queues it serves.
    replies = inspect(client, "active_queues")
    assert sorted(q["name"] for q in replies) == ["acme", "celery", "globex"], replies
    assert "consuming its queue acme again" not in w.log_text()


@pytest.fixture
def http_server():
    """A loopback HTTP server answering every GET with its path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_outbound_http_reaches_only_the_hosts_a_tenant_is_granted(worker, client, tmp_path, http_server):
    if not HTTP_COMPONENT.exists():
        pytest.fail(f"{HTTP_COMPONENT} is missing: run `make test-tasks` first", pytrace=False)
    port = http_server
    app = tenants(tmp_path, acme=f'[annotations]\nhttp_allow = ["127.0.0.1:{port}"]\n', globex="")
    for t in ("acme", "globex"):
        shutil.copy(HTTP_COMPONENT, app / t / "http.wasm")
    w = worker(app=app)
    allowed = f"http://127.0.0.1:{port}/ok"
    assert client.app.send_task("acme.http.fetch", (allowed,)).get(timeout=20) == "hello from /ok"
    # Not on acme's list: another port of the same host, another host.
    for url, host in ((f"http://127.0.0.1:{free_port()}/", "127.0.0.1:"), ("http://example.com/", "example.com")):
        with pytest.raises(PermissionError) as denied:
            client.app.send_task("acme.http.fetch", (url,)).get(timeout=20)
        assert host in str(denied.value) and "http_allow" in str(denied.value), denied.value
    # globex has no grant at all, not even to acme's host.
    with pytest.raises(PermissionError) as denied:
        client.app.send_task("globex.http.fetch", (allowed,)).get(timeout=20)
    assert f"127.0.0.1:{port}" in str(denied.value) and "no HTTP grant" in str(denied.value), denied.value
    assert w.alive


def test_a_kept_instance_is_reused_unless_its_call_sent_an_http_request(worker, client, tmp_path, http_server):
    # A request or body the guest never dropped would go on in the background past its call: such an
    # instance is never kept (max_calls_per_instance), while one whose call made no request is.
    if not HTTP_COMPONENT.exists():
        pytest.fail(f"{HTTP_COMPONENT} is missing: run `make test-tasks` first", pytrace=False)
    port = http_server
    app = tenants(tmp_path, acme=f'[annotations]\nhttp_allow = ["127.0.0.1:{port}"]\nmax_calls_per_instance = 10\n',
                  globex="")
    shutil.copy(HTTP_COMPONENT, app / "acme" / "http.wasm")
    w = worker(app=app)

    def instance_calls(task: str, *args) -> list[int]:
        calls = []
        for _ in range(3):
            r = client.app.send_task(task, args)
            r.get(timeout=20)
            m = w.wait_for_log(rf"Task {re.escape(task)}\[{re.escape(r.id)}\] used .* instance_call=(\d+)", timeout=10)
            calls.append(int(m.group(1)))
        return calls

    assert instance_calls("acme.http.config", "x") == [1, 2, 3]
    assert instance_calls("acme.http.fetch", f"http://127.0.0.1:{port}/ok") == [1, 1, 1]


def test_a_kept_instance_whose_calls_leave_host_handles_open_starts_afresh(worker, client, tmp_path):
    # What an instance's first call leaves open is the guest's own (a cached stdout stream); a later call that
    # adds to it leaks worker memory no limit counts, so that instance is dropped after it.
    if not HTTP_COMPONENT.exists():
        pytest.fail(f"{HTTP_COMPONENT} is missing: run `make test-tasks` first", pytrace=False)
    # Five calls an instance: the first five calls below use one up.
    app = tenants(tmp_path, acme="[annotations]\nmax_calls_per_instance = 5\n", globex="")
    shutil.copy(HTTP_COMPONENT, app / "acme" / "http.wasm")
    w = worker(app=app)

    def instance_calls(leak: int, n: int = 5) -> list[int]:
        calls = []
        for _ in range(n):
            r = client.app.send_task("acme.http.pollables", (leak,))
            assert r.get(timeout=20) == leak
            m = w.wait_for_log(rf"Task acme\.http\.pollables\[{re.escape(r.id)}\] used .* instance_call=(\d+)",
                               timeout=10)
            calls.append(int(m.group(1)))
        return calls

    assert instance_calls(0) == [1, 2, 3, 4, 5]
    # Each call leaks two handles: the first call's are let be, the second's end the instance.
    assert instance_calls(2, 6) == [1, 2, 1, 2, 1, 2]
    # Past 64 open handles an instance is never kept, even after its first call.
    assert instance_calls(65) == [1, 1, 1, 1, 1]
    assert w.alive


def test_a_tenants_tasks_read_its_configuration_values_which_the_worker_never_logs(worker, client, tmp_path):
    if not HTTP_COMPONENT.exists():
        pytest.fail(f"{HTTP_COMPONENT} is missing: run `make test-tasks` first", pytrace=False)
    secret = "s3cret-7f1c2e"
    app = tenants(tmp_path, acme=f'[config]\napi_key = "{secret}"\n', globex="")
    for t in ("acme", "globex"):
        shutil.copy(HTTP_COMPONENT, app / t / "http.wasm")
    w = worker(app=app)
    assert client.app.send_task("acme.http.config", ("api_key",)).get(timeout=20) == secret
    assert client.app.send_task("acme.http.config", ("other",)).get(timeout=20) is None
    # Another tenant's values are not its own.
    assert client.app.send_task("globex.http.config", ("api_key",)).get(timeout=20) is None
    # Nowhere in the worker's own lines (start-up, tenant summary, accounting); the task's result, which this
    # test task returns on purpose, is logged as Celery logs every result.
    own = [line for line in w.log_text().splitlines() if "succeeded in" not in line]
    assert own and not [line for line in own if secret in line]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("lang", ["python", "js", "c", "zig"])
def test_a_task_in_any_language_reads_its_tenants_configuration_through_its_sdk(worker, client, tmp_path, lang):
    # The example component of each language serves setting(key): its SDK's config(key), "unset" when unset.
    component = REPO_ROOT / "target" / "lang-tasks" / lang / "tasks.wasm"
    if not component.exists():
        pytest.fail(f"{component} is missing: run `make tasks-{lang}` first", pytrace=False)
    app = tenants(tmp_path, acme='[config]\nendpoint = "https://api.example.com/v2"\n', globex="")
    for t in ("acme", "globex"):
        shutil.copy(component, app / t / "tasks.wasm")
    worker(app=app)
    acme = client.app.signature("acme.tasks.setting")
    # Messages wait while the components compile (a Python one for minutes unless the cache has it).
    assert acme.delay("endpoint").get(timeout=400) == "https://api.example.com/v2"
    assert acme.delay("missing").get(timeout=30) == "unset"
    assert client.app.send_task("globex.tasks.setting", ("endpoint",)).get(timeout=30) == "unset"


def test_a_tenants_task_may_send_only_its_own_tenants_tasks(worker, client, tmp_path):
    # Both tenants are granted send_tasks; acme's spawn sends "tasks.add", which is no acme task.
    grant = "[annotations]\nsend_tasks = true\n"
    app = tenants(tmp_path, acme=grant, globex=grant)
    shutil.copy(COMPONENT, app / "tasks.wasm")
    worker(app=app, config='[task_annotations."tasks.spawn"]\nsend_tasks = true\n')
    with pytest.raises(PermissionError) as denied:
        client.app.send_task("acme.tasks.spawn", (2, 3)).get(timeout=20)
    assert "acme" in str(denied.value) and "tasks.add" in str(denied.value), denied.value
    # Outside any tenant, the same task sends it.
    child = client.app.send_task("tasks.spawn", (2, 3)).get(timeout=20)
    assert client.app.AsyncResult(child).get(timeout=20) == 5


def test_a_broken_tenant_file_stops_the_worker_at_start_naming_the_file(worker, tmp_path):
    app = tenants(tmp_path, acme="concurency = 2\n")
    w = worker(app=app, wait_ready=False)
    assert wait_until(lambda: not w.alive, timeout=30), w.tail()
    assert w.returncode != 0
    assert "tenant.toml" in w.log_text() and "concurency" in w.log_text(), w.tail()


def test_exclude_queues_keeps_a_tenants_own_queue_unconsumed(worker, celery_app, tmp_path):
    app = tenants(tmp_path, acme='queue = "acme"\n', globex='queue = "globex"\n')
    client = celery_app(task_routes={"acme.*": {"queue": "acme"}, "globex.*": {"queue": "globex"}})
    w = worker(app=app, extra_args=["-X", "acme"])
    waiting = client.app.send_task("acme.tasks.add", (1, 1))
    assert client.app.send_task("globex.tasks.add", (2, 2)).get(timeout=10) == 4
    time.sleep(1)
    # Still in acme's queue, untaken: the worker consumes celery and globex only.
    assert client.redis.redis(0).llen("acme") == 1
    assert waiting.state == "PENDING"
    assert w.alive


def test_check_config_reads_every_tenants_file_naming_its_config_keys_but_never_their_values(tmp_path):
    app = tenants(tmp_path, acme='concurrency = 2\nqueue = "acme"\n[config]\napi_key = "s3cr3t-value"\n',
                  globex="")
    config = tmp_path / "celeryconfig.py"
    config.write_text("broker_url = 'redis://localhost:6379/0'\n")

    def check():
        return subprocess.run([str(CELERIAC_BIN), "check-config", str(config), "-A", str(app)], capture_output=True,
                              text=True, env=_base_env(), cwd=tmp_path, timeout=60)

    ok = check()
    assert ok.returncode == 0, ok.stderr
    line = next(line for line in ok.stderr.splitlines() if "acme/tenant.toml: OK" in line)
    assert "concurrency 2" in line and "queue acme" in line and "api_key" in line, line
    assert "s3cr3t-value" not in ok.stdout + ok.stderr
    (app / "globex" / "tenant.toml").write_text('[annotations]\nhttp_allow = ["https://api.example.com"]\n')
    bad = check()
    assert bad.returncode != 0
    assert "globex/tenant.toml" in bad.stderr and "not a host or host:port" in bad.stderr, bad.stderr


def test_a_tenant_file_changed_after_start_is_reported_and_a_new_tenants_file_holds_its_tasks_until_a_restart(
        worker, client, tmp_path):
    from celery.exceptions import NotRegistered

    app = tenants(tmp_path, acme="concurrency = 2\n")
    w = worker(app=app)
    (app / "acme" / "tenant.toml").write_text("concurrency = 3\n")
    assert wait_until(lambda: "acme/tenant.toml changed (concurrency 3" in w.log_text(), timeout=10), w.tail()
    # A new tenant without a file is served at once, with the worker's defaults ...
    (app / "initech").mkdir()
    shutil.copy(COMPONENT, app / "initech" / ".tasks.wasm.part")
    os.replace(app / "initech" / ".tasks.wasm.part", app / "initech" / "tasks.wasm")
    assert wait_until(lambda: "initech/tasks.wasm: version" in w.log_text(), timeout=10), w.tail()
    assert client.app.send_task("initech.tasks.add", (1, 2)).get(timeout=10) == 3
    # ... one whose tenant.toml came with it is not: its quotas would not apply before a restart.
    (app / "newco").mkdir()
    (app / "newco" / "tenant.toml").write_text("concurrency = 1\n")
    shutil.copy(COMPONENT, app / "newco" / ".tasks.wasm.part")
    os.replace(app / "newco" / ".tasks.wasm.part", app / "newco" / "tasks.wasm")
    assert wait_until(lambda: "restart the worker to serve newco's tasks" in w.log_text(), timeout=10), w.tail()
    with pytest.raises(NotRegistered):
        client.app.send_task("newco.tasks.add", (1, 1)).get(timeout=10)
    assert client.app.send_task("acme.tasks.add", (2, 2)).get(timeout=10) == 4
    assert w.alive
    # After a restart both files apply and newco is served.
    w.terminate()
    w2 = worker(app=app)
    assert "tenant newco: concurrency 1" in w2.log_text() or wait_until(
        lambda: "tenant newco: concurrency 1" in w2.log_text(), timeout=5), w2.tail()
    assert client.app.send_task("newco.tasks.add", (1, 1)).get(timeout=10) == 2
