"""Pictures of what people would rather see than read: trees and mAP@k curves."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only: works on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from treeseek.hierarchy import Hierarchy  # noqa: E402
from treeseek.io.files import atomic_write_bytes  # noqa: E402


def _encoded(figure, image_format: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _save(figure, path: str | Path) -> None:
    atomic_write_bytes(path, _encoded(figure, Path(path).suffix.lstrip(".") or "png"))


def plot_hierarchy(hierarchy: Hierarchy, path: str | Path, title: str = "") -> None:
    """Elbow dendrogram: leaves top to bottom in tree order, nodes at x = their height."""
    _save(_hierarchy_figure(hierarchy, title), path)


def hierarchy_picture(hierarchy: Hierarchy, image_format: str = "png", title: str = "") -> bytes:
    """``plot_hierarchy``'s dendrogram as encoded bytes, for callers that send rather than save it."""
    return _encoded(_hierarchy_figure(hierarchy, title), image_format)


def _hierarchy_figure(hierarchy: Hierarchy, title: str):
    k = hierarchy.n_leaves
    y = np.zeros(hierarchy.n_nodes)
    y[hierarchy.leaf_order] = np.arange(k)
    for node in sorted(range(k, hierarchy.n_nodes), key=lambda n: hierarchy.height[n]):
        y[node] = np.mean([y[c] for c in hierarchy.children[node]])
    figure, axes = plt.subplots(figsize=(7, max(3.0, 0.16 * k + 1)))
    for node in range(k, hierarchy.n_nodes):
        x = hierarchy.height[node]
        ys = [y[c] for c in hierarchy.children[node]]
        axes.plot([x, x], [min(ys), max(ys)], color="#345", linewidth=0.8)
        for child in hierarchy.children[node]:
            axes.plot([hierarchy.height[child], x], [y[child], y[child]], color="#345", linewidth=0.8)
    if k <= 200:
        axes.set_yticks(np.arange(k))
        axes.set_yticklabels([hierarchy.names[leaf] for leaf in hierarchy.leaf_order], fontsize=7)
    else:
        axes.set_yticks([])
    axes.invert_yaxis()
    axes.set_xlabel("node height")
    axes.set_title(title or f"{k} classes, shape {hierarchy.shape()}")
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def plot_map_curves(curves: Mapping[str, np.ndarray], path: str | Path, title: str = "mAP@k") -> None:
    """mAP@k for k = 1..len(curve), one line per method (the paper's Fig. 2). Methods often coincide (flat,
    hierarchy and combined rank a query's own leaf first alike): each line has its own marker, at staggered k,
    and its own dash, so that every one stays visible on top of the others."""
    figure, axes = plt.subplots(figsize=(6, 4))
    markers, dashes = "osD^vxP*", ["-", "--", "-.", ":"]
    for number, (method, curve) in enumerate(curves.items()):
        ks = np.arange(1, len(curve) + 1)
        every = max(1, len(curve) // 8)
        axes.plot(ks, curve, label=method, linewidth=1.5, linestyle=dashes[number % len(dashes)],
                  marker=markers[number % len(markers)], markevery=(number * every // max(1, len(curves)), every),
                  markersize=5, markerfacecolor="none")
    axes.set_xlabel("k")
    axes.set_ylabel("mAP@k")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title)
    _save(figure, path)


def image_grid(query, query_caption: str, results, path: str | Path, thumb: int = 160) -> None:
    """The query image first, then each (image or None, caption) result, in one row-wrapped figure."""
    count = len(results) + 1
    columns = min(count, 6)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows), squeeze=False)
    panels = [(query, query_caption)] + list(results)
    for ax, (image, caption) in zip(axes.flat, panels):
        if image is not None:
            image = image.copy()
            image.thumbnail((thumb, thumb))
            ax.imshow(image)
        ax.set_title(caption, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].set_title(query_caption, fontsize=9, color="#a00")
    _save(figure, path)


def plot_robustness(tables: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str, path: str | Path) -> None:
    """Grouped bars: ``metric`` of every method (group) under every condition (bar) (the paper's Table 3)."""
    conditions = list(tables)
    methods = list(next(iter(tables.values())))
    width = 0.8 / len(conditions)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(methods)), 4))
    for i, condition in enumerate(conditions):
        values = [tables[condition][m].get(metric, np.nan) for m in methods]
        axes.bar(np.arange(len(methods)) + i * width, values, width, label=condition)
    axes.set_xticks(np.arange(len(methods)) + 0.4 - width / 2)
    axes.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(metric)
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    _save(figure, path)
