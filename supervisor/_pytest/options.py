"""What a sandbox is asked to be: the ini options, ``--sandbox`` and ``@pytest.mark.sandbox``.

One table, :data:`OPTIONS`, declares every option once: its ini name, its
type and what it means; the ini options, the marker's keywords and the docs'
table come from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The sandbox scopes: one sandbox per test, per module (file) or per session.
SCOPES = ("test", "module", "session")
#: The network modes (``Spec.network``) a sandbox may have.
NETWORKS = ("none", "bridge", "host")


class OptionError(ValueError):
    """An option of ``--sandbox``, the ini file or the marker has a bad value."""


def _network(value: object) -> str:
    if value is True:
        return "bridge"
    if value is False or value is None:
        return "none"
    if isinstance(value, str) and value.strip() in NETWORKS:
        return value.strip()
    raise OptionError(f"network: {value!r} is not one of {', '.join(NETWORKS)} (or True for bridge, False for none)")


def _memory(value: object) -> str | None:
    from .._limits import parse_size

    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise OptionError(f"memory: {value!r} is not a size such as '200M'")
    try:
        parse_size(value)
    except ValueError as exc:
        raise OptionError(f"memory: {exc}") from None
    return value.strip()


def _positive_int(name: str) -> Callable[[object], int | None]:
    def parse(value: object) -> int | None:
        if value is None or value == "":
            return None
        try:
            number: int = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise OptionError(f"{name}: {value!r} is not a whole number") from None
        if number < 1 or isinstance(value, bool):
            raise OptionError(f"{name}: {value!r} must be 1 or more")
        return number

    return parse


def _positive_float(name: str) -> Callable[[object], float | None]:
    def parse(value: object) -> float | None:
        if value is None or value == "":
            return None
        try:
            number: float = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise OptionError(f"{name}: {value!r} is not a number") from None
        if not (number > 0 and math.isfinite(number)) or isinstance(value, bool):
            raise OptionError(f"{name}: {value!r} must be a number above 0")
        return number

    return parse


def _bool(name: str) -> Callable[[object], bool]:
    def parse(value: object) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"{name}: {value!r} is not true or false")

    return parse


def _binds(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise OptionError(f"binds: {value!r} is not a list of 'SRC[:DST][:ro|rw]' strings")
    binds = []
    for item in items:
        if not isinstance(item, str):
            raise OptionError(f"binds: {item!r} is not a 'SRC[:DST][:ro|rw]' string")
        text = item.strip()
        if not text:
            continue
        try:
            to_mount(text)
        except ValueError as exc:
            raise OptionError(f"binds: {exc}") from None
        binds.append(text)
    return tuple(binds)


@dataclass(frozen=True)
class Option:
    """One option: the marker's keyword, its ini name, its parser and its meaning."""

    name: str
    ini_type: str  # pytest's ini types: "string", "linelist", "bool"
    parse: Callable[[object], Any]
    default: Any
    help: str

    @property
    def ini(self) -> str:
        """The ini file's name of the option."""
        return f"sandbox_{self.name}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "network",
        "string",
        _network,
        "none",
        "none (loopback only), bridge (a veth to a host-local bridge; root only) or host (unsafe: the host's own)",
    ),
    Option("memory", "string", _memory, None, "memory limit of the sandbox, such as 200M (an OOM kill fails the test)"),
    Option("pids", "string", _positive_int("pids"), None, "most processes and threads the sandbox may hold"),
    Option("cpus", "string", _positive_float("cpus"), None, "CPU quota of the sandbox, in CPUs (such as 0.5)"),
    Option(
        "timeout",
        "string",
        _positive_float("timeout"),
        None,
        "seconds for setup, call and teardown together; then the whole sandbox is killed",
    ),
    Option(
        "read_only",
        "bool",
        _bool("read_only"),
        True,
        "bind the project's directory read-only (false: writable, as on the host)",
    ),
    Option("binds", "linelist", _binds, (), "extra binds, SRC[:DST][:ro|rw] (read-only unless rw)"),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def to_mount(text: str) -> Any:
    """The :class:`~supervisor.Mount` of a ``binds`` entry, ``SRC[:DST][:ro|rw]``.

    Read-only unless ``rw`` is given; ``DST`` defaults to ``SRC``.

    Raises:
        ValueError: not of that form.
    """
    import os

    from .._mount import Mount

    parts = text.split(":")
    mode = "ro"
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) == 1:
        parts.append(parts[0])
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{text!r} is not SRC[:DST][:ro|rw]")
    src, dst = os.path.abspath(os.path.expanduser(parts[0])), parts[1]
    if not os.path.isabs(dst):
        raise ValueError(f"{text!r}: the target {dst!r} is not an absolute path")
    return Mount(src, dst, read_only=mode == "ro")


@dataclass(frozen=True)
class SandboxOptions:
    """What one sandbox is: the options, resolved (see :data:`OPTIONS`)."""

    network: str = "none"
    memory: str | None = None
    pids: int | None = None
    cpus: float | None = None
    timeout: float | None = None
    read_only: bool = True
    binds: tuple[str, ...] = ()

    def replace(self, values: Mapping[str, object], source: str) -> SandboxOptions:
        """These options with ``values`` (raw, as the marker or ini gives them) parsed over them.

        Raises:
            OptionError: an unknown option or a bad value (the message names ``source``).
        """
        changes: dict[str, Any] = {}
        for name, raw in values.items():
            option = _BY_NAME.get(name)
            if option is None:
                known = ", ".join(o.name for o in OPTIONS)
                raise OptionError(f"{source}: unknown option {name!r} (known: {known})")
            try:
                changes[name] = option.parse(raw)
            except OptionError as exc:
                raise OptionError(f"{source}: {exc}") from None
        return dataclasses.replace(self, **changes)

    @property
    def container_key(self) -> SandboxOptions:
        """The options that shape the container (all but the host-side timeout)."""
        return dataclasses.replace(self, timeout=None)

    def describe(self) -> str:
        """The options that differ from the defaults, for messages."""
        default = SandboxOptions()
        parts = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(parts) or "defaults"


def options_table() -> list[tuple[str, str, str, str]]:
    """Rows of the docs' table: the marker keyword, the ini name, the default, the meaning."""
    return [(o.name, o.ini, repr(o.default), o.help) for o in OPTIONS]
