from collections.abc import Sequence

from .._protocol import SpawnConfig

CONFIG_FIELDS: tuple[str, ...]
HEADER_SIZE: int
MARK_SIZE: int

def spawn(config: SpawnConfig, fds: Sequence[int], exit_signal: int, reply_fd: int, /) -> None: ...
def collect() -> int: ...
