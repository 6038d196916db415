"""Small helpers shared by test modules."""

from __future__ import annotations

from supervisor import Phase

#: Phases whose start is a request answered by the supervisor.
REQUEST_PHASES = (Phase.USERNS, Phase.CGROUP, Phase.NETWORK)


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
