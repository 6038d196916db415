"""Code that runs on the far side of the clone: PID 1's setup, in C.

The C extension :mod:`supervisor._child._spawn` (its sources sit beside this
file; ``setup.c`` is the sequence, one file per kernel concept) clones PID 1
from the supervisor's process and runs everything PID 1 does until the
payload's ``execve``. No Python runs in any process after the clone.
"""
