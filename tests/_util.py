"""Small helpers shared by test modules."""

from __future__ import annotations

from supervisor import Phase

#: Phases whose start is a request answered by the supervisor.
REQUEST_PHASES = (Phase.USERNS, Phase.CGROUP, Phase.NETWORK)
