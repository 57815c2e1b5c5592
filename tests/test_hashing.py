"""Binary codes: packing, exact Hamming search, and hierarchy-preserving codes on a planted hierarchy."""
import numpy as np
import pytest

from treeseek.codes import (
    HPDHHasher,
    ITQHasher,
    SignPCAHasher,
    hamming_distances,
    hierarchy_level_labels,
    pack_codes,
    unpack_codes,
)
from treeseek.errors import TreeseekError
from treeseek.evaluation.metrics import average_hierarchical_precision, ideal_values
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.search.hamming import HammingIndex

from conftest import run_cli
from oracles import lca_fractions


def test_codes_pack_and_unpack_losslessly():
    rng = np.random.default_rng(0)
    signs = rng.choice([-1, 1], size=(50, 48)).astype(np.int8)
    assert np.array_equal(unpack_codes(pack_codes(signs)), signs)
    packed = rng.integers(0, 256, (50, 6), dtype=np.uint8)
    assert np.array_equal(pack_codes(unpack_codes(packed)), packed)
    assert np.array_equal(pack_codes(np.array([[0.3, -2, 0, 1, -1, 5, 0.1, -0.1]])), [[0b10010110]])
    with pytest.raises(TreeseekError, match="multiple of 8"):
        pack_codes(signs[:, :12])


def test_popcount_reference_matches_bit_comparison():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (7, 4), dtype=np.uint8), rng.integers(0, 256, (9, 4), dtype=np.uint8)
    expected = (unpack_codes(a)[:, None, :] != unpack_codes(b)[None, :, :]).sum(axis=2)
    assert np.array_equal(hamming_distances(a, b), expected)


@pytest.mark.parametrize("k", [1, 10, 100, 2005])
def test_exact_hamming_search_equals_a_popcount_full_sort(k):
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (2000, 2), dtype=np.uint8)  # 16 bits: many exact ties
    queries = rng.integers(0, 256, (30, 2), dtype=np.uint8)
    index = HammingIndex(16)
    index.add(codes)
    distances, ids = index.search(queries, k)
    reference = hamming_distances(queries, codes)
    expected = np.argsort(reference, axis=1, kind="stable")[:, :k]  # ties by smaller id
    n = min(k, len(codes))
    assert np.array_equal(ids[:, :n], expected)
    assert np.array_equal(distances[:, :n], np.take_along_axis(reference, expected, axis=1))
    assert (ids[:, n:] == -1).all()


def test_hnsw_hamming_search_returns_true_distances_in_order():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    index = HammingIndex(64, "hnsw")
    index.add(codes)
    distances, ids = index.search(codes[:20], 10)
    assert (ids[:, 0] == np.arange(20)).all() and (distances[:, 0] == 0).all()
    assert np.array_equal(distances, np.take_along_axis(hamming_distances(codes[:20], codes), ids, axis=1))
    assert (np.diff(distances, axis=1) >= 0).all()


@pytest.fixture(scope="module")
def planted():
    data = planted_hierarchy((3, 4, 4), 64, 50, scale=2.5, seed=1)
    test = np.arange(len(data.labels)) % 5 == 0
    return data, test


def mahp(data, test, hasher, k=250):
    train_codes, test_codes = hasher.encode(data.features[~test]), hasher.encode(data.features[test])
    y_train, y_test = data.labels[~test], data.labels[test]
    order = np.argsort(hamming_distances(test_codes, train_codes), axis=1, kind="stable")[:, :k]
    similarity = 1 - lca_fractions(data.hierarchy)
    ideal = ideal_values(similarity, np.bincount(y_train, minlength=len(data.class_names)), k, False)[y_test]
    return average_hierarchical_precision(similarity[y_test[:, None], y_train[order]], ideal, k).mean()


@pytest.mark.parametrize("bits, initial_centres, coarse_loss", [(16, "class-means", "centres"),
                                                                (32, "class-means", "centres"),
                                                                (16, "random", "centres"),
                                                                (16, "class-means", "marginal"),
                                                                (16, "class-means", "outside")])
@pytest.mark.slow
def test_hierarchy_preserving_codes_beat_single_level_codes_on_mahp(planted, bits, initial_centres, coarse_loss):
    data, test = planted
    levels = hierarchy_level_labels(data.hierarchy, data.labels[~test])
    assert [len(np.unique(level)) for level in levels] == [48, 12, 3]
    hpdh = HPDHHasher(bits, epochs=30, initial_centres=initial_centres, coarse_loss=coarse_loss).fit(
        data.features[~test], levels)
    single = HPDHHasher(bits, epochs=30, initial_centres=initial_centres).fit(data.features[~test], levels[:1])
    itq = ITQHasher(bits).fit(data.features[~test])
    assert mahp(data, test, hpdh) > mahp(data, test, single) + 0.02
    assert mahp(data, test, single) > mahp(data, test, itq)


def test_a_hidden_layer_codes_classes_that_no_linear_hash_layer_can_separate():
    """XOR: each class is two opposite corners of a square, so a linear layer's outputs mix the classes."""
    rng = np.random.default_rng(0)
    corners = np.array([[3, 3], [-3, -3], [3, -3], [-3, 3]])
    cluster = np.repeat(np.arange(4), 100)
    X = np.concatenate([corners[cluster] + rng.normal(0, 0.7, (400, 2)), rng.normal(0, 0.7, (400, 6))], axis=1)
    y = (cluster >= 2).astype(np.int64)
    same = y[:, None] == y[None]

    def separation(hidden):
        codes = HPDHHasher(8, epochs=20, lr=1e-2, hidden=hidden).fit(X, [y]).encode(X)
        distances = hamming_distances(codes, codes).astype(np.float64)
        return distances[~same].mean() - distances[same].mean()

    assert separation(hidden=32) > 3.0
    assert abs(separation(hidden=0)) < 1.0


def test_training_is_deterministic_under_a_seed(planted):
    data, test = planted
    levels = hierarchy_level_labels(data.hierarchy, data.labels[~test])
    first = HPDHHasher(16, epochs=3, seed=5).fit(data.features[~test], levels).encode(data.features[test])
    again = HPDHHasher(16, epochs=3, seed=5).fit(data.features[~test], levels).encode(data.features[test])
    other = HPDHHasher(16, epochs=3, seed=6).fit(data.features[~test], levels).encode(data.features[test])
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("initial_centres, hidden, coarse_loss", [("class-means", 0, "centres"),
                                                                  ("random", 0, "centres"),
                                                                  ("class-means", 8, "centres"),
                                                                  ("class-means", 0, "marginal"),
                                                                  ("class-means", 0, "outside")])
def test_the_first_epoch_trains_towards_the_documented_initial_centres(planted, initial_centres, hidden, coarse_loss):
    """With lr = 0 the layer stays as initialised, so the first epoch's mean loss is the loss of the
    initial outputs against the first centres, written out here in numpy (with a hidden layer this
    also checks that ``transform`` computes what training saw; with the marginal coarse loss, a coarse
    level's probability is the sum of its member classes' softmax probabilities at the level's scale; with
    the outside loss, the own class's probability in a softmax that leaves out the other member classes)."""
    import torch

    data, test = planted
    X = data.features[~test]
    levels = hierarchy_level_labels(data.hierarchy, data.labels[~test])
    scales = [1.0, 0.5, 0.25]
    hasher = HPDHHasher(16, scales=scales, epochs=1, lr=0.0, seed=3, initial_centres=initial_centres,
                        hidden=hidden, coarse_loss=coarse_loss).fit(X, levels)
    u = hasher.transform(X)  # the untouched initial layer
    if initial_centres == "random":
        generator = torch.Generator().manual_seed(3)
        centres = [torch.randn(len(np.unique(level)), 16, generator=generator).double().numpy() for level in levels]
    else:
        centres = [np.stack([u[levels[0] == k].mean(axis=0) for k in range(48)])]
        for fine, coarse in zip(levels[:-1], levels[1:]):
            children = [np.unique(fine[coarse == g]) for g in range(coarse.max() + 1)]
            centres.append(np.stack([centres[-1][c].mean(axis=0) for c in children]))
    expected = 0.0
    for level, (s, c, y) in enumerate(zip(scales, centres, levels)):
        if coarse_loss != "centres" and level > 0:
            logits = -0.5 * s * ((u[:, None, :] - centres[0][None]) ** 2).sum(axis=2)
            group_of_class = np.array([y[levels[0] == k][0] for k in range(48)])
            in_group = group_of_class[None] == y[:, None]
            if coarse_loss == "outside":
                kept = ~in_group | (np.arange(48)[None] == levels[0][:, None])
                weights = np.exp(logits - logits.max(1, keepdims=True)) * kept
                expected -= np.mean(np.log(weights[np.arange(len(u)), levels[0]] / weights.sum(1)))
                continue
            probabilities = np.exp(logits - logits.max(1, keepdims=True))
            probabilities /= probabilities.sum(1, keepdims=True)
            expected -= np.mean(np.log((probabilities * in_group).sum(1)))
            continue
        logits = -0.5 * s * ((u[:, None, :] - c[None]) ** 2).sum(axis=2)
        log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        expected += np.mean(log_norm - logits[np.arange(len(u)), y])
    expected += np.mean(10 * np.maximum(np.abs(u) - 1.1, 0).sum(1) + 0.1 * ((np.sign(u) - u) ** 2).sum(1)) / 16
    assert hasher.history_[0] == pytest.approx(expected, rel=1e-5)


def test_itq_rotation_lowers_the_quantisation_loss(planted):
    data, _ = planted
    pca, itq = SignPCAHasher(16).fit(data.features), ITQHasher(16).fit(data.features)

    def loss(hasher):
        projected = hasher.transform(data.features)
        return np.sum((np.sign(projected) - projected) ** 2)

    assert loss(itq) < loss(pca)


def test_bad_hashing_input_is_refused(planted):
    data, test = planted
    with pytest.raises(TreeseekError, match="multiple of 8"):
        HPDHHasher(12).fit(data.features, [data.labels])
    with pytest.raises(TreeseekError, match="initial_centres must be one of"):
        HPDHHasher(16, initial_centres="zeros").fit(data.features, [data.labels])
    with pytest.raises(TreeseekError, match="hidden must be 0"):
        HPDHHasher(16, hidden=-4).fit(data.features, [data.labels])
    with pytest.raises(TreeseekError, match="coarse_loss must be one of centres, marginal, outside"):
        HPDHHasher(16, coarse_loss="sideways").fit(data.features, [data.labels])
    with pytest.raises(TreeseekError, match="one label per row"):
        HPDHHasher(16).fit(data.features, [data.labels[:5]])
    with pytest.raises(TreeseekError, match="packed bytes"):
        HammingIndex(64).add(np.zeros((3, 4), dtype=np.uint8))


def test_code_evaluation_matches_per_query_loops(planted):
    from treeseek.evaluation.hashing import evaluate_codes
    from treeseek.evaluation.metrics import average_precision, ndcg_at_k

    data, test = planted
    hasher = SignPCAHasher(16).fit(data.features[~test])
    q_codes, db_codes = hasher.encode(data.features[test]), hasher.encode(data.features[~test])
    y_q, y_db, tree = data.labels[test], data.labels[~test], data.hierarchy
    lca = lca_fractions(tree)
    result = evaluate_codes(q_codes, db_codes, y_q, y_db, tree, chunk=7)
    aps, ndcgs, precisions, wrong_similarities = [], [], [], []
    ideal_gain = np.sort(tree.shared_levels[:, y_db], axis=1)[:, ::-1]
    tie_order = np.random.default_rng(0).permutation(len(y_db))  # ties: a fixed random order (tie_seed=0)
    for q in range(len(y_q)):
        shuffled = np.argsort(hamming_distances(q_codes[q : q + 1], db_codes)[0][tie_order], kind="stable")
        order = tie_order[shuffled]
        relevant = y_db[order] == y_q[q]
        aps.append(average_precision(relevant[None, :], np.array([relevant.sum()]))[0])
        gain = tree.shared_levels[y_q[q], y_db[order]][None, :]
        ndcgs.append(np.mean([ndcg_at_k(gain, ideal_gain[y_q[q]][None, :], k)[0] for k in range(1, 101)]))
        top = y_db[order][:250]
        precisions.append(np.mean(top == y_q[q]))
        wrong_similarities.extend(1 - lca[y_q[q], top[top != y_q[q]]])
    assert result["map"] == pytest.approx(np.mean(aps))
    assert result["ndcg@1-100"] == pytest.approx(np.mean(ndcgs))
    assert result["precision@250"] == pytest.approx(np.mean(precisions))
    assert result["wrong similarity@250"] == pytest.approx(np.mean(wrong_similarities))
    assert 0 < result["mahp@250"] <= 1


def test_code_evaluation_as_hpdh_computes_it(planted):
    """``convention="hpdh"``: mAHP@250 as the plain mean of HP@1..250 and nDCG as the mean of nDCG@1..100 with HPDH's
    discount, both on matching levels, transcribed from its get_map.py loop by loop."""
    import math

    from treeseek.evaluation.hashing import evaluate_codes

    data, test = planted
    hasher = SignPCAHasher(16).fit(data.features[~test])
    q_codes, db_codes = hasher.encode(data.features[test]), hasher.encode(data.features[~test])
    y_q, y_db, tree = data.labels[test], data.labels[~test], data.hierarchy
    parent = tree.to_dict()["parent"]

    def labels(leaf):  # the tuple of a leaf's ancestors below the root, finest first, as HPDH's label files hold
        path = [leaf]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        return path[:-1]

    def matches(a, b):
        return sum(x == y for x, y in zip(labels(a), labels(b)))

    levels = len(labels(0))
    result = evaluate_codes(q_codes, db_codes, y_q, y_db, tree, convention="hpdh")
    tie_order = np.random.default_rng(0).permutation(len(y_db))
    ahps, ndcgs = [], []
    for q in range(len(y_q)):
        order = tie_order[np.argsort(hamming_distances(q_codes[q : q + 1], db_codes)[0][tie_order], kind="stable")]
        everything = sorted([matches(y_q[q], y) for y in y_db], reverse=True)
        correct = np.array([matches(y_q[q], y) for y in y_db[order][:250]], dtype=float)
        ahps.append(np.mean(np.cumsum(correct / levels) / np.cumsum(np.array(everything[:250]) / levels)))
        gains, dcg, idcg = correct[:100], np.zeros(100), np.zeros(100)
        dcg[:2], idcg[:2] = np.cumsum(gains)[:2], np.cumsum(everything)[:2]
        for j in range(2, 100):
            dcg[j] = dcg[j - 1] + gains[j] / math.log2(j)
            idcg[j] = idcg[j - 1] + everything[j] / math.log2(j)
        ndcgs.append(np.mean(dcg / idcg))
    assert result["mahp@250"] == pytest.approx(np.mean(ahps), abs=1e-9)
    assert result["ndcg@1-100"] == pytest.approx(np.mean(ndcgs), abs=1e-9)


def test_ties_are_ranked_in_random_order_not_in_class_sorted_database_order():
    """Every code equal: every result ties. In database order (sorted by class) class-0 queries would get a
    perfect top-250 and the others none of their class; in random order every query gets, in expectation,
    250 x its mean similarity to the database."""
    from treeseek.evaluation.hashing import evaluate_codes
    from treeseek.hierarchy import Hierarchy

    tree = Hierarchy.from_groups([np.array([0, 0, 1, 1])], list("abcd"))
    y_db, y_q = np.repeat(np.arange(4), 500), np.repeat(np.arange(4), 25)
    db_codes, q_codes = np.zeros((len(y_db), 2), np.uint8), np.zeros((len(y_q), 2), np.uint8)
    similarity = 1 - lca_fractions(tree)
    expected = np.mean([250 * similarity[c, y_db].mean() / 250 for c in y_q])  # ideal: 250 of the own class
    by_order = evaluate_codes(q_codes[:25], db_codes, y_q[:25], y_db, tree, tie_seed=None)
    assert by_order["mahp@250"] == 1.0  # class 0 comes first in the database
    shuffled = evaluate_codes(q_codes, db_codes, y_q, y_db, tree)
    assert shuffled["mahp@250"] == pytest.approx(expected, abs=0.02)


def test_hashers_survive_a_save_and_load(planted, tmp_path):
    from treeseek.codes.storage import load_hasher, save_hasher

    data, test = planted
    levels = hierarchy_level_labels(data.hierarchy, data.labels[~test])
    hpdh = HPDHHasher(16, epochs=2, initial_centres="random", coarse_loss="marginal").fit(data.features[~test],
                                                                                          levels)
    deep = HPDHHasher(16, epochs=2, hidden=8).fit(data.features[~test], levels)
    for hasher in (hpdh, deep, ITQHasher(24).fit(data.features)):
        save_hasher(hasher, tmp_path / "h", data.class_names, data.hierarchy, {"note": 1})
        loaded, names, tree, info = load_hasher(tmp_path / "h")
        assert type(loaded) is type(hasher) and names == data.class_names and tree == data.hierarchy
        for param in ("initial_centres", "hidden", "coarse_loss"):
            assert vars(loaded).get(param) == vars(hasher).get(param)
        assert np.array_equal(loaded.encode(data.features), hasher.encode(data.features)) and info == {"note": 1}


def test_hash_commands_from_the_shell(planted, tmp_path):
    import json

    from treeseek.io.features import save_features

    data, test = planted

    def cli(*args):
        return run_cli("hash", *args)

    save_features(tmp_path / "train.npz", data.features[~test], data.labels[~test], data.class_names)
    save_features(tmp_path / "test.npz", data.features[test], data.labels[test], data.class_names)
    trained = cli("train", tmp_path / "train.npz", "--out", tmp_path / "h", "--bits", "16", "--epochs", "3",
                  "--no-progress", "--hidden", "8", "--coarse-loss", "outside")
    assert trained.returncode == 0, trained.stderr
    assert cli("encode", tmp_path / "h", tmp_path / "test.npz", "--out", tmp_path / "c.npz").returncode == 0
    assert np.load(tmp_path / "c.npz")["codes"].shape == (test.sum(), 2)
    from treeseek.codes.storage import load_hasher

    assert load_hasher(tmp_path / "h")[0].coarse_loss == "outside"
    assert cli("search", tmp_path / "h", tmp_path / "train.npz", "--query", tmp_path / "test.npz", "-k", "4",
               "--json", tmp_path / "r.json").returncode == 0
    hits = json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"]
    assert len(hits) == 4 and [h["hamming"] for h in hits] == sorted(h["hamming"] for h in hits)
    evaluated = cli("evaluate", tmp_path / "h", tmp_path / "test.npz", "--database", tmp_path / "train.npz")
    assert set(json.loads(evaluated.stdout)) == {"map", "mahp@250", "ndcg@1-100", "precision@250",
                                                  "wrong similarity@250"}
    bad = cli("train", tmp_path / "train.npz", "--out", tmp_path / "x", "--bits", "12", "--method", "itq")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "\n" not in bad.stderr.strip()
    save_features(tmp_path / "narrow.npz", data.features[:5, :10], data.labels[:5], data.class_names)
    narrow = cli("encode", tmp_path / "h", tmp_path / "narrow.npz", "--out", tmp_path / "n.npz")
    assert narrow.returncode == 2 and "dimensions" in narrow.stderr
    selected = cli("train", tmp_path / "train.npz", "--out", tmp_path / "s", "--bits", "16", "--epochs", "2",
                   "--coarse-weight", "select")
    assert selected.returncode == 0, selected.stderr
    weights = [float(part.split()[0]) for part in selected.stdout.split("w=")[1:]]
    assert weights == [1.0, 0.3, 0.1]  # every candidate scored and shown
    scales = load_hasher(tmp_path / "s")[0].scales
    assert scales[0] == 1.0 and any(scales[1] == pytest.approx(w / 2) for w in weights)
    gridded = cli("train", tmp_path / "train.npz", "--out", tmp_path / "g", "--bits", "16", "--epochs", "2",
                  "--coarse-weight", "select:2,0.5")
    assert gridded.returncode == 0, gridded.stderr
    assert [float(part.split()[0]) for part in gridded.stdout.split("w=")[1:]] == [2.0, 0.5]
    assert load_hasher(tmp_path / "g")[0].scales[1] in (pytest.approx(1.0), pytest.approx(0.25))
    for text in ("heavy", "select:2,x", "select:-1"):
        bad = cli("train", tmp_path / "train.npz", "--out", tmp_path / "x", "--coarse-weight", text)
        assert bad.returncode == 2 and "--coarse-weight must be" in bad.stderr and "\n" not in bad.stderr.strip()
    bad = cli("train", tmp_path / "train.npz", "--out", tmp_path / "x", "--hidden", "-1")
    assert bad.returncode == 2 and "hidden must be 0" in bad.stderr and "\n" not in bad.stderr.strip()
    bad = cli("train", tmp_path / "train.npz", "--out", tmp_path / "x", "--coarse-loss", "sideways")
    assert bad.returncode == 2 and "coarse_loss must be one of" in bad.stderr and "\n" not in bad.stderr.strip()


def test_the_coarse_weight_is_chosen_on_validation_and_zero_weight_is_the_single_level_model(planted):
    from treeseek.data.datasets import stratified_split
    from treeseek.evaluation.code_tuning import level_scales, select_coarse_weight
    from treeseek.evaluation.hashing import evaluate_codes

    data, test = planted
    X, y, tree = data.features[~test], data.labels[~test], data.hierarchy
    assert level_scales(3, 1.0) == pytest.approx([1.0, 0.5, 1 / 3])
    assert level_scales(3, 0.3) == pytest.approx([1.0, 0.15, 0.1])
    chosen, records = select_coarse_weight(X, y, tree, 16, (1.0, 0.0), epochs=4)
    assert [r["coarse_weight"] for r in records] == [1.0, 0.0]
    assert chosen == max(records, key=lambda r: r["mahp@250"])["coarse_weight"]
    # with weight 0 the coarse terms have no gradient: the codes are the single-level (DCWH) model's
    is_val = stratified_split(y, 0.25, 0)
    single = HPDHHasher(16, epochs=4).fit(X[~is_val], [y[~is_val]])
    expected = evaluate_codes(single.encode(X[is_val]), single.encode(X[~is_val]), y[is_val], y[~is_val], tree)
    assert records[1]["mahp@250"] == pytest.approx(expected["mahp@250"], abs=1e-6)
