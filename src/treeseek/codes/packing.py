"""Binary codes as packed bytes: bit j of a code is 1 where the real-valued output was positive."""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError


def pack_codes(values: np.ndarray) -> np.ndarray:
    """n x bits real values (or booleans) -> n x bits/8 uint8; ``bits`` must be a multiple of 8."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] % 8:
        raise TreeseekError(f"codes need an n x bits matrix with bits a multiple of 8, got shape {values.shape}")
    return np.packbits(values > 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """n x bits/8 uint8 -> n x bits int8 in {-1, +1}."""
    packed = np.asarray(packed, dtype=np.uint8)
    bits = packed.shape[1] * 8 if bits is None else bits
    return np.unpackbits(packed, axis=1, count=bits).astype(np.int8) * 2 - 1


def hamming_distances(queries: np.ndarray, codes: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """nq x n Hamming distances between packed codes, by XOR and popcount (the brute-force reference)."""
    queries, codes = np.asarray(queries, dtype=np.uint8), np.asarray(codes, dtype=np.uint8)
    out = np.empty((len(queries), len(codes)), dtype=np.int32)
    for first in range(0, len(codes), chunk):
        block = codes[first : first + chunk]
        out[:, first : first + len(block)] = np.bitwise_count(queries[:, None, :] ^ block[None, :, :]).sum(axis=2)
    return out
