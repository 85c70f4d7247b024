"""Seeds derived from names, so each unit of work is reproducible on its own (and on resume)."""

from __future__ import annotations

import hashlib
import json


def unit_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed for one unit of work that does not depend on what ran before it."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")
