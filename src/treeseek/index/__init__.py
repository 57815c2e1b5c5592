"""Persistent, updatable indexes: segments on disk, a crash-safe manifest, any search backend."""
from .storage import is_index, read_manifest
from .tree_index import DTYPES, INDEX_METHODS, TreeIndex

__all__ = ["DTYPES", "INDEX_METHODS", "TreeIndex", "is_index", "read_manifest"]
