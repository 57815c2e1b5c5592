"""Sub-classes in the tree: a class that is a mixture becomes an inner node over one leaf per sub-class.

Items are then placed at sub-class leaves, so that the ranking tells "the same mode of the same class" (LCA
height 0) from "the same class" (the class node, height 1) and from other classes, whose LCAs are the class
tree's. A class that was not split keeps its leaf, its name and its place.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from treeseek.hierarchy.tree import Hierarchy


def with_subclasses(tree: Hierarchy, component_class: np.ndarray, component_names: Sequence[str]) -> Hierarchy:
    """The tree over classes ``tree`` with every class's sub-classes as its leaves.

    Parameters
    ----------
    tree : Hierarchy
        A tree whose leaves are the classes.
    component_class : array of shape (C,)
        The class of every sub-class; every class has at least one.
    component_names : sequence of C str
        The new leaves' names.

    Returns
    -------
    Hierarchy
        Leaves ``0 .. C-1`` are the sub-classes in order; ``tree`` itself when no class was split.

    Examples
    --------
    >>> tree = Hierarchy([2, 2, -1], ["cat", "dog", "animal"], 2)
    >>> split = with_subclasses(tree, np.array([0, 0, 1]), ["cat~1", "cat~2", "dog"])
    >>> split.names[split.lca(0, 1)], split.names[split.lca(0, 2)], split.max_height
    ('cat', 'animal', 2)
    """
    component_class = np.asarray(component_class, dtype=np.int64)
    n_components, n_classes = len(component_class), tree.n_leaves
    if n_components == n_classes:
        return tree
    sizes = np.bincount(component_class, minlength=n_classes)
    split_classes = np.flatnonzero(sizes > 1)
    # new ids: sub-class leaves, then the split classes (now inner nodes), then the tree's inner nodes
    new_id = np.empty(tree.n_nodes, dtype=np.int64)
    new_id[:n_classes] = -1
    new_id[split_classes] = n_components + np.arange(len(split_classes))
    whole = sizes == 1
    new_id[np.flatnonzero(whole)] = np.flatnonzero(whole[component_class])  # an unsplit class is its only part
    first_inner = n_components + len(split_classes)
    new_id[n_classes:] = first_inner + np.arange(tree.n_nodes - n_classes)
    parent = np.full(first_inner + tree.n_nodes - n_classes, -1, dtype=np.int64)
    names = [""] * len(parent)
    for node in range(tree.n_nodes):
        if node < n_classes and whole[node]:
            continue  # its part, at new_id[node], is placed below
        names[new_id[node]] = tree.names[node]
        if tree.parent[node] >= 0:
            parent[new_id[node]] = new_id[tree.parent[node]]
    for component, cls_ in enumerate(component_class):
        names[component] = str(component_names[component])
        up = tree.parent[cls_] if whole[cls_] else cls_
        parent[component] = new_id[up] if up >= 0 else -1
    return Hierarchy(parent, names, n_components)
