"""The one thin syscall layer, shared by both sides of the fork.

Everything that talks to the kernel beyond what :mod:`os` offers goes through
:mod:`supervisor._sys.linux`, whose errors name the call and its arguments.
Constants live in :mod:`supervisor._sys.constants`, each with the header it
comes from. This package imports only the standard library, so the fork server
can load it without pulling in trio, anyio or pyroute2.
"""
