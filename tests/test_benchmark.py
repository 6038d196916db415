"""``benchmarks/startup.py --quick`` runs and reports every figure.

This is never a timed test: nothing here compares speeds or checks a target
(the script prints those as PASS/FAIL lines for people to read). It only checks
that the benchmark runs to the end on this machine and that its JSON holds
every figure, for every peer that is installed (``tests/install-system-deps.sh``
installs bubblewrap, crun and runc; a missing one is skipped).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _util import REPO

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "startup.py"
PEERS = ("bwrap", "crun", "runc", "unshare", "floor")
KS = ("1", "8", "32")
#: --quick takes about 30 s on the 2-CPU VM; leave room for a loaded machine.
TIMEOUT_S = 300

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark needs root"),
    pytest.mark.skipif(
        not any(os.path.isfile(p) for p in ("/bin/busybox", "/usr/bin/busybox")) and not shutil.which("busybox"),
        reason="needs a static busybox (busybox-static)",
    ),
]


def _run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script; it works both installed and from the checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one ``--quick`` run (the run itself must exit 0)."""
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = _run_script(SCRIPT, "--quick", "--json", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout, proc.stdout[-2000:]
    data: dict[str, Any] = json.loads(out.read_text())
    data["_stdout"] = proc.stdout
    return data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _installed() -> list[str]:
    # The floor is built from benchmarks/floor.c with the machine's C compiler.
    return [p for p in PEERS if shutil.which("cc" if p == "floor" else p)]


def test_peers_found_are_measured(report: dict[str, Any]) -> None:
    measured = set(report["contenders"])
    assert "supervisor" in measured
    for peer in _installed():
        assert peer in measured or peer in report["missing"], peer
    # A peer that is installed but was not measured says why.
    for name, why in report["missing"].items():
        assert why, name


@pytest.mark.parametrize("name", ["supervisor", *PEERS])
def test_latency_throughput_memory(report: dict[str, Any], name: str) -> None:
    if name != "supervisor" and name not in report["contenders"]:
        pytest.skip(f"{name} not measured here: {report['missing'].get(name, 'not installed')}")
    c = report["contenders"][name]
    assert c["isolation"]
    for k in KS:
        t = c["throughput"][k]
        for key in ("p50_ms", "p95_ms", "per_s", "cpu_ms_per_container"):
            assert _number(t[key]), (k, key, t[key])
            assert t[key] > 0, (k, key, t[key])
        assert t["p95_ms"] >= t["p50_ms"]
        assert t["failures"] == 0, t
    m = c["memory"]
    assert m["live"] == m["count"] > 0
    assert m["failures"] == 0
    assert m["left_behind"] == 0
    assert _number(m["uss_kb_per_container"])
    assert m["uss_kb_per_container"] > 0
    assert m["isolation_observed"]["namespaces"], m["isolation_observed"]
    if name != "bwrap" and "bwrap" in report["contenders"]:
        ratios = report["ratios_to_bwrap"][name]
        assert all(_number(ratios[key]) for key in ("p50", "per_s_c1", "per_s_c8", "per_s_c32", "uss"))


def test_targets_name_the_floor(report: dict[str, Any]) -> None:
    """Each speed target of containers says whether our isolation, done in C
    by one process per container, could reach it (the CLI's has no floor)."""
    targets = {t["name"]: t for t in report["targets"]}
    assert len(targets) == 6, targets
    assert all(t["result"] in ("PASS", "FAIL", "SKIP") for t in targets.values())
    if "floor" not in report["contenders"]:
        pytest.skip(f"floor not measured here: {report['missing'].get('floor')}")
    for name, t in targets.items():
        if t["result"] != "SKIP" and not name.startswith("CLI") and "--init" not in name:
            assert t["floor_reaches_goal"] in ("yes", "no"), (name, t)
            assert "C floor" in t["detail"], t


def test_nothing_is_left_behind(report: dict[str, Any]) -> None:
    """The rootfs is unchanged, and no cgroup of ours or of the floor's remains
    (a floor killed before its container would leave its cgroups)."""
    assert report["meta"]["rootfs_unchanged"] is True
    assert report["meta"]["cgroups_left"] == []


def test_our_phase_breakdown(report: dict[str, Any]) -> None:
    for key in ("c1", "c8"):
        ph = report["phases"][key]
        assert ph["runs"] > 0
        medians = ph["median_ms"]
        spawn = [k for k in medians if k.startswith("spawn")]
        reaped = [k for k in medians if k.endswith("(execve, payload, exit, reap, clean-up)")]
        assert spawn, medians
        assert reaped, medians
        for phase in ("userns", "rootfs", "mounts", "pivot", "exec"):
            assert any(k == phase or k.startswith(phase + " ") for k in medians), (phase, medians)
        assert all(_number(v) and v >= 0 for v in medians.values()), medians


def test_cli_timing(report: dict[str, Any]) -> None:
    cli = report["cli"]
    ours = cli["supervisor run (CLI)"]
    assert ours["runs"] > 0
    assert ours["failures"] == 0
    assert _number(ours["median_ms"])
    for peer in ("bwrap", "crun"):
        if peer in report["contenders"]:
            assert cli[peer]["runs"] > 0, cli[peer]
            assert _number(cli[peer]["median_ms"]), cli[peer]
    imports = report["cli_imports"]
    assert imports["exit_status"] == 0
    # A run without a network or a display imports neither pyroute2 nor rich.
    assert imports["imported"]["pyroute2"] is False
    assert imports["imported"]["rich"] is False


def test_profile_script_runs() -> None:
    """``benchmarks/profile_startup.py`` on a small batch: it still matches the
    code it patches (it broke once when a method's signature changed)."""
    proc = _run_script(ROOT / "benchmarks" / "profile_startup.py", "--n", "10", "--ks", "1", "--reps", "1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "failures 0" in proc.stdout
    assert "CPU per container (ms): driver" in proc.stdout


def test_targets_and_cleanup(report: dict[str, Any]) -> None:
    names = [t["name"] for t in report["targets"]]
    assert len(names) == 6
    assert all(t["result"] in ("PASS", "FAIL", "SKIP") for t in report["targets"])
    for t in report["targets"]:
        assert f"{t['result']}: {t['name']}" in report["_stdout"]
    assert report["meta"]["rootfs_unchanged"] is True


def test_pytest_overhead_script_reports_every_figure(tmp_path: Path) -> None:
    """``benchmarks/pytest_overhead.py --quick``: every contender ran its tests
    to the end, the figures are numbers, pytest-forked is measured or its
    absence said, and the target line is printed (never checked)."""
    out = tmp_path / "overhead.json"
    proc = _run_script(ROOT / "benchmarks" / "pytest_overhead.py", "--quick", "--json", str(out))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert {"plain", "sandbox"} <= set(report["contenders"])
    assert ("forked" in report["contenders"]) != ("forked" in report["missing"])
    for name, figures in report["contenders"].items():
        for key in ("many_s", "one_s", "marginal_ms"):
            assert _number(figures[key]), (name, key, figures)
        assert len(report["raw"][name]["many"]) == report["meta"]["reps"]
    assert _number(report["overhead_ms"])
    (target,) = report["targets"]
    assert f"{target['result']}: {target['name']}" in proc.stdout
    for why in report["missing"].values():
        assert why
        assert why in proc.stdout


def test_oci_startup_script_prints_both_tables() -> None:
    """``benchmarks/oci_startup.py --reps 1 --warmup 1``: podman with our
    runtime, crun and runc, then the runtimes alone; it only prints figures,
    so this checks that it ran to the end and that ours was measured in both
    tables (a peer missing here is printed as skipped)."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (tests/install-system-deps.sh installs Debian's)")
    proc = _run_script(ROOT / "benchmarks" / "oci_startup.py", "--reps", "1", "--warmup", "1")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    header = "runtime     median ms     p90 ms  runs  failed"
    assert proc.stdout.count(header) == 2, proc.stdout
    assert "podman run --rm" in proc.stdout
    assert "run --bundle" in proc.stdout
    ours = [line for line in proc.stdout.splitlines() if line.startswith("ours ")]
    assert len(ours) == 2, proc.stdout
    assert all("skipped" not in line for line in ours), proc.stdout
    assert "left behind" not in proc.stdout
