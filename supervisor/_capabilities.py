"""Linux capabilities: the one name <-> number table, the default set, and parsing.

Shared by the supervisor (validating :attr:`Spec.cap_add`/:attr:`Spec.cap_drop`
and resolving them to a set of numbers) and PID 1 (which only ever sees those
numbers), so it uses only the standard library.

The default kept set is Docker's default set (moby ``oci/caps/defaults.go``:
CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP,
SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE) minus what crabcan
meant to drop (DAC_OVERRIDE, FSETID, MKNOD, SETFCAP and AUDIT_WRITE are among
its 21): nine capabilities, see :data:`DEFAULT_CAPS`.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every capability the library knows, by number (<linux/capability.h>).
CAP_NUMBERS: dict[str, int] = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}

#: Number -> name (``CAP_`` prefix not included).
CAP_NAMES: dict[int, str] = {num: name for name, num in CAP_NUMBERS.items()}

#: Every known capability.
ALL_CAPS: frozenset[int] = frozenset(CAP_NUMBERS.values())

#: Kept by default: Docker's default set minus what crabcan drops.
DEFAULT_CAPS: frozenset[int] = frozenset(
    CAP_NUMBERS[n]
    for n in ("CHOWN", "FOWNER", "KILL", "NET_BIND_SERVICE", "NET_RAW", "SETGID", "SETUID", "SETPCAP", "SYS_CHROOT")
)


def normalize(name: str) -> str:
    """Canonical form of a capability name: upper case, without ``CAP_``.

    ``"ALL"`` is returned as is.

    Args:
        name: ``"net_raw"``, ``"CAP_NET_RAW"``, ``"all"``...

    Returns:
        ``"NET_RAW"`` (or ``"ALL"``).

    Raises:
        ValueError: not a capability this library knows.
    """
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    if upper.startswith("CAP_"):
        upper = upper[4:]
    if upper not in CAP_NUMBERS:
        raise ValueError(f"unknown capability {name!r}")
    return upper


def resolve(cap_add: Iterable[str] = (), cap_drop: Iterable[str] = ()) -> frozenset[int]:
    """The kept set for ``cap_add``/``cap_drop`` (Docker's rules).

    Start from :data:`DEFAULT_CAPS`; ``ALL`` in ``cap_add`` starts from every
    capability instead, ``ALL`` in ``cap_drop`` from none (it wins over ``ALL``
    in ``cap_add``); then the named drops are removed and the named adds added.

    Args:
        cap_add: names (any case, with or without ``CAP_``) or ``ALL``.
        cap_drop: the same.

    Returns:
        The capability numbers to keep.

    Raises:
        ValueError: an unknown name, or a name both added and dropped.
    """
    adds = {normalize(n) for n in cap_add}
    drops = {normalize(n) for n in cap_drop}
    both = (adds & drops) - {"ALL"}
    if both:
        raise ValueError(f"capabilities both added and dropped: {', '.join(sorted(both))}")
    base = set(DEFAULT_CAPS)
    if "ALL" in adds:
        base = set(ALL_CAPS)
    if "ALL" in drops:
        base = set()
    base -= {CAP_NUMBERS[n] for n in drops - {"ALL"}}
    base |= {CAP_NUMBERS[n] for n in adds - {"ALL"}}
    return frozenset(base)


def mask(caps: Iterable[int]) -> int:
    """The 64-bit mask of a set of capability numbers (as in /proc/self/status).

    Args:
        caps: capability numbers.

    Returns:
        An int with bit ``n`` set for each capability ``n``.
    """
    out = 0
    for cap in caps:
        out |= 1 << cap
    return out
