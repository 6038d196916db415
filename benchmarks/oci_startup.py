#!/usr/bin/env python3
"""How long a container of ``/bin/true`` takes with our OCI runtime, crun and runc: under podman, and alone.

Run it as root from the repository (it uses the ``supervisor`` package this
interpreter imports, e.g. the checkout with ``PYTHONPATH``)::

    python benchmarks/oci_startup.py                  # 20 repetitions, 3 warm-ups per runtime
    python benchmarks/oci_startup.py --reps 10 --warmup 2
    python benchmarks/oci_startup.py --json           # the figures as JSON

It builds a busybox root folder in a temporary directory (removed at the end),
imports it into a podman with a private storage (``--root``, ``--runroot``,
``--tmpdir`` in that directory, the vfs driver, cgroupfs, a dedicated
``--cgroup-parent``), and measures two things, each with the runtimes'
runs interleaved (every repetition runs each runtime once, the order rotating
from one repetition to the next, so a drift of the machine hits them all
alike), after a few warm-up runs of each:

1. **under podman**: the wall time of a whole
   ``podman --runtime RUNTIME run --rm --network none ... localhost/sv-busybox /bin/true``
   process: podman, conmon and every runtime command podman calls (create,
   start, state, delete);
2. **the runtime alone**: the wall time of ``RUNTIME --root STATE run --bundle B ID``
   where B holds the same root folder and the ``config.json`` of
   ``runc spec`` with ``process.terminal`` false and ``process.args``
   ``["/bin/true"]`` (the rest as ``runc spec`` writes it).

Our runtime is ``python -m supervisor._oci`` started through a small shell
wrapper (podman wants one executable), the same wrapper in both tables. crun
1.8 refuses hybrid cgroup hosts (v1 with a cgroup2 mount that has
controllers): there it is started through a wrapper that runs it in a private
mount namespace with a tmpfs over ``/sys/fs/cgroup/unified`` (nothing outside
that namespace changes). What each wrapper costs per runtime call is measured
and printed (``RUNTIME --version`` through it and without it).

It prints, per table, each runtime's median and 90th percentile in ms and the
ratios of ours to each peer; plus the date, the kernel and podman's version.
A runtime that is not installed, or whose warm-up run fails, is reported as
skipped with the reason. It only prints figures: there is no target and no
pass or fail. The exit status is 1 if a timed run failed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import supervisor

RUNTIMES = ("ours", "crun", "runc")
PEERS = ("crun", "runc")
IMAGE = "localhost/sv-busybox"
UNIFIED = "/sys/fs/cgroup/unified"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
ROOTFS_DIRS = ("proc", "dev", "sys", "tmp", "etc")
#: This machine's hard limits are below podman's defaults (1048576).
PODMAN_RUN_OPTIONS = ("--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
HEADER = f"{'runtime':<10} {'median ms':>10} {'p90 ms':>10} {'runs':>5} {'failed':>7}"
TIMEOUT_S = 120


# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated; NaN if empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Series:
    """The timed runs of one runtime in one table."""

    times_ms: list[float] = field(default_factory=list)
    failures: int = 0
    last_error: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "median_ms": statistics.median(self.times_ms) if self.times_ms else None,
            "p90_ms": percentile(self.times_ms, 90) if self.times_ms else None,
            "runs": len(self.times_ms),
            "failures": self.failures,
            "last_error": self.last_error,
            "times_ms": [round(t, 3) for t in self.times_ms],
        }


def ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``ours/PEER`` of the medians and of the 90th percentiles, for each peer measured."""
    out: dict[str, dict[str, float | None]] = {}
    ours = summaries.get("ours")
    for peer in PEERS:
        theirs = summaries.get(peer)
        if ours is None or theirs is None:
            continue
        pair: dict[str, float | None] = {}
        for key in ("median_ms", "p90_ms"):
            a, b = ours[key], theirs[key]
            pair[key.removesuffix("_ms")] = a / b if a is not None and b else None
        out[f"ours/{peer}"] = pair
    return out


# ---------------------------------------------------------------- the machine


def run_quiet(argv: Sequence[str], timeout: float = TIMEOUT_S, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to the end, its output captured (never raises on a failure status)."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL, **kwargs
    )


def first_line(argv: Sequence[str]) -> str:
    """First line of ``argv``'s output, or ``"?"``."""
    try:
        done = run_quiet(argv, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def find_exe(name: str, *candidates: str) -> str | None:
    """``name`` on PATH, or the first of ``candidates`` that is executable (root's sbin may not be on PATH)."""
    for path in (shutil.which(name), *candidates):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    return None


def hybrid_cgroups() -> bool:
    """True when a cgroup2 mount at /sys/fs/cgroup/unified has controllers (crun 1.8 refuses such a host)."""
    try:
        with open(os.path.join(UNIFIED, "cgroup.controllers")) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def cgroup_mounts() -> list[str]:
    """The mount point of every cgroup hierarchy (v1 and v2)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                out.append(fields[4])
    return out


def own_cgroup_dirs() -> list[str]:
    """This process's cgroup folder in each hierarchy (assuming each is mounted from its root)."""
    with open("/proc/self/cgroup") as f:
        own = [line.rstrip("\n").split(":", 2) for line in f]
    out = []
    for mount in cgroup_mounts():
        name = os.path.basename(mount)
        for _hid, controllers, path in own:
            names = set(controllers.split(",")) if controllers else set()
            if (not controllers and name == "unified") or name in names or f"name={name}" in names:
                out.append(os.path.join(mount, path.lstrip("/")))
    return out


def cgroup_parent(tag: str) -> str:
    """A cgroup path below our own in every hierarchy: the deepest of our
    own paths, then ``tag`` (podman takes one ``--cgroup-parent`` for all
    hierarchies, and runc an absolute ``cgroupsPath`` from each root)."""
    with open("/proc/self/cgroup") as f:
        own = [line.rstrip("\n").split(":", 2)[2] for line in f if line.strip()]
    return max(own, key=len).rstrip("/") + "/" + tag


def remove_parent(parent: str) -> list[str]:
    """Remove ``parent`` and what is below it in every hierarchy, deepest
    first, then the folders on its way that are empty and not ours
    (podman makes missing ones); return those that stay."""
    left = []
    own = set(own_cgroup_dirs())
    for mount in cgroup_mounts():
        below = mount.rstrip("/") + parent
        for dirpath, _dirnames, _files in sorted(os.walk(below), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
        up = os.path.dirname(below)
        while up.startswith(mount.rstrip("/") + "/") and up not in own and not any(o.startswith(up + "/") for o in own):
            try:
                os.rmdir(up)
            except OSError:
                break
            up = os.path.dirname(up)
    return sorted(left)


def remove_cgroups(tag: str) -> list[str]:
    """Remove the cgroups named ``tag...`` (podman's ``--cgroup-parent``, the runtimes' container ids)
    at each hierarchy's root and below our own cgroup, deepest first; return those that stay."""
    left = []
    for top in {*cgroup_mounts(), *own_cgroup_dirs()}:
        try:
            names = [n for n in os.listdir(top) if n.startswith(tag)]
        except OSError:
            continue
        for name in names:
            for dirpath, _dirnames, _files in sorted(os.walk(os.path.join(top, name)), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    left.append(dirpath)
    return sorted(left)


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path`` (podman's, were a container left mounted)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point == path or point.startswith(path.rstrip("/") + "/"):
                out.append(point)
    return out


# ---------------------------------------------------------------- set-up


def build_rootfs(path: str) -> None:
    """A root folder with a static busybox, ``sh`` and ``true``, and empty mount points."""
    busybox = find_exe("busybox", *BUSYBOX_CANDIDATES)
    if busybox is None:
        raise SystemExit("needs a static busybox (Debian: busybox-static)")
    os.makedirs(os.path.join(path, "bin"), mode=0o755)
    os.chmod(path, 0o755)
    shutil.copy2(busybox, os.path.join(path, "bin", "busybox"))
    for applet in ("sh", "true"):
        os.symlink("busybox", os.path.join(path, "bin", applet))
    for name in ROOTFS_DIRS:
        os.mkdir(os.path.join(path, name), 0o755)


def write_script(path: str, body: str) -> str:
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


@dataclass
class Runtime:
    """One OCI runtime: the executable podman and the timed runs call, and how it is started."""

    name: str
    exe: str
    version: str
    #: The command without a wrapper and the wrapper's own, to time what the wrapper costs.
    direct: list[str] | None = None
    wrapper: str = ""


def find_runtimes(work: str) -> tuple[dict[str, Runtime], dict[str, str]]:
    """The runtimes of this machine, and those skipped (name -> why)."""
    found: dict[str, Runtime] = {}
    skipped: dict[str, str] = {}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    ours = write_script(
        os.path.join(work, "supervisor-oci"),
        f'export PYTHONPATH={shlex.quote(repo)}\nexec {shlex.quote(sys.executable)} -P -m supervisor._oci "$@"\n',
    )
    version = first_line([ours, "--version"])
    found["ours"] = Runtime(
        "ours",
        ours,
        version,
        [sys.executable, "-P", "-m", "supervisor._oci"],
        f"sh exec {sys.executable} -P -m supervisor._oci",
    )
    crun = find_exe("crun", "/usr/bin/crun", "/usr/local/bin/crun")
    if crun is None:
        skipped["crun"] = "not installed"
    elif hybrid_cgroups():
        unshare = find_exe("unshare", "/usr/bin/unshare")
        if unshare is None:
            skipped["crun"] = "refuses this hybrid cgroup host, and unshare (for a private mount namespace) is missing"
        else:
            inner = f'mount -t tmpfs -o size=64k sv-bench-hide-unified {UNIFIED} && exec {crun} "$@"'
            wrapped = write_script(
                os.path.join(work, "crun-private-mntns"),
                f"exec {unshare} --mount --propagation private -- /bin/sh -c '{inner}' crun \"$@\"\n",
            )
            found["crun"] = Runtime(
                "crun", wrapped, first_line([crun, "--version"]), [crun], f"unshare -m, tmpfs over {UNIFIED}"
            )
    else:
        found["crun"] = Runtime("crun", crun, first_line([crun, "--version"]))
    runc = find_exe("runc", "/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc")
    if runc is None:
        skipped["runc"] = "not installed"
    else:
        found["runc"] = Runtime("runc", runc, first_line([runc, "--version"]))
    return found, skipped


def make_bundle(path: str) -> str | None:
    """``runc spec``'s config.json in ``path`` (crun's if runc is missing), running ``/bin/true``.

    The root folder is built in ``path/rootfs`` (runc refuses a symlinked one).

    Returns:
        None, or why there is no bundle.
    """
    os.makedirs(path, mode=0o755)
    build_rootfs(os.path.join(path, "rootfs"))
    spec_tool = find_exe("runc", "/usr/sbin/runc", "/usr/bin/runc") or find_exe("crun", "/usr/bin/crun")
    if spec_tool is None:
        return "neither runc nor crun is installed to write the spec (runc spec)"
    done = run_quiet([spec_tool, "spec", "--bundle", path])
    if done.returncode != 0:
        return f"{os.path.basename(spec_tool)} spec failed: {done.stderr.strip()}"
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    # Below our own cgroup (runc's default is the id at each hierarchy's root).
    config["linux"]["cgroupsPath"] = cgroup_parent(os.path.basename(os.path.dirname(path))) + "/alone"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return None


class Podman:
    """podman with a private storage below ``base``, the busybox image imported."""

    def __init__(self, exe: str, base: str) -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent(os.path.basename(base))
        self.options = [
            exe,
            "--root",
            os.path.join(base, "storage"),
            "--runroot",
            os.path.join(base, "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            os.path.join(base, "tmp"),
        ]
        # What podman's image library writes to $TMPDIR goes below base too.
        os.makedirs(os.path.join(base, "tmp-env"), mode=0o700)
        self.env = {**os.environ, "TMPDIR": os.path.join(base, "tmp-env")}

    def __call__(self, *args: str, runtime: str | None = None) -> subprocess.CompletedProcess[str]:
        with_runtime = ["--runtime", runtime] if runtime else []
        return run_quiet([*self.options, *with_runtime, *args], env=self.env)

    def run_true(self, runtime: str) -> list[str]:
        """The timed command: ``podman run --rm ... /bin/true`` with ``runtime``."""
        return [
            *self.options,
            "--runtime",
            runtime,
            "run",
            "--rm",
            "--cgroup-parent",
            self.cgroup_parent,
            *PODMAN_RUN_OPTIONS,
            IMAGE,
            "/bin/true",
        ]

    def clean(self, runtimes: Sequence[str]) -> None:
        """Remove every container (with each runtime, in case one is left) and image."""
        choices: list[str | None] = [*runtimes] or [None]
        for runtime in choices:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self("rm", "--all", "--force", runtime=runtime)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self("rmi", "--all", "--force")


# ---------------------------------------------------------------- timing


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str | None]:
    """Wall ms of one run of ``argv``, and its error (None if it exited 0)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT_S,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return (time.perf_counter() - started) * 1e3, f"timed out after {TIMEOUT_S} s"
    elapsed = (time.perf_counter() - started) * 1e3
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return elapsed, f"exit status {done.returncode}: {' | '.join(tail)}"
    return elapsed, None


def rotations(names: Sequence[str], reps: int) -> Iterator[list[str]]:
    """One order of ``names`` per repetition, each starting one further along."""
    for rep in range(reps):
        k = rep % len(names) if names else 0
        yield [*names[k:], *names[:k]]


def measure(
    commands: dict[str, Callable[[int], list[str]]],
    reps: int,
    warmup: int,
    skipped: dict[str, str],
    label: str,
    env: dict[str, str] | None = None,
) -> dict[str, Series]:
    """Warm each runtime up, then time ``reps`` rounds, interleaved and rotated.

    A runtime whose warm-up fails is moved to ``skipped`` with the error.
    ``commands[name](k)`` is the command line of run number ``k``.
    """
    live = list(commands)
    counter = 0
    for _ in range(max(warmup, 1)):
        for name in list(live):
            counter += 1
            _ms, error = timed(commands[name](counter), env)
            if error is not None:
                skipped[name] = f"its warm-up run failed: {error}"
                live.remove(name)
    series = {name: Series() for name in live}
    for rep, order in enumerate(rotations(live, reps), 1):
        for name in order:
            counter += 1
            ms, error = timed(commands[name](counter), env)
            if error is None:
                series[name].times_ms.append(ms)
            else:
                series[name].failures += 1
                series[name].last_error = error
        print(f"{label}: repetition {rep}/{reps} done", file=sys.stderr)
    return series


def wrapper_costs(runtimes: dict[str, Runtime], n: int = 10) -> dict[str, dict[str, Any]]:
    """Median ms of ``RUNTIME --version`` through each wrapper and without it, interleaved."""
    out: dict[str, dict[str, Any]] = {}
    for rt in runtimes.values():
        if rt.direct is None:
            continue
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))}
        wrapped: list[float] = []
        direct: list[float] = []
        for _ in range(n):
            wrapped.append(timed([rt.exe, "--version"], env)[0])
            direct.append(timed([*rt.direct, "--version"], env)[0])
        out[rt.name] = {
            "wrapper": rt.wrapper,
            "wrapped_ms": statistics.median(wrapped),
            "direct_ms": statistics.median(direct),
            "cost_ms": statistics.median(wrapped) - statistics.median(direct),
        }
    return out


# ---------------------------------------------------------------- the report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(title: str, block: dict[str, Any]) -> list[str]:
    lines = [title, HEADER]
    for name in RUNTIMES:
        if name in block["runtimes"]:
            s = block["runtimes"][name]
            lines.append(
                f"{name:<10} {fmt(s['median_ms']):>10} {fmt(s['p90_ms']):>10} {s['runs']:>5} {s['failures']:>7}"
            )
            if s["failures"]:
                lines.append(f"{'':<10} last failure: {s['last_error']}")
        else:
            lines.append(f"{name:<10} skipped: {block['skipped'].get(name, 'not measured')}")
    for pair, r in block["ratios"].items():
        lines.append(f"{pair:<10} median {fmt(r['median'], 2)}x, p90 {fmt(r['p90'], 2)}x")
    if not block["ratios"]:
        lines.append("no ratio: ours or both peers were not measured")
    return lines


def block_of(series: dict[str, Series], skipped: dict[str, str]) -> dict[str, Any]:
    summaries = {name: s.summary() for name, s in series.items()}
    return {"runtimes": summaries, "skipped": dict(skipped), "ratios": ratios(summaries)}


def report(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        f"date {meta['date']}, kernel {meta['kernel']}, {meta['podman']}, {meta['cpus']} CPUs, load {meta['loadavg']}",
        "versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
        f"{meta['reps']} repetitions (order rotated), {meta['warmup']} warm-up run(s) per runtime",
        "",
    ]
    lines += table("podman run --rm --network none ... /bin/true (wall ms of the podman process)", data["podman"])
    lines.append("")
    lines += table("RUNTIME --root STATE run --bundle B ID, /bin/true (wall ms, no podman)", data["alone"])
    for name, w in meta["wrappers"].items():
        cost = f"about {w['cost_ms']:.1f} ms" if w["cost_ms"] > 0 else "nothing measurable"
        lines.append(
            f"note: {name} is started through a wrapper ({w['wrapper']}) costing {cost} per runtime call "
            f"(median --version {w['wrapped_ms']:.1f} ms through it, {w['direct_ms']:.1f} ms without)"
        )
    for path in meta["left_behind"]:
        lines.append(f"warning: left behind: {path}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="timed runs per runtime and table (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per runtime first (default 3, at least 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the tables")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if os.geteuid() != 0:
        print("oci_startup.py: needs root (runc, crun and our runtime run containers as root)", file=sys.stderr)
        return 2

    podman_exe = find_exe("podman", "/usr/bin/podman")
    # podman wants its runroot within 50 characters.
    base = tempfile.mkdtemp(prefix="sv-bench-pm-", dir="/tmp")
    tag = os.path.basename(base)
    podman = Podman(podman_exe, base) if podman_exe else None
    runtimes: dict[str, Runtime] = {}
    left: list[str] = []
    try:
        runtimes, missing = find_runtimes(base)
        data: dict[str, Any] = {
            "meta": {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "kernel": platform.release(),
                "podman": first_line([podman_exe, "--version"]) if podman_exe else "podman not installed",
                "cpus": os.cpu_count(),
                "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "versions": {rt.name: rt.version for rt in runtimes.values()},
                "reps": args.reps,
                "warmup": max(args.warmup, 1),
                "wrappers": {},
                "left_behind": [],
            }
        }
        bundle = os.path.join(base, "bundle")
        no_bundle = make_bundle(bundle)

        # 1. Under podman.
        skipped = dict(missing)
        if podman is None:
            skipped.update(dict.fromkeys(runtimes, "podman not installed"))
            series: dict[str, Series] = {}
        else:
            tar = os.path.join(base, "bb.tar")
            subprocess.run(["tar", "-C", os.path.join(bundle, "rootfs"), "-cf", tar, "."], check=True)
            imported = podman("import", tar, IMAGE)
            if imported.returncode != 0:
                raise SystemExit(f"podman import failed: {imported.stderr.strip()}")

            def podman_command(rt: Runtime, pm: Podman = podman) -> Callable[[int], list[str]]:
                return lambda _k: pm.run_true(rt.exe)

            commands = {name: podman_command(rt) for name, rt in runtimes.items()}
            series = measure(commands, args.reps, args.warmup, skipped, "podman", podman.env)
        data["podman"] = block_of(series, skipped)

        # 2. The runtime alone.
        skipped = dict(missing)
        if no_bundle is not None:
            skipped.update(dict.fromkeys(runtimes, no_bundle))
            series = {}
        else:

            def alone_command(rt: Runtime) -> Callable[[int], list[str]]:
                state = os.path.join(base, f"state-{rt.name}")
                return lambda k: [rt.exe, "--root", state, "run", "--bundle", bundle, f"{tag}-{rt.name}-{k}"]

            commands = {name: alone_command(rt) for name, rt in runtimes.items()}
            series = measure(commands, args.reps, args.warmup, skipped, "alone")
        data["alone"] = block_of(series, skipped)
        data["meta"]["wrappers"] = wrapper_costs(runtimes)
    finally:
        # A second Ctrl-C must not stop the clean-up half way.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            left = cleanup(base, tag, podman, runtimes)
        finally:
            signal.signal(signal.SIGINT, previous)

    data["meta"]["left_behind"] = left
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(report(data))
    failed = any(s["failures"] for block in ("podman", "alone") for s in data[block]["runtimes"].values())
    return 1 if failed or left else 0


def cleanup(base: str, tag: str, podman: Podman | None, runtimes: dict[str, Runtime]) -> list[str]:
    """Remove the containers, the image, the cgroups and ``base``; return what could not be removed."""
    if podman is not None:
        podman.clean([rt.exe for rt in runtimes.values()])
    for rt in runtimes.values():
        state = os.path.join(base, f"state-{rt.name}")
        if not os.path.isdir(state):
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            for cid in run_quiet([rt.exe, "--root", state, "list", "--quiet"]).stdout.split():
                run_quiet([rt.exe, "--root", state, "delete", "--force", cid])
    left = remove_cgroups(tag) + remove_parent(cgroup_parent(tag))
    mounted = mounts_below(base)
    for point in reversed(mounted):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run_quiet(["umount", point])
    left += mounts_below(base)
    if not mounts_below(base):
        shutil.rmtree(base, ignore_errors=True)
    if os.path.exists(base):
        left.append(base)
    return left


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("oci_startup.py: interrupted (cleaned up)", file=sys.stderr)
        sys.exit(130)
