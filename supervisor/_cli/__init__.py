"""The ``supervisor`` command: a thin layer over the public API.

It parses arguments into a :class:`supervisor.Spec`, runs it with the public
API, and maps the outcome to an exit status (see :mod:`.run`). Library modules
never import this package.

This module is the top: the parser of the whole command line, :func:`main`
and the console script, :func:`console_main`. Each subcommand is a module of
its own, with its parser and its entry point (:mod:`.run`, :mod:`.many` for
``run-many``, :mod:`.gc`); they import the modules they share and never each
other:

* :mod:`.common`: exit codes, help formatting, error lines, a stoppable trio run;
* :mod:`.options`: the flags that describe a container (``run`` and ``run-many``);
* :mod:`.spec`: those flags' values as a :class:`supervisor.Spec`;
* :mod:`.specfile`: ``run-many``'s specs files, loaded only for one.

A command line's start-up is measured: no module here imports anything heavy
(``typing``, ``dataclasses``, ``shutil``, trio...) at module level, so that a
plain ``supervisor run`` loads only what its run needs.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence

from . import gc, many, run
from .common import Formatter

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["build_parser", "console_main", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render the CLI docs).

    Returns:
        the parser of the whole command line, with each subcommand's.
    """
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Start, supervise and clean up Linux containers.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True
    run.add_parser(sub)
    many.add_parser(sub)
    gc.add_parser(sub)
    return parser


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata would cost
    every run about 25 ms."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def console_main() -> NoReturn:
    """The ``supervisor`` console script: :func:`main`, then a quick exit.

    A normal interpreter exit tears down every module and object after the run
    (about 30 ms once trio and the API are loaded), for a process that ends
    anyway. This does what that exit does for the outside world (flush the
    standard streams, run the ``atexit`` hooks, the veth janitor's among
    them), then ends the process with the run's status.

    Raises:
        SystemExit: from argument parsing (``--help``, a bad option), as usual.
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to tell it
            pass
    atexit._run_exitfuncs()
    os._exit(status)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("supervisor")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.1.0"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supervisor`` console script.

    Args:
        argv: the arguments after the program's name (default: ``sys.argv[1:]``).

    Returns:
        the process exit status.

    Raises:
        SystemExit: from argument parsing (``--help``, ``--version``, a bad option).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The subcommand's usage, not the top level's: the flag was given to it.
        chosen = _subparser(parser, args.subcommand)
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.subcommand == "run":
        return run.main(parser, args)
    if args.subcommand == "gc":
        return gc.main(args)
    if args.subcommand == "run-many":
        return many.main(parser, args)
    parser.error(f"unknown command {args.subcommand}")  # pragma: no cover
    return 2  # pragma: no cover


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser  # pragma: no cover - every subcommand has its parser
