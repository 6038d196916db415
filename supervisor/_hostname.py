"""crabcan-style hostnames (``adjective-noun-N``), unique among live containers."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random

# crabcan's own word lists (hostname.rs).
NOUNS = ("cat", "world", "coffee", "girl", "man", "book", "pinguin", "moon")
ADJECTIVES = (
    "blue", "red", "green", "yellow", "big", "small", "tall", "thin",
    "round", "square", "triangular", "weird", "noisy", "silent", "soft", "irregular",
)  # fmt: skip


class _Urandom:
    """The ``random.Random`` methods ``generate`` uses, from ``os.urandom``
    (importing ``random`` costs a command line about 1 ms)."""

    @staticmethod
    def randrange(n: int) -> int:
        return int.from_bytes(os.urandom(8), "little") % n

    def choice(self, seq: tuple[str, ...]) -> str:
        return seq[self.randrange(len(seq))]


_RNG = _Urandom()


def generate(taken: set[str] | frozenset[str], rng: random.Random | _Urandom | None = None) -> str:
    """A random ``adjective-noun-N`` name not in ``taken``.

    crabcan drew N in 0..255 and never checked for collisions (32,768 names;
    two containers could share a name and, in crabcan, a cgroup). Here N starts
    in crabcan's range and widens when that range is crowded, so the result is
    always unique among ``taken``.

    Args:
        taken: names in use by the supervisor's live containers.
        rng: randomness source (tests pass a seeded one).

    Returns:
        A name not in ``taken``.
    """
    rng = rng or _RNG
    limit = 256
    while True:
        for _ in range(32):
            name = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{rng.randrange(limit)}"
            if name not in taken:
                return name
        limit *= 16
