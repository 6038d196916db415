"""A container cgroup's accounting: CPU time, peak memory, OOM kills, and
waiting for an OOM kill."""

from __future__ import annotations

import errno
import os

from ..._record import record
from .files import keyed, read, wait_until, write
from .host import Hierarchy


@record
class CgroupStats:
    """What a container's cgroup used, over every process it ever held.

    Attributes:
        cpu_user_s: user CPU time, in seconds (``None`` when the host has
            neither a cgroup2 hierarchy nor a v1 cpuacct one).
        cpu_system_s: system CPU time, in seconds (``None`` likewise).
        peak_memory_bytes: highest memory use (``None`` when the memory
            controller is not available, or v2 before Linux 5.19).
        oom_killed: the kernel's OOM killer killed at least one process.
        oom_kills: how many processes it killed (v2 counts a group kill as
            at least one).
    """

    cpu_user_s: float | None
    cpu_system_s: float | None
    peak_memory_bytes: int | None
    oom_killed: bool
    oom_kills: int


def read_stats(v2: str | None, cpuacct: str | None, memory: tuple[Hierarchy, str] | None) -> CgroupStats:
    """Read CPU time, peak memory and OOM kills of a container's cgroup (before it is removed).

    Args:
        v2: its cgroup v2 directory, if any (``cpu.stat``).
        cpuacct: its v1 cpuacct directory, if any (used without ``v2``).
        memory: where it has the memory controller, if anywhere.

    Returns:
        The accounting, covering every process the cgroup ever held.

    Raises:
        OSError: an accounting file is unreadable (naming it), for example
            once the cgroup is removed.
    """
    user_s: float | None = None
    system_s: float | None = None
    if v2 is not None:
        cpu_stat = keyed(os.path.join(v2, "cpu.stat"))
        user_s, system_s = cpu_stat["user_usec"] / 1e6, cpu_stat["system_usec"] / 1e6
    elif cpuacct is not None:
        # cpuacct.usage is the exact scheduler runtime (ns); the user/system
        # split (cpuacct.stat in USER_HZ ticks, and usage_user/usage_sys,
        # which are the same tick samples in ns) is sampled at each tick
        # and was 30 % off the real total under load here. So, like
        # getrusage() and v2's cpu.stat (the kernel's cputime_adjust), the
        # exact total is split in the sampled ratio.
        d = cpuacct
        total = int(read(os.path.join(d, "cpuacct.usage"))) / 1e9
        ticks = keyed(os.path.join(d, "cpuacct.stat"))
        user_s, system_s = split_cpu(total, ticks.get("user", 0), ticks.get("system", 0))
    peak: int | None = None
    oom_kills = 0
    oom_killed = False
    if memory is not None:
        hierarchy, d = memory
        if hierarchy.version == 2:
            if os.path.exists(os.path.join(d, "memory.peak")):
                peak = int(read(os.path.join(d, "memory.peak")))
            events = keyed(os.path.join(d, "memory.events"))
            oom_kills = events.get("oom_kill", 0)
            oom_killed = oom_kills > 0 or events.get("oom_group_kill", 0) > 0
            oom_kills = max(oom_kills, 1) if oom_killed else 0
        else:
            peak = int(read(os.path.join(d, "memory.max_usage_in_bytes")))
            oom_kills = oom_events(hierarchy, d)
            oom_killed = oom_kills > 0
    return CgroupStats(
        cpu_user_s=user_s,
        cpu_system_s=system_s,
        peak_memory_bytes=peak,
        oom_killed=oom_killed,
        oom_kills=oom_kills,
    )


def oom_events(hierarchy: Hierarchy, d: str) -> int:
    """How many processes of the cgroup ``d`` the OOM killer killed (v2 counts group kills too)."""
    if hierarchy.version == 2:
        events = keyed(os.path.join(d, "memory.events"))
        return events.get("oom_kill", 0) + events.get("oom_group_kill", 0)
    return keyed(os.path.join(d, "memory.oom_control")).get("oom_kill", 0)


async def wait_oom(name: str, memory: tuple[Hierarchy, str] | None, poll_interval: float = 0.1) -> None:
    """Return once the OOM killer has killed a process of the container ``name``,
    whose memory controller is at ``memory``.

    On v2, ``memory.oom.group=1`` already makes the kernel kill the whole
    container; this only reports it (polling ``memory.events`` every
    ``poll_interval``). On v1 the kernel kills a single process, so a
    supervisor that wants whole-container OOM semantics runs this next to
    the container and calls :meth:`kill` when it returns. The v1 path does
    not poll: an eventfd is registered through ``cgroup.event_control`` on
    ``memory.oom_control`` (the kernel also signals it when the cgroup is
    removed, which ends the wait with an error).

    **Cancellation:** cancellable at any point; nothing is left registered
    (the eventfd is closed, which unregisters it).

    Args:
        name: the cgroup's name, for the error.
        memory: the hierarchy and directory of its memory controller.
        poll_interval: seconds between reads of ``memory.events`` (v2).

    Raises:
        OSError: the container has no memory controller (``EOPNOTSUPP``),
            or its cgroup was removed while waiting (``ENOENT``), or a
            control file failed (naming it).
    """
    import anyio  # imported here: a run without an event loop never needs it

    if memory is None:
        raise OSError(errno.EOPNOTSUPP, f"cgroup {name!r} has no memory controller to watch for OOM kills")
    hierarchy, d = memory
    if hierarchy.version == 2:
        while oom_events(hierarchy, d) == 0:
            await anyio.sleep(poll_interval)
        return
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        control = os.path.join(d, "memory.oom_control")
        try:
            ofd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"open {control}: {exc.strerror}") from exc
        try:
            write(os.path.join(d, "cgroup.event_control"), f"{efd} {ofd}")
        finally:
            os.close(ofd)
        while True:
            # Checked after registering, so an OOM kill just before is not missed.
            if oom_events(hierarchy, d) > 0:
                return
            await anyio.wait_readable(efd)
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                continue
            if not os.path.isdir(d):
                raise OSError(errno.ENOENT, f"cgroup {d} was removed while waiting for an OOM kill")
            # The event fires when the OOM starts; the victim is counted a moment later.
            if await wait_until(lambda: oom_events(hierarchy, d) > 0, 1.0):
                return
    finally:
        os.close(efd)


def split_cpu(total: float, user_ticks: int, system_ticks: int) -> tuple[float, float]:
    """Split an exact CPU time in the ratio of sampled user and system ticks (the kernel's ``cputime_adjust``)."""
    if system_ticks <= 0:
        return total, 0.0
    if user_ticks <= 0:
        return 0.0, total
    system = total * system_ticks / (user_ticks + system_ticks)
    return total - system, system
