"""Ranking: the search contract, distance definitions, the brute-force reference and the in-memory index."""
from treeseek.search.backends import BACKENDS, make_backend
from treeseek.search.contract import RANKING_METHODS, Capabilities, Ranking, SearchIndex
from treeseek.search.distances import METHODS, cosine_distances, euclidean_distances, full_sort_search, ranking_keys
from treeseek.search.memory_index import MemoryIndex
from treeseek.search.segment import Segment
from treeseek.search.topk import smallest_k

__all__ = [
    "BACKENDS",
    "METHODS",
    "Capabilities",
    "MemoryIndex",
    "RANKING_METHODS",
    "Ranking",
    "SearchIndex",
    "Segment",
    "cosine_distances",
    "euclidean_distances",
    "full_sort_search",
    "make_backend",
    "ranking_keys",
    "smallest_k",
]
