"""Semantic image embeddings (Barz & Denzler, WACV 2019) learned on frozen features.

A linear head maps features onto the unit sphere, towards the class embeddings of
``hierarchy.class_embeddings``. The loss is their correlation loss, mean(1 - psi(x) . phi_y), plus
``classification_weight`` times softmax cross-entropy of a linear classifier on psi(x) (their
optional term; 0.1 in the paper). Retrieval then ranks by the cosine of the embedded images.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.class_embeddings import class_embeddings
from treeseek.io.features import check_features


class SemanticEmbeddingHead:
    """``fit(X, y, tree)`` learns ``weight_``, ``bias_`` and the input scaling; ``transform`` embeds."""

    def __init__(self, classification_weight: float = 0.1, epochs: int = 60, lr: float = 1e-2,
                 weight_decay: float = 5e-4, batch_size: int = 128, seed: int = 0):
        self.classification_weight, self.epochs, self.lr = classification_weight, epochs, lr
        self.weight_decay, self.batch_size, self.seed = weight_decay, batch_size, seed

    def fit(self, X: np.ndarray, y: np.ndarray, tree: Hierarchy, progress: bool = False) -> "SemanticEmbeddingHead":
        import torch

        X = check_features(X, "training features").astype(np.float32)
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (len(X),) or y.min() < 0 or y.max() >= tree.n_leaves:
            raise TreeseekError(f"labels must be one class index in [0, {tree.n_leaves}) per row")
        self.class_embeddings_ = class_embeddings(tree)
        self.mean_, self.std_ = X.mean(axis=0), float(X.std()) or 1.0
        torch.manual_seed(self.seed)
        dim = self.class_embeddings_.shape[1]
        head, classifier = torch.nn.Linear(X.shape[1], dim), torch.nn.Linear(dim, tree.n_leaves)
        optimizer = torch.optim.Adam([*head.parameters(), *classifier.parameters()], lr=self.lr,
                                     weight_decay=self.weight_decay)
        inputs = torch.from_numpy((X - self.mean_) / self.std_)
        targets, phi = torch.from_numpy(y), torch.from_numpy(self.class_embeddings_.astype(np.float32))
        generator = np.random.default_rng(self.seed)
        self.history_ = []
        for _ in tqdm(range(self.epochs), desc="embedding epochs", disable=not progress):
            total = 0.0
            for batch in np.array_split(generator.permutation(len(X)), max(1, len(X) // self.batch_size)):
                psi = torch.nn.functional.normalize(head(inputs[batch]), dim=1)
                loss = (1 - (psi * phi[targets[batch]]).sum(1)).mean()
                if self.classification_weight:
                    loss = loss + self.classification_weight * torch.nn.functional.cross_entropy(
                        classifier(psi), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            self.history_.append(total / len(X))
        self.weight_ = head.weight.detach().numpy().astype(np.float64)
        self.bias_ = head.bias.detach().numpy().astype(np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of feature rows."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            raise TreeseekError(f"features must have {self.mean_.shape[0]} dimensions, got shape {X.shape}")
        embedded = ((X - self.mean_) / self.std_) @ self.weight_.T + self.bias_
        return embedded / np.maximum(np.linalg.norm(embedded, axis=1, keepdims=True), 1e-12)
