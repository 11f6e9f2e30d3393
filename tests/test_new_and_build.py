"""``celeriac new`` + ``celeriac build`` (issue #12): a template becomes a component that ``celeriac run`` and a worker serve.

Each test scaffolds in its own temp dir. The toolchains come from
``scripts/install-toolchains.sh`` (cargo with wasm32-wasip2; componentize-py
in the repository's ``.venv``, put on PATH here as the Makefile does). Rust
projects build with ``CARGO_TARGET_DIR=target/test-new-rust`` so that only
the first run compiles the SDK's dependencies (~1 min). The worker's compiled
component cache (~/.cache/celeriac) makes the worker start after ``celeriac
run`` cheap.
"""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import CELERIAC_BIN, REPO_ROOT, _base_env

pytestmark = pytest.mark.celeriac_only

VENV_BIN = REPO_ROOT / ".venv" / "bin"
RUST_TARGET_DIR = REPO_ROOT / "target" / "test-new-rust"
COMPILE_TIMEOUT = 240.0


def celeriac(*args, cwd: Path, path: str | None = None, timeout: float = 600.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not CELERIAC_BIN.exists():
        pytest.fail(f"celeriac binary not found at {CELERIAC_BIN}", pytrace=False)
    extra = {"PATH": path if path is not None else f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
             "CARGO_TARGET_DIR": str(RUST_TARGET_DIR), **(env or {})}
    return subprocess.run([str(CELERIAC_BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_base_env(extra), stdin=subprocess.DEVNULL)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"{p.args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def serves_add_through_run_and_a_worker(tmp_path, worker, client, app_dir: Path, name: str) -> None:
    run = ok(celeriac("run", "-A", str(app_dir), f"{name}.add", "4", "4", cwd=tmp_path, timeout=COMPILE_TIMEOUT))
    assert run.stdout.strip() == "8", run
    worker(app=app_dir, ready_timeout=COMPILE_TIMEOUT)
    assert client.app.send_task(f"{name}.add", args=(4, 4)).get(timeout=COMPILE_TIMEOUT) == 8
    with pytest.raises(TypeError):
        client.app.send_task(f"{name}.add", args=(4, 4, 4)).get(timeout=60)


def test_a_python_project_from_the_template_builds_and_serves_add(tmp_path, worker, client):
    ok(celeriac("new", "t", "--lang", "python", cwd=tmp_path))
    assert "from celeriac import" in (tmp_path / "t" / "tasks.py").read_text()
    # The example: celeriac new t --lang python && celeriac build t -o out/t.wasm && celeriac run -A out t.add 4 4
    build = ok(celeriac("build", "t", "-o", "out/t.wasm", cwd=tmp_path))
    assert "built out/t.wasm" in build.stderr, build.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t.wasm"], "no temporary file is left"
    serves_add_through_run_and_a_worker(tmp_path, worker, client, tmp_path / "out", "t")


def test_a_rust_project_from_the_template_builds_into_dist_and_serves_add(tmp_path, worker, client):
    ok(celeriac("new", "rt", "--lang", "rust", cwd=tmp_path))
    cargo_toml = (tmp_path / "rt" / "Cargo.toml").read_text()
    assert f'celeriac-sdk = {{ path = "{(REPO_ROOT / "sdk").resolve()}" }}' in cargo_toml, cargo_toml
    ok(celeriac("build", "rt", cwd=tmp_path))
    assert (tmp_path / "rt" / "dist" / "rt.wasm").is_file()
    serves_add_through_run_and_a_worker(tmp_path, worker, client, tmp_path / "rt" / "dist", "rt")


@pytest.mark.parametrize("lang, tool, install", [
    ("python", "componentize-py", "pip install componentize-py==0.25.1"),
    ("rust", "cargo", "https://sh.rustup.rs"),
])
def test_a_missing_toolchain_is_a_clear_error_with_the_install_command(tmp_path, lang, tool, install):
    ok(celeriac("new", "p", "--lang", lang, cwd=tmp_path))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    p = celeriac("build", "p", cwd=tmp_path, path=str(empty))
    assert p.returncode == 2, p
    assert f"{tool} is not installed; install it with: " in p.stderr, p.stderr
    assert install in p.stderr, p.stderr
    assert not (tmp_path / "p" / "dist").exists() or not any((tmp_path / "p" / "dist").iterdir())


def test_a_python_task_with_a_syntax_error_fails_the_build_with_the_tools_message(tmp_path):
    ok(celeriac("new", "bad", "--lang", "python", cwd=tmp_path))
    (tmp_path / "bad" / "tasks.py").write_text("from celeriac import task\n\n@task\ndef add(x, y)\n    return x + y\n")
    p = celeriac("build", "bad", cwd=tmp_path, timeout=COMPILE_TIMEOUT)
    assert p.returncode == 2, p
    assert "componentize" in p.stderr and "failed" in p.stderr, p.stderr
    assert "SyntaxError" in p.stderr, p.stderr
    assert not (tmp_path / "bad" / "dist" / "bad.wasm").exists()


def test_build_names_what_it_looked_for_in_a_directory_that_is_no_project(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hello\n")
    p = celeriac("build", "notes", cwd=tmp_path)
    assert p.returncode == 2, p
    assert "is not a task project" in p.stderr and "celeriac new NAME --lang" in p.stderr, p.stderr


def test_new_refuses_to_write_into_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "mine.py").write_text("x = 1\n")
    p = celeriac("new", "t", "--lang", "python", cwd=tmp_path)
    assert p.returncode == 2, p
    assert "already exists and is not empty" in p.stderr, p.stderr
    assert sorted(x.name for x in (tmp_path / "t").iterdir()) == ["mine.py"]
