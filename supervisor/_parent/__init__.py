"""Code that runs in the supervisor's process (the parent side of the fork).

It is async (anyio, so it runs under trio and asyncio) and never forks: the
fork server does that.
"""
