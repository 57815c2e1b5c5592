"""Ranking: distance definitions, the brute-force reference, and the fast hierarchical index."""
from .backends import BACKENDS, make_backend
from .distances import METHODS, cosine_distances, euclidean_distances, full_sort_search, ranking_keys
from .flat_index import FlatIndex
from .hierarchical_index import HierarchicalIndex, hierarchical_topk
from .segment import Segment
from .topk import smallest_k

__all__ = [
    "BACKENDS",
    "METHODS",
    "FlatIndex",
    "HierarchicalIndex",
    "Segment",
    "cosine_distances",
    "euclidean_distances",
    "full_sort_search",
    "hierarchical_topk",
    "make_backend",
    "ranking_keys",
    "smallest_k",
]
