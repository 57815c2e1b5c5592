"""The one search path of the command line and the server: queries → target → ``search`` → report.

Where the queries come from (images, a feature file, stored items) and what answers them (an index, the
Milvus collection pushed from it, or a model with a feature file as the database) are independent choices:
``*_queries`` read the first, ``*_target`` open the second, and ``run_search`` joins them through the search
contract (``treeseek.search.contract``) and ``presentation.search_report``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from treeseek.apps.presentation import search_report
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.io.features import FeatureSet, align_labels
from treeseek.search import MemoryIndex, Ranking, SearchIndex
from treeseek.search.code_index import CodeIndex
from treeseek.search.contract import Capabilities, padded
from treeseek.search.open_set import open_set_search


@dataclass
class Queries:
    """Raw query features, what to call them, and per query the ids its results must leave out."""

    features: np.ndarray
    names: list
    exclude_ids: np.ndarray | None = None
    pictures: list | None = None     # the query pictures, where there are any, to head the result grids
    stems: list[str] = field(default_factory=list)  # file-name stems for the grids


@dataclass
class SearchTarget:
    """What answers a search (``index``, the contract) and how its ids are described (``lookup``)."""

    index: SearchIndex
    model: object | None                 # None for an index of binary codes alone
    lookup: Callable[[np.ndarray], dict]
    catalogue: TreeIndex | None = None  # the persistent index the items live in, when there is one
    images: object | None = None         # its ImageIndex, when it holds pictures
    class_names: list[str] | None = None  # when there is no model to name the classes


def run_search(target: SearchTarget, queries: Queries, k: int, ranking: Ranking, *,
               subtree: str | None = None) -> dict:
    """Search every query and return the report that ``--json``, the printout and the server share; a query that
    no known class is close to is ranked by the visual distance alone (``search.open_set``). ``subtree``: only
    the items under that node of the tree (an index searched by itself)."""
    features = np.asarray(queries.features, dtype=np.float64)  # every index checks its queries itself
    options = {}
    if subtree is not None:
        if not isinstance(target.index, TreeIndex):
            raise TreeseekError("a search within a branch of the tree needs an index searched by itself (not a "
                                "feature file, binary codes alone or Milvus)")
        options["subtree"] = subtree
    if target.model is None:  # binary codes alone: no class Gaussians to measure novelty by (nor a tree)
        distances, ids = target.index.search(features, k, ranking=ranking, exclude_ids=queries.exclude_ids)
        return search_report(None, ranking, features, queries.names, distances, ids, target.lookup,
                             class_names=target.class_names)
    novelty = target.model.novelty(target.model.check_dim(features, "queries"))
    distances, ids, fallback = open_set_search(target.index, novelty.flagged, features, k, ranking=ranking,
                                               exclude_ids=queries.exclude_ids, **options)
    report = search_report(target.model, ranking, features, queries.names, distances, ids, target.lookup,
                           class_names=target.class_names, novelty=novelty, fallback=fallback)
    return report if subtree is None else {**report, "within": subtree}


# ------------------------------------------------------------------ targets
def index_target(index: TreeIndex, *, engine=None, images=None) -> SearchTarget:
    """A persistent index as the target; ``engine`` (a ``MilvusIndex``) ranks instead of it, when given."""
    return SearchTarget(index if engine is None else _CheckedEngine(engine, index), index.model,
                        lambda ids: {**index.items(ids), "names": ids}, index, images)


def engine_for(open_engine, model, ranking: Ranking):
    """The engine that ranks instead of the index, ``open_engine(model, method)``, for a ranking it can serve."""
    if ranking.method == "hamming":
        raise TreeseekError("an engine ranks the stored vectors; --hamming and --rerank search the index itself")
    return open_engine(model, ranking.method)


def features_target(model, database: FeatureSet, *, use_database_labels: bool = False) -> SearchTarget:
    """A feature file searched in memory with a fitted model; hits are named by the file's ids."""
    features = model.check_dim(database.features, database.source)
    labels = align_labels(database, model.class_names_)
    if use_database_labels and labels is None:
        raise TreeseekError(f"{database.source}: --use-database-labels needs labels, and the file has none")
    index = MemoryIndex(model)
    index.add(features, known_labels=labels if use_database_labels else None)
    row_ids = database.row_ids()

    def lookup(rows: np.ndarray) -> dict:
        items = index.items(rows)
        known = labels[rows] if labels is not None else np.full(len(rows), -1)
        return {**items, "labels": known, "names": row_ids[rows], "rows": rows, "sources": None}

    return SearchTarget(index, model, lookup)


def codes_target(hasher, class_names: list[str], database: FeatureSet, *, kind: str = "flat") -> SearchTarget:
    """A feature file as binary codes of a hasher ('treeseek hash train'), ranked by Hamming distance alone."""
    index = CodeIndex(hasher, kind=kind)
    index.add(np.asarray(database.features, dtype=np.float64))
    labels = align_labels(database, class_names) if database.labels is not None else None
    row_ids = database.row_ids()

    def lookup(rows: np.ndarray) -> dict:
        return {"labels": labels[rows] if labels is not None else np.full(len(rows), -1), "names": row_ids[rows]}

    return SearchTarget(index, None, lookup, class_names=list(class_names))


class _CheckedEngine:
    """An engine's answers, refused when it returns an item the index no longer holds (a stale push)."""

    def __init__(self, engine, index: TreeIndex):
        self.engine, self.index = engine, index
        self.capabilities: Capabilities = engine.capabilities

    def search(self, X, k, *, ranking=Ranking(), exclude_ids=None):
        distances, ids = padded(*self.engine.search(X, k, ranking=ranking, exclude_ids=exclude_ids))
        returned = np.unique(ids[ids >= 0])
        stale = returned[~self.index.contains(returned)]
        if len(stale):
            raise TreeseekError(f"Milvus returned item {stale[0]}, which the index no longer holds; push the index "
                                f"again")
        return distances, ids


# ------------------------------------------------------------------ queries
def feature_queries(data: FeatureSet) -> Queries:
    """The rows of a feature file, named by its ids."""
    return Queries(data.features, list(data.row_ids()))


def item_queries(target: SearchTarget, item_ids, *, pictures: bool = False) -> Queries:
    """Stored items as the queries ("more like this"), each left out of its own results; with ``pictures``,
    their stored pictures too (to head result grids)."""
    if target.catalogue is None:
        raise TreeseekError("--item names an item of an index; give the index directory")
    item_ids = [int(i) for i in item_ids]
    items = target.catalogue.items(item_ids)
    shown = None
    if pictures and target.images is not None:
        shown = [target.images.thumbnail(i, source) for i, source in zip(item_ids, items["sources"])]
    return Queries(target.catalogue.model.features_from_cosine(items["vectors"] * items["norms"][:, None]),
                   [f"item {i}" for i in item_ids],
                   np.asarray(item_ids, dtype=np.int64), shown, [f"item-{i}" for i in item_ids])


def picture_queries(target: SearchTarget, pictures: list, names: list[str], stems: list[str]) -> Queries:
    """Decoded pictures, embedded by the network that embedded the collection."""
    if target.images is None:
        raise TreeseekError("this index holds feature vectors, not images: query it with feature vectors")
    return Queries(target.images.embed(pictures), names, None, pictures, stems)
