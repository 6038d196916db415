"""Code that runs on the far side of the fork: the fork server, and PID 1's setup.

The fork server (:mod:`supervisor._child.forkserver`) is a small Python process
that imports only the standard library, :mod:`supervisor._sys`,
:mod:`supervisor._protocol` and the C extension :mod:`supervisor._child._spawn`,
whose C sources sit beside it: the clone and everything PID 1 does until the
payload's ``execve`` (``setup.c`` is the sequence). The fork server loads this
package without executing ``supervisor/__init__.py`` (see
:mod:`supervisor._parent.forkserver`), so the public facade's imports never
reach the process that forks containers.
"""
