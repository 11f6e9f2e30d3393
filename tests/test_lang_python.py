"""Python tasks (issue #12): example-tasks/python, built with componentize-py, through a worker and a stock Celery client.

The component is ``target/lang-tasks/python/tasks.wasm`` (``make tasks-python``,
part of ``make tasks``; ``CELERIAC_PYTHON_TASKS`` names another directory). One
worker serves the whole module: its first start compiles the 19 MB component
(15-25 s), which the worker caches (~/.cache/celeriac) for later starts.

Python tasks only exist in the celeriac worker (the stand-in Python worker has
no such component), so every test here is ``celeriac_only``.
"""

import http.server
import json
import re
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, new_task_id
from lang_native import assert_still_serving, call, celeriac, failure_of, published_states

pytestmark = pytest.mark.celeriac_only

PYTHON_TASKS = Path(os.environ.get("CELERIAC_PYTHON_TASKS") or REPO_ROOT / "target" / "lang-tasks" / "python")

# The first start compiles the component: allow for a loaded 2-core machine.
COMPILE_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def web():
    """A loopback HTTP server for the example's ``fetch``: GET answers with the method, path and query
    (text/plain), POST with the JSON it received and its content type, /missing with a 404.
    Yields its port, and a port with nothing listening."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            if self.path == "/missing":
                return self.reply(404, "text/plain", b"no such page")
            if self.path == "/slow":
                time.sleep(3)
            if self.path.startswith("/echo"):
                seen = {k.lower(): v for k, v in self.headers.items() if k.lower() in ("authorization", "x-test")}
                return self.reply(200, "application/json", json.dumps({"path": self.path, "headers": seen}).encode())
            self.reply(200, "text/plain; charset=utf-8", f"GET {self.path} \u2713".encode())

        do_HEAD = do_GET

        def do_POST(self):
            got = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = {"got": got, "content_type": self.headers["Content-Type"]}
            self.reply(200, "application/json", json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A closed port: bound and never listening, so connections to it are refused and no other process
    # can start listening on it while the tests run.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    yield server.server_address[1], closed.getsockname()[1]
    closed.close()
    server.shutdown()


@pytest.fixture(scope="module")
def py_worker(module_worker_factory, web):
    if not (PYTHON_TASKS / "tasks.wasm").is_file():
        pytest.fail(f"{PYTHON_TASKS}/tasks.wasm is missing: build it with `make tasks-python` "
                    f"(needs `bash scripts/install-toolchains.sh python`)", pytrace=False)
    port, closed = web
    # send_tasks: spawn and replaced send tasks (the canvas interface).
    w = module_worker_factory(app=PYTHON_TASKS, concurrency=2, ready_timeout=COMPILE_TIMEOUT,
                              config='[task_annotations."*"]\nsend_tasks = true\n'
                                     # Kept instances (the tests of max_calls_per_instance).
                                     '[task_annotations."tasks.calls"]\nmax_calls_per_instance = 3\n'
                                     '[task_annotations."tasks.crash"]\nmax_calls_per_instance = 3\n'
                                     # Outbound HTTP (celeriac.http) to the test server, and to a closed port.
                                     '[task_annotations."tasks.fetch"]\n'
                                     f'http_allow = ["127.0.0.1:{port}", "127.0.0.1:{closed}"]\n')
    # "ready" comes before a compile finishes (it runs in the background): wait for the
    # component itself, listed in the banner when it was cached, else logged once compiled.
    w.wait_for_log(r"compiled tasks\.wasm in|\. tasks\.add\b", timeout=COMPILE_TIMEOUT)
    return w


def test_first_steps_tasks_answer_like_celerys(py_worker, client):
    assert call(client, "add", 4, 4).get(timeout=60) == 8
    assert call(client, "add", "a", "b").get(timeout=30) == "ab"
    assert call(client, "mul", 6, 7).get(timeout=30) == 42
    assert call(client, "xsum", [1, 2, 3.5]).get(timeout=30) == 6.5
    assert call(client, "add", x=2**40, y=1).get(timeout=30) == 2**40 + 1


def test_a_call_with_a_wrong_argument_is_a_type_error(py_worker, client):
    exc = failure_of(call(client, "add", 4, 4, 4))
    assert type(exc) is TypeError, repr(exc)
    assert str(exc) == "add() takes 2 positional arguments but 3 were given"
    exc = failure_of(call(client, "add", 4, z=1))
    assert type(exc) is TypeError, repr(exc)
    assert "unexpected keyword argument 'z'" in str(exc)
    assert_still_serving(py_worker, client)


def test_a_raised_value_error_is_a_builtin_value_error_with_the_guests_traceback(py_worker, client):
    result = call(client, "fail")
    exc = failure_of(result)
    assert type(exc) is ValueError, repr(exc)
    assert exc.args == ("bad value",)
    tb = result.traceback or ""
    # The guest's own frame: the example's file, the line of the raise, the function.
    source = (REPO_ROOT / "example-tasks" / "python" / "tasks.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if 'raise ValueError("bad value")' in text)
    assert f'tasks.py", line {line}, in fail' in tb, tb
    assert "ValueError: bad value" in tb, tb
    # The SDK's frames are left out.
    assert "_component.py" not in tb, tb
    assert_still_serving(py_worker, client)


def test_an_exception_class_of_the_task_keeps_its_name_and_arguments(py_worker, client):
    exc = failure_of(call(client, "lookup", 42))
    assert type(exc).__name__ == "InvoiceNotFound", repr(exc)
    assert exc.args == ("no invoice 42", 42)


def test_a_trap_is_a_failure_and_the_worker_keeps_serving(py_worker, client):
    result = call(client, "crash")
    exc = failure_of(result)
    assert "trap" in f"{type(exc).__name__} {exc}".lower(), repr(exc)
    assert "abort" in (result.traceback or ""), result.traceback
    assert_still_serving(py_worker, client)
    # The next call runs in a fresh instance: nothing of the aborted one is left.
    assert call(client, "mul", 3, 3).get(timeout=30) == 9


def test_a_kept_instance_keeps_the_modules_state_for_max_calls_per_instance_calls(py_worker, client):
    # One call at a time: each finds the instance the previous one left.
    seen = [call(client, "calls").get(timeout=60) for _ in range(7)]
    assert seen == [1, 2, 3, 1, 2, 3, 1]


def test_a_python_task_reaches_a_granted_host_with_celeriac_http_and_reads_its_answer(py_worker, client, web):
    port, _ = web
    base = f"http://127.0.0.1:{port}"
    assert call(client, "fetch", f"{base}/hello?x=1").get(timeout=60) == \
        [200, "text/plain; charset=utf-8", "GET /hello?x=1 \u2713"]
    status, content_type, text = call(client, "fetch", f"{base}/api", {"a": [1, 2]}).get(timeout=60)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(text) == {"got": {"a": [1, 2]}, "content_type": "application/json"}
    # raise_for_status: a 404 is the SDK's HTTPError, with requests' message.
    exc = failure_of(call(client, "fetch", f"{base}/missing"))
    assert type(exc).__name__ == "HTTPError", repr(exc)
    assert str(exc) == f"404 Client Error for url: {base}/missing", repr(exc)


def test_celeriac_run_grants_what_the_config_grants(py_worker, web, tmp_path):
    # `celeriac run` reads task_annotations as the worker does: no http_allow, no request.
    port, _ = web
    url = f"http://127.0.0.1:{port}/run"
    argv = ("run", "-A", str(PYTHON_TASKS), "tasks.fetch", json.dumps(url))
    denied = celeriac(*argv, cwd=tmp_path, timeout=COMPILE_TIMEOUT)
    assert denied.returncode != 0 and "PermissionError" in denied.stderr, denied.stderr
    grant = f"task_annotations = {{'tasks.fetch': {{'http_allow': ['127.0.0.1:{port}']}}}}\n"
    (tmp_path / "celeryconfig.py").write_text(grant)
    out = celeriac(*argv, cwd=tmp_path, timeout=COMPILE_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [200, "text/plain; charset=utf-8", "GET /run \u2713"]


def test_celeriac_http_sends_params_headers_credentials_and_head_as_requests_does(py_worker, client, web):
    port, _ = web
    base = f"http://127.0.0.1:{port}"

    def echo(url, **options):
        status, content_type, text = call(client, "fetch", url, **options).get(timeout=60)
        assert (status, content_type) == (200, "application/json"), text
        return json.loads(text)

    # params: appended, a list repeats its key, None is left out; a space in the path is quoted.
    got = echo(f"{base}/echo/a b?a=1", params={"b": ["2", "3"], "c": None})
    assert got["path"] == "/echo/a%20b?a=1&b=2&b=3", got
    # headers: sent as given (a None value is left out); user:password@ becomes Basic authorization.
    got = echo(f"http://user:p%40ss@127.0.0.1:{port}/echo", headers={"X-Test": "yes", "X-Gone": None})
    assert got["headers"] == {"x-test": "yes", "authorization": "Basic dXNlcjpwQHNz"}, got  # user:p@ss
    # HEAD: the status and headers, no body.
    assert call(client, "fetch", f"{base}/hello", method="HEAD").get(timeout=60) == \
        [200, "text/plain; charset=utf-8", ""]


def test_a_python_tasks_http_request_fails_as_celery_users_expect(py_worker, client, web):
    _, closed = web
    # Granted, but nothing listens: the builtin ConnectionError, named by its wasi:http error code.
    exc = failure_of(call(client, "fetch", f"http://127.0.0.1:{closed}/"))
    assert type(exc) is ConnectionError, repr(exc)
    assert str(exc).startswith("ConnectionRefused") and f"127.0.0.1:{closed}" in str(exc), repr(exc)
    # Not granted: the worker refuses it, whatever the task makes of the error.
    other = free_port()
    exc = failure_of(call(client, "fetch", f"http://127.0.0.1:{other}/"))
    assert type(exc) is PermissionError, repr(exc)
    assert f"127.0.0.1:{other}" in str(exc) and "http_allow" in str(exc), repr(exc)
    exc = failure_of(call(client, "fetch", "ftp://127.0.0.1/"))
    assert type(exc) is ValueError and "not an http:// or https:// URL" in str(exc), repr(exc)
    port, _ = web
    # What a request cannot carry is a ValueError naming it, never a binding's internal error.
    exc = failure_of(call(client, "fetch", f"http://127.0.0.1:{port}/", headers={"X-Name": "\u015d"}))
    assert type(exc) is ValueError and "'X-Name'" in str(exc), repr(exc)
    exc = failure_of(call(client, "fetch", f"http://127.0.0.1:{port}/", method="BAD METHOD"))
    assert type(exc) is ValueError and "invalid method" in str(exc), repr(exc)
    # A timeout is the builtin TimeoutError; a password in the URL is never shown.
    result = call(client, "fetch", f"http://user:s3cret@127.0.0.1:{port}/slow", timeout=0.5)
    exc = failure_of(result)
    assert type(exc) is TimeoutError and str(exc).startswith("ConnectionReadTimeout"), repr(exc)
    assert "s3cret" not in str(exc) and "s3cret" not in (result.traceback or ""), repr(exc)
    assert_still_serving(py_worker, client)


def test_a_kept_instance_that_trapped_is_dropped_and_the_next_call_gets_a_fresh_one(py_worker, client):
    for _ in range(3):
        # Each call aborts in the task's own code: none finds a dead instance
        # ("cannot enter component instance").
        result = call(client, "crash")
        exc = failure_of(result)
        assert "trap" in f"{type(exc).__name__} {exc}".lower(), repr(exc)
        assert "abort" in (result.traceback or ""), result.traceback
    assert_still_serving(py_worker, client)


def test_update_state_is_published_as_progress_and_a_bound_task_reads_its_request(py_worker, client):
    task_id = new_task_id()
    seen = published_states(client, "tasks.progress", (3,), task_id)
    statuses = [m.get("status") for m in seen]
    assert "PROGRESS" in statuses and statuses[-1] == "SUCCESS", statuses
    # The worker publishes the latest update in flight (a fast task's last one at least), in order.
    progress = [m["result"]["current"] for m in seen if m.get("status") == "PROGRESS"]
    assert progress == sorted(set(progress)) and set(progress) <= {1, 2, 3}, seen
    assert all(m["result"]["total"] == 3 for m in seen if m.get("status") == "PROGRESS"), seen
    # self.request.id is the Celery task id.
    assert seen[-1]["result"] == task_id, seen
    # logging in the task reaches the worker's log.
    py_worker.wait_for_log("step 3 of 3", timeout=10)


def test_self_retry_runs_the_task_again_with_the_retry_count(py_worker, client):
    assert call(client, "flaky", 2).get(timeout=60) == 2
    # max_retries=2 was declared: a third retry is refused with the task's own exception.
    exc = failure_of(call(client, "flaky", 3))
    assert type(exc) is ValueError, repr(exc)
    assert str(exc) == "attempt 2"


def test_a_task_sends_a_child_and_another_replaces_itself_with_a_chain(py_worker, client):
    parent = call(client, "spawn", 2, 3)
    child_id = parent.get(timeout=60)
    assert client.app.AsyncResult(child_id).get(timeout=60) == 5
    assert client.redis.meta(child_id)["parent_id"] == parent.id
    # add.s(4, 1) | mul.s(10), named with the component's prefix (tasks.add, tasks.mul).
    assert call(client, "replaced", 4).get(timeout=60) == 50


def test_a_task_reads_its_delivery_info_and_can_be_ignored(py_worker, client):
    assert call(client, "routing").get(timeout=60) == "celery"
    r = call(client, "routing", ignore=True)
    py_worker.wait_for_log(rf"Task tasks\.routing\[{r.id}\] ignored", timeout=60)
    assert client.redis.meta(r.id) is None


def test_declared_autoretry_for_retries_a_key_error_then_fails_with_it(py_worker, client):
    result = call(client, "declared", "b")
    exc = failure_of(result)
    assert type(exc) is KeyError, repr(exc)
    py_worker.wait_for_log(re.escape(f"tasks.declared[{result.id}] retry: Retry in 0s: KeyError"), timeout=10)
    assert call(client, "declared", "a").get(timeout=30) == 1


# --- the SDK on plain CPython (a project's own unit tests import it the same way) ---

# (the ``sdk`` fixture: tests/conftest.py)

def test_decorated_tasks_stay_callable_outside_a_component_and_refuse_unknown_options(sdk):
    @sdk.task
    def add(x, y):
        return x + y

    @sdk.task(bind=True, name="renamed", max_retries=5, autoretry_for=(KeyError,))
    def bound(self, x):
        return (self.name, self.max_retries, x)

    assert add(2, 3) == 5
    assert bound(1) == ("renamed", 5, 1)
    assert sorted(sdk.REGISTRY) == ["add", "renamed"]
    with pytest.raises(TypeError, match="unexpected option"):
        sdk.task(retry_policy={})(lambda: None)
    # The worker is only reachable from inside a component.
    with pytest.raises(RuntimeError, match="inside a task component"):
        bound.request
    with pytest.raises(RuntimeError, match="inside a task component"):
        sdk.config("api_key")
    with pytest.raises(sdk.Retry) as info:
        bound.retry(countdown=2, exc=ValueError("x"))
    assert info.value.countdown == 2 and isinstance(info.value.exc, ValueError)


def test_celeriac_http_responses_read_like_requests_and_requests_need_the_worker(sdk):
    import importlib
    http = importlib.import_module("celeriac.http")
    latin = {"content-type": "text/plain; charset=latin-1"}
    r = http.Response("GET", "http://h/x", 200, latin, "caf\xe9".encode("latin-1"))
    assert (r.ok, r.text, repr(r)) == (True, "caf\xe9", "<Response [200]>")
    r.raise_for_status()
    r = http.Response("POST", "http://h/y", 503, {"content-type": "application/json"}, b'{"retry": true}')
    assert not r.ok and r.json() == {"retry": True}
    with pytest.raises(http.HTTPError, match="^503 Server Error for url: http://h/y$") as info:
        r.raise_for_status()
    assert info.value.response is r
    with pytest.raises(RuntimeError, match="inside a task component"):
        http.get("http://h/")
