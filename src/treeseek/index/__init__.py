"""Persistent, updatable indexes: segments on disk, a crash-safe manifest, any search backend."""
from treeseek.index.storage import DEFAULT_WAIT_SECONDS, is_index, read_manifest
from treeseek.index.tree_index import DTYPES, INDEX_METHODS, TreeIndex

__all__ = ["DEFAULT_WAIT_SECONDS", "DTYPES", "INDEX_METHODS", "TreeIndex", "is_index", "read_manifest"]
