import numpy as np
import pytest

from treeseek.evaluation import metrics as M


def test_precision_and_average_precision_by_hand():
    rel = np.array([[1, 0, 1, 0, 0]], dtype=bool)
    R = np.array([2])
    assert M.precision_at_k(rel, 3)[0] == pytest.approx(2 / 3)
    assert M.average_precision(rel, R)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision_at_k(rel, R, 1)[0] == pytest.approx(1.0)
    assert M.average_precision_at_k(rel, R, 2)[0] == pytest.approx(1 / 2)
    assert M.average_precision_at_k(rel, R, 4)[0] == pytest.approx((1 + 2 / 3) / 2)
    # the paper divides by k whatever R is
    assert M.average_precision_at_k(rel, R, 4, "paper")[0] == pytest.approx((1 + 2 / 3) / 4)


def test_k_larger_than_the_ranking():
    rel = np.array([[0, 1]], dtype=bool)
    assert M.precision_at_k(rel, 10)[0] == pytest.approx(0.5)
    assert M.average_precision_at_k(rel, np.array([1]), 10)[0] == pytest.approx(0.5)
    assert M.average_precision_at_k(rel, np.array([1]), 10, "paper")[0] == pytest.approx(0.05)


def test_class_with_one_member_has_no_average_precision():
    rel = np.zeros((2, 3), dtype=bool)
    rel[1, 0] = True
    ap = M.average_precision(rel, np.array([0, 1]))
    assert np.isnan(ap[0]) and ap[1] == 1.0
    assert M.precision_at_k(rel, 1).tolist() == [0.0, 1.0]


def test_hierarchical_precision_by_hand():
    s = np.array([[0.5, 1.0, 0.0]])
    ideal = np.array([[1.0, 0.5, 0.0]])
    curve = M.hierarchical_precision_curve(s, ideal, 3)
    assert curve[0].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert M.average_hierarchical_precision(s, ideal, 3)[0] == pytest.approx((0.5 + 1.0) / 2 / 2 + 1.0 / 2)
    assert M.average_hierarchical_precision(s, ideal, 1)[0] == pytest.approx(0.5)


def test_perfect_ranking_has_mahp_one():
    ideal = np.sort(np.random.default_rng(0).random((4, 300)), axis=1)[:, ::-1]
    assert np.allclose(M.average_hierarchical_precision(ideal, ideal, 250), 1.0)
    assert np.allclose(M.ndcg_at_k(ideal, ideal, 100), 1.0)


def test_ndcg_and_severity_by_hand():
    gain = np.array([[1, 3, 0]])
    ideal = np.array([[3, 1, 0]])
    expected = (1 / np.log2(2) + 3 / np.log2(3)) / (3 / np.log2(2) + 1 / np.log2(3))
    assert M.ndcg_at_k(gain, ideal, 3)[0] == pytest.approx(expected)
    heights = np.array([[0, 2, 4], [3, 0, 0]])
    rel = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    totals, counts = M.mistake_severity_at_k(heights, rel, 2)  # mistakes: 2 (row 0), 3 (row 1)
    assert totals.tolist() == [2.0, 3.0] and counts.tolist() == [1, 1]  # pooled: 5.0 over 2


def test_map_curve_matches_pointwise_definition():
    rng = np.random.default_rng(1)
    rel = rng.random((6, 40)) < 0.3
    R = rel.sum(axis=1) + 2
    curve = M.average_precision_curve(rel, R, 30)
    for k in (1, 7, 30):
        assert np.allclose(curve[:, k - 1], M.average_precision_at_k(rel, R, k))


def test_full_average_precision_from_keys_matches_stable_sort():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 6, size=(40, 25)).astype(float)  # heavy ties
    relevant = rng.random((40, 25)) < 0.3
    relevant[0] = False
    expected = []
    for row in range(40):
        order = np.argsort(keys[row], kind="stable")
        rel = relevant[row, order][None, :]
        expected.append(M.average_precision(rel, rel.sum(axis=1))[0])
    got = M.average_precision_from_keys(keys, relevant)
    assert np.isnan(got[0]) and np.allclose(got[1:], expected[1:])
