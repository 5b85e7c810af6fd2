"""Time-ordered identifiers (UUIDv7 layout, RFC 9562).

Ids sort by creation time, so indexes on them append at the right edge instead of
rewriting pages all over the tree (see the SQLite figures in the shared reference).
"""

from __future__ import annotations

import os
import random
import time

__all__ = ["new_id"]

# Ids need uniqueness, not secrecy: a seeded PRNG gives the random bits without a syscall per
# id (os.urandom showed up in the sidecar's profile). Reseeded in forked children so that two
# processes never share a sequence.
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))


def new_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, version, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(80)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    # Set the version (7) and variant (0b10) bits.
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
