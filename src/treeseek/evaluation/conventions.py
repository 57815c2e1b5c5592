"""Metric conventions: treeseek's definitions, and those of the peers whose tables a researcher sets ours beside.

A convention turns one batch of rankings (``RankedBatch``) into the metrics it defines. ``treeseek`` is the
default; every other one follows one peer's published evaluation code, quirks included, so that a number can
be put next to that peer's table:

========== ============================================ ==================================================
convention follows                                      differs from treeseek's default
========== ============================================ ==================================================
treeseek   (its own; the README's "Metrics")            —
barz       Barz & Denzler, cvjena/semantic-embeddings,  AHP@k divided by k (trapezoid sum / k, m = min(k, n)),
           class_hierarchy.py ``hierarchical_precision`` heights in the tree as given (chains kept),
                                                        AP = 0 for queries with R = 0 (kept in the mean)
hpdh       Zhang et al., mzhang367/hpdh, get_map.py     mAHP@k: plain mean of HP@1..k, similarity = matching
           (``mAHP_torch``, ``mnDCG_torch``), utils.py  levels / L (leaf label repeated below its depth);
           (``compute_mAP``)                            nDCG: gain = matching levels, ranks 1-2 undiscounted,
                                                        rank p >= 3 divided by log2(p - 1), mean of nDCG@1..k;
                                                        both 0 for a query without any matching level
deephash   DeepHash-pytorch, utils/tools.py             mAP@k divided by the relevant items retrieved in the
           ``CalcTopMap``                               top k (R_k), 0 when none (kept in the mean); its
                                                        ``topK = -1`` drops the last item: not reproduced
pml        pytorch-metric-learning AccuracyCalculator   MAP@R and R-precision; queries with R = 0 left out
bertinetto Bertinetto et al., making-better-mistakes    severity@k (``avgK``): all top-k LCA heights (correct
           (``topK_hdist``, ``avgK``)                   items 0) of the queries whose top 1 is wrong, over
                                                        n_wrong * k; hdist@k: mean top-k height; heights as given
========== ============================================ ==================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, ClassVar

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.evaluation import metrics as M
from treeseek.hierarchy import Hierarchy

CONVENTIONS: dict[str, type["Convention"]] = {}
MAHP_K = 250


def register_convention(cls: type["Convention"]) -> type["Convention"]:
    CONVENTIONS[cls.name] = cls
    return cls


def get_convention(name: str) -> type["Convention"]:
    """The convention registered as ``name``, or one ``TreeseekError`` line naming those there are.

    Parameters
    ----------
    name : str
        ``treeseek``, ``barz``, ``hpdh``, ``deephash``, ``pml`` or ``bertinetto``.

    Returns
    -------
    type
        Its ``Convention`` class: ``Convention(taxonomy, counts, leave_one_out)`` scores ``RankedBatch``es.

    Examples
    --------
    >>> import numpy as np
    >>> pml = get_convention("pml")(None, np.array([2, 1]), False)
    >>> batch = RankedBatch(np.array([[0, 1, 0]]), np.array([0]), np.array([2]), None, None)
    >>> float(pml.score("r_precision", batch, None).values[0])  # one of the first R = 2 ranks is relevant
    0.5
    """
    if name not in CONVENTIONS:
        raise TreeseekError(f"unknown metric convention '{name}'; choose from {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


@dataclass
class RankedBatch:
    """Rankings of a batch of queries: ``labels`` (nq x m) the classes of the ranked database items, best first,
    cut at m = min(k_max, n); ``full_labels()`` the whole ranking (n columns), computed on demand; ``n_relevant``
    R per query (its class's database items, itself excluded in leave-one-out); ``full_ap()`` AP over the whole
    ranking, NaN where R = 0."""

    labels: np.ndarray
    query_labels: np.ndarray
    n_relevant: np.ndarray
    full_labels: Callable[[], np.ndarray]
    full_ap: Callable[[], np.ndarray]

    @cached_property
    def relevant(self) -> np.ndarray:
        return self.labels == self.query_labels[:, None]

    @property
    def relevant_to_r(self) -> np.ndarray:
        """``relevant`` over at least the first max(R) ranks (the cut ranking when it reaches them)."""
        if self.labels.shape[1] >= int(self.n_relevant.max(initial=0)):
            return self.relevant
        return self.full_labels() == self.query_labels[:, None]


@dataclass
class Score:
    """Per-query values of one metric (NaN: left out of the mean), or, when ``pooled``, per-query numerators and
    denominators summed over all queries before dividing."""

    values: np.ndarray
    denominators: np.ndarray | None = None

    @property
    def pooled(self) -> bool:
        return self.denominators is not None


# What a metric family needs: a cut-off k, an evaluation taxonomy, the whole ranking sorted, the first R ranks; and
# ASKED: reported only when asked for by name (its cost is a full sort of every query's ranking).
K, TAXONOMY, FULL, TO_R, ASKED = 1, 2, 4, 8, 16


class Convention:
    """The metrics of one convention. ``families`` maps a metric family to what it needs (``K | TAXONOMY |
    FULL``); ``score(family, batch, k)`` computes it. ``counts`` are the database items per class; in
    leave-one-out the query is not in its own database. ``names`` renames a family in reports."""

    name: ClassVar[str]
    families: ClassVar[dict[str, int]]
    names: ClassVar[dict[str, str]] = {"map_all": "map", "map_r": "map@r"}

    def __init__(self, taxonomy: Hierarchy | None, counts: np.ndarray, leave_one_out: bool):
        self.taxonomy, self.counts, self.leave_one_out = taxonomy, np.asarray(counts), leave_one_out
        self._ideals: dict[tuple[int, int], np.ndarray] = {}

    def metric_names(self, ks, full_ranking: bool = True, only=None) -> list[tuple[str, str, int | None]]:
        """(reported name, family, k) of everything this convention reports for the cut-offs ``ks`` (with its
        evaluation taxonomy, if any, and the whole ranking if ``full_ranking``); ``only``: these families or
        reported names."""
        wanted = None if only is None else set(only)
        reported_names = {self.names.get(f, f): f for f in self.families}
        for name in wanted or ():
            if name not in self.families and name not in reported_names:
                raise TreeseekError(f"the '{self.name}' convention does not define '{name}'; it defines "
                                    f"{', '.join(self.families)}")
            if self.families[reported_names.get(name, name)] & TAXONOMY and self.taxonomy is None:
                raise TreeseekError(f"'{name}' needs an evaluation taxonomy (--taxonomy)")
        out = []
        for family, needs in self.families.items():
            if needs & TAXONOMY and self.taxonomy is None or needs & FULL and not full_ranking:
                continue
            if (wanted is None and needs & ASKED or wanted is not None
                    and not wanted & {family, self.names.get(family, family)}):
                continue
            for k in (sorted({*ks, *self.extra_ks.get(family, ())}) if needs & K else [None]):
                name = self.names.get(family, family)
                out.append((name if k is None else f"{name}@{k}" if "{k}" not in name else name.format(k=k),
                            family, k))
        if not out:
            raise TreeseekError(f"the '{self.name}' convention's metrics need an evaluation taxonomy (--taxonomy)")
        return out

    extra_ks: ClassVar[dict[str, tuple[int, ...]]] = {}

    def score(self, family: str, batch: RankedBatch, k: int | None) -> Score:
        if family not in self.families:
            raise TreeseekError(f"the '{self.name}' convention does not define '{family}'; it defines "
                                f"{', '.join(self.families)}")
        if self.families[family] & TAXONOMY and self.taxonomy is None:
            raise TreeseekError(f"'{family}' needs an evaluation taxonomy")
        return getattr(self, f"_{family.replace('-', '_')}")(batch, k)

    def ideal(self, matrix: np.ndarray, k: int) -> np.ndarray:
        """Row c: the k largest ``matrix[c, label(i)]`` over the database, descending (the ideal ranking of a
        class-c query; in leave-one-out one item of class c, the query, is not there)."""
        key = (id(matrix), k)
        if key not in self._ideals:
            self._ideals[key] = M.ideal_values(matrix, self.counts, k, self.leave_one_out)
        return self._ideals[key]

    def _on_ranked(self, matrix: np.ndarray, batch: RankedBatch, k: int | None = None,
                   labels: np.ndarray | None = None) -> np.ndarray:
        """``matrix[query class, ranked class]`` over the top k of the ranking (all of ``labels`` if given)."""
        ranked = (batch.labels if k is None else M._cut(batch.labels, k)) if labels is None else labels
        return matrix[batch.query_labels[:, None], ranked]


@register_convention
class Treeseek(Convention):
    """treeseek's definitions (see ``metrics``), heights counted in branchings (chains removed)."""

    name = "treeseek"
    families = {"precision": K, "map": K, "map_paper": K, "map_all": FULL, "mahp": K | TAXONOMY,
                "ndcg": K | TAXONOMY, "severity": K | TAXONOMY, "hd": K | TAXONOMY, "hap": TAXONOMY | FULL | ASKED,
                "map_r": TO_R, "r_precision": TO_R}
    extra_ks = {"mahp": (MAHP_K,)}

    @cached_property
    def similarity(self) -> np.ndarray:
        return 1.0 - self.taxonomy.normalized_lca

    @cached_property
    def gains(self) -> np.ndarray:
        return self.taxonomy.shared_levels.astype(np.float64)

    def _precision(self, batch, k):
        return Score(M.precision_at_k(batch.relevant, k))

    def _map(self, batch, k):
        return Score(M.average_precision_at_k(batch.relevant, batch.n_relevant, k))

    def _map_paper(self, batch, k):
        return Score(M.average_precision_at_k(batch.relevant, batch.n_relevant, k, "paper"))

    def _map_all(self, batch, k):
        return Score(batch.full_ap())

    def _mahp(self, batch, k):
        ideal = self.ideal(self.similarity, max(k, MAHP_K))[batch.query_labels]
        return Score(M.average_hierarchical_precision(self._on_ranked(self.similarity, batch, k), ideal, k))

    def _ndcg(self, batch, k):
        ideal = self.ideal(self.gains, max(k, MAHP_K))[batch.query_labels]
        return Score(M.ndcg_at_k(self._on_ranked(self.gains, batch, k), ideal, k))

    def _severity(self, batch, k):
        heights = self._on_ranked(self.taxonomy.lca_heights, batch, k)
        return Score(*M.mistake_severity_at_k(heights, batch.relevant, k))

    def _hd(self, batch, k):
        return Score(M.hierarchical_distance_at_k(self._on_ranked(self.taxonomy.lca_heights, batch, k), k))

    def _hap(self, batch, k):
        labels = batch.full_labels()
        shared = self._on_ranked(self.taxonomy.shared_levels, batch, labels=labels)
        depth = self.taxonomy.depth[batch.query_labels]
        return Score(M.hierarchical_average_precision(M.pop_relevance(shared, depth)))

    def _map_r(self, batch, k):
        return Score(M.map_at_r(batch.relevant_to_r, batch.n_relevant))

    def _r_precision(self, batch, k):
        return Score(M.r_precision(batch.relevant_to_r, batch.n_relevant))


@register_convention
class Barz(Convention):
    name = "barz"
    families = {"hp": K | TAXONOMY, "ahp": K | TAXONOMY, "map_all": FULL}
    extra_ks = {"ahp": (MAHP_K,)}

    @cached_property
    def similarity(self) -> np.ndarray:
        heights = self.taxonomy.given_lca_heights
        return 1.0 - heights / max(int(heights.max()), 1)

    def _curve(self, batch, k):
        ideal = self.ideal(self.similarity, max(k, MAHP_K))[batch.query_labels]
        return M.hierarchical_precision_curve(self._on_ranked(self.similarity, batch, k), ideal, k)

    def _hp(self, batch, k):
        return Score(self._curve(batch, k)[:, -1])

    def _ahp(self, batch, k):
        curve = self._curve(batch, k)  # m = min(k, n) points, divided by k as the code does
        return Score((curve.sum(axis=1) - (curve[:, 0] + curve[:, -1]) / 2.0) / k)

    def _map_all(self, batch, k):
        return Score(np.nan_to_num(batch.full_ap(), nan=0.0))


@register_convention
class Hpdh(Convention):
    name = "hpdh"
    families = {"mahp": K | TAXONOMY, "ndcg_mean": K | TAXONOMY, "map_all": FULL}
    names = {"map_all": "map", "ndcg_mean": "ndcg@1-{k}"}
    extra_ks = {"mahp": (MAHP_K,), "ndcg_mean": (100,)}

    @cached_property
    def matches(self) -> np.ndarray:
        table = self.taxonomy.given_level_labels
        return (table[:, None, :] == table[None, :, :]).sum(axis=2).astype(np.float64)

    def _mahp(self, batch, k):
        matched = self._on_ranked(self.matches, batch, k)
        levels = self.taxonomy.given_level_labels.shape[1]
        ideal = self.ideal(self.matches, max(k, MAHP_K))[batch.query_labels, : matched.shape[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = np.cumsum(matched / levels, axis=1) / np.cumsum(ideal / levels, axis=1)
        return Score(np.where(matched.sum(axis=1) > 0, curve.mean(axis=1), 0.0))

    def _ndcg_mean(self, batch, k):
        gains = self._on_ranked(self.matches, batch, k)
        ideal = self.ideal(self.matches, max(k, 100))[batch.query_labels, : gains.shape[1]]
        positions = np.arange(1, gains.shape[1] + 1)
        discount = np.where(positions <= 2, 1.0, 1.0 / np.log2(np.maximum(positions - 1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            ndcg = np.cumsum(gains * discount, axis=1) / np.cumsum(ideal * discount, axis=1)
        return Score(np.where(gains.sum(axis=1) > 0, ndcg.mean(axis=1), 0.0))

    def _map_all(self, batch, k):
        return Score(batch.full_ap())  # compute_mAP: the mean over relevant items of rank-precision; R > 0 only


@register_convention
class DeepHash(Convention):
    name = "deephash"
    families = {"map": K, "map_all": FULL}

    def _map(self, batch, k):
        relevant = M._cut(batch.relevant, k)
        retrieved = relevant.sum(axis=1)
        total = M.precision_hits(relevant)[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return Score(np.where(retrieved > 0, total / retrieved, 0.0))

    def _map_all(self, batch, k):
        return Score(np.nan_to_num(batch.full_ap(), nan=0.0))  # CalcMap: a query with R = 0 adds 0


@register_convention
class Pml(Convention):
    name = "pml"
    families = {"map_r": TO_R, "r_precision": TO_R, "precision": K}

    _map_r, _r_precision = Treeseek._map_r, Treeseek._r_precision  # lone queries (R = 0): NaN, left out

    def _precision(self, batch, k):  # precision_at_1 leaves out lone queries too
        return Score(np.where(batch.n_relevant > 0, M.precision_at_k(batch.relevant, k), np.nan))


@register_convention
class Bertinetto(Convention):
    name = "bertinetto"
    families = {"severity": K | TAXONOMY, "hdist": K | TAXONOMY}

    def _heights(self, batch, k):
        return self._on_ranked(self.taxonomy.given_lca_heights, batch, k).astype(np.float64)

    def _severity(self, batch, k):
        heights = self._heights(batch, k)
        wrong = ~batch.relevant[:, 0]
        return Score(np.where(wrong, heights.sum(axis=1), 0.0), np.where(wrong, heights.shape[1], 0))

    def _hdist(self, batch, k):
        return Score(M.hierarchical_distance_at_k(self._heights(batch, k), k))


def aggregate(scores: list[Score]) -> float:
    """The mean over every query of a metric's per-batch scores (pooled ones: their sums' ratio)."""
    if scores[0].pooled:
        denominator = float(sum(s.denominators.sum() for s in scores))
        return float(sum(s.values.sum() for s in scores)) / denominator if denominator else float("nan")
    values = np.concatenate([s.values for s in scores])
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
