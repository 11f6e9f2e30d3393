"""C tasks (issue #12): example-tasks/c built by ``celeriac build`` (clang + wasi-libc,
bindings and component encoding inside celeriac) through a worker and a stock Celery
client, and a C project from ``celeriac new``. Shared checks: tests/lang_native.py.
"""

import pytest

import lang_native as ln
from conftest import REPO_ROOT

pytestmark = pytest.mark.celeriac_only

SOURCE = REPO_ROOT / "example-tasks" / "c" / "tasks.c"


@pytest.fixture(scope="module")
def c_worker(module_worker_factory, tmp_path_factory):
    app = ln.build_example("c", tmp_path_factory.mktemp("c-tasks"))
    return module_worker_factory(app=app, concurrency=2, ready_timeout=ln.COMPILE_TIMEOUT)


def test_first_steps_tasks_in_c_answer_like_celerys(c_worker, client):
    ln.first_steps_answer_like_celerys(client)


def test_a_c_task_called_with_a_wrong_argument_count_raises_type_error(c_worker, client):
    ln.wrong_arguments_are_type_errors(c_worker, client)


def test_a_c_task_given_a_string_for_a_number_raises_type_error_naming_the_types(c_worker, client):
    exc = ln.failure_of(ln.call(client, "mul", "a", 2))
    assert type(exc) is TypeError, repr(exc)
    assert str(exc) == "mul() argument 1 must be int or float, not str"


def test_a_c_task_that_declares_kwargs_reads_keyword_arguments(c_worker, client):
    assert ln.call(client, "scale", 3).get(timeout=30) == 6
    assert ln.call(client, "scale", 3, factor=5).get(timeout=30) == 15
    assert ln.call(client, "scale", 3, 4).get(timeout=30) == 12
    exc = ln.failure_of(ln.call(client, "scale", 3, 4, 5))
    assert type(exc) is TypeError, repr(exc)
    assert str(exc) == "scale() takes 2 positional arguments but 3 were given"


def test_a_c_task_retries_itself_then_fails_with_its_exception_past_max_retries(c_worker, client):
    assert ln.call(client, "flaky", 2).get(timeout=60) == 2
    exc = ln.failure_of(ln.call(client, "flaky", 3))
    assert type(exc) is ValueError, repr(exc)
    assert str(exc) == "attempt 2"


def test_a_value_error_raised_in_c_is_a_builtin_value_error_naming_the_c_file_line_and_function(c_worker, client):
    line = ln.line_of(SOURCE, 'celeriac_raise(ctx, "ValueError", "bad value")')
    ln.value_error_with_frame(c_worker, client, f'File "tasks.c", line {line}, in fail')


def test_a_trap_in_c_is_a_failure_and_the_worker_keeps_serving(c_worker, client):
    ln.crash_is_a_failure(c_worker, client, expect="unreachable")


def test_a_c_project_from_the_template_builds_and_serves_add(tmp_path, worker, client):
    ln.new_build_run_and_serve(tmp_path, worker, client, "c", "tasks.c", '#include "celeriac.h"')


def test_building_c_without_clang_names_the_apt_command(tmp_path):
    ln.missing_toolchain_names_the_install_command(
        tmp_path, {"tasks.c": '#include "celeriac.h"\n'}, "apt-get install -y clang lld wasi-libc")
