"""``supervisor run-many``'s specs files: TOML ``[[container]]`` tables or a
JSON list of objects, one entry per container (or ``count`` of them).

An entry's keys are turned into ``run``'s own flags and parsed by a parser
with the same container options (:mod:`.options`), so a file says what a
command line would, and its values are checked the same way.
"""

from __future__ import annotations

import argparse
import json

from .common import MAX_CONTAINERS, Formatter
from .options import add_container_options
from .spec import spec_from_args

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .. import Spec

#: Spec fields whose flag has another name or form in a specs file entry.
_LIMIT_FLAGS = {
    "memory_bytes": "--memory",
    "memory_swap_bytes": "--memory-swap",
    "cpus": "--cpus",
    "cpu_weight": "--cpu-weight",
    "pids": "--pids-limit",
}
#: Flags that are the whole run's, set on the command line, not per entry.
_RUN_ONLY = {"timeout": "--timeout", "preserve_fds": "--preserve-fds"}


class _EntryParser(argparse.ArgumentParser):
    """``run``'s flags for one specs file entry: an error is the entry's, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _entry_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """A parser with ``run``'s container flags, and each flag's action by key
    (its long name, ``-`` or ``_`` alike)."""
    parser = _EntryParser(prog="entry", add_help=False, exit_on_error=False, formatter_class=Formatter)
    add_container_options(parser)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    flags: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option[2:].replace("-", "_")] = action
    return parser, flags


def _mount_text(item: Any) -> str:
    """A ``mounts`` item (``"SRC:DST[:OPTS]"`` or a :class:`Mount`'s fields) as ``-v`` takes it."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise ValueError(f"mounts: {item!r} is neither SRC:DST[:OPTIONS] nor a table of Mount's fields")
    from .. import Mount

    m = Mount(**item)
    options = ["ro" if m.read_only else "rw"] + ([] if m.idmap is None else ["idmap" if m.idmap else "noidmap"])
    return f"{m.source}:{m.target}:{','.join(options)}"


def _rlimit_text(name: str, value: Any) -> str:
    """An ``rlimits`` table entry (``[soft, hard]`` or one number) as ``--ulimit`` takes it."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"rlimits.{name}: give [soft, hard] or one number, not {value!r}")
        return f"{name}={value[0]}:{value[1]}"
    return f"{name}={value}"


def _entry_argv(entry: dict[str, Any], flags: dict[str, argparse.Action]) -> list[str]:
    """The ``run`` flags that say what a specs file entry says.

    Keys are ``run``'s long flags (``memory``, ``pids_limit``, ``user``,
    ``volume``, ``env_file``...) or :class:`supervisor.Spec`'s fields
    (``cwd``, ``env`` as a table, ``mounts``, ``limits`` and ``rlimits`` as
    tables, ``time_offsets``, ``tmpfs``...), which are turned into those flags.

    Raises:
        ValueError: an unknown key, or a value of the wrong shape.
    """
    argv: list[str] = []
    command: Any = None
    for key, value in entry.items():
        if key == "command":
            command = value
            continue
        pairs: list[tuple[str, Any]]
        if key == "cwd":
            pairs = [("--workdir", value)]
        elif key == "mounts":
            pairs = [("--volume", _mount_text(m)) for m in value]
        elif key in ("env", "tmpfs") and isinstance(value, dict):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"{key}: keys and values must be strings")
            sep = "=" if key == "env" else ":"
            pairs = [(f"--{key}", f"{k}{sep}{v}" if v != "" or key == "env" else k) for k, v in value.items()]
        elif key == "limits" and isinstance(value, dict):
            unknown = set(value) - set(_LIMIT_FLAGS)
            if unknown:
                raise ValueError(f"limits: unknown keys {sorted(unknown)} (known: {', '.join(_LIMIT_FLAGS)})")
            pairs = [(_LIMIT_FLAGS[k], v) for k, v in value.items() if v is not None]
        elif key == "rlimits" and isinstance(value, dict):
            pairs = [("--ulimit", _rlimit_text(k, v)) for k, v in value.items()]
        elif key == "time_offsets" and isinstance(value, dict):
            pairs = [("--time-offset", f"{k}={v}") for k, v in value.items()]
        elif key in _RUN_ONLY:
            raise ValueError(f"{key} is the whole run's: give {_RUN_ONLY[key]} on the command line")
        elif key in flags:
            action = flags[key]
            option = next(o for o in action.option_strings if o.startswith("--"))
            if action.nargs == 0:  # a switch
                if not isinstance(value, bool):
                    raise ValueError(f"{key}: give true or false, not {value!r}")
                pairs = [(option, None)] if value else []
            elif isinstance(value, list):
                if not isinstance(action.default, list):  # the repeatable flags start from []
                    raise ValueError(f"{key}: give one value, not a list")
                pairs = [(option, v) for v in value]
            else:
                pairs = [(option, value)]
        else:
            raise ValueError(f"unknown key {key!r} (keys are run's long flags or Spec's fields)")
        for option, v in pairs:
            argv += [option] if v is None else [f"{option}={v}"]
    if isinstance(command, str):
        argv += [f"--command={command}"]
    elif isinstance(command, list) and all(isinstance(a, str) for a in command):
        argv += ["--", *command]
    elif command is not None:
        raise ValueError("command: give a list of strings or a shell-like string")
    return argv


def load_specs(path: str) -> list[Spec]:
    """Read a TOML (``[[container]]`` tables) or JSON (a list) file of specs.

    An entry's keys are ``run``'s own flags by their long names (``memory``,
    ``pids_limit``, ``user``, ``volume``, ``tmpfs``...), with the same values as
    on the command line (a list for a repeatable flag, true for a switch), or
    :class:`supervisor.Spec`'s fields (``cwd``, ``env`` and ``limits`` as
    tables, ``mounts``...); ``command`` is a list or a shell-like string, and
    ``count`` repeats an entry. Each entry is parsed by ``run``'s own parser.

    Args:
        path: the file: TOML if its name ends in ``.toml``, else JSON.

    Returns:
        the specs in the file's order, an entry's ``count`` times.

    Raises:
        ValueError: unreadable file, unknown keys or bad values (naming them).
    """
    with open(path, "rb") as f:
        raw = f.read()
    entries: Any
    if path.endswith(".toml"):
        import tomllib

        entries = tomllib.loads(raw.decode()).get("container", [])
    else:
        entries = json.loads(raw)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of containers")
    parser, flags = _entry_parser()
    specs = []
    for i, item in enumerate(entries):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: entry {i} is not a table/object")
        entry = dict(item)
        count = entry.pop("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CONTAINERS:
            raise ValueError(f"{path}: entry {i}: count must be a whole number from 1 to {MAX_CONTAINERS}")
        try:
            argv = _entry_argv(entry, flags)
            args = parser.parse_args(argv)
            spec = spec_from_args(parser, args)
        except (argparse.ArgumentError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from None
        specs.extend([spec] * count)
        if len(specs) > MAX_CONTAINERS:
            raise ValueError(f"{path}: more than {MAX_CONTAINERS} containers in all")
    return specs
