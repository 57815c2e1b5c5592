"""Gaussian latent space, sub-classes and open-set queries (#29), against today's defaults in the same run.

Run:  .venv/bin/python benchmarks/bench_gaussian.py caltech101 --json bench-output/gaussian-caltech101.json
      .venv/bin/python benchmarks/bench_gaussian.py cifar10 --json bench-output/gaussian-cifar10.json

Four feature/model variants, each fitted on the training split with the default model (``TreeseekModel()``:
tied covariance, tree ``average:8:cosine``, soft leaves at T = 4, alpha 1) and scored with the test split as
queries against the training split:

* ``features``: the backbone's features (today's pipeline);
* ``features + sub-classes``: the same, with X-means sub-classes (at most 4 per class);
* ``Gaussian head``: the features embedded by ``treeseek train --gaussian``'s head (MAPLE: cross-entropy +
  triplet + X-means sub-classes; default settings), trained on the training split only;
* ``Gaussian head + sub-classes``.

Per variant: Mahalanobis leaf accuracy (class of the nearest leaf), mAP@10 and mAHP@250 (WordNet) of the soft
ranking; the paper's threshold tree (``visual``, Bhattacharyya overlap) and the default tree, each with its
agreement with WordNet (correlation of LCA heights) and mAHP@250; and Mardia's multivariate tests of
Gaussianity per leaf, on the leaf's 5 leading principal components (leaves with at least 30 training images):
the share of leaves where neither skewness nor kurtosis rejects normality at 5%, and the median |z| of the
kurtosis statistic (with thousands of images a class, as in CIFAR-10, every test rejects; the size of z still
says how far from Gaussian).

Open set: a random 80% of the classes (seed 0) are known; every variant (the head retrained on them alone) is
fitted on their training images; the queries are the test images of all classes, the held-out ones being
out-of-distribution. AUROC and FPR at 95% TPR (known classes positive) of: the novelty score (smallest
Mahalanobis distance to a leaf plus the distance from the PCA subspace), with and without sub-classes; plain
Mahalanobis (one Gaussian per class, in PCA space only); and the maximum softmax probability of a logistic regression on the same features (the baseline of Hendrycks &
Gimpel). ``select_subclasses`` (what ``treeseek run --subclasses auto`` does) is also run on the training
split, to report whether the default would turn sub-classes on.
"""
from __future__ import annotations

import time

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import select_subclasses
from treeseek.hierarchy.builders import lca_agreement
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel
from treeseek.training.gaussian_latent import GaussianLatentHead, GaussianTraining

from common import markdown_table, real_data_arguments, write_json

SUBCLASSES = 4
MARDIA_DIMS, MARDIA_MIN = 5, 30


def mardia(X: np.ndarray) -> tuple[bool, float]:
    """Whether Mardia's skewness and kurtosis tests both keep normality at 5% (on the leading components), and
    the kurtosis statistic's z (0 for a Gaussian; its size, unlike the verdict, compares classes of any size)."""
    centred = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    Y = centred @ vt[:MARDIA_DIMS].T
    n, p = Y.shape
    S = np.cov(Y, rowvar=False, bias=True)
    G = Y @ np.linalg.solve(S, Y.T)
    skewness = np.sum(G**3) / n**2
    kurtosis = np.mean(np.diag(G) ** 2)
    p_skew = stats.chi2.sf(n * skewness / 6, p * (p + 1) * (p + 2) / 6)
    z_kurt = (kurtosis - p * (p + 2)) / np.sqrt(8 * p * (p + 2) / n)
    p_kurt = 2 * stats.norm.sf(abs(z_kurt))
    return bool(p_skew > 0.05 and p_kurt > 0.05), float(z_kurt)


def gaussian_share(model: TreeseekModel, X: np.ndarray) -> tuple[float, int, float]:
    """Share of leaves (with enough training images) that Mardia keeps Gaussian, how many were tested, and the
    median |z| of their kurtosis statistics."""
    Z, leaves = model.transform(X), model.split_.labels
    tested = [mardia(Z[leaves == leaf]) for leaf in range(model.n_leaves_) if np.sum(leaves == leaf) >= MARDIA_MIN]
    if not tested:
        return float("nan"), 0, float("nan")
    return float(np.mean([kept for kept, _ in tested])), len(tested), float(np.median([abs(z) for _, z in tested]))


def scored(model, train_x, train_y, test_x, test_y, names, taxonomy) -> dict:
    result = evaluate_retrieval(model, FeatureSet(test_x, test_y, names), FeatureSet(train_x, train_y, names),
                                methods=["soft"], ks=(10,), taxonomy=taxonomy, progress=False, full_ranking=False)
    return {"leaf_accuracy": result.info["query_leaf_accuracy"], "map@10": result.metrics["soft"]["map@10"],
            "mahp@250": result.metrics["soft"]["mahp@250"],
            "agreement": lca_agreement(model.class_hierarchy_, taxonomy)}


def open_set(variant_x, train_y, test_y, subclasses: int, seed: int = 0) -> dict:
    """Novelty score vs plain Mahalanobis vs max softmax, with 80% of the classes known."""
    train_x, test_x = variant_x
    rng = np.random.default_rng(seed)
    n_classes = int(train_y.max()) + 1
    known = np.sort(rng.permutation(n_classes)[: int(round(0.8 * n_classes))])
    relabel = np.full(n_classes, -1)
    relabel[known] = np.arange(len(known))
    fit_rows = np.isin(train_y, known)
    truth = np.isin(test_y, known)  # positive: a known class
    scores = {}
    for name, most in (("novelty score, sub-classes", subclasses), ("novelty score, one Gaussian per class", 1)):
        model = TreeseekModel(subclasses=most).fit(train_x[fit_rows], relabel[train_y[fit_rows]])
        scores[name] = -model.novelty(test_x).scores
    scores["plain Mahalanobis (one Gaussian per class, PCA space only)"] = \
        -model.gaussians_.mahalanobis(model.transform(test_x)).min(axis=1)
    classifier = LogisticRegression(max_iter=2000).fit(train_x[fit_rows], relabel[train_y[fit_rows]])
    scores["max softmax (logistic regression)"] = classifier.predict_proba(test_x).max(axis=1)
    out = {}
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(truth, score)
        out[name] = {"auroc": float(roc_auc_score(truth, score)), "fpr@95tpr": float(fpr[np.searchsorted(tpr, 0.95)])}
    return {"known_classes": len(known), "queries_known": int(truth.sum()), "queries_unknown": int((~truth).sum()),
            "scores": out}


def main() -> None:
    args, (names, train_x, train_y, test_x, test_y, taxonomy) = real_data_arguments(__doc__.splitlines()[0])
    started = time.perf_counter()
    head = GaussianLatentHead(GaussianTraining()).fit(train_x, train_y)
    head_seconds = time.perf_counter() - started
    print(f"Gaussian head: {head_seconds:.0f} s, {len(head.subclass_class_)} sub-classes of {len(names)} classes, "
          f"last epoch {head.history_[-1]}", flush=True)
    spaces = {"features": (train_x, test_x), "Gaussian head": (head.transform(train_x), head.transform(test_x))}
    rows = []
    for space, (tr, te) in spaces.items():
        for most in (1, SUBCLASSES):
            variant = space + (" + sub-classes" if most > 1 else "")
            model = TreeseekModel(subclasses=most).fit(tr, train_y, names)
            visual = TreeseekModel(subclasses=most, hierarchy="visual").fit(tr, train_y, names)
            share, tested, kurtosis = gaussian_share(model, tr)
            row = {"variant": variant, "leaves": model.n_leaves_, **scored(model, tr, train_y, te, test_y, names,
                                                                             taxonomy),
                   "visual_tree": scored(visual, tr, train_y, te, test_y, names, taxonomy),
                   "gaussian_leaves": share, "leaves_tested": tested, "median_abs_kurtosis_z": kurtosis}
            rows.append(row)
            print(row, flush=True)
    auto = {space: select_subclasses(tr, train_y, names, {}).grid for space, (tr, _) in spaces.items()}
    print("select_subclasses on the training split:", auto, flush=True)
    ood = {"features": open_set(spaces["features"], train_y, test_y, SUBCLASSES)}
    rng_known = np.sort(np.random.default_rng(0).permutation(len(names))[: int(round(0.8 * len(names)))])
    fit_rows = np.isin(train_y, rng_known)
    relabel = np.full(len(names), -1)
    relabel[rng_known] = np.arange(len(rng_known))
    head_known = GaussianLatentHead(GaussianTraining()).fit(train_x[fit_rows], relabel[train_y[fit_rows]])
    ood["Gaussian head"] = open_set((head_known.transform(train_x), head_known.transform(test_x)), train_y, test_y,
                                    SUBCLASSES)
    print()
    print(markdown_table(
        ["variant", "leaves", "leaf accuracy", "mAP@10", "mAHP@250", "WordNet agreement (default tree)",
         "visual tree: agreement / mAHP@250", "Gaussian leaves (Mardia)", "median Mardia kurtosis |z|"],
        [[r["variant"], r["leaves"], f"{r['leaf_accuracy']:.3f}", f"{r['map@10']:.3f}", f"{r['mahp@250']:.3f}",
          f"{r['agreement']:.2f}", f"{r['visual_tree']['agreement']:.2f} / {r['visual_tree']['mahp@250']:.3f}",
          f"{r['gaussian_leaves']:.0%} of {r['leaves_tested']}", f"{r['median_abs_kurtosis_z']:.1f}"] for r in rows]))
    print()
    print(markdown_table(["features", "score", "AUROC", "FPR@95%TPR"],
                         [[space, name, f"{v['auroc']:.3f}", f"{v['fpr@95tpr']:.3f}"]
                          for space, result in ood.items() for name, v in result["scores"].items()]))
    print()
    for space, grid in auto.items():
        print(f"--subclasses auto on {space}: " + ", ".join(f"at most {g['subclasses']} -> mAP@10 {g['map@10']:.4f}"
                                                           for g in grid))
    write_json(args.json, {"dataset": args.dataset, "head_seconds": head_seconds, "head_history": head.history_,
                           "head_subclasses": len(head.subclass_class_), "rows": rows, "open_set": ood,
                           "auto": auto})


if __name__ == "__main__":
    main()
