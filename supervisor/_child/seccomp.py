"""PID 1's half of seccomp: load the filter the supervisor compiled.

The filter is compiled once per profile in the supervisor (libseccomp, through
:mod:`supervisor._parent.seccomp`) and arrives in the config as base64 BPF. PID 1
never parses a profile and never links libseccomp: it only decodes the bytes
(:func:`prepare`, before the filter exists) and hands them to the kernel
(:func:`load`, right before ``execve``), so the filter never has to allow
anything our own setup does.

Runs in a freshly cloned process: standard library and :mod:`supervisor._sys` only.
"""

from __future__ import annotations

import binascii
from typing import Any

from .._sys import linux


def prepare(entry: dict[str, Any] | None) -> linux.SeccompProgram | None:
    """Decode the config's filter into a ready ``struct sock_fprog``.

    Args:
        entry: ``{"bpf": base64 program, "flags": SECCOMP_FILTER_FLAG_*}``, or
            ``None`` for ``unconfined``.

    Returns:
        The program, or ``None`` when there is no filter to load.

    Raises:
        ValueError: not base64, or not a BPF program.
    """
    if not entry:
        return None
    bpf = binascii.a2b_base64(str(entry["bpf"]).encode("ascii"))
    return linux.SeccompProgram(bpf, int(entry.get("flags") or 0))


def load(program: linux.SeccompProgram | None) -> None:
    """Install ``program`` for this process (inherited by the payload).

    Must come after ``PR_SET_NO_NEW_PRIVS``, which lets us load it without
    CAP_SYS_ADMIN, and which the kernel requires for an unprivileged filter.

    Args:
        program: from :func:`prepare`; ``None`` does nothing.

    Raises:
        OSError: the kernel refused the filter (naming the call).
    """
    if program is not None:
        linux.seccomp_set_mode_filter(program)
