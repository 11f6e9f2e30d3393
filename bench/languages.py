#!/usr/bin/env python3
"""The per-language table: the same `add` task built in every guest language,
measured in one run, next to Celery prefork -c2 running `add` natively in Python.

Why this exists: Celeriac runs each task call in a fresh WebAssembly instance.
For a small compiled guest (Rust, C, Zig) that costs microseconds; for a big
pre-initialised interpreter (componentize-py's CPython, QuickJS) it is the
cost that decides whether a Python task is slower in Celeriac than in Celery
itself (issue #12). This script puts the languages side by side, on the same
machine, in the same run (run it through ``bench/run.sh --languages``).

For each language whose component exists (``target/tasks/tasks.wasm`` for Rust,
``target/lang-tasks/<lang>/tasks.wasm`` for the others, built by each SDK's
build step; a missing one is listed as "not built"), it reports:

* the component's size;
* compile time: ``celeriac-bench sandbox`` loading it into an empty cache
  (Cranelift, the worker's default engine: pooling + fuel);
* cached load time: a new sandbox loading it from that cache (a worker restart);
* instantiate + call µs of ``add(i, i)`` through the real ``Sandbox::call``
  (p50 and p99 over ``--micro-n`` calls, one core), with CPU µs and minor
  page faults per call;
* drain of N (default 20,000) ``add`` messages with results stored, through
  ``celeriac worker -c 2`` and the Redis/Celery machinery of ``bench/bench.py``
  (same client, same phases, same Redis); the worker's compile cache is warmed
  first (``celeriac tasks``) so the drain measures running, not compiling.

With ``--kept N`` (default 1000; 1 skips it) every language gets a second row,
``<lang> kept``: the same figures with the task keeping its instance for up to
N calls (``max_calls_per_instance``, the worker's opt-in for trusted tasks, as
a Celery prefork child keeps its process), so instantiation is paid once per N
calls instead of once per call.

The reference row is Celery prefork -c2 draining the same N ``add`` messages
(``bench/benchtasks.py``: ``return x + y`` in CPython). Nothing is asserted: it
reports, and writes the raw figures to ``bench/results/languages-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the drain machinery: RedisServer, Suite, PROCS, build)

ROOT = bench.ROOT
LANG_DIR = ROOT / "target" / "lang-tasks"
# Languages in table order; Rust's component is the example built by `make tasks`.
KNOWN = ("rust", "python", "js", "c", "zig", "go")


def component_dir(lang: str) -> Path:
    """Where a language's `tasks.wasm` lives (the directory given to `-A`)."""
    return bench.TASKS_DIR if lang == "rust" else LANG_DIR / lang


def languages(wanted: list[str] | None) -> list[str]:
    """The known languages plus any other directory under target/lang-tasks."""
    found = list(KNOWN)
    if LANG_DIR.is_dir():
        found += sorted(d.name for d in LANG_DIR.iterdir() if d.is_dir() and d.name not in KNOWN)
    return [lang for lang in found if not wanted or lang in wanted]


def micro(lang: str, n: int, kept: int = 1) -> dict:
    """`celeriac-bench sandbox` on the language's component: compile, cached
    load, and instantiate + call of `add(i, i)` (pooling + fuel, the worker's engine);
    with `kept` > 1, an instance serves up to `kept` calls."""
    cmd = [str(bench.CELERIAC_BENCH), "sandbox", "-A", str(component_dir(lang)), "--task", "tasks.add",
           "--n", str(n), "--configs", "pooling-fuel", "--max-calls-per-instance", str(kept), "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LOG")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise bench.PhaseError(f"celeriac-bench sandbox failed for {lang}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)["results"][0]


def warm_cache(lang: str, cache: Path) -> float:
    """Compiles the component into the worker's cache (`celeriac tasks`); seconds."""
    t = time.monotonic()
    r = subprocess.run([str(bench.CELERIAC), "tasks", "-A", str(component_dir(lang)), "--cache-dir", str(cache)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise bench.PhaseError(f"celeriac tasks failed for {lang}:\n{r.stderr[-2000:]}")
    return time.monotonic() - t


def drains(kind: str, server, args, logdir: Path, tasks_dir: Path | None = None,
           cache: Path | None = None, kept: int = 1) -> dict:
    """`--repeat` drains of N `add` with results; median tasks/s and the raw runs."""
    extra = ("--cache-dir", str(cache)) if cache else ()
    if kept > 1:
        extra = (*extra, "--max-calls-per-instance", str(kept))
    runs = []
    for _ in range(args.repeat):
        suite = bench.Suite(kind, server, args, logdir, sys.executable, tasks_dir=tasks_dir or bench.TASKS_DIR,
                            worker_args=extra)
        out, _ = suite.drain(ignore_result=False, keep_running=False)
        runs.append(out)
    return {"tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs),
            "worker_cpu_us_per_task": statistics.median(r["worker_cpu_us_per_task"] for r in runs),
            "runs": runs}


def render(report: dict) -> str:
    """The table: one row per language, Celery's drain as the reference row."""
    n = report["config"]["n"]
    head = (f"{'language':<12} {'size':>9} {'compile s':>9} {'cached ms':>9} {'p50 µs':>8} {'p99 µs':>8} "
            f"{'cpu µs':>8} {'minflt':>7} {f'drain {n:,} add/s':>18} {'worker cpu µs/task':>18}")
    lines = [f"Per-language table: add(i, i); instantiate + call through Sandbox::call (pooling + fuel, "
             f"{report['config']['micro_n']} calls, one core); drain with results, -c {report['config']['concurrency']}, "
             f"median of {report['config']['repeat']}", head, "-" * len(head)]
    fmt = lambda v, f: f.format(v) if v is not None else "-"  # noqa: E731

    def figures(label: str, size: str, m: dict, d: dict) -> str:
        return (f"{label:<12} {size:>9} {fmt(m.get('load_ms') and m['load_ms'] / 1e3, '{:.2f}'):>9} "
                f"{fmt(m.get('cached_load_ms'), '{:.1f}'):>9} {fmt(m.get('p50_us'), '{:.0f}'):>8} "
                f"{fmt(m.get('p99_us'), '{:.0f}'):>8} {fmt(m.get('cpu_us_per_call'), '{:.0f}'):>8} "
                f"{fmt(m.get('minflt_per_call'), '{:.0f}'):>7} {fmt(d.get('tasks_per_s'), '{:,.0f}'):>18} "
                f"{fmt(d.get('worker_cpu_us_per_task'), '{:.0f}'):>18}")

    for row in report["languages"]:
        lang = row["language"]
        if row.get("status") != "ok":
            lines.append(f"{lang:<12} {row.get('status', '?')}")
            continue
        size = f"{row['size_bytes'] / 1e6:.2f} MB" if row["size_bytes"] >= 1e6 else f"{row['size_bytes'] / 1e3:.0f} KB"
        lines.append(figures(lang, size, row.get("micro") or {}, row.get("drain") or {}))
        if row.get("kept"):
            k = row["kept"]
            lines.append(figures(f"{lang} kept", "", k.get("micro") or {}, k.get("drain") or {}))
        if row.get("error"):
            lines.append(f"{'':<12} error: {row['error'].splitlines()[0][:150]}")
    if report["config"].get("kept", 1) > 1:
        lines.append(f"kept: an instance serves up to {report['config']['kept']} calls of the task "
                     f"(max_calls_per_instance; the first row: a fresh instance per call)")
    c = report.get("celery")
    if c:
        lines.append(f"{'celery -c2':<12} {'(CPython ' + report['meta']['python'] + ', prefork, add natively)':<63} "
                     f"{c['tasks_per_s']:>18,.0f} {c['worker_cpu_us_per_task']:>18.0f}")
    lines.append(f"load average {report['meta']['loadavg_start']} -> {report['meta'].get('loadavg_end')}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Per-language table (see bench/README.md, 'Interpreter guests').")
    ap.add_argument("--n", type=int, default=20000, help="messages per drain (default 20000)")
    ap.add_argument("--repeat", type=int, default=1, help="drains per worker; the median is shown (default 1)")
    ap.add_argument("--micro-n", type=int, default=2000, help="instantiate + call samples per language (default 2000)")
    ap.add_argument("--languages", default="", help="comma-separated subset (default: every known language)")
    ap.add_argument("--no-drain", action="store_true", help="sandbox figures only (no Redis, no workers)")
    ap.add_argument("--no-celery", action="store_true", help="skip the Celery prefork reference drain")
    ap.add_argument("--no-build", action="store_true", help="use the existing release build and target/tasks")
    ap.add_argument("--kept", type=int, default=1000,
                    help="also measure with max_calls_per_instance = KEPT (default 1000; 1: skip)")
    ap.add_argument("--concurrency", "-c", type=int, default=2)
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--stall", type=float, default=60.0, help="give a drain up after this many seconds without progress")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.n < 1 or a.repeat < 1 or a.micro_n < 1:
        ap.error("--n, --repeat and --micro-n must be at least 1")
    a.languages = [x.strip() for x in a.languages.split(",") if x.strip()]
    return a


def main() -> int:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, bench._on_signal)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = args.out or bench.RESULTS / f"languages-{stamp}.json"
    logdir = bench.RESULTS / f"languages-{stamp}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        bench.build()
    report: dict = {"meta": {"timestamp": stamp, "cpus": os.cpu_count(), "python": platform.python_version(),
                             "git_commit": bench.git("rev-parse", "--short", "HEAD"), "loadavg_start": bench.loadavg()},
                    "config": {"n": args.n, "repeat": args.repeat, "micro_n": args.micro_n,
                               "concurrency": args.concurrency, "kept": args.kept}, "languages": [], "errors": []}
    todo = []
    for lang in languages(args.languages):
        wasm = component_dir(lang) / "tasks.wasm"
        if not wasm.is_file():
            report["languages"].append({"language": lang, "status": "not built", "path": str(wasm)})
            continue
        row = {"language": lang, "status": "ok", "path": str(wasm), "size_bytes": wasm.stat().st_size}
        report["languages"].append(row)
        todo.append(row)
    for row in todo:
        bench.log(f"{row['language']}: sandbox micro-benchmark (compile, cached load, {args.micro_n} calls)")
        try:
            row["micro"] = micro(row["language"], args.micro_n)
            if args.kept > 1:
                row["kept"] = {"micro": micro(row["language"], args.micro_n, args.kept)}
        except bench.PhaseError as e:
            row["error"] = str(e)
            report["errors"].append(f"{row['language']}: {e}")
    server = None
    cache = Path(tempfile.mkdtemp(prefix="celeriac-languages-cache-"))
    try:
        if not args.no_drain:
            if not shutil.which("redis-server"):
                sys.exit("redis-server not found: run bench/run.sh --languages (it installs it)")
            server = bench.RedisServer(logdir)
            bench.log(f"{server.name} {server.version} at {server.broker_url}; logs in {logdir}")
            if not args.no_celery:
                bench.log(f"Celery prefork -c{args.concurrency}: drain {args.n}")
                try:
                    report["celery"] = drains("celery", server, args, logdir)
                except bench.PhaseError as e:
                    report["errors"].append(f"celery: {e}")
            for row in todo:
                if row.get("error"):
                    continue
                lang = row["language"]
                try:
                    bench.log(f"{lang}: warming the worker's compile cache")
                    row["warm_cache_s"] = warm_cache(lang, cache)
                    bench.log(f"{lang}: celeriac worker -c{args.concurrency}: drain {args.n}")
                    row["drain"] = drains("celeriac", server, args, logdir, component_dir(lang), cache)
                    if args.kept > 1:
                        bench.log(f"{lang}: kept instances (max_calls_per_instance {args.kept}): drain {args.n}")
                        row["kept"]["drain"] = drains("celeriac", server, args, logdir, component_dir(lang), cache,
                                                      kept=args.kept)
                except bench.PhaseError as e:
                    row["error"] = str(e)
                    report["errors"].append(f"{lang}: {e}")
    finally:
        report["meta"]["loadavg_end"] = bench.loadavg()
        if server:
            server.stop()
        shutil.rmtree(cache, ignore_errors=True)
        out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {out_path}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.log("interrupted: stopping every process the harness started")
        sys.exit(130)
