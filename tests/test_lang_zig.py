"""Zig tasks (issue #12): example-tasks/zig built by ``celeriac build`` (ziglang from
PyPI, through the C bindings and sdk-c/celeriac.h) through a worker and a stock Celery
client, and a Zig project from ``celeriac new``. Shared checks: tests/lang_native.py.
"""

import pytest

import lang_native as ln
from conftest import REPO_ROOT

pytestmark = pytest.mark.celeriac_only

SOURCE = REPO_ROOT / "example-tasks" / "zig" / "tasks.zig"


@pytest.fixture(scope="module")
def zig_worker(module_worker_factory, tmp_path_factory):
    app = ln.build_example("zig", tmp_path_factory.mktemp("zig-tasks"))
    return module_worker_factory(app=app, concurrency=2, ready_timeout=ln.COMPILE_TIMEOUT)


@pytest.mark.timeout(600)  # the first Zig build on a machine compiles Zig's translate-c and wasi-libc (~1-2 min)
def test_first_steps_tasks_in_zig_answer_like_celerys(zig_worker, client):
    ln.first_steps_answer_like_celerys(client)


def test_a_zig_task_called_with_a_wrong_argument_count_raises_type_error(zig_worker, client):
    ln.wrong_arguments_are_type_errors(zig_worker, client)


def test_a_value_error_raised_in_zig_is_a_builtin_value_error_naming_the_zig_file_line_and_function(
        zig_worker, client):
    line = ln.line_of(SOURCE, 'raise(ctx, "ValueError", "bad value", @src());')
    ln.value_error_with_frame(zig_worker, client, f'File "tasks.zig", line {line}, in fail')


def test_a_trap_in_zig_is_a_failure_and_the_worker_keeps_serving(zig_worker, client):
    ln.crash_is_a_failure(zig_worker, client, expect="unreachable")


@pytest.mark.timeout(600)
def test_a_zig_project_from_the_template_builds_and_serves_add(tmp_path, worker, client):
    ln.new_build_run_and_serve(tmp_path, worker, client, "zig", "tasks.zig", '@import("celeriac")')


def test_building_zig_without_zig_names_the_pip_command(tmp_path):
    ln.missing_toolchain_names_the_install_command(
        tmp_path, {"tasks.zig": 'const c = @import("celeriac");\n'}, "pip install ziglang==0.17.1")
