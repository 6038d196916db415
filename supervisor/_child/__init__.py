"""Code that runs on the far side of the fork: in the fork server and in PID 1.

Nothing here imports trio, anyio, pyroute2 or any module outside the standard
library and :mod:`supervisor._sys`/:mod:`supervisor._protocol`. The fork server
loads this package without executing ``supervisor/__init__.py`` (see
:mod:`supervisor._parent.forkserver`), so the public facade's imports never
reach the process that forks containers.
"""
