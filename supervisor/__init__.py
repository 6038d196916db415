"""supervisor: start, supervise and clean up many Linux containers from async Python.

The public API is what this module exports; everything else is private.

PYTEST_DONT_REWRITE: the package is also a pytest plugin (``pytest --sandbox``),
and pytest rewrites no assertion of it (a sandbox's worker imports it before
pytest starts).
"""

from ._errors import CleanupError as CleanupError
from ._errors import ContainerFailed as ContainerFailed
from ._errors import ProtocolError as ProtocolError
from ._errors import SetupError as SetupError
from ._errors import SupervisorError as SupervisorError
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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (deleted below)
if TYPE_CHECKING:
    from ._api import PIPE as PIPE
    from ._api import Container as Container
    from ._api import Supervisor as Supervisor
    from ._api import run as run
    from ._events import Event as Event

__version__ = "0.1.0"

__all__ = [
    "CleanupError",
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

#: Exports whose modules load the async framework, imported on first use:
#: a program (``supervisor run``) that runs without an event loop never pays for it.
_LAZY = {"Container": "_api", "Event": "_events", "PIPE": "_api", "Supervisor": "_api", "run": "_api"}


def _present(obj: object) -> None:
    """Show ``obj`` as ``supervisor.<name>`` (in reprs, docs and pickles)."""
    if not isinstance(obj, int) and hasattr(obj, "__module__"):
        try:
            obj.__module__ = "supervisor"
        except (AttributeError, TypeError):  # pragma: no cover
            pass


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    import importlib

    obj: object = getattr(importlib.import_module(f".{module}", __name__), name)
    _present(obj)
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


for _name in __all__:
    if _name not in _LAZY:
        _present(globals()[_name])
del _name
del TYPE_CHECKING
