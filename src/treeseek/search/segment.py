"""A batch of items laid out so that every subtree of the hierarchy is one contiguous block.

Items are sorted by the depth-first rank of their leaf, then by id. The rows of
any subtree are then a plain slice: a backend can scan it without gathering
vectors, and FAISS can restrict a search to it with a range selector.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from treeseek.hierarchy import Hierarchy


@dataclass
class Segment:
    tree: Hierarchy          # the tree whose leaf order sorts the rows
    vectors: np.ndarray      # n x d unit rows: float64 in memory, float32/float16 when memory-mapped
    ids: np.ndarray          # n int64, unique
    leaves: np.ndarray       # n leaf ids
    leaf_start: np.ndarray   # K + 1 offsets: the rows of the leaf of rank r are leaf_start[r]:leaf_start[r+1]
    alive: np.ndarray | None = None  # n bools; None when nothing was removed

    @classmethod
    def sorted_from(cls, tree: Hierarchy, vectors: np.ndarray, leaves: np.ndarray, ids: np.ndarray,
                    dtype=np.float64) -> tuple["Segment", np.ndarray]:
        """The segment of unit ``vectors`` and the permutation that sorted them."""
        leaves, ids = np.asarray(leaves, dtype=np.int64), np.asarray(ids, dtype=np.int64)
        order, leaf_start = cls.layout(tree, leaves, ids)
        sorted_vectors = np.asarray(vectors)[order].astype(dtype, copy=False)
        return cls(tree, sorted_vectors, ids[order], leaves[order], leaf_start), order

    @staticmethod
    def layout(tree: Hierarchy, leaves: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(order, leaf_start)``: the permutation that sorts items by leaf rank, then id, and where each leaf's
        rows start once sorted."""
        ranks = tree.leaf_rank[leaves]
        if tree.n_leaves <= 1 << 16:  # numpy sorts 16-bit keys stably by radix: ten times faster than int64 keys
            ranks = ranks.astype(np.uint16)
        # items added in one go come in id order: a stable sort by leaf then suffices, and is faster than lexsort
        order = np.argsort(ranks, kind="stable") if np.all(ids[1:] > ids[:-1]) else np.lexsort((ids, ranks))
        counts = np.bincount(ranks, minlength=tree.n_leaves)
        return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_alive(self) -> int:
        return len(self.ids) if self.alive is None else int(self.alive.sum())

    def block(self, tree: Hierarchy, node: int) -> tuple[int, int]:
        """Rows of the subtree of ``node`` in ``tree``.

        ``tree`` is the segment's own tree, or a tree over the same leaves whose
        nodes are leaves or its root (the one-level tree of ``flat``): both are
        contiguous in any leaf order.
        """
        if node < tree.n_leaves:
            rank = self.tree.leaf_rank[node]
            return int(self.leaf_start[rank]), int(self.leaf_start[rank + 1])
        if node == tree.root:
            return 0, len(self.ids)
        if tree is not self.tree:
            raise ValueError("inner blocks exist only for the tree the segment was sorted by")
        start, end = self.tree.block[node]
        return int(self.leaf_start[start]), int(self.leaf_start[end])

    def dead_between(self, start: int, end: int) -> int:
        return 0 if self.alive is None else int(end - start - np.count_nonzero(self.alive[start:end]))
