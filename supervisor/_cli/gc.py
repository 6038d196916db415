"""``supervisor gc``: remove what crashed supervisors left behind.

Its parser and its entry point, over :func:`supervisor.collect_garbage`.
"""

from __future__ import annotations

import argparse
import json
import sys

from .common import Formatter


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``gc`` subcommand and its options.

    Args:
        sub: the top-level parser's subcommands.
    """
    gc = sub.add_parser(
        "gc",
        formatter_class=Formatter,
        help="remove what crashed supervisors left behind",
        description=(
            "Remove the host-side resources (cgroups, network links, address leases, folders) recorded by"
            " supervisors that died without cleaning up. Running supervisors are left alone."
        ),
    )
    gc.add_argument("--json", action="store_true", help="print what was removed as JSON")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``supervisor gc``: a line per resource removed, or ``--json``'s one object.

    Args:
        args: the parsed command line.

    Returns:
        the exit status: 1 if a resource could not be removed, else 0.
    """
    from .. import collect_garbage

    report = collect_garbage()
    if args.json:
        print(json.dumps({"owners": report.owners, "removed": report.removed, "errors": report.errors}))
    else:
        for record in report.removed:
            print(f"removed {record.get('kind')}: {record.get('path') or record.get('name') or record}")
        for error in report.errors:
            print(f"supervisor: gc: {error}", file=sys.stderr)
        print(f"{len(report.owners)} dead supervisor(s), {len(report.removed)} resource(s) removed")
    return 1 if report.errors else 0
