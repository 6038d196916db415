"""A container's limits as cgroup files: the memory, swap, pids and CPU
limits of :class:`~supervisor.Limits` under v2's names or v1's."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from ..._limits import Limits
from .files import host_has_swap, inherit_cpuset, write
from .host import Hierarchy

#: Limits that only v1 has a file for: (field, the file).
_V1_ONLY_MEMORY = (
    ("memory_swappiness", "memory.swappiness"),
    ("memory_kernel_tcp_bytes", "memory.kmem.tcp.limit_in_bytes"),
    ("oom_kill_disable", "memory.oom_control"),
)


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
            if lim.memory_reservation_bytes is not None:
                write(os.path.join(d, "memory.low"), str(lim.memory_reservation_bytes))
            for name, v1_file in _V1_ONLY_MEMORY:
                if getattr(lim, name) not in (None, False):
                    raise OSError(
                        errno.EOPNOTSUPP, f"Limits.{name} needs cgroup v1's {v1_file}, which v2 has no equivalent of"
                    )
            write(os.path.join(d, "memory.oom.group"), "1")
        else:
            if lim.memory_bytes is not None:
                write(os.path.join(d, "memory.limit_in_bytes"), str(lim.memory_bytes))
            if swap_total is not None:
                _write_swap(lim, os.path.join(d, "memory.memsw.limit_in_bytes"), str(swap_total))
            if lim.memory_reservation_bytes is not None:
                write(os.path.join(d, "memory.soft_limit_in_bytes"), str(lim.memory_reservation_bytes))
            if lim.memory_swappiness is not None:
                write(os.path.join(d, "memory.swappiness"), str(lim.memory_swappiness))
            if lim.memory_kernel_tcp_bytes is not None:
                write(os.path.join(d, "memory.kmem.tcp.limit_in_bytes"), str(lim.memory_kernel_tcp_bytes))
            if lim.oom_kill_disable:
                write(os.path.join(d, "memory.oom_control"), "1")
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
                write(os.path.join(d, "cpu.max"), f"{lim.cfs_quota_us} {lim.period_us}")
            if lim.cpu_weight is not None:
                write(os.path.join(d, "cpu.weight"), str(lim.cpu_weight))
        else:
            if lim.cfs_quota_us is not None:
                write(os.path.join(d, "cpu.cfs_period_us"), str(lim.period_us))
                write(os.path.join(d, "cpu.cfs_quota_us"), str(lim.cfs_quota_us))
            if lim.cpu_shares is not None:
                write(os.path.join(d, "cpu.shares"), str(lim.cpu_shares))
    if lim.device_rules is not None:
        devices = dir_for("devices")
        assert devices is not None  # guaranteed by the plan
        hierarchy, d = devices
        if hierarchy.version == 2:
            raise OSError(errno.EOPNOTSUPP, "Limits.device_rules need a v1 devices hierarchy (v2 uses BPF programs)")
        write(os.path.join(d, "devices.deny"), "a")
        for allow, rule in lim.device_rules:
            write(os.path.join(d, "devices.allow" if allow else "devices.deny"), rule)
    if lim.cpuset_cpus is not None or lim.cpuset_mems is not None:
        cpuset = dir_for("cpuset")
        assert cpuset is not None  # guaranteed by the plan
        _write_cpuset(lim, *cpuset)


def _write_cpuset(lim: Limits, hierarchy: Hierarchy, d: str) -> None:
    """cpuset.cpus and cpuset.mems; on v1 both always, the parent's where
    not limited."""
    given = {"cpus": lim.cpuset_cpus, "mems": lim.cpuset_mems}
    if hierarchy.version == 1:
        inherit_cpuset(d, tuple(name for name, value in given.items() if value is None))
    for name, value in given.items():
        if value is not None:
            write(os.path.join(d, f"cpuset.{name}"), value)


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
