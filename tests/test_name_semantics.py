"""Trees that also weigh what the class names mean, through the real bundled language model."""
import sys

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist

from treeseek.errors import TreeseekError
from treeseek.hierarchy import name_semantics
from treeseek.hierarchy.builders import LinkageHierarchyBuilder, make_builder
from treeseek.hierarchy.name_semantics import embed_class_names, name_phrase
from treeseek.model import TreeseekModel

from conftest import run_cli

pytestmark = pytest.mark.slow  # a language model loaded and run

# Visually, each animal sits next to a machine: cat with airplane, dog with helicopter (by direction).
NAMES = ["cat", "airplane", "dog", "helicopter"]


@pytest.fixture(scope="module")
def look_alikes():
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.1], [1.0, 0.3], [0.1, 1.0], [0.3, 1.0]])
    y = np.repeat(np.arange(4), 40)
    return centres[y] + 0.02 * rng.normal(size=(160, 2)), y


def test_name_phrases():
    assert name_phrase("001.Black_footed_Albatross") == "black footed albatross"
    assert name_phrase("ceilingFan") == "ceiling fan"
    assert name_phrase("Faces_easy") == "faces easy"
    assert name_phrase("water-lilly") == "water lilly"
    assert name_phrase("007") == "007"  # a bare number stays what it is


def test_the_language_model_puts_related_names_together():
    vectors = embed_class_names(NAMES)
    assert vectors.shape[0] == 4 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    cosine = vectors @ vectors.T
    cat, airplane, dog, helicopter = range(4)
    assert cosine[cat, dog] > max(cosine[cat, airplane], cosine[cat, helicopter])
    assert cosine[airplane, helicopter] > max(cosine[airplane, cat], cosine[airplane, dog])


def test_names_regroup_classes_that_look_alike(look_alikes):
    X, y = look_alikes
    by_look = make_builder("average:1:cosine").fit(X, y, NAMES).hierarchy_
    assert by_look.lca_heights[0, 1] == by_look.lca_heights[2, 3] == 1  # cat with airplane
    by_name = make_builder("average:1:cosine:names=1").fit(X, y, NAMES).hierarchy_
    assert by_name.lca_heights[0, 2] == by_name.lca_heights[1, 3] == 1  # cat with dog
    assert make_builder("average:1:cosine:names=0").fit(X, y, NAMES).hierarchy_ == by_look


def test_mixed_distances_are_the_weighted_sum_of_both_at_mean_one(look_alikes):
    X, y = look_alikes
    template = "a photo of a {}."
    builder = LinkageHierarchyBuilder("average", distance="cosine", names_weight=0.3,
                                      name_template=template).fit(X, y, NAMES)
    visual = pdist(np.stack([X[y == c].mean(axis=0) for c in range(4)]), metric="cosine")
    names = pdist(embed_class_names(NAMES, template=template), metric="cosine")
    assert not np.allclose(names, pdist(embed_class_names(NAMES), metric="cosine"))  # the phrase matters
    expected = linkage(0.7 * visual / visual.mean() + 0.3 * names / names.mean(), method="average")
    np.testing.assert_allclose(builder.merges_, expected, rtol=1e-9)
    assert make_builder("average:16:cosine:names").names_weight == 0.4  # the default weight


def test_a_saved_model_needs_no_language_model_to_load(look_alikes, tmp_path, monkeypatch):
    X, y = look_alikes
    model = TreeseekModel(hierarchy="average:1:cosine:names=1").fit(X, y, NAMES)
    model.save(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if the extra were not installed
    assert TreeseekModel.load(tmp_path / "m").hierarchy_ == model.hierarchy_


def test_bad_name_options_are_clear_errors(look_alikes, monkeypatch):
    X, y = look_alikes
    with pytest.raises(TreeseekError, match="names=W takes a weight"):
        make_builder("average:names=much")
    with pytest.raises(TreeseekError, match=r"must lie in \[0, 1\]"):
        make_builder("average:names=1.5").fit(X, y, NAMES)
    with pytest.raises(TreeseekError, match="Ward linkage needs Euclidean distances"):
        make_builder("ward:names").fit(X, y, NAMES)
    with pytest.raises(TreeseekError, match="needs the class names"):
        make_builder("average:names").fit(X, y)
    with pytest.raises(TreeseekError, match="must hold"):
        LinkageHierarchyBuilder(names_weight=0.5, name_template="a kind of thing").fit(X, y, NAMES)
    with pytest.raises(TreeseekError, match="cannot load the language model '/no/such/model'"):
        LinkageHierarchyBuilder(names_weight=0.5, name_model="/no/such/model").fit(X, y, NAMES)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(name_semantics, "_load", name_semantics._load.__wrapped__)  # past the loaded model
    with pytest.raises(TreeseekError, match=r"pip install 'treeseek\[language\]'"):
        embed_class_names(NAMES)


def test_the_cli_fits_a_tree_with_names_and_rejects_a_bad_weight(look_alikes, tmp_path):
    from treeseek.io.features import save_features
    X, y = look_alikes
    save_features(tmp_path / "train.npz", X, y, NAMES)
    result = run_cli("fit", tmp_path / "train.npz", "--out", tmp_path / "m", "--hierarchy", "average:1:cosine:names=1",
                     "--no-plot")
    assert result.returncode == 0, result.stderr
    assert TreeseekModel.load(tmp_path / "m").hierarchy_.lca_heights[0, 2] == 1  # cat with dog
    result = run_cli("fit", tmp_path / "train.npz", "--out", tmp_path / "m2", "--hierarchy", "average:names=2")
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "[0, 1]" in result.stderr


@pytest.mark.parametrize("name, identifier", [
    ("n01443537", True), ("n02084071", True), ("class_07", True), ("Category 3", True), ("17", True),
    ("x7b2", True), ("snow_leopard", False), ("001.Black_footed_Albatross", False), ("OrchidPocket", False),
    ("ox", False), ("class_of_birds", False)])
def test_identifier_like_names_follow_the_stated_rule(name, identifier):
    from treeseek.hierarchy.name_semantics import looks_like_identifier

    assert looks_like_identifier(name) is identifier


def test_a_tree_over_identifier_names_warns_and_leaves_the_names_out(caplog):
    import numpy as np

    from treeseek.hierarchy.builders import make_builder

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)) + np.repeat(rng.normal(size=(6, 6)) * 4, 20, axis=0)
    y = np.repeat(np.arange(6), 20)
    codes = ["class_01", "class_02", "17", "18", "x7b2", "id 4"]
    with caplog.at_level("WARNING"):
        named = make_builder("average:4:cosine:names").fit(X, y, codes)  # no language model is needed, or loaded
    plain = make_builder("average:4:cosine").fit(X, y, codes)
    assert not named.names_used_ and named.hierarchy_ == plain.hierarchy_
    assert "6 of the 6 class names look like identifiers" in caplog.text


def test_wnid_folders_resolve_to_their_wordnet_words():
    """Checked by hand against WordNet 3.0 (ImageNet's first classes, and 'dog')."""
    from pathlib import Path

    from treeseek.hierarchy.wordnet_names import WORDNET_DIR, wordnet_words

    if not (WORDNET_DIR / "data.noun").is_file():
        pytest.fail("WordNet is not installed: scripts/setup.sh installs Debian's wordnet-base with the test extras")
    names = ["n01440764", "n01443537", "n01484850", "n01491361", "n02084071", "snow_leopard", "n99999999"]
    assert wordnet_words(names) == ["tench", "goldfish", "great white shark", "tiger shark", "dog", "snow_leopard",
                                    "n99999999"]
    assert wordnet_words(["n01443537"], Path("/nowhere")) == ["n01443537"]  # no WordNet: the ids stay
