#!/usr/bin/env python3
"""What ``--sandbox`` costs per test: plain pytest, pytest-forked and the plugin, in one run.

Run it from the repository, as root or as a user (it uses the installed
``supervisor`` package, or the checkout with ``PYTHONPATH``)::

    python benchmarks/pytest_overhead.py               # 200 tests, 5 repetitions
    python benchmarks/pytest_overhead.py --quick       # 50 tests, 1 repetition
    python benchmarks/pytest_overhead.py --json out.json

It writes a project of N trivial tests (``def test_k(): pass``) to a
temporary directory (removed at the end) and times whole pytest processes of
this interpreter on it, each contender's runs beside the others' in every
repetition (the order rotates):

* ``plain``: ``pytest -p no:supervisor``, the tests in-process;
* ``forked``: ``pytest -p no:supervisor --forked`` (pytest-forked: one fork
  per test, no isolation), where pytest-forked is installed and works with
  this pytest (its forks exit 3 on pytest 9: then it is left out, and the
  reason printed);
* ``sandbox``: ``pytest --sandbox``: one container, one fork per test.

Each contender runs once on the N tests and once on one test. Three figures
come of that:

* the **cost of a test in the run loop**: a small plugin of the project
  (``benchclock.py``, loaded with ``-p``) notes when each test's report is
  done in your pytest; the time from the first test's to the last one's,
  divided by N - 1, is what a test costs once the session runs, free of the
  start-up's noise;
* the **marginal cost of a test** from whole processes: the N tests' run
  minus the one test's, divided by N - 1;
* the **session's one-off cost**: the one test's run minus plain pytest's
  (for the sandbox: its container, and the second pytest in it, started and
  collecting).

The sandbox's **overhead per test** is its cost in the run loop minus plain
pytest's. The project's target is at most 10 ms of it; the script prints it
as a PASS or FAIL line and asserts nothing. Every run must pass all its
tests, or the script exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

#: The most overhead per sandboxed test, in ms, the project aims for.
TARGET_MS = 10.0
CONTENDERS = ("plain", "forked", "sandbox")


#: The clock plugin: in the pytest this script started (not a sandbox's), the
#: time each test's protocol ended, written to $SV_BENCH_CLOCK at the end.
CLOCK_PLUGIN = """\
import json, os, sys, time

ENDS = []


def pytest_runtest_logfinish(nodeid, location):
    ENDS.append(time.perf_counter())


def pytest_unconfigure(config):
    if "supervisor._pytest.worker" not in sys.modules:  # not a sandbox's own pytest
        with open(os.environ["SV_BENCH_CLOCK"], "w") as f:
            json.dump(ENDS, f)
"""


def write_project(path: str, n: int) -> None:
    """A directory holding ``test_many.py`` (``n`` tests), ``test_one.py``, the clock and a pytest.ini."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "pytest.ini"), "w") as f:
        f.write("[pytest]\n")
    with open(os.path.join(path, "benchclock.py"), "w") as f:
        f.write(CLOCK_PLUGIN)
    with open(os.path.join(path, "test_many.py"), "w") as f:
        for k in range(n):
            f.write(f"def test_{k}():\n    pass\n\n")
    with open(os.path.join(path, "test_one.py"), "w") as f:
        f.write("def test_0():\n    pass\n")


def command(contender: str, test_file: str) -> list[str]:
    """The pytest command line of ``contender`` on ``test_file``."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchclock", test_file]
    if contender == "plain":
        return [*argv, "-p", "no:supervisor"]
    if contender == "forked":
        return [*argv, "-p", "no:supervisor", "--forked"]
    return [*argv, "--sandbox"]


def env_for_pytest() -> dict[str, str]:
    """This environment, without what would load plugins or change pytest's options."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE_"))}


def run_once(contender: str, project: str, test_file: str, expect: int) -> tuple[float, float | None]:
    """Seconds one pytest process took, and the run loop's ms per test (None for one test).

    Raises:
        RuntimeError: not all ``expect`` tests passed.
    """
    argv = command(contender, test_file)
    clock = os.path.join(os.path.dirname(project), "clock.json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(clock)
    env = {**env_for_pytest(), "SV_BENCH_CLOCK": clock}
    # The clock plugin is imported from the project (whatever puts the
    # current directory on sys.path or not).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or not re.search(rf"\b{expect} passed\b", done.stdout):
        tail = (done.stdout[-1500:] + done.stderr[-1500:]).strip()
        raise RuntimeError(f"{contender}: {' '.join(argv[1:])} exited {done.returncode}:\n{tail}")
    loop_ms = None
    if expect > 1:
        with open(clock) as f:
            ends = json.load(f)
        if len(ends) != expect:
            raise RuntimeError(f"{contender}: the clock saw {len(ends)} tests end, not {expect}")
        loop_ms = (ends[-1] - ends[0]) / (expect - 1) * 1000
    return elapsed, loop_ms


def probe_forked(project: str) -> str | None:
    """Why pytest-forked cannot be measured here, or None if it can."""
    if importlib.util.find_spec("pytest_forked") is None:
        return "pytest-forked is not installed in this environment (pip install pytest-forked)"
    try:
        run_once("forked", project, "test_one.py", 1)
    except RuntimeError as exc:
        import pytest

        return f"pytest-forked does not work with pytest {pytest.__version__} here: {str(exc).splitlines()[-1]}"
    return None


def measure(n: int, reps: int, contenders: list[str], project: str) -> dict[str, dict[str, list[float]]]:
    """``contender -> {"many": [s], "one": [s], "loop_ms": [ms]}`` over ``reps`` repetitions, rotated."""
    times: dict[str, dict[str, list[float]]] = {c: {"many": [], "one": [], "loop_ms": []} for c in contenders}
    for rep in range(reps):
        order = contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]
        for contender in order:
            many, loop_ms = run_once(contender, project, "test_many.py", n)
            one, _ = run_once(contender, project, "test_one.py", 1)
            times[contender]["many"].append(many)
            times[contender]["one"].append(one)
            times[contender]["loop_ms"].append(loop_ms or 0.0)
        line = "  ".join(
            f"{c} {times[c]['many'][-1]:.2f}/{times[c]['one'][-1]:.2f} s {times[c]['loop_ms'][-1]:.2f} ms"
            for c in contenders
        )
        print(f"repetition {rep + 1}/{reps}: {line}  (N tests / one test, a test in the loop)", flush=True)
    return times


def summarize(times: dict[str, dict[str, list[float]]], n: int) -> dict[str, dict[str, float]]:
    """Medians: the runs' seconds, a test's ms in the run loop, and the marginal ms per test."""
    out: dict[str, dict[str, float]] = {}
    for contender, runs in times.items():
        per_rep = [(m - o) / (n - 1) * 1000 for m, o in zip(runs["many"], runs["one"], strict=True)]
        out[contender] = {
            "many_s": statistics.median(runs["many"]),
            "one_s": statistics.median(runs["one"]),
            "loop_ms": statistics.median(runs["loop_ms"]),
            "loop_ms_min": min(runs["loop_ms"]),
            "loop_ms_max": max(runs["loop_ms"]),
            "marginal_ms": statistics.median(per_rep),
            "whole_run_ms": statistics.median(runs["many"]) / n * 1000,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=None, help="trivial tests in the big run (default 200; 50 with --quick)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a short run, for the test suite")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args()
    n = args.n or (50 if args.quick else 200)
    reps = args.reps or (1 if args.quick else 5)
    if n < 2 or reps < 1:
        parser.error("--n must be 2 or more and --reps 1 or more")

    import pytest

    import supervisor

    work = tempfile.mkdtemp(prefix="sv-bench-pytest-")
    try:
        project = os.path.join(work, "project")
        write_project(project, n)
        missing: dict[str, str] = {}
        why = probe_forked(project)
        if why is not None:
            missing["forked"] = why
        contenders = [c for c in CONTENDERS if c not in missing]
        print(
            f"pytest {pytest.__version__}, Python {platform.python_version()}, kernel {platform.release()}, "
            f"uid {os.getuid()}, {os.cpu_count()} CPUs; {n} trivial tests, {reps} repetition(s)"
        )
        for name, reason in missing.items():
            print(f"left out: {name}: {reason}")
        try:
            times = measure(n, reps, contenders, project)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = summarize(times, n)
    print()
    print(
        f"{'contender':<10} {'N tests':>8} {'one test':>9} {'loop ms/test':>13} {'(min-max)':>12} "
        f"{'marginal':>9} {'x plain':>8}"
    )
    plain = figures["plain"]["loop_ms"]
    for contender, f in figures.items():
        ratio = f["loop_ms"] / plain if plain > 0 else float("nan")
        spread = f"{f['loop_ms_min']:.2f}-{f['loop_ms_max']:.2f}"
        print(
            f"{contender:<10} {f['many_s']:>7.2f}s {f['one_s']:>8.2f}s {f['loop_ms']:>13.2f} {spread:>12} "
            f"{f['marginal_ms']:>9.2f} {ratio:>8.2f}"
        )
    overhead = figures["sandbox"]["loop_ms"] - plain
    print()
    print(f"sandbox overhead per test: {overhead:.2f} ms over plain pytest, in the run loop")
    ratios: dict[str, float] = {"sandbox/plain": figures["sandbox"]["loop_ms"] / plain if plain > 0 else 0.0}
    if "forked" in figures:
        fork_overhead = figures["forked"]["loop_ms"] - plain
        ratios["sandbox/forked"] = figures["sandbox"]["loop_ms"] / figures["forked"]["loop_ms"]
        print(
            f"pytest-forked overhead per test: {fork_overhead:.2f} ms; "
            f"a sandboxed test costs {ratios['sandbox/forked']:.2f} times a pytest-forked one"
        )
    fixed = figures["sandbox"]["one_s"] - figures["plain"]["one_s"]
    print(f"the sandbox's cost once per session (one test, over plain): {fixed * 1000:.0f} ms")
    whole = figures["sandbox"]["many_s"] - figures["plain"]["many_s"]
    print(f"the whole {n}-test run, over plain: {whole * 1000:.0f} ms ({whole / n * 1000:.2f} ms a test, all told)")
    result = "PASS" if overhead <= TARGET_MS else "FAIL"
    target = f"sandbox overhead per test at most {TARGET_MS:g} ms"
    print(f"{result}: {target} ({overhead:.2f} ms)")
    if args.json:
        report: dict[str, Any] = {
            "meta": {
                "n": n,
                "reps": reps,
                "pytest": pytest.__version__,
                "python": platform.python_version(),
                "kernel": platform.release(),
                "uid": os.getuid(),
                "supervisor": supervisor.__version__,
            },
            "contenders": figures,
            "raw": times,
            "missing": missing,
            "overhead_ms": overhead,
            "session_cost_ms": fixed * 1000,
            "whole_run_over_plain_ms": whole * 1000,
            "ratios": ratios,
            "targets": [{"name": target, "result": result, "value_ms": overhead}],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
