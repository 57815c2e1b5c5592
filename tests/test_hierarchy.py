
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy, load_taxonomy, read_paths, save_hierarchy


def small_tree() -> Hierarchy:
    #            root(5)
    #          /        \
    #      n1(5)         d(3)
    #      /   \
    #   a(0)   n2(6)
    #          /   \
    #        b(1)  c(2)
    # leaves a, b, c, d; node ids: leaves 0..3, inner 4=root, 5=n1, 6=n2
    return Hierarchy([5, 6, 6, 4, -1, 4, 5], ["a", "b", "c", "d", "root", "n1", "n2"], 4)


def test_heights_lca_and_ancestors_by_hand():
    tree = small_tree()
    assert tree.height.tolist() == [0, 0, 0, 0, 3, 2, 1]
    assert tree.max_height == 3
    expected = np.array([[0, 2, 2, 3], [2, 0, 1, 3], [2, 1, 0, 3], [3, 3, 3, 0]])
    assert np.array_equal(tree.lca_heights, expected)
    assert np.allclose(tree.normalized_lca, expected / 3)
    assert tree.ancestors(1).tolist() == [1, 6, 5, 4]
    assert tree.ancestor_table.tolist() == [[0, 5, 4, -1, -1], [1, 6, 5, 4, -1], [2, 6, 5, 4, -1], [3, 4, -1, -1, -1]]
    assert tree.lca(0, 2) == 5 and tree.lca(3, 3) == 3
    assert tree.labels_at_height(1).tolist() == [5, 6, 6, 4]
    assert tree.labels_at_height(2).tolist() == [5, 5, 5, 4]
    assert tree.shape() == [4, 3, 2, 1]
    # levels shared below the root: depth of LCA, or depth of the leaf itself
    assert tree.shared_levels.tolist() == [[2, 1, 1, 0], [1, 3, 2, 0], [1, 2, 3, 0], [0, 0, 0, 1]]


def test_subtrees_are_contiguous_blocks():
    tree = small_tree()
    for node in range(tree.n_nodes):
        start, end = tree.block[node]
        under = {leaf for leaf in range(tree.n_leaves) if node in tree.ancestors(leaf).tolist()}
        assert set(tree.leaf_order[start:end].tolist()) == under


def test_single_child_chains_collapse_keeping_the_child():
    # root -> x -> y -> {a, b}; root -> c
    tree = Hierarchy([5, 5, 3, -1, 3, 4], ["a", "b", "c", "root", "x", "y"], 3)
    assert tree.n_nodes == 5
    assert "x" not in tree.names and "y" in tree.names
    assert tree.max_height == 2
    assert tree.lca_heights[0, 1] == 1 and tree.lca_heights[0, 2] == 2


def test_json_round_trip_and_newick(tmp_path):
    tree = small_tree()
    save_hierarchy(tree, tmp_path / "t.json")
    assert load_taxonomy(tmp_path / "t.json") == tree
    assert tree.to_newick() == "(d:3,(a:2,(b:1,c:1)n2:1)n1:1)root;"
    save_hierarchy(tree, tmp_path / "t.nwk")
    assert (tmp_path / "t.nwk").read_text().strip() == tree.to_newick()


def test_newick_quotes_awkward_names():
    tree = Hierarchy([2, 2, -1], ["Ankle boot", "it's", "root"], 2)
    assert tree.to_newick() == "('Ankle boot':1,'it''s':1)root;"


def test_flat_tree_and_from_groups():
    flat = Hierarchy.flat(3)
    assert flat.lca_heights.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    tree = Hierarchy.from_groups([np.array([0, 0, 1, 2]), np.array([0, 0, 0, 1])], list("abcd"))
    assert tree.lca_heights.tolist() == [[0, 1, 2, 3], [1, 0, 2, 3], [2, 2, 0, 3], [3, 3, 3, 0]]


def test_cycle_and_multiple_roots_are_errors():
    with pytest.raises(TreeseekError, match="cycle"):
        Hierarchy([3, 3, 4, 4, 3, -1], ["a", "b", "c", "x", "y", "root"], 3)
    with pytest.raises(TreeseekError, match="exactly one root"):
        Hierarchy([2, -1, -1], ["a", "b", "r"], 2)
    with pytest.raises(TreeseekError, match="cycle through 'x'|cycle through 'y'"):
        Hierarchy([3, 3, 3, 4, 3], ["a", "b", "c", "x", "y"], 3)  # no root at all: x <-> y


def test_restrict_reorders_and_prunes():
    tree = small_tree().restrict(["c", "a", "b"])
    assert tree.names[:3] == ["c", "a", "b"]
    # after dropping d the root chain collapses: n1 is the root, c and b meet at n2
    assert tree.lca_heights[0, 2] == 1 and tree.lca_heights[0, 1] == 2 and tree.max_height == 2
    with pytest.raises(TreeseekError, match="lacks 1 dataset class"):
        small_tree().restrict(["a", "zebra"])


def test_paths_format_two_parents_and_header(tmp_path):
    good = tmp_path / "good.paths.tsv"
    good.write_text("class\tpath\ncat\tentity > animal > feline\ndog\tentity > animal > canine\ncar\tentity > vehicle\n")
    tree = read_paths(good)
    assert tree.names[:3] == ["cat", "dog", "car"]
    assert tree.lca_heights[0, 1] == 1 and tree.lca_heights[0, 2] == 2
    bad = tmp_path / "bad.paths.tsv"
    bad.write_text("class\tpath\ncat\tentity > animal > pet\ndog\tentity > home > pet\n")
    with pytest.raises(TreeseekError, match="two parents"):
        read_paths(bad)


def test_parent_child_format_errors(tmp_path):
    (tmp_path / "t.class_names.txt").write_text("0 a\n1 b\n2 c\n")
    (tmp_path / "t.parent-child.txt").write_text("3 0\n3 1\n4 3\n4 2\n")
    tree = load_taxonomy(tmp_path / "t.parent-child.txt")
    assert tree.names[:3] == ["a", "b", "c"] and tree.max_height == 2
    (tmp_path / "t.parent-child.txt").write_text("3 0\n3 1\n4 3\n4 2\n3 4\n")
    with pytest.raises(TreeseekError, match="two parents|cycle|root"):
        load_taxonomy(tmp_path / "t.parent-child.txt")
    (tmp_path / "t.parent-child.txt").write_text("3 0\n4 3\n3 4\n")  # 3 <-> 4 cycle, 1 and 2 missing
    with pytest.raises(TreeseekError, match="missing|cycle"):
        load_taxonomy(tmp_path / "t.parent-child.txt")
    (tmp_path / "t.parent-child.txt").write_text("3 0\n3 1\n3 2\n4 5\n5 4\n")
    with pytest.raises(TreeseekError, match="cycle"):
        load_taxonomy(tmp_path / "t.parent-child.txt")


def test_shared_taxonomies_load(shared):
    expected_leaves = {
        "cifar100.parent-child.txt": 100,
        "cub200.parent-child.txt": 200,
        "caltech101.paths.tsv": 101,
        "cifar10.paths.tsv": 10,
        "fashion-mnist.paths.tsv": 10,
    }
    for name, leaves in expected_leaves.items():
        tree = load_taxonomy(shared / "hierarchies" / name)
        assert tree.n_leaves == leaves
        assert tree.shape()[0] == leaves and tree.shape()[-1] == 1
        assert np.all(np.diag(tree.lca_heights) == 0)
        # every inner node branches after chain collapsing
        assert all(len(tree.children[n]) >= 2 for n in range(tree.n_leaves, tree.n_nodes))
    caltech = load_taxonomy(shared / "hierarchies" / "caltech101.paths.tsv")
    faces = caltech.names.index("Faces"), caltech.names.index("Faces_easy")
    assert caltech.lca_heights[faces] == 1  # they share their synset


def test_taxonomy_missing_dataset_classes(shared):
    with pytest.raises(TreeseekError, match="lacks"):
        load_taxonomy(shared / "hierarchies" / "cifar10.paths.tsv", ["cat", "dog", "unicorn"])
