"""``python -m supervisor``: the command-line interface."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
