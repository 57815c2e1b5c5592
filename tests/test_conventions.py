"""Each metric convention against a plain transcription of its peer's published formula, written here loop by loop.

The fixture tree has unequal depths and a single-child chain; the database lacks one query class (R = 0), has a
one-member class, and the cut-offs reach past its size."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from treeseek.evaluation.conventions import CONVENTIONS, RankedBatch, aggregate, get_convention
from treeseek.hierarchy import Hierarchy

# leaves 0-5; 6 root; 7 -> 8 -> 11 is a chain (7 and 8 have one child each) above {0, 1}; 9 and 10 branch
PARENT = [11, 11, 9, 10, 10, 6, -1, 6, 7, 6, 9, 8]
N_LEAVES = 6
DATABASE = np.array([0, 0, 2, 2, 3, 4, 4, 4, 5])  # no item of class 1; class 5 has one
QUERIES = np.array([0, 3, 5, 1, 2, 4, 0])
KS = (1, 3, 9, 12)


# ------------------------------------------------------------- the tree as the peers' code reads it
def _path(leaf):
    path = [leaf]
    while PARENT[path[-1]] >= 0:
        path.append(PARENT[path[-1]])
    return path  # leaf ... root


def _height(node):
    children = [c for c, p in enumerate(PARENT) if p == node]
    return 0 if not children else 1 + max(_height(c) for c in children)


def _lca_height(a, b):  # Barz's ClassHierarchy: the deepest common hypernym, its height; chains counted
    common = [n for n in _path(a) if n in _path(b)]
    return _height(common[0])


MAX_HEIGHT = _height(6)


def _level_labels(leaf, levels):  # HPDH's label tuple: ancestors from depth 1 down, the leaf repeated below its depth
    by_depth = _path(leaf)[::-1]
    return [by_depth[level] if level < len(by_depth) else leaf for level in range(1, levels + 1)]


LEVELS = max(len(_path(leaf)) - 1 for leaf in range(N_LEAVES))


def _matches(a, b):
    return sum(x == y for x, y in zip(_level_labels(a, LEVELS), _level_labels(b, LEVELS)))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    ranked = np.array([DATABASE[rng.permutation(len(DATABASE))] for _ in QUERIES])
    n_relevant = np.array([np.sum(DATABASE == q) for q in QUERIES])

    def full_ap():
        rel = ranked == QUERIES[:, None]
        out = np.full(len(QUERIES), np.nan)
        for row in range(len(QUERIES)):
            hits = np.flatnonzero(rel[row]) + 1
            if len(hits):
                out[row] = np.mean(np.arange(1, len(hits) + 1) / hits)
        return out

    return RankedBatch(ranked, QUERIES, n_relevant, lambda: ranked, full_ap)


def _scored(name, family, batch, k=None):
    scorer = get_convention(name)(Hierarchy(PARENT, [str(i) for i in range(len(PARENT))], N_LEAVES),
                                  np.bincount(DATABASE, minlength=N_LEAVES), False)
    return aggregate([scorer.score(family, batch, k)])


# ------------------------------------------------------------------------------------------ barz
@pytest.mark.parametrize("k", KS)
def test_barz_hierarchical_precision_and_ahp(batch, k):
    hp, ahp = [], []
    for query, ranking in zip(QUERIES, batch.labels):
        lcs = [1.0 - _lca_height(query, label) / MAX_HEIGHT for label in ranking]
        best = np.cumsum(sorted([1.0 - _lca_height(query, label) / MAX_HEIGHT for label in DATABASE], reverse=True))
        m = min(k, len(lcs))
        curve = np.cumsum(lcs[:m]) / best[:m]
        hp.append(sum(lcs[:m]) / best[m - 1])
        # np.mean(curve[:k]) - (curve[0] + curve[k-1]) / (2k): the trapezoid's area over k points, here m of them
        ahp.append((curve.sum() - (curve[0] + curve[m - 1]) / 2) / k)
    assert _scored("barz", "hp", batch, k) == pytest.approx(np.mean(hp), abs=1e-9)
    assert _scored("barz", "ahp", batch, k) == pytest.approx(np.mean(ahp), abs=1e-9)


def test_barz_counts_a_query_without_relevant_items_as_zero(batch):
    ap = [0.0 if not np.any(ranking == q) else
          np.mean([(i + 1) / (pos + 1) for i, pos in enumerate(np.flatnonzero(ranking == q))])
          for q, ranking in zip(QUERIES, batch.labels)]
    assert _scored("barz", "map_all", batch) == pytest.approx(np.mean(ap), abs=1e-9)
    assert _scored("treeseek", "map_all", batch) == pytest.approx(np.mean([a for a, q in zip(ap, QUERIES)
                                                                           if q != 1]), abs=1e-9)


# ------------------------------------------------------------------------------------------ hpdh
@pytest.mark.parametrize("k", [1, 3, 9, 12])
def test_hpdh_mahp_as_map_torch(batch, k):
    ahp = []
    for query, ranking in zip(QUERIES, batch.labels):
        radius = min(k, len(ranking))
        correct = np.array([_matches(query, label) for label in ranking[:radius]], dtype=float)
        ideal = np.cumsum(np.sort([_matches(query, label) for label in DATABASE])[::-1][:radius] / LEVELS)
        ahp.append(np.mean(np.cumsum(correct / LEVELS) / ideal) if correct.sum() != 0 else 0.0)
    assert _scored("hpdh", "mahp", batch, k) == pytest.approx(np.mean(ahp), abs=1e-9)


@pytest.mark.parametrize("r", [1, 2, 3, 9])
def test_hpdh_ndcg_as_mndcg_torch(batch, r):
    values = []
    for query, ranking in zip(QUERIES, batch.labels):
        r_ = min(r, len(ranking))
        correct = [_matches(query, label) for label in ranking[:r_]]
        imatch = sorted([_matches(query, label) for label in DATABASE], reverse=True)
        dcg, idcg = np.zeros(r_), np.zeros(r_)
        dcg[:2], idcg[:2] = np.cumsum(correct)[:2], np.cumsum(imatch)[:2][:r_]
        for j in range(2, r_):
            dcg[j] = dcg[j - 1] + correct[j] / math.log2(j)
            idcg[j] = idcg[j - 1] + imatch[j] / math.log2(j)
        values.append(np.mean(dcg / idcg) if sum(correct) != 0 else 0.0)
    assert _scored("hpdh", "ndcg_mean", batch, r) == pytest.approx(np.mean(values), abs=1e-9)


# -------------------------------------------------------------------------------------- deephash
@pytest.mark.parametrize("k", KS)
def test_deephash_calc_top_map(batch, k):
    total = 0.0
    for query, ranking in zip(QUERIES, batch.labels):
        tgnd = (ranking == query)[:k].astype(float)
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        total += np.mean(np.linspace(1, tsum, tsum) / (np.flatnonzero(tgnd == 1) + 1.0))
    assert _scored("deephash", "map", batch, k) == pytest.approx(total / len(QUERIES), abs=1e-9)


# ------------------------------------------------------------------------------------------- pml
def test_pml_map_at_r_and_r_precision_leave_lone_queries_out(batch):
    maps, precisions, firsts = [], [], []
    for query, ranking in zip(QUERIES, batch.labels):
        r = int(np.sum(DATABASE == query))
        if r == 0:
            continue
        rel = (ranking == query)[:r]
        maps.append(sum(np.sum(rel[: i + 1]) / (i + 1) for i in range(r) if rel[i]) / r)
        precisions.append(rel.sum() / r)
        firsts.append(float(ranking[0] == query))
    assert _scored("pml", "map_r", batch) == pytest.approx(np.mean(maps), abs=1e-9)
    assert _scored("pml", "r_precision", batch) == pytest.approx(np.mean(precisions), abs=1e-9)
    assert _scored("pml", "precision", batch, 1) == pytest.approx(np.mean(firsts), abs=1e-9)


# ------------------------------------------------------------------------------------ bertinetto
@pytest.mark.parametrize("k", KS)
def test_bertinetto_avg_k_and_hdist(batch, k):
    heights = np.array([[_lca_height(q, label) for label in ranking] for q, ranking in zip(QUERIES, batch.labels)])
    top = heights[:, :k]
    wrong = np.flatnonzero(batch.labels[:, 0] != QUERIES)
    assert _scored("bertinetto", "severity", batch, k) == pytest.approx(
        np.sum(top[wrong]) / (len(wrong) * top.shape[1]), abs=1e-9)
    assert _scored("bertinetto", "hdist", batch, k) == pytest.approx(np.mean(np.mean(top, axis=1)), abs=1e-9)


# ------------------------------------------------------------------------------------------ H-AP
def _h_ap(relevance):
    positive = [i for i, r in enumerate(relevance) if r > 0]
    total = 0.0
    for i in positive:
        h_rank = relevance[i] + sum(min(relevance[i], relevance[j]) for j in range(i))
        total += h_rank / (i + 1)
    return total / sum(relevance[i] for i in positive)


def test_h_ap_with_pop_relevance_by_its_formula():
    from treeseek.evaluation import metrics as M

    tree = Hierarchy([7, 7, 8, 8, 9, 9, -1, 6, 6, 6], [str(i) for i in range(10)], 6)  # no chains: 3 pairs
    rng = np.random.default_rng(3)
    database = rng.integers(0, 6, 40)
    for query in range(6):
        ranking = database[rng.permutation(40)]
        shared = [len(set(_tree_path(tree, query)) & set(_tree_path(tree, label))) - 1 for label in ranking]
        depth = len(_tree_path(tree, query)) - 1
        pop = [(s / depth) / shared.count(s) if s > 0 else 0.0 for s in shared]
        found = M.hierarchical_average_precision(M.pop_relevance(np.array([shared]), np.array([depth])))[0]
        assert found == pytest.approx(_h_ap(pop), abs=1e-9)


def _happier_h_ap(label_columns, query_columns, alpha):
    """H-AP as HAPPIER's code computes it (elias-ramzi/HAPPIER: engine/metrics.py ``hap``, relevance type "pop" of
    engine/compute_relevance_on_the_fly.py), transcribed in plain numpy: x = how many label columns an item shares
    with the query, weight (x / (L - 1))^alpha with L the number of columns, divided by how many items share x."""
    x = (label_columns == query_columns).sum(axis=1)
    n_columns = label_columns.shape[1]
    weights = (np.arange(n_columns + 1) / (n_columns - 1)) ** alpha
    counts = np.bincount(x, minlength=n_columns + 1)
    rel = np.where(x > 0, weights[x] / np.maximum(counts[x], 1), 0.0)
    values = np.unique(rel[rel > 0])
    hranks = sum(np.minimum(rel, v) * np.cumsum(rel == v) for v in values)  # inclusive counts, as theirs
    return np.sum(hranks / np.arange(1, len(rel) + 1)) / rel.sum()


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_h_ap_with_pop_relevance_equals_happiers_code_on_a_three_level_tree(alpha):
    from treeseek.evaluation import metrics as M

    # leaves 0-7 under 8-11, under 12-13, under the root 14: every leaf three levels deep (HAPPIER's labels are
    # one column per level: the leaf, its parent, its grandparent)
    tree = Hierarchy([8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, -1], [str(i) for i in range(15)], 8)
    columns = np.array([[leaf, *_tree_path(tree, leaf)[1:-1]] for leaf in range(8)])
    rng = np.random.default_rng(5)
    gallery = rng.integers(0, 8, 60)  # a gallery apart from the queries, as HAPPIER's query/gallery splits
    for query in range(8):
        ranking = gallery[rng.permutation(60)]
        shared = np.array([[len(set(_tree_path(tree, query)) & set(_tree_path(tree, label))) - 1
                            for label in ranking]])
        found = M.hierarchical_average_precision(M.pop_relevance(shared, np.array([3]), alpha))[0]
        assert found == pytest.approx(_happier_h_ap(columns[ranking], columns[query], alpha), abs=1e-9)


def _tree_path(tree, leaf):  # leaf ... root, the root included (shared by all: subtracted above)
    path = [leaf]
    while tree.parent[path[-1]] >= 0:
        path.append(int(tree.parent[path[-1]]))
    return path


def test_h_ap_on_binary_relevance_is_average_precision():
    from treeseek.evaluation import metrics as M

    rng = np.random.default_rng(4)
    relevant = rng.random((20, 30)) < 0.3
    relevant[:, 0] |= ~relevant.any(axis=1)
    found = M.hierarchical_average_precision(relevant.astype(float))
    expected = [average_precision_score(row, -np.arange(len(row))) for row in relevant]
    assert np.allclose(found, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ the tree as given
def test_the_tree_as_given_keeps_its_chains():
    tree = Hierarchy(PARENT, [str(i) for i in range(len(PARENT))], N_LEAVES)
    expected = np.array([[_lca_height(a, b) for b in range(N_LEAVES)] for a in range(N_LEAVES)])
    assert np.array_equal(tree.given_lca_heights, expected)
    assert tree.lca_heights[0, 5] == expected[0, 5] - 1 == 3  # the chain removed: the root one level lower
    assert Hierarchy.from_dict(tree.to_dict()).given_lca_heights.tolist() == expected.tolist()
    restricted = tree.restrict(["0", "1", "5"])
    assert restricted.given_lca_heights[0, 2] == expected[0, 5]


def test_every_convention_is_registered_and_refuses_what_it_does_not_define(batch):
    from treeseek.errors import TreeseekError

    assert set(CONVENTIONS) == {"treeseek", "barz", "hpdh", "deephash", "pml", "bertinetto"}
    with pytest.raises(TreeseekError, match="does not define"):
        _scored("pml", "mahp", batch, 10)
    with pytest.raises(TreeseekError, match="unknown metric convention"):
        get_convention("happier")


# ----------------------------------------------------------------------------------- the command
def test_evaluate_reports_barz_ahp_at_250_on_a_30_item_database(tmp_path):
    from treeseek.hierarchy.synthetic import planted_hierarchy
    from treeseek.hierarchy.taxonomy_io import save_hierarchy
    from treeseek.model import TreeseekModel

    from conftest import run_cli
    from oracles import hard_keys, lca_heights, top_k

    data = planted_hierarchy((3, 3), dim=16, samples_per_class=10, seed=0)
    small = np.random.default_rng(0).choice(len(data.features), 30, replace=False)
    np.savez(tmp_path / "q.npz", features=data.features, labels=data.labels)
    np.savez(tmp_path / "db.npz", features=data.features[small], labels=data.labels[small])
    save_hierarchy(data.hierarchy, tmp_path / "tax.json")
    assert run_cli("fit", tmp_path / "q.npz", "--out", tmp_path / "model", "--hierarchy", "average").returncode == 0
    result = run_cli("evaluate", tmp_path / "model", tmp_path / "q.npz", "--database", tmp_path / "db.npz",
                     "--taxonomy", tmp_path / "tax.json", "--methods", "combined", "--convention", "barz",
                     "--metrics", "ahp", "--json", tmp_path / "out.json", "--no-progress")
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads((tmp_path / "out.json").read_text())["combined"]["ahp@250"]
    model = TreeseekModel.load(tmp_path / "model")
    keys = hard_keys("combined", data.features, data.features[small], model.assign(data.features),
                     model.assign(data.features[small]), model.hierarchy_, model.alpha)
    _, order = top_k(keys, np.arange(30), 30)
    heights, top = lca_heights(data.hierarchy)  # the planted tree has no chains: as given = as stored
    values = []
    for query, ranking in zip(data.labels, data.labels[small][order]):
        lcs = [1.0 - heights[query, label] / top for label in ranking]
        best = np.cumsum(sorted([1.0 - heights[query, label] / top for label in data.labels[small]], reverse=True))
        curve = np.cumsum(lcs) / best
        values.append((curve.sum() - (curve[0] + curve[-1]) / 2) / 250)  # 30 points of the curve, over k = 250
    assert found == pytest.approx(np.mean(values), abs=1e-9)
    assert found < 0.15  # (k - 1)/k would have left it near the trapezoid's 0.9


@pytest.mark.parametrize("args, message", [(["--convention", "nope"], "unknown metric convention"),
                                           (["--convention", "pml", "--metrics", "mahp"], "does not define"),
                                           (["--convention", "bertinetto"], "need an evaluation taxonomy")])
def test_bad_conventions_are_one_line_and_exit_2(tmp_path, args, message):
    from treeseek.hierarchy.synthetic import planted_hierarchy

    from conftest import run_cli

    data = planted_hierarchy((2, 2), dim=8, samples_per_class=6, seed=0)
    np.savez(tmp_path / "q.npz", features=data.features, labels=data.labels)
    assert run_cli("fit", tmp_path / "q.npz", "--out", tmp_path / "model", "--hierarchy", "average").returncode == 0
    result = run_cli("evaluate", tmp_path / "model", tmp_path / "q.npz", "--no-progress", *args)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")


def test_the_conditional_risk_baseline_ranks_from_the_lowest_expected_lca_height():
    from treeseek.evaluation import evaluate_retrieval
    from treeseek.hierarchy.synthetic import planted_hierarchy
    from treeseek.io.features import FeatureSet
    from treeseek.model import TreeseekModel

    from oracles import hard_keys, lca_fractions, posteriors, queries, top_k

    data = planted_hierarchy((3, 3), dim=12, samples_per_class=12, noise=1.5, seed=5)
    model = TreeseekModel(hierarchy="average").fit(data.features, data.labels, data.class_names)
    Q = queries(data, n=30, seed=2)
    labels = data.labels[np.random.default_rng(2).choice(len(data.labels), 30, replace=False)]
    risk = posteriors(model, Q) @ lca_fractions(model.hierarchy_)
    keys = hard_keys("combined", Q, data.features, risk.argmin(axis=1), model.assign(data.features),
                     model.hierarchy_, model.alpha)
    _, order = top_k(keys, np.arange(len(data.features)), 5)
    expected = np.mean(data.labels[order] == labels[:, None])
    result = evaluate_retrieval(model, FeatureSet(Q, labels, data.class_names),
                                FeatureSet(data.features, data.labels, data.class_names), methods=["crm"], ks=(5,),
                                progress=False)
    assert result.metrics["crm"]["precision@5"] == pytest.approx(expected, abs=1e-12)
    assert np.any(risk.argmin(axis=1) != model.assign(Q))  # on these overlapping classes the rule differs somewhere
