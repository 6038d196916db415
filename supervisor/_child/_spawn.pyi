from collections.abc import Sequence

from .._protocol import SpawnConfig

CONFIG_FIELDS: tuple[str, ...]
HEADER_SIZE: int
MARK_SIZE: int
INIT_SHEDS_MEMORY: int

def spawn(config: SpawnConfig, fds: Sequence[int], /) -> tuple[int, int]: ...
