"""Builders that learn a tree over classes from training features.

All take features already in PCA space and the training labels, and expose
the tree as ``hierarchy_`` after ``fit``. Fit them on the training split only.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist, squareform

from treeseek.errors import TreeseekError
from treeseek.hierarchy.lexical_prior import lexical_distances, resolve_names
from treeseek.hierarchy.name_semantics import (
    BUNDLED_MODEL,
    IDENTIFIER_SHARE,
    NAME_TEMPLATE,
    looks_like_identifier,
    name_distances,
)
from treeseek.hierarchy.taxonomy_io import load_taxonomy
from treeseek.hierarchy.tree import Hierarchy
from treeseek.hierarchy.wordnet import noun_graph
from treeseek.hierarchy.wordnet_names import wordnet_words
from treeseek.statistics import ClassGaussians, bhattacharyya_coefficient, bhattacharyya_distance
from treeseek.statistics.bhattacharyya import mixture_bhattacharyya_coefficient
from treeseek.statistics.subclasses import SubclassSplit

logger = logging.getLogger(__name__)


def parse_threshold(text: str) -> float | str:
    """A threshold typed by a person: a number, or a spec (``auto``, ``qX``) left for ``resolve_threshold``."""
    try:
        return float(text)
    except ValueError:
        return text


def resolve_threshold(bc: np.ndarray, spec: float | str) -> float:
    """Turn a threshold spec into a value on the scale of this BC matrix.

    * a number: used as is (the paper's 0.2-0.3 suits fine-tuned features);
    * ``"qX"``: the X quantile of the off-diagonal coefficients, e.g. ``"q0.99"``;
    * ``"auto"``: the quantile that leaves about K/2 pairs at or above t, i.e.
      one merge partner for every other class, so the first level merges
      close pairs only and later levels grow from there.
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not 0.0 < spec <= 1.0:
            raise TreeseekError(f"threshold must be in (0, 1], got {spec}")
        return float(spec)
    k = bc.shape[0]
    pairs = bc[np.triu_indices(k, 1)]
    if len(pairs) == 0:
        return 1.0
    text = str(spec).strip().lower()
    if text == "auto":
        quantile = 1.0 - min(1.0, (k / 2.0) / len(pairs))
    elif text.startswith("q"):
        try:
            quantile = float(text[1:])
        except ValueError:
            raise TreeseekError(f"threshold quantile must look like q0.99, got {spec!r}") from None
        if not 0.0 <= quantile <= 1.0:
            raise TreeseekError(f"threshold quantile must be in [0, 1], got {spec!r}")
    else:
        try:
            return resolve_threshold(bc, float(text))
        except ValueError:
            raise TreeseekError(f"threshold must be a number, 'auto' or 'qX', got {spec!r}") from None
    value = float(np.quantile(pairs, quantile, method="higher"))
    return max(value, np.finfo(float).tiny)


def threshold_grid(bc: np.ndarray, n: int = 8) -> np.ndarray:
    """Log-spaced thresholds spanning the upper tail of the BC matrix, for a validation search."""
    k = bc.shape[0]
    pairs = bc[np.triu_indices(k, 1)]
    pairs = pairs[pairs > 0]
    if len(pairs) == 0:
        return np.array([1.0])
    low = np.quantile(pairs, max(0.0, 1.0 - 4.0 * k / len(pairs)))
    high = pairs.max()
    return np.unique(np.geomspace(max(low, 1e-300), high, n))


class VisualHierarchyBuilder:
    """The paper's visual hierarchy (§3.1).

    At each level, classes whose Gaussians overlap with BC >= t are joined
    (every connected component of that graph becomes one class of the next
    level), and Gaussians are re-estimated from the pooled training features.
    This repeats until no pair overlaps or one class is left; a root then joins
    what remains. Learned state: ``hierarchy_``, ``threshold_``, ``levels_``
    (group of every class at each level), ``shape_`` (number of groups at each
    merge level, singletons included, ending with the root) and ``bc_`` (leaf level).
    """

    def __init__(self, threshold: float | str = "auto", covariance: str = "tied", max_levels: int = 64):
        self.threshold = threshold
        self.covariance = covariance
        self.max_levels = max_levels

    def fit(self, X: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None = None, *,
            split: SubclassSplit | None = None) -> "VisualHierarchyBuilder":
        """``split``: classes that are mixtures of sub-class Gaussians; groups are then mixtures of their
        classes' sub-classes, and overlap as ``mixture_bhattacharyya_coefficient`` bounds it."""
        y = np.asarray(y)
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        group = np.arange(n_classes)
        levels: list[np.ndarray] = []
        parts = _parts(X, split, self.covariance)
        for level in range(self.max_levels):
            n_groups = int(group.max()) + 1
            if n_groups == 1:
                break
            if parts is None:  # each group one Gaussian, re-estimated from its pooled features (the paper)
                bc = bhattacharyya_coefficient(ClassGaussians(self.covariance).fit(X, group[y], n_groups))
            else:
                bc = mixture_bhattacharyya_coefficient(parts, group[split.component_class], n_groups)
            if level == 0:
                self.bc_ = bc
                self.threshold_ = resolve_threshold(bc, self.threshold)
            edges = bc >= self.threshold_
            np.fill_diagonal(edges, False)
            if not edges.any():
                break
            _, component = connected_components(csr_matrix(edges), directed=False)
            group = component[group]
            levels.append(group.copy())
        self.levels_ = levels
        self.hierarchy_ = Hierarchy.from_groups(levels, names)
        # groups after each merge level (singletons included), then the root
        self.shape_ = [n_classes] + [len(np.unique(level)) for level in levels]
        if self.shape_[-1] > 1:
            self.shape_.append(1)
        return self


LINKAGES = ("average", "complete", "single", "weighted", "ward")
CLASS_DISTANCES = ("bhattacharyya", "euclidean", "cosine")
# the share of class-name distances chosen on the Caltech-101 validation split (benchmarks/bench_name_trees.py)
NAMES_WEIGHT = 0.4
# the share of the WordNet prior: on two botanical sets of #31 the gap closed was flat for weights 0.6-1.0
WORDNET_WEIGHT = 0.7
#: where the lexical distances of a name tree come from: a language model, WordNet, or WordNet with the language
#: model for the classes WordNet does not resolve
LEXICONS = ("names", "wordnet", "names+wordnet")


class LinkageHierarchyBuilder:
    """Agglomerative linkage over distances between classes: Bhattacharyya distances between the class
    Gaussians (default), or Euclidean / cosine distances between the class means in PCA space.

    ``levels=None`` keeps the binary tree; an integer cuts it at that many quantiles of the merge
    heights, so classes merged at similar distances share one level (a full visual tree, #7).
    Ward linkage on Euclidean distances between means is the paper's Ward baseline.

    ``names_weight`` > 0 mixes in lexical distances between the classes, from ``lexicon``: cosine distances
    between the class names from a language model (``names``, ``name_semantics``), WordNet distances between the
    synsets the names resolve to (``wordnet``, ``lexical_prior``; unresolved classes at the mean distance), or
    WordNet where both classes resolve and the language model elsewhere (``names+wordnet``). Each kind of
    distance is divided by its mean, then ``(1 - names_weight) * visual + names_weight * lexical``. Names must
    be words for the language model; ``name_template`` frames each one for it (e.g. ``"{} is a kind of bird"``).
    ``wordnet_`` records the WordNet resolution (coverage, domain, each class's synset).
    """

    def __init__(self, method: str = "average", levels: int | None = None, covariance: str = "tied",
                 distance: str = "bhattacharyya", names_weight: float = 0.0, name_model: str = BUNDLED_MODEL,
                 name_template: str = NAME_TEMPLATE, lexicon: str = "names"):
        self.method, self.levels, self.covariance, self.distance = method, levels, covariance, distance
        self.names_weight, self.name_model, self.name_template = names_weight, name_model, name_template
        self.lexicon = lexicon

    def fit(self, X: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None = None, *,
            split: SubclassSplit | None = None) -> "LinkageHierarchyBuilder":
        """``split``: classes that are mixtures of sub-class Gaussians; their Bhattacharyya distance is then
        ``-log`` of ``mixture_bhattacharyya_coefficient`` (distances between class means do not change)."""
        if self.method not in LINKAGES:
            raise TreeseekError(f"linkage must be one of {', '.join(LINKAGES)}, got {self.method!r}")
        if self.distance not in CLASS_DISTANCES:
            raise TreeseekError(f"class distance must be one of {', '.join(CLASS_DISTANCES)}, got {self.distance!r}")
        if self.method == "ward" and self.distance != "euclidean":
            raise TreeseekError("Ward linkage needs Euclidean distances between class means")
        if self.levels is not None and self.levels < 1:
            raise TreeseekError(f"levels must be at least 1, got {self.levels}")
        if not 0.0 <= self.names_weight <= 1.0:
            raise TreeseekError(f"the weight of class-name distances must lie in [0, 1], got {self.names_weight}")
        if self.names_weight > 0 and self.method == "ward":
            raise TreeseekError("Ward linkage needs Euclidean distances, so it cannot mix in class-name distances")
        if self.names_weight > 0 and class_names is None:
            raise TreeseekError("mixing in class-name distances needs the class names")
        if self.lexicon not in LEXICONS:
            raise TreeseekError(f"the lexical distances come from {', '.join(LEXICONS)}, not {self.lexicon!r}")
        y = np.asarray(y)
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        if n_classes == 1:
            self.hierarchy_ = Hierarchy([-1], names, 1)
            self.shape_ = [1]
            return self
        gaussians = ClassGaussians(self.covariance).fit(X, y, n_classes)
        parts = _parts(X, split, self.covariance)
        if self.distance == "bhattacharyya":
            distances = bhattacharyya_distance(gaussians) if parts is None else \
                -np.log(mixture_bhattacharyya_coefficient(parts, split.component_class, n_classes))
            np.fill_diagonal(distances, 0.0)
            condensed = squareform(np.maximum(distances, 0.0), checks=False)
        else:
            condensed = pdist(gaussians.means_, metric=self.distance)
        if not np.isfinite(condensed).all():  # cosine of a class whose mean is the overall mean (zero)
            raise TreeseekError(f"the {self.distance} distance between class means is undefined for some classes "
                                f"(a class mean at the origin of PCA space); choose another distance, e.g. "
                                f"{self.method}:{self.levels or 8}:euclidean")
        prior = self._lexical_distances(names) if self.names_weight > 0 else None
        self.names_used_ = prior is not None
        if self.names_used_:
            condensed = _mixed(condensed, prior, self.names_weight)
        self.merges_ = linkage(condensed, method=self.method)
        if self.levels is None:
            parent = np.full(2 * n_classes - 1, -1, dtype=np.int64)
            for step, (a, b) in enumerate(self.merges_[:, :2].astype(np.int64)):
                parent[a] = parent[b] = n_classes + step
            self.hierarchy_ = Hierarchy(parent, names + [f"{self.method}{i}" for i in range(n_classes - 1)],
                                        n_classes)
        else:
            cuts = np.quantile(self.merges_[:, 2], np.arange(1, self.levels + 1) / (self.levels + 1))
            groups = [fcluster(self.merges_, cut, criterion="distance") - 1 for cut in np.unique(cuts)]
            self.hierarchy_ = Hierarchy.from_groups([g for g in groups if len(np.unique(g)) < n_classes] or [],
                                                    names)
        self.shape_ = self.hierarchy_.shape()
        return self

    def _lexical_distances(self, names: list[str]) -> np.ndarray | None:
        """Condensed lexical distances between the classes from ``lexicon``, or None (with a warning) when there
        are none to be had."""
        words = wordnet_words(names)  # ImageNet's wnid folders, as words
        language = (lambda: name_distances(words, self.name_model, self.name_template)) \
            if _names_readable(words) else None
        self.wordnet_ = None
        if self.lexicon == "names":
            return None if language is None else language()
        without = "with the language model's distances alone" if language else "without names"
        graph = noun_graph()
        if graph is None:
            reason = "WordNet is not installed (on Debian: apt-get install wordnet-base)"
        else:
            resolution = resolve_names(names, graph)
            self.wordnet_ = resolution.describe(graph, names)
            lexical = squareform(lexical_distances(resolution, graph), checks=False)
            resolved = ~np.isnan(lexical)
            reason = None if resolved.any() else "fewer than two class names resolve in WordNet"
        if reason is not None:
            logger.warning("%s: the tree is built %s", reason, without)
            return None if language is None or self.lexicon == "wordnet" else language()
        lexical = lexical / max(lexical[resolved].mean(), np.finfo(float).tiny)
        if self.lexicon == "names+wordnet" and language is not None and not resolved.all():
            fallback = language()
            fallback = fallback / max(fallback.mean(), np.finfo(float).tiny)
        else:  # the mean WordNet distance, scaled to one
            fallback = np.ones_like(lexical)
        return np.where(resolved, lexical, fallback)


def _names_readable(names: Sequence[str]) -> bool:
    """Whether the class names are words a language model can read; when more than ``IDENTIFIER_SHARE`` of them
    look like identifiers (``looks_like_identifier``), a warning says so and the tree is built without them."""
    identifiers = [name for name in names if looks_like_identifier(name)]
    if len(identifiers) > IDENTIFIER_SHARE * len(names):
        logger.warning("%d of the %d class names look like identifiers, not words (e.g. %s): a language model would "
                       "rate them alike by their form alone, so the tree is built without them", len(identifiers),
                       len(names), ", ".join(identifiers[:3]))
        return False
    return True


def _mixed(visual: np.ndarray, names: np.ndarray, names_weight: float) -> np.ndarray:
    """Both kinds of distance on one scale (each divided by its mean), then their weighted sum."""
    def scaled(d: np.ndarray) -> np.ndarray:
        return d / d.mean() if d.mean() > 0 else d
    return (1.0 - names_weight) * scaled(visual) + names_weight * scaled(names)


def _parts(X: np.ndarray, split: SubclassSplit | None, covariance: str) -> ClassGaussians | None:
    """The sub-class Gaussians when some class is a mixture, else None (every class one Gaussian)."""
    if split is None or split.is_whole():
        return None
    return ClassGaussians(covariance).fit(X, split.labels, split.n_components)


def lca_agreement(tree: Hierarchy, other: Hierarchy) -> float:
    """Pearson correlation of normalised LCA heights over all class pairs (a cophenetic correlation)."""
    upper = np.triu_indices(tree.n_leaves, k=1)
    a, b = tree.normalized_lca[upper], other.normalized_lca[upper]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class TaxonomyHierarchyBuilder:
    """A taxonomy file (JSON, parent-child or paths), aligned to the dataset's classes."""

    def __init__(self, path: str):
        self.path = path

    def fit(self, X: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None = None, *,
            split: SubclassSplit | None = None) -> "TaxonomyHierarchyBuilder":
        """``split`` changes nothing: the taxonomy is over classes."""
        hierarchy = load_taxonomy(self.path, class_names)
        n_labels = int(np.max(y)) + 1
        if hierarchy.n_leaves < n_labels:
            raise TreeseekError(f"taxonomy has {hierarchy.n_leaves} classes but labels go up to {n_labels - 1}")
        self.hierarchy_ = hierarchy
        self.shape_ = hierarchy.shape()
        return self


def make_builder(kind: str, threshold: float | str = "auto", covariance: str = "tied"):
    """``visual``, ``ward``, a linkage tree ``LINKAGE[:LEVELS][:DISTANCE][:LEXICON[=W]]`` (``average``,
    ``average:4``, ``average:8:euclidean``, ``average:16:cosine:names``; linkages and distances as in
    ``LinkageHierarchyBuilder``; the lexicon ``names``, ``wordnet`` or ``names+wordnet`` mixes in lexical distances
    between the classes at weight W, by default 0.4 for names and 0.7 with WordNet), or a taxonomy file."""
    if kind == "visual":
        return VisualHierarchyBuilder(threshold=threshold, covariance=covariance)
    method, *options = kind.split(":")
    if method not in LINKAGES:
        return TaxonomyHierarchyBuilder(kind)
    levels, distance = None, "euclidean" if method == "ward" else "bhattacharyya"
    names_weight, lexicon = 0.0, "names"
    for option in options:
        source, _, weight = option.partition("=")
        if option.isdigit():
            levels = int(option)
        elif option in CLASS_DISTANCES:
            distance = option
        elif source in LEXICONS:
            lexicon = source
            names_weight = _names_weight(kind, source, weight)
        else:
            raise TreeseekError(f"hierarchy {kind!r}: write LINKAGE[:LEVELS][:DISTANCE][:LEXICON[=W]], e.g. average:4, "
                                f"average:8:euclidean or average:16:cosine:names+wordnet (distances: "
                                f"{', '.join(CLASS_DISTANCES)}; lexicons: {', '.join(LEXICONS)})")
    return LinkageHierarchyBuilder(method, levels, covariance, distance, names_weight, lexicon=lexicon)


def _names_weight(kind: str, source: str, weight: str) -> float:
    if not weight:
        return NAMES_WEIGHT if source == "names" else WORDNET_WEIGHT
    try:
        return float(weight)
    except ValueError:
        raise TreeseekError(f"hierarchy {kind!r}: {source}=W takes a weight in [0, 1], got {weight!r}") from None
