"""``python -m supervisor``: the command-line interface."""

from ._cli import console_main

if __name__ == "__main__":
    console_main()
