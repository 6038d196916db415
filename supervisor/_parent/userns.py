"""The container's user namespace: how its ids map to the host's.

The C half (``_child/userns.c``) writes the maps and sets PID 1's ids; this
half decides what they are, once per container, in one of three ways
(:attr:`~supervisor.Result.id_mapping`):

``"range"``
    Root: container ids ``0..map_size-1`` are host ids ``map_base..``, a range
    no host user owns (or a leased one, ``map_base="auto"``).
``"subids"``
    Rootless, with an administrator's grant of subordinate ids and the
    ``newuidmap``/``newgidmap`` helpers (:func:`~supervisor._privileges.subid_grant`):
    container id 0 is the caller, ``1..n`` its subordinate ids, as podman maps
    them; ``Spec.map_size`` bounds ``n`` (``map_size=1`` asks for ``"own"``).
``"own"``
    Rootless otherwise: the caller's own uid and gid are the payload's
    (``Spec.uid``, 0 by default), the only ids mapped.
"""

from __future__ import annotations

import os

from .._privileges import is_rootless, subid_grant
from .._protocol import SpawnConfig
from .._record import record
from .._spec import Spec


@record
class IdMapping:
    """One container's id maps (the ``map_*``, ``sub_*`` and helper fields of
    :class:`~supervisor._protocol.SpawnConfig`)."""

    kind: str
    """``"range"``, ``"subids"`` or ``"own"``."""
    uid_base: int
    gid_base: int
    size: int
    uid_inside: int
    gid_inside: int
    sub_uid_base: int = 0
    sub_gid_base: int = 0
    sub_size: int = 0
    uid_helper: str | None = None
    gid_helper: str | None = None

    def describe(self) -> str:
        """One line for ``--debug``: which ids are which host ids."""
        if self.kind == "own":
            return (
                f"rootless: container uid {self.uid_inside}/gid {self.gid_inside} is host uid {self.uid_base}/gid "
                f"{self.gid_base}, the only ids mapped"
            )
        if self.kind == "subids":
            last = self.sub_size - 1
            return (
                f"rootless: container id 0 is host uid {self.uid_base}/gid {self.gid_base}; ids 1-{self.sub_size} are "
                f"subordinate uids {self.sub_uid_base}-{self.sub_uid_base + last}/gids "
                f"{self.sub_gid_base}-{self.sub_gid_base + last} (newuidmap, newgidmap)"
            )
        return f"container ids 0-{self.size - 1} are host ids {self.uid_base}-{self.uid_base + self.size - 1}"


def resolve(spec: Spec) -> IdMapping:
    """How ``spec``'s container maps its ids, for the supervisor's own user.

    With ``map_base="auto"`` the range's base is 0 here: the leased one is set
    by the caller before the spawn.
    """
    if not is_rootless():
        base = spec.map_base if isinstance(spec.map_base, int) else 0
        return IdMapping("range", base, base, spec.map_size, 0, 0)
    uid, gid = os.geteuid(), os.getegid()
    grant = subid_grant() if spec.map_size > 1 else None
    if grant is None:
        inside_gid = spec.gid if spec.gid is not None else spec.uid
        return IdMapping("own", uid, gid, 1, spec.uid, inside_gid)
    return IdMapping(
        "subids",
        uid,
        gid,
        1,
        0,
        0,
        grant.uid_base,
        grant.gid_base,
        min(grant.size, spec.map_size - 1),
        grant.uid_helper,
        grant.gid_helper,
    )


def kind_of(config: SpawnConfig) -> str:
    """The :attr:`IdMapping.kind` that ``config`` was built with."""
    if not config.rootless:
        return "range"
    return "subids" if config.uid_helper is not None else "own"
