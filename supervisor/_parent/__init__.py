"""Code that runs in the supervisor's process (the parent side of the fork).

It is async (anyio, so it runs under trio and asyncio) and runs no code after
a fork: the clone and PID 1's setup are C (:mod:`supervisor._parent.spawn`
calls :mod:`supervisor._child._spawn`).
"""
