"""Container resource limits (:class:`Limits`) and size parsing.

Kept apart from :mod:`supervisor._parent.cgroups` so that describing a
container never imports the machinery that applies it.
"""

from __future__ import annotations

import math
import re

from ._record import record

#: Default CFS period (µs) for ``cpus``; the kernel's default too.
CFS_PERIOD_US = 100_000
#: The smallest memory limit (docker's too).
MIN_MEMORY_BYTES = 6 << 20
#: The largest memory limit: 4 EiB, below the kernel's page counter maximum
#: (a larger value is refused by the cgroup files, or overflows them).
MAX_MEMORY_BYTES = 1 << 62
#: The most CPUs a quota can name, and the most pids (the kernel's PID_MAX_LIMIT).
MAX_CPUS = 4096
MAX_PIDS = 1 << 22
#: The kernel's smallest CFS quota (µs), so the smallest ``cpus`` is 0.01.
_MIN_CFS_QUOTA_US = 1_000
_MIN_CFS_PERIOD_US, _MAX_CFS_PERIOD_US = 1_000, 1_000_000
#: v1 ``cpu.shares`` bounds and the v2 ``cpu.weight`` range.
_MIN_SHARES, _MAX_SHARES = 2, 262_144
_MIN_WEIGHT, _MAX_WEIGHT = 1, 10_000

_CGROUP_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:+-]{0,199}$")


def is_cgroup_name(name: object) -> bool:
    """Whether ``name`` is a plain cgroup directory name: 1-200 characters from
    ``[A-Za-z0-9_.@:+-]``, not starting with ``.``, ``-`` or ``cgroup.``."""
    return isinstance(name, str) and bool(_CGROUP_NAME_RE.match(name)) and not name.startswith("cgroup.")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Parse a memory size like docker's ``--memory``: ``"256M"``, ``"1G"``, ``"1.5g"``, ``"4096"``.

    Units are binary (K = 1024), case-insensitive, with an optional ``B`` or
    ``iB`` suffix (``"256MiB"``, ``"64kb"``); a bare number is bytes. A
    fractional value is rounded down to whole bytes.

    Args:
        text: the size.

    Returns:
        The size in bytes.

    Raises:
        ValueError: ``text`` is not such a size, or is zero.
    """
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected a number with an optional unit K, M, G, T or P (binary)")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be more than 0 bytes")
    return value


#: The kernel's list form of CPUs and memory nodes (``cpuset.cpus``).
_CPU_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


#: A v1 devices cgroup rule: ``a``, or type, major:minor and access.
_DEVICE_RULE = re.compile(r"a|[abc] (\d+|\*):(\d+|\*) [rwm]{1,3}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@record
class Limits:
    """Resource limits of one container; ``None`` leaves the kernel's default (unlimited).

    Args:
        memory_bytes: hard memory limit (``--memory``); reaching it OOM-kills.
            At least 6 MiB (docker's minimum too).
        memory_swap_bytes: memory **plus** swap, docker's ``--memory-swap``
            semantics: at least ``memory_bytes`` (equal means no swap), or -1
            for unlimited swap. Requires ``memory_bytes``. Unlike docker, leaving
            it ``None`` writes nothing (the kernel default: swap is not limited
            separately) instead of allowing twice ``memory_bytes``.
        cpus: CPU bandwidth quota in CPUs (``--cpus 0.5`` = half a CPU per
            100 ms period); at least 0.01.
        cpu_period_us: the CFS period that ``cpus`` is counted in, 1000 to
            1000000 µs (``--cpu-period``); ``None``: 100000 (100 ms). Needs
            ``cpus``.
        cpu_weight: relative CPU weight on v2's scale, 1..10000, default 100.
            On v1 it becomes ``cpu.shares = weight * 1024 / 100`` (systemd's
            mapping: the two defaults, 100 and 1024, correspond).
        pids: the most processes and threads the container may have at once.
        memory_reservation_bytes: a soft memory limit (``--memory-reservation``):
            under memory pressure the kernel reclaims from the container down to
            it (v1 ``memory.soft_limit_in_bytes``, v2 ``memory.low``).
        memory_swappiness: 0..100, how readily the container's memory is
            swapped (``--memory-swappiness``; v1 only, v2 has no such file).
        memory_kernel_tcp_bytes: a limit on the TCP buffers' kernel memory
            (v1 ``memory.kmem.tcp.limit_in_bytes``; v2 counts it in the
            memory limit and has no file of its own).
        oom_kill_disable: at the memory limit, the container's processes
            wait for memory instead of being OOM-killed
            (``--oom-kill-disable``; v1 ``memory.oom_control``).
        cpuset_cpus: the CPUs the container may run on, in the kernel's list
            form (``--cpuset-cpus 0-1,3``).
        cpuset_mems: the memory nodes it may allocate from (``--cpuset-mems``).
        device_rules: a v1 devices cgroup for the container: every device is
            denied, then these rules apply in order, each ``(allow, rule)``
            with ``rule`` in the kernel's form (``"c 1:3 rwm"``, ``"b *:* m"``,
            ``"a"``); ``None``: no devices cgroup. Needs a v1 devices
            hierarchy (v2 controls devices with BPF programs instead).

    Raises:
        ValueError: a value is out of range (the message names the field).
        TypeError: a value has the wrong type.
    """

    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None
    cpus: float | None = None
    cpu_weight: int | None = None
    pids: int | None = None
    memory_reservation_bytes: int | None = None
    memory_swappiness: int | None = None
    memory_kernel_tcp_bytes: int | None = None
    oom_kill_disable: bool = False
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    cpu_period_us: int | None = None
    device_rules: tuple[tuple[bool, str], ...] | None = None

    def __post_init__(self) -> None:
        for name in (
            "memory_bytes",
            "memory_swap_bytes",
            "cpu_weight",
            "pids",
            "memory_reservation_bytes",
            "memory_swappiness",
            "memory_kernel_tcp_bytes",
            "cpu_period_us",
        ):
            value = getattr(self, name)
            if value is not None and not _is_int(value):
                raise TypeError(f"Limits.{name} must be an int or None, not {type(value).__name__}")
        for name in ("memory_bytes", "memory_swap_bytes"):
            value = getattr(self, name)
            if value is not None and value > MAX_MEMORY_BYTES:
                raise ValueError(f"Limits.{name} must be at most {MAX_MEMORY_BYTES} (4 EiB), got {value}")
        if self.memory_bytes is not None and self.memory_bytes < MIN_MEMORY_BYTES:
            # Below it, PID 1's setup itself (kernel memory for its mounts)
            # could be OOM-killed, and PID 1 shares the supervisor's memory
            # until execve: the kernel would kill the supervisor with it.
            raise ValueError(
                f"Limits.memory_bytes must be at least {MIN_MEMORY_BYTES} (6 MiB, as docker's minimum), "
                f"got {self.memory_bytes}"
            )
        if self.memory_swap_bytes is not None:
            if self.memory_bytes is None:
                raise ValueError("Limits.memory_swap_bytes needs memory_bytes (it is memory plus swap)")
            if self.memory_swap_bytes != -1 and self.memory_swap_bytes < self.memory_bytes:
                raise ValueError(
                    f"Limits.memory_swap_bytes ({self.memory_swap_bytes}) must be -1 (unlimited swap) or at "
                    f"least memory_bytes ({self.memory_bytes}): it is memory plus swap"
                )
        if self.cpus is not None and (isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float))):
            raise TypeError(f"Limits.cpus must be a number or None, not {type(self.cpus).__name__}")
        if self.cpu_period_us is not None:
            if self.cpus is None:
                raise ValueError("Limits.cpu_period_us needs cpus (the quota counted in it)")
            if not _MIN_CFS_PERIOD_US <= self.cpu_period_us <= _MAX_CFS_PERIOD_US:
                raise ValueError(f"Limits.cpu_period_us must be in 1000..1000000, got {self.cpu_period_us}")
        if self.cpus is not None:
            period = self.period_us
            if not math.isfinite(self.cpus) or not _MIN_CFS_QUOTA_US <= self.cpus * period <= MAX_CPUS * period:
                raise ValueError(
                    f"Limits.cpus must be a number from {_MIN_CFS_QUOTA_US / period:g} (a quota of 1000 µs in "
                    f"the period of {period} µs) to {MAX_CPUS}, got {self.cpus}"
                )
        if self.cpu_weight is not None and not _MIN_WEIGHT <= self.cpu_weight <= _MAX_WEIGHT:
            raise ValueError(f"Limits.cpu_weight must be in 1..10000 (v2 scale), got {self.cpu_weight}")
        if self.pids is not None and not 1 <= self.pids <= MAX_PIDS:
            raise ValueError(f"Limits.pids must be from 1 to {MAX_PIDS}, got {self.pids}")
        for name in ("memory_reservation_bytes", "memory_kernel_tcp_bytes"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_MEMORY_BYTES:
                raise ValueError(f"Limits.{name} must be from 1 to {MAX_MEMORY_BYTES} (4 EiB), got {value}")
        if self.memory_swappiness is not None and not 0 <= self.memory_swappiness <= 100:
            raise ValueError(f"Limits.memory_swappiness must be in 0..100, got {self.memory_swappiness}")
        if not isinstance(self.oom_kill_disable, bool):
            raise TypeError(f"Limits.oom_kill_disable must be a bool, not {type(self.oom_kill_disable).__name__}")
        for allow, rule in self.device_rules or ():
            if not isinstance(allow, bool) or not isinstance(rule, str) or not _DEVICE_RULE.fullmatch(rule):
                raise ValueError(
                    f"Limits.device_rules: ({allow!r}, {rule!r}) is not (allow, 'TYPE MAJOR:MINOR ACCESS')"
                )
        for name in ("cpuset_cpus", "cpuset_mems"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"Limits.{name} must be a str or None, not {type(value).__name__}")
            if not _CPU_LIST.fullmatch(value):
                raise ValueError(f"Limits.{name} must be a list such as 0-3,5 (the kernel's form), got {value!r}")

    @classmethod
    def crabcan(cls) -> Limits:
        """crabcan's resource defaults: memory 1 GiB, pids 64, CPU weight 256.

        crabcan (``resources.rs``) asked cgroups-rs for ``cpu.shares(256)``,
        which on v2 (the only version it supports) writes **256 raw to
        ``cpu.weight``**, where the default is 100: its containers got 2.56x
        the default CPU share, not the quarter its blog describes (a quarter
        would be ``cpu_weight=25``). This preset reproduces what crabcan
        actually did, ``cpu_weight=256`` on the v2 scale (``cpu.shares`` 2621
        on v1). Its ``kernel_memory_limit`` (ignored on v2, deprecated on v1)
        and ``io.bfq.weight`` are left out; its ``RLIMIT_NOFILE`` of 64 is an
        rlimit, not a cgroup limit, and belongs to the child's setup: pass
        :meth:`Limits.crabcan_rlimits` as ``Spec.rlimits`` for the whole preset
        (``--crabcan-limits`` does both).

        Returns:
            The preset limits.
        """
        return cls(memory_bytes=1 << 30, pids=64, cpu_weight=256)

    @staticmethod
    def crabcan_rlimits() -> dict[str, tuple[int, int]]:
        """crabcan's rlimit, for ``Spec.rlimits``: ``NOFILE`` 64 (soft and hard).

        ``Spec(limits=Limits.crabcan(), rlimits=Limits.crabcan_rlimits())`` is
        crabcan's whole preset. Unlike crabcan, which set it on the parent,
        it applies to the container only.

        Returns:
            ``{"NOFILE": (64, 64)}``.
        """
        return {"NOFILE": (64, 64)}

    @property
    def cpu_shares(self) -> int | None:
        """``cpu_weight`` converted to v1 ``cpu.shares`` (``None`` when unset)."""
        if self.cpu_weight is None:
            return None
        return max(_MIN_SHARES, min(_MAX_SHARES, round(self.cpu_weight * 1024 / 100)))

    @staticmethod
    def weight_for_shares(shares: int) -> int:
        """The ``cpu_weight`` that :attr:`cpu_shares` converts back to ``shares``
        (exactly for a multiple of 256; the nearest weight else).

        Args:
            shares: a v1 ``cpu.shares`` value.

        Returns:
            The weight, within 1..10000.
        """
        return max(_MIN_WEIGHT, min(_MAX_WEIGHT, round(shares * 100 / 1024)))

    @property
    def cfs_quota_us(self) -> int | None:
        """``cpus`` as a CFS quota in µs per ``period_us`` (``None`` when unset)."""
        if self.cpus is None:
            return None
        return round(self.cpus * self.period_us)

    @property
    def period_us(self) -> int:
        """The CFS period: ``cpu_period_us``, or :data:`CFS_PERIOD_US`."""
        return CFS_PERIOD_US if self.cpu_period_us is None else self.cpu_period_us
