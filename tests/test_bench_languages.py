"""The per-language benchmark's own plumbing: `bench/languages.py` and the
`celeriac-bench sandbox` options it relies on.

Why this exists: the per-language table (issue #12) is read by people deciding
whether a Python task belongs in Celeriac; a harness that silently drops a
language, or a micro-benchmark that accepts a wrong answer, would mislead them.
These tests check that a language without a component is reported as "not
built", that other directories under target/lang-tasks are picked up, and that
`celeriac-bench sandbox --args/--expect` checks every result. Nothing here
measures speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import languages  # noqa: E402
from conftest import bench_binary  # noqa: E402


def test_a_language_without_a_component_is_listed_as_not_built_and_others_are_discovered(tmp_path, monkeypatch):
    monkeypatch.setattr(languages, "LANG_DIR", tmp_path)
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "tasks.wasm").write_bytes(b"\0asm")
    (tmp_path / "ocaml").mkdir()  # not a known language, still listed
    found = languages.languages(None)
    assert found[: len(languages.KNOWN)] == list(languages.KNOWN)
    assert "ocaml" in found
    assert languages.languages(["python", "ocaml"]) == ["python", "ocaml"]
    assert languages.component_dir("python") == tmp_path / "python"
    assert languages.component_dir("rust") == REPO / "target" / "tasks"


def test_the_table_shows_figures_for_built_languages_and_not_built_for_the_rest():
    report = {
        "meta": {"python": "3.11.7", "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [1.0, 1.0, 1.0]},
        "config": {"n": 20000, "repeat": 1, "micro_n": 2000, "concurrency": 2, "kept": 1000},
        "languages": [
            {"language": "python", "status": "ok", "size_bytes": 18_417_538,
             "micro": {"load_ms": 13430.0, "cached_load_ms": 121.1, "p50_us": 1109.4, "p99_us": 5300.0,
                       "cpu_us_per_call": 1127.0, "minflt_per_call": 124.0},
             "drain": {"tasks_per_s": 670.2, "worker_cpu_us_per_task": 1390.0},
             "kept": {"micro": {"load_ms": 13000.0, "cached_load_ms": 120.0, "p50_us": 16.3, "p99_us": 42.9,
                                "cpu_us_per_call": 19.0, "minflt_per_call": 0.2},
                      "drain": {"tasks_per_s": 4321.0, "worker_cpu_us_per_task": 150.0}}},
            {"language": "zig", "status": "not built"},
        ],
        "celery": {"tasks_per_s": 683.0, "worker_cpu_us_per_task": 1218.0},
    }
    table = languages.render(report)
    python_row = next(line for line in table.splitlines() if line.startswith("python"))
    assert "18.42 MB" in python_row and "13.43" in python_row and "1109" in python_row and "670" in python_row
    kept_row = next(line for line in table.splitlines() if line.startswith("python kept"))
    assert "16" in kept_row.split() and "4,321" in kept_row.split(), kept_row
    assert "up to 1000 calls" in table
    assert any(line.split() == ["zig", "not", "built"] for line in table.splitlines())
    assert any(line.startswith("celery -c2") and "683" in line for line in table.splitlines())


@pytest.mark.skipif(bench_binary() is None, reason="celeriac-bench is not built (cargo build -p celeriac-bench)")
@pytest.mark.skipif(not (REPO / "target" / "tasks" / "tasks.wasm").exists(), reason="make tasks has not run")
def test_the_sandbox_benchmark_checks_every_result_of_a_task_called_with_given_arguments():
    exe = bench_binary()
    base = [str(exe), "sandbox", "-A", str(REPO / "target" / "tasks"), "--task", "tasks.add", "--n", "20",
            "--configs", "pooling-fuel", "--args", "[2, 3]"]
    ok = subprocess.run([*base, "--expect", "5", "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)["results"][0]
    assert result["calls"] == 20
    assert result["minflt_per_call"] >= 0 and result["cached_load_ms"] > 0 and result["p50_us"] > 0
    wrong = subprocess.run([*base, "--expect", "6", "--json"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0
    assert "returned 5, expected 6" in wrong.stderr
    # Kept instances: still every result checked.
    kept = subprocess.run([*base, "--expect", "6", "--max-calls-per-instance", "10", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert kept.returncode != 0
    assert "returned 5, expected 6" in kept.stderr
