"""PID 1's capability sets, really applied (crabcan's drop never took effect).

Two steps, because the uid switch sits between them:

1. :func:`limit` (phase CAPABILITIES, still root of the container with every
   capability): drop everything not kept from the **bounding** set
   (``PR_CAPBSET_DROP`` needs CAP_SETPCAP, which we still have), clear the
   **ambient** set, and empty the **inheritable** set (CVE-2022-29162: a
   non-empty inheritable set lets file capabilities raise privileges). The
   permitted and effective sets become the kept set plus CAP_SETGID and
   CAP_SETUID, because the IDENTITY phase still needs those two for
   setgroups/setresuid even when the caller dropped them; so the working
   directory is entered without CAP_DAC_OVERRIDE and friends.
2. :func:`finish` (phase SECCOMP, after the uid switch): **permitted** and
   **effective** become the kept set for uid 0, and empty for any other uid
   (the kernel already cleared them on setresuid from 0; we make it explicit
   and check). Then the result is read back and verified.

A non-root payload thus gets no capability at all, as with Docker: the kept set
stays in its bounding set only, and ``no_new_privs`` plus ``nosuid`` mounts stop
setuid and file-capability binaries from regaining anything. Ambient
capabilities are never granted.

Runs in a freshly cloned process: standard library and :mod:`supervisor._sys` only.
"""

from __future__ import annotations

import errno

from .._sys import constants as c
from .._sys import linux

_CAP_SETGID = 6  # <linux/capability.h>
_CAP_SETUID = 7


def _mask(caps: list[int]) -> int:
    out = 0
    for cap in caps:
        out |= 1 << cap
    return out


def _last_cap() -> int:
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        return int(f.read())


def limit(keep: list[int]) -> None:
    """Bounding set to ``keep``; ambient and inheritable emptied; the rest cut.

    Permitted and effective become ``keep`` plus CAP_SETUID and CAP_SETGID
    (needed for the uid switch that follows); :func:`finish` sets them exactly.

    Every capability the running kernel knows (``cap_last_cap``) is dropped
    unless kept, so capabilities newer than our table are dropped too.

    Args:
        keep: capability numbers to keep.

    Raises:
        OSError: a prctl or capset call failed (naming it).
    """
    kept = set(keep)
    # Dropping a capability that is not in the set is a no-op, so one call per
    # capability the kernel knows is enough (no read first).
    for cap in range(_last_cap() + 1):
        if cap not in kept:
            linux.prctl(c.PR_CAPBSET_DROP, cap)
    linux.prctl(c.PR_CAP_AMBIENT, c.PR_CAP_AMBIENT_CLEAR_ALL)
    interim = _mask(keep) | _mask([_CAP_SETUID, _CAP_SETGID])
    linux.capset(interim, interim, 0)


def finish(keep: list[int], uid: int) -> None:
    """Set permitted and effective to ``keep`` (uid 0) or nothing; verify all five sets.

    Args:
        keep: capability numbers to keep.
        uid: the payload's uid, already switched to.

    Raises:
        OSError: capset failed, or a set is not what was asked (EPERM).
    """
    want = _mask(keep) if uid == 0 else 0
    linux.capset(want, want, 0)
    effective, permitted, inheritable = linux.capget()
    if (effective, permitted, inheritable) != (want, want, 0):
        raise OSError(
            errno.EPERM,
            f"capabilities not applied: effective={effective:#x} permitted={permitted:#x} "
            f"inheritable={inheritable:#x}, wanted {want:#x}/{want:#x}/0",
        )
    # The bounding and ambient sets, read back in one go from our own status
    # (the container's fresh /proc) instead of two prctl calls per capability.
    kept = _mask(keep)
    with open("/proc/self/status", "rb") as f:
        status = dict(line.split(b":\t", 1) for line in f.read().splitlines() if b":\t" in line)
    bounding = int(status[b"CapBnd"], 16)
    ambient = int(status[b"CapAmb"], 16)
    if bounding & ~kept:
        raise OSError(errno.EPERM, f"capabilities {bounding & ~kept:#x} are still in the bounding set")
    if ambient:
        raise OSError(errno.EPERM, f"capabilities {ambient:#x} are still in the ambient set")
