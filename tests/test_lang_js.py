"""JavaScript tasks (issue #12): example-tasks/js built by ``celeriac build``
(componentize-qjs, QuickJS) through a worker and a stock Celery client, and a JS
project from ``celeriac new``. Shared checks: tests/lang_native.py.
"""

import re

import pytest

import lang_native as ln
from conftest import REPO_ROOT, new_task_id

pytestmark = pytest.mark.celeriac_only

SOURCE = REPO_ROOT / "example-tasks" / "js" / "tasks.js"


@pytest.fixture(scope="module")
def js_worker(module_worker_factory, tmp_path_factory):
    app = ln.build_example("js", tmp_path_factory.mktemp("js-tasks"))
    return module_worker_factory(app=app, concurrency=2, ready_timeout=ln.COMPILE_TIMEOUT)


@pytest.mark.timeout(300)  # the worker's first start compiles the 1.6 MB QuickJS component
def test_first_steps_tasks_in_js_answer_like_celerys(js_worker, client):
    ln.first_steps_answer_like_celerys(client)
    # JS's + on strings concatenates, as Python's does.
    assert ln.call(client, "add", "a", "b").get(timeout=30) == "ab"


def test_a_js_task_called_with_a_wrong_argument_count_raises_type_error(js_worker, client):
    ln.wrong_arguments_are_type_errors(js_worker, client)
    exc = ln.failure_of(ln.call(client, "add", 4))
    assert type(exc) is TypeError, repr(exc)
    assert str(exc) == "add() missing 1 required positional argument"


def test_a_thrown_value_error_is_a_builtin_value_error_with_the_js_stack(js_worker, client):
    line = ln.line_of(SOURCE, 'throw new ValueError("bad value");')
    ln.value_error_with_frame(js_worker, client, f"at fail (tasks.js:{line}:")


def test_an_error_class_of_the_task_keeps_its_name_and_arguments(js_worker, client):
    exc = ln.failure_of(ln.call(client, "lookup", 42))
    assert type(exc).__name__ == "InvoiceNotFound", repr(exc)
    assert exc.args == ("no invoice 42", 42)


def test_a_js_task_reports_progress_logs_and_reads_its_request(js_worker, client):
    task_id = new_task_id()
    seen = ln.published_states(client, "tasks.progress", (3,), task_id)
    # updateState() is published as PROGRESS (the latest in flight at least), then SUCCESS.
    progress = [m["result"] for m in seen if m.get("status") == "PROGRESS"]
    assert progress and all(p["total"] == 3 and 1 <= p["current"] <= 3 for p in progress), seen
    assert seen[-1].get("status") == "SUCCESS", seen
    # request().id is the Celery task id.
    assert seen[-1]["result"] == task_id, seen
    js_worker.wait_for_log("step 3 of 3", timeout=10)
    assert js_worker.count(re.escape(f"tasks.progress[{task_id}]: step")) == 3


def test_a_js_task_retries_itself_then_fails_with_its_exception_past_max_retries(js_worker, client):
    assert ln.call(client, "flaky", 2).get(timeout=60) == 2
    exc = ln.failure_of(ln.call(client, "flaky", 3))
    assert type(exc) is ValueError, repr(exc)
    assert str(exc) == "attempt 2"


def test_a_js_task_that_exhausts_its_memory_fails_and_the_worker_keeps_serving(js_worker, client):
    ln.crash_is_a_failure(js_worker, client, expect="MemoryError")


@pytest.mark.timeout(300)
def test_a_js_project_from_the_template_builds_and_serves_add(tmp_path, worker, client):
    ln.new_build_run_and_serve(tmp_path, worker, client, "js", "tasks.js", 'from "celeriac"')


def test_building_js_without_componentize_qjs_names_the_npm_command(tmp_path):
    ln.missing_toolchain_names_the_install_command(
        tmp_path, {"package.json": '{"main": "tasks.js"}', "tasks.js": ""}, "npm install")
