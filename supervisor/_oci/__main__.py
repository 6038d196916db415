"""``python -m supervisor._oci``: the ``supervisor-oci`` command."""

from .cli import console_main

if __name__ == "__main__":
    console_main()
