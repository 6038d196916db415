"""``python -m supervisor._oci``: the ``supervisor-oci`` command."""

from .cli import console_main

console_main()
