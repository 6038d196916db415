#!/usr/bin/env python3
"""Where supervisor's start-up time goes, at concurrency 1 and 8.

Run as root from the repository::

    python benchmarks/profile_startup.py            # N=200 per K
    python benchmarks/profile_startup.py --n 100 --ks 1,8 --top 12

For each K it runs N ``sup.run(Spec(["/bin/true"], rootfs=...))`` twice:

1. unprofiled: latency, throughput, and CPU per container split between the
   driver (the trio program: our API) and the containers (its reaped
   children: PID 1's C setup, the payload, the exit), plus the median of
   every phase from ``Result.phases``;
2. under cProfile in the driver's trio thread (PID 1 runs no Python).

Then it runs the variant experiments (interleaved, unprofiled), each changing
one thing through the public API: ``capture_output=False``,
``seccomp="unconfined"``, ``network="host"``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import startup

from supervisor import Result, Spec, Supervisor


def children_cpu() -> float:
    """CPU seconds of this process's reaped children: the containers (PID 1's
    C setup, the payload, the exit)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def batch(sup: Supervisor, spec: Spec, n: int, k: int, **kwargs: Any) -> dict[str, Any]:
    """N runs with at most K in flight: latencies, results and CPU split."""
    for _ in range(5):
        await sup.run(spec, **kwargs)
    lat: list[float] = []
    results: list[Result] = []
    limiter = trio.CapacityLimiter(k)

    async def one() -> None:
        async with limiter:
            t0 = time.perf_counter()
            res = await sup.run(spec, **kwargs)
            lat.append(time.perf_counter() - t0)
            results.append(res)

    me0 = resource.getrusage(resource.RUSAGE_SELF)
    ch0 = children_cpu()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    wall = time.perf_counter() - t0
    await trio.sleep(0.05)
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    ch1 = children_cpu()
    bad = [r for r in results if not r.ok]
    return {
        "per_s": n / wall,
        "p50_ms": startup.percentile(lat, 50) * 1e3,
        "p95_ms": startup.percentile(lat, 95) * 1e3,
        "driver_cpu_ms": ((me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)) * 1e3 / n,
        "containers_cpu_ms": (ch1 - ch0) * 1e3 / n,
        "failures": len(bad),
        "results": results,
        "latencies_ms": [x * 1e3 for x in lat],
    }


def top(stats: pstats.Stats, sort: str, limit: int, title: str) -> str:
    """The ``limit`` costliest functions, as text."""
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    body = buf.getvalue()
    start = body.find("   ncalls")
    return f"--- {title} (sorted by {sort}) ---\n" + (body[start:] if start >= 0 else body)


async def instrumented(rootfs: str, n: int, k: int, limit: int, *, profile: bool) -> str:
    """One K; return the report.

    With ``profile``, cProfile (CPU clock) runs in the driver's trio thread;
    without, the CPU split and the phases are reported.
    """
    spec = Spec(["/bin/true"], rootfs=rootfs)
    driver = cProfile.Profile(time.thread_time)
    async with Supervisor() as sup:
        for _ in range(5):
            await sup.run(spec)
        flt0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        if profile:
            driver.enable()
        b = await batch(sup, spec, n, k)
        driver.disable()
        flt1 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    if not profile:
        parts = [
            f"K={k}, N={n}: {b['per_s']:.0f}/s, p50 {b['p50_ms']:.2f} ms, p95 {b['p95_ms']:.2f} ms;"
            f" failures {b['failures']}",
            f"  CPU per container (ms): driver {b['driver_cpu_ms']:.2f},"
            f" containers {b['containers_cpu_ms']:.2f} (PID 1's C setup, execve, payload and exit);"
            f" total {b['driver_cpu_ms'] + b['containers_cpu_ms']:.2f}",
            f"  minor page faults per container (our reaped children): {(flt1 - flt0) / n:.0f}",
            "  phases (wall, from Result.phases, medians in ms):",
            phase_table(b["results"], b["latencies_ms"]),
        ]
        return "\n".join(parts)
    parts = [f"===== cProfile (CPU time) at K={k}, N={n} ====="]
    dstats = pstats.Stats(driver)
    dstats.strip_dirs()
    parts.append(top(dstats, "tottime", limit, "driver (trio thread)"))
    parts.append(top(dstats, "cumulative", limit, "driver (trio thread)"))
    return "\n".join(parts)


VARIANTS: dict[str, tuple[Callable[[str], Spec], dict[str, Any]]] = {
    "default": (lambda r: Spec(["/bin/true"], rootfs=r), {}),
    "capture_output=False": (lambda r: Spec(["/bin/true"], rootfs=r), {"capture_output": False}),
    'seccomp="unconfined"': (lambda r: Spec(["/bin/true"], rootfs=r, seccomp="unconfined"), {}),
    'network="host" (no netns)': (lambda r: Spec(["/bin/true"], rootfs=r, network="host"), {}),
}


def phase_table(results: Sequence[Result], lat: Sequence[float]) -> str:
    """Median phase durations, as text."""
    ph = startup.phase_breakdown(results, lat)
    return "\n".join(f"  {name:<72}{ms:8.3f}" for name, ms in ph["median_ms"].items())


async def run(args: argparse.Namespace, work: str) -> None:
    """Everything, in one trio run."""
    rootfs = startup.build_rootfs(work)
    out: list[str] = []
    for k in args.ks:
        out.append(await instrumented(rootfs, args.n, k, args.top, profile=False))
    async with Supervisor() as sup:
        # Variants, interleaved: one thing changed at a time through the public API.
        rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rep in range(args.reps):
            for k in args.ks:
                names = list(VARIANTS)
                names = names[rep % len(names) :] + names[: rep % len(names)]
                for name in names:
                    make, kwargs = VARIANTS[name]
                    try:
                        b = await batch(sup, make(rootfs), args.n // 2, k, **kwargs)
                    except (TypeError, ValueError) as exc:  # a field this version lacks
                        print(f"variant {name}: {exc}", file=sys.stderr)
                        continue
                    rows.setdefault((name, k), []).append(b)
        out.append("\nVariants (median over reps; N/2 each; CPU = driver + containers, ms/container):")
        for (name, k), bs in rows.items():
            per_s = statistics.median(b["per_s"] for b in bs)
            p50 = statistics.median(b["p50_ms"] for b in bs)
            cpu = statistics.median(b["driver_cpu_ms"] + b["containers_cpu_ms"] for b in bs)
            out.append(f"  K={k:<3} {name:<28} {per_s:7.0f}/s  p50 {p50:7.2f} ms  CPU {cpu:6.2f}")
    print("\n".join(out), flush=True)
    for k in args.ks:
        print(await instrumented(rootfs, args.n, k, args.top, profile=True), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="containers per batch (default 200)")
    p.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8], help="K values (1,8)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the variant experiments (default 3)")
    p.add_argument("--top", type=int, default=15, help="functions per profile table (default 15)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("profile_startup.py: must run as root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="supervisor-profile-")
    os.chmod(work, 0o755)
    try:
        trio.run(run, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
