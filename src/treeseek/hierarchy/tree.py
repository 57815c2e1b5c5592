"""A rooted tree over K leaf classes.

Nodes ``0 .. K-1`` are the leaves, in class order; inner nodes follow. A leaf
has height 0 and any other node has height 1 + the largest height among its
children. Every tree is normalised on construction: an inner node with a
single child is removed and its child takes its place (the child keeps its
name), so chains such as WordNet's ``accordion.n.01 -> accordion`` do not
inflate LCA heights. Heights therefore count branchings, not path lengths.
The tree as given, chains included, is kept beside it (``given_parent``): some
peers' metrics count its levels (``given_lca_heights``, ``given_level_labels``).
"""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np

from treeseek.errors import TreeseekError

FORMAT_NAME = "treeseek-hierarchy"
FORMAT_VERSION = 1


class Hierarchy:
    """Tree over ``n_leaves`` classes given by a parent array (-1 marks the root)."""

    def __init__(self, parent: Sequence[int], names: Sequence[str], n_leaves: int):
        parent = np.asarray(parent, dtype=np.int64)
        names = [str(name) for name in names]
        if parent.ndim != 1 or len(parent) != len(names):
            raise TreeseekError("hierarchy: parent array and names must have the same length")
        if not 1 <= n_leaves <= len(parent):
            raise TreeseekError(f"hierarchy: n_leaves={n_leaves} is out of range for {len(parent)} nodes")
        self.given_parent, self.given_names = _validated(parent, names, n_leaves).copy(), names
        parent, names = _collapse_chains(self.given_parent, names, n_leaves)
        self.parent = parent
        self.names = names
        self.n_leaves = int(n_leaves)
        self.n_nodes = len(parent)
        self.root = int(np.flatnonzero(parent < 0)[0])
        self.children = _children_lists(parent)
        self._compute_layout()

    # ------------------------------------------------------------------ layout
    def _compute_layout(self) -> None:
        order = _breadth_first(self.root, self.children)
        height = np.zeros(self.n_nodes, dtype=np.int64)
        for node in reversed(order):
            if self.children[node]:
                height[node] = 1 + max(height[child] for child in self.children[node])
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for node in order:
            if node != self.root:
                depth[node] = depth[self.parent[node]] + 1
        self.height = height
        self.depth = depth

        # Depth-first leaf order makes every subtree one contiguous block.
        leaf_order: list[int] = []
        block = np.zeros((self.n_nodes, 2), dtype=np.int64)
        stack: list[tuple[int, bool]] = [(self.root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                block[node, 1] = len(leaf_order)
                continue
            block[node, 0] = len(leaf_order)
            if node < self.n_leaves:
                leaf_order.append(node)
                block[node, 1] = len(leaf_order)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(self.children[node]))
        self.leaf_order = np.asarray(leaf_order, dtype=np.int64)
        self.leaf_rank = np.empty(self.n_leaves, dtype=np.int64)
        self.leaf_rank[self.leaf_order] = np.arange(self.n_leaves)
        self.block = block

    @property
    def max_height(self) -> int:
        """Height of the root, the H of the paper."""
        return int(self.height[self.root])

    # ----------------------------------------------------------------- queries
    def ancestors(self, leaf: int) -> np.ndarray:
        """Nodes from ``leaf`` (included) up to the root, heights strictly increasing."""
        path = [int(leaf)]
        while self.parent[path[-1]] >= 0:
            path.append(int(self.parent[path[-1]]))
        return np.asarray(path, dtype=np.int64)

    @cached_property
    def ancestor_table(self) -> np.ndarray:
        """K x (depth + 1) array: row l lists ``ancestors(l)``, padded with -1 past the root."""
        paths = [self.ancestors(leaf) for leaf in range(self.n_leaves)]
        table = np.full((self.n_leaves, max(len(p) for p in paths) + 1), -1, dtype=np.int64)
        for leaf, path in enumerate(paths):
            table[leaf, : len(path)] = path
        return table

    def lca(self, a: int, b: int) -> int:
        """Lowest common ancestor of two nodes."""
        seen = set(self.ancestors(a).tolist())
        for node in self.ancestors(b):
            if int(node) in seen:
                return int(node)
        raise AssertionError("a validated tree always has a common ancestor")

    @cached_property
    def lca_heights(self) -> np.ndarray:
        """K x K matrix of height(LCA(a, b)), as integers."""
        in_dfs = np.zeros((self.n_leaves, self.n_leaves), dtype=np.int64)
        inner = [node for node in range(self.n_leaves, self.n_nodes)]
        # Parents are written before their (lower) children, so the innermost block wins.
        for node in sorted(inner, key=lambda n: -self.height[n]):
            start, end = self.block[node]
            in_dfs[start:end, start:end] = self.height[node]
        np.fill_diagonal(in_dfs, 0)
        rank = self.leaf_rank
        return in_dfs[np.ix_(rank, rank)]

    @cached_property
    def normalized_lca(self) -> np.ndarray:
        """K x K matrix of height(LCA)/height(root), the paper's D_H between leaves."""
        if self.max_height == 0:
            return np.zeros((self.n_leaves, self.n_leaves))
        return self.lca_heights / float(self.max_height)

    @cached_property
    def shared_levels(self) -> np.ndarray:
        """K x K number of path nodes below the root that two leaves share.

        Equal leaves share their whole path (depth of the leaf); leaves whose LCA
        is the root share none. This is the nDCG gain of HPDH's evaluation.
        """
        depth_in_dfs = np.zeros((self.n_leaves, self.n_leaves), dtype=np.int64)
        for node in sorted(range(self.n_leaves, self.n_nodes), key=lambda n: self.depth[n]):
            start, end = self.block[node]
            depth_in_dfs[start:end, start:end] = self.depth[node]
        rank = self.leaf_rank
        shared = depth_in_dfs[np.ix_(rank, rank)]
        np.fill_diagonal(shared, self.depth[: self.n_leaves])
        return shared

    @cached_property
    def given_depths(self) -> np.ndarray:
        """Depth of every node of the tree as given (chains kept); the root has depth 0."""
        parent = self.given_parent
        depth = np.zeros(len(parent), dtype=np.int64)
        for node in _breadth_first(int(np.flatnonzero(parent < 0)[0]), _children_lists(parent)):
            if parent[node] >= 0:
                depth[node] = depth[parent[node]] + 1
        return depth

    @cached_property
    def given_lca_heights(self) -> np.ndarray:
        """K x K height(LCA) in the tree as given, chains kept (a node's height is 1 + its highest child's):
        the LCS height of Barz & Denzler's and Bertinetto et al.'s code."""
        parent, depth = self.given_parent, self.given_depths
        height = np.zeros(len(parent), dtype=np.int64)
        for node in np.argsort(-depth, kind="stable"):  # children before their parents
            if parent[node] >= 0:
                height[parent[node]] = max(height[parent[node]], height[node] + 1)
        below = np.zeros((len(parent), self.n_leaves), dtype=bool)  # node x leaves under it
        for leaf in range(self.n_leaves):
            node = leaf
            while node >= 0:
                below[node, leaf] = True
                node = parent[node]
        out = np.zeros((self.n_leaves, self.n_leaves), dtype=np.int64)
        for node in np.argsort(-height, kind="stable"):  # lower LCAs overwrite higher ones
            if node >= self.n_leaves:
                leaves = np.flatnonzero(below[node])
                out[np.ix_(leaves, leaves)] = height[node]
        np.fill_diagonal(out, 0)
        return out

    @cached_property
    def given_level_labels(self) -> np.ndarray:
        """K x D label table of HPDH's evaluation: column l - 1 is each leaf's ancestor at depth l of the tree as
        given (l = 1 .. D, the deepest leaf's depth), and the leaf itself below its own depth."""
        parent, depth = self.given_parent, self.given_depths
        levels = int(depth[: self.n_leaves].max())
        table = np.empty((self.n_leaves, levels), dtype=np.int64)
        for leaf in range(self.n_leaves):
            path = [leaf]
            while parent[path[-1]] >= 0:
                path.append(int(parent[path[-1]]))
            by_depth = path[::-1]  # root, depth 1, ..., the leaf
            for level in range(1, levels + 1):
                table[leaf, level - 1] = by_depth[level] if level < len(by_depth) else leaf
        return table

    def labels_at_height(self, height: int) -> np.ndarray:
        """For each leaf, its lowest ancestor whose height is at least ``height``."""
        result = np.arange(self.n_leaves)
        for leaf in range(self.n_leaves):
            node = leaf
            while self.height[node] < height and self.parent[node] >= 0:
                node = self.parent[node]
            result[leaf] = node
        return result

    def levels(self) -> list[np.ndarray]:
        """``labels_at_height(h)`` for h = 0 .. max_height: the ancestors at every level."""
        return [self.labels_at_height(h) for h in range(self.max_height + 1)]

    def shape(self) -> list[int]:
        """Number of groups at each level, from the leaves (K) up to the root (1)."""
        return [len(np.unique(labels)) for labels in self.levels()]

    def leaves_under(self, node: int) -> np.ndarray:
        start, end = self.block[node]
        return self.leaf_order[start:end]

    # ------------------------------------------------------------ construction
    @classmethod
    def flat(cls, n_leaves: int, names: Sequence[str] | None = None) -> "Hierarchy":
        """One root over all leaves: D_H is 0 within a class and 1 otherwise."""
        names = list(names) if names is not None else [str(i) for i in range(n_leaves)]
        if n_leaves == 1:
            return cls([-1], names, 1)
        return cls([n_leaves] * n_leaves + [-1], names + ["root"], n_leaves)

    @classmethod
    def from_groups(cls, levels: Sequence[np.ndarray], names: Sequence[str]) -> "Hierarchy":
        """Tree from nested partitions: ``levels[l][i]`` is the group of leaf i at level l+1.

        Each level must refine the next one. A root joins whatever the last level leaves.
        """
        n_leaves = len(names)
        node_names = list(names)
        current = np.arange(n_leaves)  # node id of each leaf's group at the level below
        parent = [-1] * n_leaves
        for depth, groups in enumerate(levels, start=1):
            groups = np.asarray(groups)
            new_node: dict[int, int] = {}
            next_current = np.empty(n_leaves, dtype=np.int64)
            for leaf in range(n_leaves):
                group = int(groups[leaf])
                if group not in new_node:
                    new_node[group] = len(parent)
                    parent.append(-1)
                    node_names.append(f"L{depth}.{len(new_node) - 1}")
                below = int(current[leaf])
                if parent[below] not in (-1, new_node[group]):
                    raise TreeseekError("hierarchy levels are not nested partitions")
                parent[below] = new_node[group]
                next_current[leaf] = new_node[group]
            current = next_current
        tops = sorted(set(current.tolist()))
        if len(tops) > 1:
            root = len(parent)
            parent.append(-1)
            node_names.append("root")
            for top in tops:
                parent[top] = root
        return cls(parent, node_names, n_leaves)

    def restrict(self, leaf_names: Sequence[str]) -> "Hierarchy":
        """The subtree spanned by ``leaf_names``, with leaves renumbered in that order.

        Every name must be a leaf of this tree; leaves not named are dropped.
        """
        index = {name: i for i, name in enumerate(self.names[: self.n_leaves])}
        missing = [name for name in leaf_names if name not in index]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise TreeseekError(f"taxonomy lacks {len(missing)} dataset class(es): {shown}")
        if len(set(leaf_names)) != len(leaf_names):
            raise TreeseekError("dataset class names are not unique")
        given, n_given = self.given_parent, len(self.given_parent)  # restricted as given: chains stay chains
        keep = np.zeros(n_given, dtype=bool)
        for name in leaf_names:
            node = index[name]
            while node >= 0 and not keep[node]:
                keep[node] = True
                node = given[node]
        inner = [n for n in range(self.n_leaves, n_given) if keep[n]]
        new_id = {index[name]: i for i, name in enumerate(leaf_names)}
        new_id.update({node: len(leaf_names) + j for j, node in enumerate(inner)})
        old_nodes = [index[name] for name in leaf_names] + inner
        parent = [new_id[given[n]] if given[n] >= 0 else -1 for n in old_nodes]
        return Hierarchy(parent, [self.given_names[n] for n in old_nodes], len(leaf_names))

    # ------------------------------------------------------------ serialising
    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n_leaves": self.n_leaves,
            "names": list(self.names),
            "parent": self.parent.tolist(),
            **({} if len(self.given_parent) == self.n_nodes else
               {"given_names": list(self.given_names), "given_parent": self.given_parent.tolist()}),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> "Hierarchy":
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise TreeseekError("not a treeseek hierarchy (missing format marker)")
        if payload.get("version") != FORMAT_VERSION:
            raise TreeseekError(
                f"hierarchy format version {payload.get('version')} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            return cls(payload.get("given_parent", payload["parent"]), payload.get("given_names", payload["names"]),
                       int(payload["n_leaves"]))
        except (KeyError, TypeError) as exc:
            raise TreeseekError(f"hierarchy JSON is incomplete: {exc}") from None

    def to_newick(self) -> str:
        """Newick text; branch lengths are height differences, so the tree is ultrametric."""
        text: dict[int, str] = {}
        for node in reversed(_breadth_first(self.root, self.children)):
            label = _newick_label(self.names[node])
            if self.children[node]:
                label = "(" + ",".join(text.pop(child) for child in self.children[node]) + ")" + label
            if node != self.root:
                label += f":{self.height[self.parent[node]] - self.height[node]}"
            text[node] = label
        return text[self.root] + ";"

    def __repr__(self) -> str:
        return f"Hierarchy(n_leaves={self.n_leaves}, n_nodes={self.n_nodes}, shape={self.shape()})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Hierarchy)
            and self.n_leaves == other.n_leaves
            and self.names == other.names
            and np.array_equal(self.parent, other.parent)
        )


# --------------------------------------------------------------------- helpers
def _validated(parent: np.ndarray, names: list[str], n_leaves: int) -> np.ndarray:
    n = len(parent)
    if np.any((parent < -1) | (parent >= n)):
        raise TreeseekError("hierarchy: a parent index is out of range")
    roots = np.flatnonzero(parent < 0)
    if len(roots) == 0:  # every node has a parent: following parents must loop
        seen, node = set(), 0
        while node not in seen:
            seen.add(node)
            node = int(parent[node])
        raise TreeseekError(f"hierarchy has a cycle through '{names[node]}'")
    if len(roots) != 1:
        shown = ", ".join(names[r] for r in roots[:5])
        raise TreeseekError(f"hierarchy must have exactly one root, found {len(roots)}: {shown}")
    leaves_with_children = sorted({int(p) for p in parent if 0 <= p < n_leaves})
    if leaves_with_children:
        raise TreeseekError(f"hierarchy: class '{names[leaves_with_children[0]]}' has children")
    reachable = set(_breadth_first(int(roots[0]), _children_lists(parent)))
    if len(reachable) != n:
        stray = next(i for i in range(n) if i not in reachable)
        raise TreeseekError(f"hierarchy has a cycle through '{names[stray]}'")
    parents = set(parent.tolist())
    childless_inner = [i for i in range(n_leaves, n) if i not in parents]
    if childless_inner:
        raise TreeseekError(f"hierarchy: inner node '{names[childless_inner[0]]}' has no leaf below it")
    return parent


def _children_lists(parent: np.ndarray) -> list[list[int]]:
    children: list[list[int]] = [[] for _ in range(len(parent))]
    for child, p in enumerate(parent):
        if p >= 0:
            children[p].append(child)
    return children


def _breadth_first(root: int, children: list[list[int]]) -> list[int]:
    order = [root]
    for node in order:
        order.extend(children[node])
        if len(order) > len(children):  # only a cycle can revisit nodes
            break
    return order


def _collapse_chains(parent: np.ndarray, names: list[str], n_leaves: int) -> tuple[np.ndarray, list[str]]:
    parent = parent.copy()
    n = len(parent)
    n_children = np.bincount(parent[parent >= 0], minlength=n)
    removed = np.zeros(n, dtype=bool)
    for node in range(n_leaves, n):
        if n_children[node] == 1:
            child = int(np.flatnonzero((parent == node) & ~removed)[0])
            parent[child] = parent[node]
            removed[node] = True
    keep = np.flatnonzero(~removed)
    new_id = np.full(n, -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    new_parent = np.where(parent[keep] >= 0, new_id[np.maximum(parent[keep], 0)], -1)
    return new_parent, [names[i] for i in keep]


def _newick_label(name: str) -> str:
    if any(ch in name for ch in " ()[]':;,\t"):
        return "'" + name.replace("'", "''") + "'"
    return name
