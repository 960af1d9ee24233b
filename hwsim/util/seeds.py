"""Seeds: every random draw of hwsim comes from a seed derived from labels."""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *parts) -> int:
    """A 63-bit seed from ``base`` and labels (repeat index, time...), stable across runs.

    Each (repeat, time) draws from its own seed, so a cell's value does not depend on which
    other cells were computed, or in which order: what makes resumed studies exact.
    """
    text = "/".join(str(p) for p in (base, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
