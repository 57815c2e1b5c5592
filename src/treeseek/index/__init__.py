"""Persistent, updatable indexes: segments on disk, a crash-safe manifest, any search backend."""
from .tree_index import DTYPES, TreeIndex, is_index, read_manifest

__all__ = ["DTYPES", "TreeIndex", "is_index", "read_manifest"]
