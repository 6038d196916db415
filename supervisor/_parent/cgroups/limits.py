"""A container's limits as cgroup files: the memory, swap, pids and CPU
limits of :class:`~supervisor.Limits` under v2's names or v1's."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from ..._limits import CFS_PERIOD_US, Limits
from .files import host_has_swap, write
from .host import Hierarchy


def write_limits(lim: Limits, dir_for: Callable[[str], tuple[Hierarchy, str] | None]) -> None:
    """Write ``lim`` into a container's cgroup files, v2's or v1's names.

    Args:
        lim: the limits.
        dir_for: the hierarchy and directory of the container's cgroup that
            has a controller (the plan guarantees one for each limit set).

    Raises:
        OSError: a file could not be written (naming it), or swap is to be
            limited where the kernel does not account it (EOPNOTSUPP).
    """
    memory = dir_for("memory")
    if memory is not None:
        hierarchy, d = memory
        swap_total = lim.memory_swap_bytes
        if hierarchy.version == 2:
            if lim.memory_bytes is not None:
                write(os.path.join(d, "memory.max"), str(lim.memory_bytes))
            if swap_total is not None and lim.memory_bytes is not None:
                swap = "max" if swap_total == -1 else str(swap_total - lim.memory_bytes)
                _write_swap(lim, os.path.join(d, "memory.swap.max"), swap)
            write(os.path.join(d, "memory.oom.group"), "1")
        else:
            if lim.memory_bytes is not None:
                write(os.path.join(d, "memory.limit_in_bytes"), str(lim.memory_bytes))
            if swap_total is not None:
                _write_swap(lim, os.path.join(d, "memory.memsw.limit_in_bytes"), str(swap_total))
    if lim.pids is not None:
        pids = dir_for("pids")
        assert pids is not None  # guaranteed by the plan
        write(os.path.join(pids[1], "pids.max"), str(lim.pids))
    if lim.cpus is not None or lim.cpu_weight is not None:
        cpu = dir_for("cpu")
        assert cpu is not None  # guaranteed by the plan
        hierarchy, d = cpu
        if hierarchy.version == 2:
            if lim.cfs_quota_us is not None:
                write(os.path.join(d, "cpu.max"), f"{lim.cfs_quota_us} {CFS_PERIOD_US}")
            if lim.cpu_weight is not None:
                write(os.path.join(d, "cpu.weight"), str(lim.cpu_weight))
        else:
            if lim.cfs_quota_us is not None:
                write(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                write(os.path.join(d, "cpu.cfs_quota_us"), str(lim.cfs_quota_us))
            if lim.cpu_shares is not None:
                write(os.path.join(d, "cpu.shares"), str(lim.cpu_shares))


def _write_swap(lim: Limits, path: str, value: str) -> None:
    if not os.path.exists(path):
        if not host_has_swap():
            return  # no swap at all: memory plus swap is memory, already limited
        raise OSError(
            errno.EOPNOTSUPP,
            f"cannot write {path} {value!r} for memory_swap_bytes={lim.memory_swap_bytes}: the kernel "
            "does not account swap (boot with swapaccount=1 / CONFIG_MEMCG_SWAP)",
        )
    write(path, value)
