import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy.builders import (
    TaxonomyHierarchyBuilder,
    VisualHierarchyBuilder,
    make_builder,
    resolve_threshold,
    threshold_grid,
)
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.statistics import VariancePCA


def same_tree(a, b) -> bool:
    return np.array_equal(a.lca_heights, b.lca_heights)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("covariance", ["tied", "full"])
def test_visual_builder_recovers_planted_partitions(seed, covariance):
    data = planted_hierarchy(scale=4.0, seed=seed)
    Z = VariancePCA().fit_transform(data.features)
    builder = VisualHierarchyBuilder(threshold=0.05, covariance=covariance).fit(Z, data.labels, data.class_names)
    assert same_tree(builder.hierarchy_, data.hierarchy)
    assert builder.shape_ == [36, 9, 3, 1]
    for found, planted in zip(builder.levels_, data.groups):
        # the same partition, whatever the group numbering
        assert len(set(zip(found.tolist(), planted.tolist()))) == len(set(planted.tolist())) == len(set(found.tolist()))


@pytest.mark.parametrize("seed", [0, 2])
def test_diagonal_model_never_merges_across_planted_groups(seed):
    # The diagonal model ignores correlations, so a sibling may join one level late,
    # but it must never join classes from different planted groups.
    data = planted_hierarchy(scale=4.0, seed=seed)
    Z = VariancePCA().fit_transform(data.features)
    builder = VisualHierarchyBuilder(threshold=0.05, covariance="diag").fit(Z, data.labels)
    found = builder.levels_[0]
    for group in np.unique(found):
        assert len(np.unique(data.groups[0][found == group])) == 1


def test_threshold_above_every_overlap_gives_a_flat_tree():
    data = planted_hierarchy(scale=4.0)
    Z = VariancePCA().fit_transform(data.features)
    builder = VisualHierarchyBuilder(threshold=0.99).fit(Z, data.labels)
    assert builder.shape_ == [36, 1] and builder.hierarchy_.max_height == 1


def test_threshold_specs():
    bc = np.array([[1.0, 0.5, 0.01, 0.2], [0.5, 1.0, 0.02, 0.1], [0.01, 0.02, 1.0, 0.3], [0.2, 0.1, 0.3, 1.0]])
    assert resolve_threshold(bc, 0.25) == 0.25
    assert resolve_threshold(bc, "q1.0") == 0.5
    assert resolve_threshold(bc, "q0") == 0.01
    # auto keeps about K/2 = 2 pairs at or above t
    t = resolve_threshold(bc, "auto")
    assert np.sum(bc[np.triu_indices(4, 1)] >= t) == 2
    with pytest.raises(TreeseekError):
        resolve_threshold(bc, "sometimes")
    with pytest.raises(TreeseekError):
        resolve_threshold(bc, 1.5)
    grid = threshold_grid(bc, 5)
    assert np.all(np.diff(grid) > 0) and grid[-1] == 0.5


def test_ward_builds_a_binary_tree_that_groups_siblings():
    data = planted_hierarchy(scale=4.0)
    Z = VariancePCA().fit_transform(data.features)
    tree = make_builder("ward").fit(Z, data.labels, data.class_names).hierarchy_
    assert tree.n_nodes == 2 * 36 - 1
    # every planted level-1 group is a subtree of the Ward tree
    for group in np.unique(data.groups[0]):
        members = np.flatnonzero(data.groups[0] == group)
        node = tree.lca(int(members[0]), int(members[1]))
        for m in members[2:]:
            node = tree.lca(node, int(m))
        assert set(tree.leaves_under(node).tolist()) == set(members.tolist())


def test_taxonomy_builder_aligns_to_class_names(tmp_path):
    data = planted_hierarchy()
    from treeseek.hierarchy import save_hierarchy

    save_hierarchy(data.hierarchy, tmp_path / "tax.json")
    names = data.class_names[::-1]
    tree = TaxonomyHierarchyBuilder(str(tmp_path / "tax.json")).fit(None, np.arange(36), names).hierarchy_
    assert tree.names[:36] == names
    assert tree.lca_heights[0, 1] == data.hierarchy.lca_heights[35, 34]
