"""Barz & Denzler's semantic embeddings: the class embeddings' defining property, and the learned head."""
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy, load_taxonomy
from treeseek.hierarchy.class_embeddings import class_embeddings, tree_similarity
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.training.semantic_embedding import SemanticEmbeddingHead

from oracles import lca_fractions


def check_property(tree):
    phi = class_embeddings(tree)
    expected = 1.0 - lca_fractions(tree)  # written out from the definition
    assert np.abs(phi @ phi.T - expected).max() <= 1e-6
    assert np.allclose(np.linalg.norm(phi, axis=1), 1.0, atol=1e-9)


def test_class_embedding_dot_products_equal_the_taxonomy_similarity(shared):
    check_property(load_taxonomy(shared / "hierarchies" / "caltech101.paths.tsv"))
    check_property(load_taxonomy(shared / "hierarchies" / "cifar10.paths.tsv"))
    check_property(load_taxonomy(shared / "hierarchies" / "cifar100.parent-child.txt"))
    check_property(load_taxonomy(shared / "hierarchies" / "cub200.parent-child.txt"))


@pytest.mark.parametrize("seed", range(3))
def test_class_embeddings_of_random_and_degenerate_trees(seed):
    rng = np.random.default_rng(seed)
    levels = [rng.integers(0, 6, size=30)]
    levels.append(rng.integers(0, 3, size=6)[levels[0]])
    check_property(Hierarchy.from_groups(levels, [f"c{i}" for i in range(30)]))
    check_property(Hierarchy.flat(7))
    check_property(Hierarchy.flat(1))
    assert tree_similarity(Hierarchy.flat(3))[0, 1] == 0.0


def test_the_head_maps_images_near_their_class_embedding():
    data = planted_hierarchy((3, 3), dim=20, samples_per_class=80, scale=4.0, seed=2)
    tree = Hierarchy.from_groups(data.groups, data.class_names)
    head = SemanticEmbeddingHead(epochs=30).fit(data.features, data.labels, tree)
    psi = head.transform(data.features)
    phi = head.class_embeddings_
    assert np.allclose(np.linalg.norm(psi, axis=1), 1.0)
    assert np.mean((psi * phi[data.labels]).sum(1)) > 0.8
    assert np.mean(np.argmax(psi @ phi.T, axis=1) == data.labels) > 0.9
    assert head.history_[-1] < head.history_[0]
    with pytest.raises(TreeseekError, match="dimensions"):
        head.transform(data.features[:, :5])
    with pytest.raises(TreeseekError, match="labels"):
        SemanticEmbeddingHead().fit(data.features, data.labels + 100, tree)
