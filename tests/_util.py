"""Small helpers shared by test modules."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from supervisor import Phase

#: The checkout, put on PYTHONPATH for subprocesses.
REPO = str(Path(__file__).resolve().parent.parent)

#: Phases whose start is a request answered by the supervisor.
REQUEST_PHASES = (Phase.USERNS, Phase.CGROUP, Phase.NETWORK)


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run_with_repo(
    argv: list[str], env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with this checkout importable: text output captured, 60 s at most, not checked."""
    return subprocess.run(
        argv,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )
