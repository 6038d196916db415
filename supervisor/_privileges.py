"""What the supervisor needs of the user that runs it."""

from __future__ import annotations

import errno
import os

from ._parent.rundir import run_root


def check_privileges() -> None:
    """Refuse to start without root, naming what needs it.

    Raises:
        PermissionError: the effective uid is not 0.
    """
    if os.geteuid() != 0:
        raise PermissionError(
            errno.EPERM,
            "root (euid 0) is needed: the supervisor maps each container's ids to a range of host ids, makes "
            f"cgroups and network links, and keeps its ledger in {run_root()}; a rootless mode is not there yet",
        )
