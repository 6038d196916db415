"""supervisor: start, supervise and clean up many Linux containers from async Python.

The public API is what this module exports; everything else is private.
"""

from ._api import PIPE as PIPE
from ._api import Container as Container
from ._api import Supervisor as Supervisor
from ._api import run as run
from ._errors import ContainerFailed as ContainerFailed
from ._errors import ProtocolError as ProtocolError
from ._errors import SetupError as SetupError
from ._errors import SupervisorError as SupervisorError
from ._events import Event as Event
from ._gc import SweepReport as SweepReport
from ._gc import collect_garbage as collect_garbage
from ._limits import Limits as Limits
from ._limits import parse_size as parse_size
from ._protocol import Phase as Phase
from ._result import PhaseTiming as PhaseTiming
from ._result import Result as Result
from ._spec import Mount as Mount
from ._spec import Publish as Publish
from ._spec import Spec as Spec

__version__ = "0.1.0"

__all__ = [
    "Container",
    "ContainerFailed",
    "Event",
    "Limits",
    "Mount",
    "PIPE",
    "Phase",
    "PhaseTiming",
    "ProtocolError",
    "Publish",
    "Result",
    "SetupError",
    "Spec",
    "Supervisor",
    "SupervisorError",
    "SweepReport",
    "collect_garbage",
    "parse_size",
    "run",
]

for _name in __all__:
    _obj = globals()[_name]
    if not isinstance(_obj, int) and hasattr(_obj, "__module__"):
        try:
            _obj.__module__ = "supervisor"
        except (AttributeError, TypeError):  # pragma: no cover
            pass
del _name, _obj
