"""The pytest plugin: tests run in sandboxes (``pytest --sandbox``).

Loaded by pytest through the package's ``pytest11`` entry point and off until
asked. The host half (:mod:`.plugin`, :mod:`.host`) runs in the pytest
process; the worker half (:mod:`.worker`) is the payload of each sandbox, a
pytest of its own that collects the same tests and runs the ones it is sent,
each in a fresh fork. :mod:`.wire` is what the two say to each other,
:mod:`.options` what a sandbox is asked to be.
"""
