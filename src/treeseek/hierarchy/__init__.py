"""Trees over classes: the data structure, taxonomy files, and builders."""
from treeseek.hierarchy.taxonomy_io import load_taxonomy, read_parent_child, read_paths, save_hierarchy
from treeseek.hierarchy.tree import Hierarchy

__all__ = ["Hierarchy", "load_taxonomy", "read_parent_child", "read_paths", "save_hierarchy"]
