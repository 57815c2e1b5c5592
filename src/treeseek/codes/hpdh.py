"""Hierarchy-preserving deep hashing (Zhang et al. 2019), trained on frozen features.

For every level l of the hierarchy, with class centres C_l:
    L_l = -mean_i log softmax_k(-s_l/2 * ||u_i - c_{l,k}||^2)[y_i^l]
and the total is sum_l L_l + (10 * sum relu(|u| - 1.1) + 0.1 * ||sign(u) - u||^2) / (batch * bits).
Centres are not learned: after every epoch each fine centre becomes the mean output of its class,
and each coarser centre the mean of its children's centres. With one level this is DCWH.
The first epoch's centres are those means for the initial layer (``initial_centres="class-means"``)
or, as in the authors' code, standard normal draws, independent per level (``"random"``).
The hash layer is the authors' linear one; ``hidden=N`` puts a ReLU layer of N units before it
(beyond the paper): frozen features cannot adapt to the codes the way a fine-tuned backbone does.
``coarse_loss="marginal"`` (beyond the paper) scores a coarse level by the sum of its classes'
probabilities under the level's scale, as a hierarchical softmax does, instead of a softmax over the
level's own centres: a coarse centre lies between its children, so pulling towards it pulls sibling
classes together, whereas the marginal only pushes away from the other groups. Its gradient
still pulls towards the group's probable classes, siblings included; ``coarse_loss="outside"`` (also
beyond the paper) removes that pull: a coarse level is a softmax at the level's scale over the fine
centres of the image's own class and of the classes outside its group, so it pulls towards the own
class and pushes away from other groups only, a wider margin between groups than between siblings.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from treeseek.codes.packing import pack_codes
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.io.features import check_features

INITIAL_CENTRES = ("class-means", "random")
COARSE_LOSSES = ("centres", "marginal", "outside")


def hierarchy_level_labels(tree: Hierarchy, labels: np.ndarray) -> list[np.ndarray]:
    """Labels at every level below the root, finest first (level h: the lowest ancestor of height >= h)."""
    labels = np.asarray(labels, dtype=np.int64)
    levels = []
    for height in range(max(1, tree.max_height)):
        _, renumbered = np.unique(tree.labels_at_height(height)[labels], return_inverse=True)
        levels.append(renumbered.ravel())
    return levels


class HPDHHasher:
    """Hierarchy-preserving deep hashing (Zhang et al. 2019): codes whose Hamming distances respect every level.

    ``fit(X, levels)`` learns the hash layer (``weight_``, ``bias_``; with ``hidden``, also ``hidden_weight_``,
    ``hidden_bias_``), the input scaling and ``centres_``; ``encode(X)`` gives packed codes.

    Parameters
    ----------
    bits : int
        Code length, a multiple of 8.
    scales : sequence of float, optional
        The loss weight s_l of each level, finest first (default: the paper's pattern).
    epochs, lr, momentum, weight_decay, milestones, batch_size : training schedule
        SGD with these settings; the learning rate falls tenfold at each milestone.
    seed : int
        Of the initial layer and the batches.
    initial_centres : str
        ``class-means`` (of the initial layer's outputs) or ``random`` (the authors' code).
    hidden : int
        0 for the authors' linear hash layer, or N for a ReLU layer of N units before it.
    coarse_loss : str
        ``centres`` (the paper), ``marginal`` or ``outside`` (see ``treeseek hash train --help``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(4), 20)
    >>> X = rng.normal(size=(80, 8)) + 4 * np.eye(8)[y]
    >>> hasher = HPDHHasher(8, epochs=5, seed=0).fit(X, [y, y // 2])
    >>> hasher.encode(X[:3]).shape
    (3, 1)
    """

    def __init__(self, bits: int = 64, *, scales: Sequence[float] | None = None, epochs: int = 150, lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 5e-4, milestones: Sequence[int] = (50, 100),
                 batch_size: int = 64, seed: int = 0, initial_centres: str = "class-means", hidden: int = 0,
                 coarse_loss: str = "centres"):
        self.bits, self.scales, self.epochs, self.lr = bits, scales, epochs, lr
        self.momentum, self.weight_decay, self.milestones = momentum, weight_decay, milestones
        self.batch_size, self.seed, self.initial_centres, self.hidden = batch_size, seed, initial_centres, hidden
        self.coarse_loss = coarse_loss

    def level_scales(self, n_levels: int) -> list[float]:
        scales = list(self.scales) if self.scales is not None else [1.0 / (l + 1) for l in range(n_levels)]
        if len(scales) != n_levels:
            raise TreeseekError(f"got {len(scales)} scales for {n_levels} levels")
        return scales

    def check_params(self) -> None:
        if self.bits % 8 or self.bits <= 0:
            raise TreeseekError(f"bits must be a positive multiple of 8, got {self.bits}")
        if self.initial_centres not in INITIAL_CENTRES:
            raise TreeseekError(f"initial_centres must be one of {', '.join(INITIAL_CENTRES)}, "
                                f"got {self.initial_centres!r}")
        if self.coarse_loss not in COARSE_LOSSES:
            raise TreeseekError(f"coarse_loss must be one of {', '.join(COARSE_LOSSES)}, got {self.coarse_loss!r}")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise TreeseekError(f"hidden must be 0 (the linear hash layer) or a number of units, got {self.hidden!r}")

    def hash_head(self, in_features: int):
        """The torch module from features to the bits' real-valued outputs u."""
        import torch

        if not self.hidden:
            return torch.nn.Linear(in_features, self.bits)
        return torch.nn.Sequential(torch.nn.Linear(in_features, self.hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(self.hidden, self.bits))

    def class_groups(self, parents: Sequence[np.ndarray], device="cpu"):
        """What ``hpdh_loss`` takes as ``class_groups``, as tensors on ``device`` (made once, not per step):
        None for the paper's coarse loss."""
        import torch

        if self.coarse_loss == "centres":
            return None
        return [torch.as_tensor(groups, device=device) for groups in class_groups(parents)]

    def first_centres(self, class_means: Callable[[], list], n_groups: Sequence[int]) -> list:
        """The first epoch's centres (see ``initial_centres``); ``class_means()`` gives those of the initial
        layer and is called only when needed: end to end it is a pass over every training image."""
        import torch

        if self.initial_centres == "class-means":
            return class_means()
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.randn(n, self.bits, generator=generator) for n in n_groups]

    def fit(self, X: np.ndarray, levels: Sequence[np.ndarray], progress: bool = False) -> "HPDHHasher":
        import torch

        X = check_features(X, "training features").astype(np.float32)
        levels = [np.asarray(level, dtype=np.int64) for level in levels]
        if not levels or any(level.shape != (len(X),) for level in levels):
            raise TreeseekError("levels must be one label array per level, each with one label per row")
        self.check_params()
        scales = self.level_scales(len(levels))
        self.mean_, self.std_ = X.mean(axis=0), float(X.std()) or 1.0
        torch.manual_seed(self.seed)
        layer = self.hash_head(X.shape[1])
        inputs = torch.from_numpy((X - self.mean_) / self.std_)
        targets = [torch.from_numpy(level) for level in levels]
        parents = parent_maps(levels)
        groups = self.class_groups(parents)
        optimizer, schedule = self.optimizer(layer.parameters())
        generator = np.random.default_rng(self.seed)

        def outputs():
            with torch.no_grad():
                return layer(inputs).numpy()

        centres = self.first_centres(lambda: level_centres(outputs(), levels, parents), group_counts(levels))
        self.history_ = []
        for _ in tqdm(range(self.epochs), desc="HPDH epochs", disable=not progress):
            total = 0.0
            for batch in np.array_split(generator.permutation(len(X)), max(1, len(X) // self.batch_size)):
                loss = hpdh_loss(layer(inputs[batch]), centres, [y[batch] for y in targets], scales, groups,
                                 self.coarse_loss)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            schedule.step()
            centres = level_centres(outputs(), levels, parents)
            self.history_.append(total / len(X))
        self.keep_layer(layer, centres)
        return self

    def optimizer(self, parameters):
        """The authors' SGD and step schedule (call ``step`` on the schedule once per epoch)."""
        import torch

        optimizer = torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones), gamma=0.1)

    def keep_layer(self, layer, centres) -> None:
        import torch

        def array(tensor):
            return tensor.detach().cpu().numpy().astype(np.float64)

        linears = [(array(m.weight), array(m.bias)) for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        self.weight_, self.bias_ = linears[-1]
        if self.hidden:
            self.hidden_weight_, self.hidden_bias_ = linears[0]
        self.centres_ = [c.cpu().numpy() for c in centres]

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - self.mean_) / self.std_
        if self.hidden:
            X = np.maximum(X @ self.hidden_weight_.T + self.hidden_bias_, 0.0)
        return X @ self.weight_.T + self.bias_

    def encode(self, X: np.ndarray) -> np.ndarray:
        return pack_codes(self.transform(X))


def hpdh_loss(u, centres: list, targets: list, scales: Sequence[float], class_groups: list | None = None,
              coarse_loss: str = "centres"):
    """Sum over levels of softmax cross-entropy on -s_l/2 * squared distances to the level's centres,
    plus the authors' |u| <= 1.1 and quantisation penalties, per element of the batch.

    The other coarse losses need ``class_groups`` (per coarser level, a tensor of the group of every fine class): a
    coarse level's probability is then, in a softmax over the fine centres at scale s_l, the sum of its classes'
    probabilities (``"marginal"``) or the own class's probability with its siblings left out (``"outside"``)."""
    import torch

    if coarse_loss == "centres":
        # one distance computation against every level's centres: fewer, larger operations per step
        distances = _squared_distances(u, torch.cat(centres)).split([len(c) for c in centres], dim=1)
        loss = sum(torch.nn.functional.cross_entropy(-0.5 * s * d, y) for s, d, y in zip(scales, distances, targets))
    else:
        fine = _squared_distances(u, centres[0])
        loss = torch.nn.functional.cross_entropy(-0.5 * scales[0] * fine, targets[0])
        own_class = torch.nn.functional.one_hot(targets[0], fine.shape[1]).bool() if coarse_loss == "outside" \
            else None
        for s, groups, y in zip(scales[1:], class_groups, targets[1:]):
            logits = -0.5 * s * fine
            in_group = groups[None, :] == y[:, None]
            if own_class is not None:
                siblings = in_group & ~own_class
                loss = loss + torch.nn.functional.cross_entropy(logits.masked_fill(siblings, float("-inf")), targets[0])
            else:
                loss = loss + (logits.logsumexp(1) - logits.masked_fill(~in_group, float("-inf")).logsumexp(1)).mean()
    bits = u.shape[1]
    return loss + (10 * torch.relu(u.abs() - 1.1).sum() + 0.1 * ((torch.sign(u) - u) ** 2).sum()) / (len(u) * bits)


def level_centres(u: np.ndarray, levels: Sequence[np.ndarray], parents: Sequence[np.ndarray]) -> list:
    """Fine centres = mean output of each class; each coarser centre = mean of its children's centres."""
    import torch

    centres = [_group_means(u, levels[0])]
    for parent in parents:
        centres.append(_group_means(centres[-1], parent))
    return [torch.from_numpy(c.astype(np.float32)) for c in centres]


def _group_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean row of each group 0..max(groups) (zero for an empty group)."""
    n_groups = groups.max() + 1
    # per-column bincount: np.add.at is unbuffered and ~20x slower on 50,000 rows
    sums = np.stack([np.bincount(groups, weights=column, minlength=n_groups) for column in values.T], axis=1)
    return sums / np.maximum(np.bincount(groups, minlength=n_groups), 1)[:, None]


def group_counts(levels: Sequence[np.ndarray]) -> list[int]:
    """The number of groups at each level (groups are numbered 0..max)."""
    return [int(level.max()) + 1 for level in levels]


def parent_maps(levels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For each level but the last, the group one level up of each of its groups (levels are nested)."""
    maps = []
    for fine, coarse in zip(levels[:-1], levels[1:]):
        parent = np.zeros(fine.max() + 1, dtype=np.int64)
        parent[fine] = coarse
        maps.append(parent)
    return maps


def class_groups(parents: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For each level above the finest, the group of every fine class (from ``parent_maps``)."""
    groups, current = [], np.arange(len(parents[0])) if parents else None
    for parent in parents:
        current = parent[current]
        groups.append(current)
    return groups


def _squared_distances(u, centres):
    """||u_i - c_k||^2 without a square root, whose gradient at 0 would be NaN."""
    return (u * u).sum(1, keepdim=True) - 2 * u @ centres.T + (centres * centres).sum(1)
