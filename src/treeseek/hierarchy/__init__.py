"""Trees over classes: the data structure, taxonomy files, and builders."""
from .tree import Hierarchy
from .taxonomy_io import load_taxonomy, read_parent_child, read_paths, save_hierarchy

__all__ = ["Hierarchy", "load_taxonomy", "read_parent_child", "read_paths", "save_hierarchy"]
