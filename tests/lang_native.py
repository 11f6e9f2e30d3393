"""Shared checks of tests/test_lang_{c,zig,js,python}.py (issue #12): a language's example
component through a celeriac worker and a stock Celery client, and a project from
``celeriac new`` built with ``celeriac build``.

Each test module builds ``example-tasks/<lang>`` with ``celeriac build`` into its
own temp dir (C ~1 s, JS ~2 s, Zig ~1 s once Zig's wasi-libc is cached, 1-2 min
before), so the tests check the build too. A missing toolchain fails the test in
CI (``CI`` set: .ci/run installs them with scripts/install-toolchains.sh) and
skips it locally, with the install command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CELERIAC_BIN, REPO_ROOT, _base_env

VENV_BIN = REPO_ROOT / ".venv" / "bin"
JS_BIN = REPO_ROOT / "example-tasks" / "js" / "node_modules" / ".bin"
#: A worker's first start compiles the component (QuickJS: a few seconds in a debug build).
COMPILE_TIMEOUT = 240.0


def tool_path() -> str:
    """PATH for celeriac build: the repository's .venv/bin (python3 with ziglang) and
    the example's node_modules/.bin (componentize-qjs) first, as the Makefile does."""
    return os.pathsep.join([str(VENV_BIN), str(JS_BIN), os.environ.get("PATH", "")])


def missing_toolchain(lang: str) -> str | None:
    """The install command when `lang`'s toolchain is not there, else None."""
    path = tool_path()
    if lang == "c":
        if shutil.which("clang", path=path) and Path("/usr/include/wasm32-wasi/stdlib.h").exists():
            return None
        return "bash scripts/install-toolchains.sh c"
    if lang == "zig":
        if shutil.which("zig", path=path):
            return None
        python = VENV_BIN / "python"
        if python.exists() and subprocess.run([str(python), "-m", "ziglang", "version"],
                                              capture_output=True).returncode == 0:
            return None
        return "bash scripts/install-toolchains.sh zig"
    if lang == "js":
        return None if shutil.which("componentize-qjs", path=path) else "bash scripts/install-toolchains.sh js"
    raise ValueError(lang)


def require_toolchain(lang: str) -> None:
    install = missing_toolchain(lang)
    if install is None:
        return
    message = f"the {lang} toolchain is not installed: {install}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def celeriac(*args, cwd: Path, path: str | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
    if not CELERIAC_BIN.exists():
        pytest.fail(f"celeriac binary not found at {CELERIAC_BIN}", pytrace=False)
    env = _base_env({"PATH": path if path is not None else tool_path()})
    if path is not None:
        env.pop("VIRTUAL_ENV", None)  # an active virtualenv's python is one more place zig is looked for
    return subprocess.run([str(CELERIAC_BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"{p.args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def build_example(lang: str, out_dir: Path) -> Path:
    """``celeriac build example-tasks/<lang> -o OUT_DIR/tasks.wasm``; returns OUT_DIR."""
    require_toolchain(lang)
    ok(celeriac("build", str(REPO_ROOT / "example-tasks" / lang), "-o", str(out_dir / "tasks.wasm"),
                cwd=out_dir, timeout=600))
    assert (out_dir / "tasks.wasm").read_bytes()[:4] == b"\0asm"
    return out_dir


def call(client, name, *args, **kwargs):
    return client.app.send_task(f"tasks.{name}", args=args, kwargs=kwargs)


def failure_of(result, timeout=60):
    with pytest.raises(Exception) as info:
        result.get(timeout=timeout)
    assert result.state == "FAILURE"
    return info.value


def assert_still_serving(worker, client):
    assert worker.alive, f"worker died (rc={worker.returncode})"
    assert call(client, "add", 20, 22).get(timeout=30) == 42


def published_states(client, task: str, args: tuple, task_id: str, timeout: float = 60) -> list[dict]:
    """Send ``task`` and collect every state published on its result channel
    until ``SUCCESS`` (subscribed first, as a waiting Python client is)."""
    import json
    import time

    pubsub = client.redis.redis(1).pubsub()
    pubsub.subscribe(client.result_key(task_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    seen: list[dict] = []
    try:
        client.app.send_task(task, args=args, task_id=task_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(m.get("status") == "SUCCESS" for m in seen):
            msg = pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "message":
                seen.append(json.loads(msg["data"]))
    finally:
        pubsub.close()
    return seen


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of `path` that contains `needle` (exactly one)."""
    lines = [i for i, text in enumerate(path.read_text().splitlines(), 1) if needle in text]
    assert len(lines) == 1, f"{needle!r} in {path}: lines {lines}"
    return lines[0]


# --- the checks every language's test module runs --------------------------------

def first_steps_answer_like_celerys(client):
    assert call(client, "add", 4, 4).get(timeout=60) == 8
    assert call(client, "mul", 6, 7).get(timeout=30) == 42
    assert call(client, "xsum", [1, 2, 3.5]).get(timeout=30) == 6.5
    assert call(client, "xsum", [1, 2, 3]).get(timeout=30) == 6
    assert call(client, "add", 1.5, 2).get(timeout=30) == 3.5


def wrong_arguments_are_type_errors(worker, client):
    exc = failure_of(call(client, "add", 4, 4, 4))
    assert type(exc) is TypeError, repr(exc)
    assert str(exc) == "add() takes 2 positional arguments but 3 were given"
    exc = failure_of(call(client, "add", 4, 4, z=1))
    assert type(exc) is TypeError, repr(exc)
    assert "unexpected keyword argument 'z'" in str(exc)
    assert_still_serving(worker, client)


def value_error_with_frame(worker, client, frame: str):
    result = call(client, "fail")
    exc = failure_of(result)
    assert type(exc) is ValueError, repr(exc)
    assert exc.args == ("bad value",)
    tb = result.traceback or ""
    assert frame in tb, f"{frame!r} not in the traceback:\n{tb}"
    assert "ValueError: bad value" in tb, tb
    assert_still_serving(worker, client)


def crash_is_a_failure(worker, client, *, expect: str):
    result = call(client, "crash")
    exc = failure_of(result, timeout=120)
    text = f"{type(exc).__name__}: {exc}\n{result.traceback or ''}"
    assert expect in text, text
    assert_still_serving(worker, client)
    # The next calls run in fresh instances: nothing of the crashed one is left.
    assert call(client, "mul", 3, 3).get(timeout=30) == 9


def new_build_run_and_serve(tmp_path, worker, client, lang: str, template_file: str, needle: str):
    """``celeriac new t --lang L``, ``celeriac build t -o out/t.wasm``, ``celeriac run -A out t.add 4 4``
    prints 8, and a worker serves ``t.add`` to a Celery client (a wrong call is a TypeError)."""
    require_toolchain(lang)
    ok(celeriac("new", "t", "--lang", lang, cwd=tmp_path))
    assert needle in (tmp_path / "t" / template_file).read_text()
    ok(celeriac("build", "t", "-o", "out/t.wasm", cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t.wasm"], "no temporary file is left"
    run = ok(celeriac("run", "-A", "out", "t.add", "4", "4", cwd=tmp_path, timeout=COMPILE_TIMEOUT))
    assert run.stdout.strip() == "8", run
    # A queue of its own: the module's example worker shares the Redis server.
    queue = f"new-{lang}"
    worker(app=tmp_path / "out", queues=queue, ready_timeout=COMPILE_TIMEOUT)
    assert client.app.send_task("t.add", args=(4, 4), queue=queue).get(timeout=COMPILE_TIMEOUT) == 8
    with pytest.raises(TypeError):
        client.app.send_task("t.add", args=(4, 4, 4), queue=queue).get(timeout=60)


def missing_toolchain_names_the_install_command(tmp_path, files: dict[str, str], install: str):
    """With a PATH that has no toolchain, building a project of `files` fails with the command that installs it."""
    project = tmp_path / "p"
    project.mkdir()
    for name, text in files.items():
        (project / name).write_text(text)
    # /bin alone: coreutils and the system python3 (no ziglang), no clang, no zig, no componentize-qjs.
    empty = tmp_path / "bin"
    empty.mkdir()
    p = celeriac("build", str(project), "-o", str(tmp_path / "out" / "t.wasm"), cwd=tmp_path, path=str(empty))
    assert p.returncode != 0, p
    assert "is not installed; install it with:" in p.stderr, p.stderr
    assert install in p.stderr, p.stderr
    assert not (tmp_path / "out" / "t.wasm").exists()
