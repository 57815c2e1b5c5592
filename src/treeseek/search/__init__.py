"""Ranking: distance definitions, the brute-force reference, and the fast hierarchical index."""
from .distances import METHODS, cosine_distances, euclidean_distances, full_sort_search, ranking_keys
from .flat_index import FlatIndex
from .hierarchical_index import HierarchicalIndex
from .topk import smallest_k

__all__ = [
    "METHODS",
    "FlatIndex",
    "HierarchicalIndex",
    "cosine_distances",
    "euclidean_distances",
    "full_sort_search",
    "ranking_keys",
    "smallest_k",
]
