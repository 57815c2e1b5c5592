"""Class embeddings whose dot products are a tree's similarities (Barz & Denzler, WACV 2019).

Each class c gets a unit vector phi_c with phi_a . phi_b = 1 - height(LCA(a, b)) / height(root).
Barz & Denzler build the vectors one class at a time, each solving a triangular system against the
ones before it: that is the Cholesky factor of the similarity matrix, whose rows are the embeddings.
"""
from __future__ import annotations

import numpy as np

from treeseek.hierarchy.tree import Hierarchy


def tree_similarity(tree: Hierarchy) -> np.ndarray:
    """K x K matrix 1 - height(LCA)/height(root): 1 on the diagonal, 0 for classes meeting only at the root."""
    return 1.0 - tree.normalized_lca


def class_embeddings(tree: Hierarchy) -> np.ndarray:
    """K x K matrix whose rows are unit vectors with pairwise dot products equal to ``tree_similarity``."""
    similarity = tree_similarity(tree)
    try:
        return np.linalg.cholesky(similarity)
    except np.linalg.LinAlgError:
        # Only positive semi-definite (possible only in degenerate trees): factor through the eigenbasis.
        values, vectors = np.linalg.eigh(similarity)
        return vectors * np.sqrt(np.clip(values, 0.0, None))
