"""A Gaussian latent space (MAPLE, Venkataramanan et al., ICCV Workshops 2023) learned on frozen features.

The visual-hierarchy paper trains its network this way before measuring Bhattacharyya overlap, because the
classes of a plain classifier's latent space are not Gaussian. As the authors' code does:

* the loss is cross-entropy over sub-classes plus a triplet loss on the embedding (batch-hard: each anchor's
  farthest same-sub-class row against its nearest other-class row, within the batch);
* every ``split_every`` epochs, each class whose false-negative rate on a validation split exceeds
  ``fnr_threshold`` is split by X-means (``statistics.subclasses``), at most ``max_subclasses`` parts, and the
  classifier grows to the new sub-classes (a new part starts from its class's weights); a map keeps each
  sub-class's class.

One difference: X-means runs on the frozen features, not on the embedding. The authors' network is deep, and
its embedding keeps a class's modes apart; a linear projection trained towards one class per target folds the
modes together as it learns (the triplet loss pulls them into one), and X-means on it then finds nothing to
split. Every mode of the embedding is a mode of the features, so nothing is lost by looking there.
And one addition: the classes that take a struggling class's false negatives are offered to X-means too. A
class split in two around another (the middle class of ``-A, B, +A``) often leaves the *middle* class with the
false negatives; splitting the victim finds nothing, splitting the culprit fixes both. X-means's BIC still
decides whether each offered class is more than one Gaussian.

On the CPU the network is a linear projection of the backbone's frozen features (minutes on Caltech-101);
``training.checkpoints.save_projection`` writes it as a checkpoint that ``--backbone`` takes. Prediction
and the out-of-distribution score then come from Mahalanobis distances to the sub-class Gaussians of the
embedding, which ``TreeseekModel(subclasses=...)`` fits.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from treeseek.data.datasets import stratified_split
from treeseek.errors import TreeseekError
from treeseek.io.features import check_features
from treeseek.statistics.subclasses import MIN_SUBCLASS_SIZE, check_max_subclasses, split_classes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaussianTraining:
    """The hyper-parameters of ``GaussianLatentHead``.

    Parameters
    ----------
    embed_dim : int
        Dimensions of the embedding (at most the features').
    epochs : int
        Passes over the training features.
    lr : float
        Adam's learning rate.
    weight_decay : float
        Adam's L2 penalty: keeps the embedding's scale from growing to please the triplet margin.
    batch_size : int
        Rows per step (the triplets are mined within a batch).
    margin : float
        Of the triplet loss, in the embedding's units (the features are standardised first).
    triplet_weight : float
        Of the triplet loss against cross-entropy.
    split_every : int
        Epochs between X-means rounds (0: never split).
    max_subclasses : int
        Most sub-classes per class.
    fnr_threshold : float
        A class is split when more than this share of its validation rows is predicted as another class.
    validation_fraction : float
        Of each class, held out to measure false negatives.
    seed : int
        Of the split, the initialisation, the batches and X-means.
    """

    embed_dim: int = 128
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    margin: float = 1.0
    triplet_weight: float = 1.0
    split_every: int = 5
    max_subclasses: int = 4
    fnr_threshold: float = 0.2
    validation_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:  # checked before any feature is extracted
        check_max_subclasses(self.max_subclasses)
        if self.epochs < 1 or self.embed_dim < 1 or self.batch_size < 2:
            raise TreeseekError("epochs and embed_dim must be at least 1, batch_size at least 2")


class GaussianLatentHead:
    """``fit(X, y)`` learns a linear embedding ``weight_``, ``bias_`` (applied to raw features) with its sub-class
    classifier ``head_weight_``, ``head_bias_`` and ``subclass_class_``; ``transform`` embeds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(120, 6)) + np.repeat(np.eye(6)[:3] * 4, 40, axis=0)
    >>> head = GaussianLatentHead(GaussianTraining(embed_dim=4, epochs=3, split_every=0)).fit(X, np.repeat([0, 1, 2], 40))
    >>> head.transform(X).shape, head.subclass_class_.tolist()
    ((120, 4), [0, 1, 2])
    """

    def __init__(self, settings: GaussianTraining = GaussianTraining()):
        self.settings = settings

    def fit(self, X: np.ndarray, y: np.ndarray, progress: bool = False) -> "GaussianLatentHead":
        import torch

        s = self.settings
        X = check_features(X, "training features").astype(np.float32)
        y = np.asarray(y, dtype=np.int64)
        n_classes = int(y.max()) + 1 if len(y) else 0
        if y.shape != (len(X),) or (len(y) and y.min() < 0):
            raise TreeseekError("labels must be one class index >= 0 per row")
        if len(np.unique(y)) < 2:
            raise TreeseekError("Gaussian training needs at least two classes: a class alone has nothing to be "
                                "told apart from")
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        is_val = stratified_split(y, s.validation_fraction, s.seed)
        mean, scale = X.mean(axis=0), float(X.std()) or 1.0
        inputs = torch.from_numpy((X - mean) / scale)
        embed_dim = min(s.embed_dim, X.shape[1])
        projection = torch.nn.Linear(X.shape[1], embed_dim)
        classifier = torch.nn.Linear(embed_dim, n_classes)
        subclass_of_row, subclass_class = y.copy(), np.arange(n_classes)
        self.n_classes_ = n_classes
        optimizer = _optimizer(projection, classifier, s)
        fit_rows = np.flatnonzero(~is_val)
        self.history_ = []
        for epoch in tqdm(range(s.epochs), desc="Gaussian training", disable=not progress):
            losses = []
            for batch in np.array_split(rng.permutation(fit_rows), max(1, len(fit_rows) // s.batch_size)):
                embedded = projection(inputs[batch])
                targets = torch.from_numpy(subclass_of_row[batch])
                loss = torch.nn.functional.cross_entropy(classifier(embedded), targets)
                if s.triplet_weight:
                    loss = loss + s.triplet_weight * batch_hard_triplet(embedded, targets, torch.from_numpy(
                        y[batch]), s.margin)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            with torch.no_grad():
                embedded = projection(inputs).numpy().astype(np.float64)
                predicted = subclass_class[classifier(torch.from_numpy(embedded.astype(np.float32))).argmax(1).numpy()]
            offered = offered_classes(y[is_val], predicted[is_val], n_classes, s.fnr_threshold)
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                     "val_accuracy": float(np.mean(predicted[is_val] == y[is_val])) if is_val.any() else float("nan"),
                     "subclasses": int(len(subclass_class))}
            if s.split_every and (epoch + 1) % s.split_every == 0 and epoch + 1 < s.epochs:
                grown = split_offered(X, y, subclass_of_row, subclass_class, offered, ~is_val, s)
                if grown is not None:
                    subclass_of_row, new_class = grown
                    classifier = grown_classifier(classifier, subclass_class, new_class)
                    subclass_class = new_class
                    optimizer = _optimizer(projection, classifier, s)
                    entry["subclasses"] = int(len(subclass_class))
            self.history_.append(entry)
            logger.info("epoch %d/%d: loss %.4f, validation accuracy %.1f%%, %d sub-classes", epoch + 1, s.epochs,
                        entry["loss"], 100 * entry["val_accuracy"], entry["subclasses"])
        weight = projection.weight.detach().numpy().astype(np.float64) / scale
        self.weight_ = weight
        self.bias_ = projection.bias.detach().numpy().astype(np.float64) - weight @ mean.astype(np.float64)
        self.head_weight_ = classifier.weight.detach().numpy().astype(np.float64)
        self.head_bias_ = classifier.bias.detach().numpy().astype(np.float64)
        self.subclass_class_ = subclass_class
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The embedding of feature rows."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.weight_.shape[1]:
            raise TreeseekError(f"features must have {self.weight_.shape[1]} dimensions, got shape {X.shape}")
        return X @ self.weight_.T + self.bias_

    def describe(self) -> dict:
        """Settings and history, for the checkpoint's record."""
        return {"settings": asdict(self.settings), "history": self.history_,
                "subclass_class": self.subclass_class_.tolist()}


def offered_classes(truth: np.ndarray, predicted: np.ndarray, n_classes: int, fnr_threshold: float) -> np.ndarray:
    """The classes X-means looks at: those whose validation false-negative rate exceeds ``fnr_threshold``, and
    the classes their false negatives were predicted as."""
    totals = np.bincount(truth, minlength=n_classes)
    missed = predicted != truth
    false_negative = np.divide(np.bincount(truth[missed], minlength=n_classes), totals, out=np.zeros(n_classes),
                               where=totals > 0)
    struggling = np.flatnonzero(false_negative > fnr_threshold)
    return np.union1d(struggling, predicted[missed & np.isin(truth, struggling)])


def split_offered(features: np.ndarray, y: np.ndarray, subclass_of_row: np.ndarray, subclass_class: np.ndarray,
                  offered: np.ndarray, fitting: np.ndarray, settings: GaussianTraining):
    """X-means on the features of every ``offered`` class (its rows in ``fitting`` numbering at least twice
    ``MIN_SUBCLASS_SIZE``): the new sub-class of every row and the class of every sub-class, or None when no
    class was split further. Classes not offered keep their sub-classes."""
    if not len(offered):
        return None
    new_rows, new_class = subclass_of_row.copy(), []
    for cls_ in range(len(np.unique(subclass_class))):
        rows = np.flatnonzero(y == cls_)
        if cls_ in offered and np.sum(fitting[rows]) >= 2 * MIN_SUBCLASS_SIZE:
            parts = split_classes(features[rows], np.zeros(len(rows), dtype=np.int64), 1, settings.max_subclasses,
                                  seed=settings.seed).labels
        else:  # keep its sub-classes as they are, renumbered
            _, parts = np.unique(subclass_of_row[rows], return_inverse=True)
        new_rows[rows] = len(new_class) + parts
        new_class.extend([cls_] * (int(parts.max()) + 1))
    new_class = np.asarray(new_class, dtype=np.int64)
    if len(new_class) == len(subclass_class):
        return None
    logger.info("X-means on %d classes: %d -> %d sub-classes", len(offered), len(subclass_class), len(new_class))
    return new_rows, new_class


def grown_classifier(classifier, old_class: np.ndarray, new_class: np.ndarray):
    """A linear classifier over the new sub-classes: each starts from the mean weights of its class's old ones."""
    import torch

    grown = torch.nn.Linear(classifier.in_features, len(new_class)).to(classifier.weight.device)
    with torch.no_grad():
        for part, cls_ in enumerate(new_class):
            rows = torch.from_numpy(np.flatnonzero(old_class == cls_)).to(classifier.weight.device)
            grown.weight[part] = classifier.weight[rows].mean(0) + 0.01 * torch.randn_like(classifier.weight[0])
            grown.bias[part] = classifier.bias[rows].mean()
    return grown


def _optimizer(projection, classifier, s: GaussianTraining):
    import torch

    return torch.optim.Adam([*projection.parameters(), *classifier.parameters()], lr=s.lr,
                            weight_decay=s.weight_decay)


def batch_hard_triplet(embedded, subclasses, classes, margin: float):
    """Mean over anchors of max(0, margin + farthest same-sub-class distance - nearest other-class distance)."""
    import torch

    distances = torch.cdist(embedded, embedded)
    same = subclasses[:, None] == subclasses[None, :]
    other = classes[:, None] != classes[None, :]
    usable = same.sum(1).gt(1) & other.any(1)
    if not usable.any():
        return embedded.sum() * 0.0
    hardest_positive = torch.where(same, distances, torch.zeros_like(distances)).max(1).values
    nearest_negative = torch.where(other, distances, torch.full_like(distances, float("inf"))).min(1).values
    return torch.relu(margin + hardest_positive - nearest_negative)[usable].mean()
