"""The OCI runtime ``supervisor-oci``: runc's command line over the library's container setup.

:mod:`.bundle` turns ``config.json`` into a :class:`~supervisor._protocol.SpawnConfig`,
:mod:`.state` keeps each container's record under ``--root``, :mod:`.runtime`
performs the operations, :mod:`.cli` is the command line.
"""
