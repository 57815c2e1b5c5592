"""The WordNet prior of name trees (#31): the graph read from WordNet's files, names resolved in the collection's
domain, d(a, b) = 1 - depth(LCA) / max(depth(a), depth(b)) computed by hand on a small WordNet written here, and
resolutions on the real WordNet 3.0 checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from treeseek.hierarchy import wordnet
from treeseek.hierarchy.builders import make_builder
from treeseek.hierarchy.lexical_prior import candidate_phrases, lexical_distances, resolve_names
from treeseek.hierarchy.wordnet import noun_graph

FLOWERS = ["daisy", "tulip", "lily", "iris", "orchid", "poppy", "violet", "aster", "peony", "crocus", "dahlia",
           "pansy"]
# offset: (words, hypernyms, member holonyms)
SYNSETS = {
    1: (["entity"], [], []), 2: (["organism"], [1], []), 3: (["plant"], [2], []), 4: (["flower"], [3], []),
    5: (["rose"], [4], [9]), 7: (["animal"], [2], []), 8: (["dog"], [7], []), 9: (["genus_rosa"], [10], []),
    10: (["genus"], [1], []), 11: (["rose", "rose_color"], [12], []), 12: (["colour"], [1], []),
    13: (["blue"], [12], []),
    **{100 + i: ([name], [4], []) for i, name in enumerate(FLOWERS)},
}
SENSES = {"rose": [11, 5]}  # the colour first, as WordNet lists "magnolia"'s bark first


@pytest.fixture
def small_wordnet(tmp_path, monkeypatch):
    lines = []
    for offset, (words, kinds, groups) in SYNSETS.items():
        pointers = [f"@ {k:08d} n 0000" for k in kinds] + [f"#m {g:08d} n 0000" for g in groups]
        lines.append(f"{offset:08d} 03 n {len(words):02x} " + " ".join(f"{w} 0" for w in words)
                     + f" {len(pointers):03d} " + " ".join(pointers) + " | a gloss")
    (tmp_path / "data.noun").write_text("  1 This software and database is the licence.\n" + "\n".join(lines) + "\n")
    lemmas: dict[str, list[int]] = {}
    for offset, (words, _, _) in SYNSETS.items():
        for word in words:
            lemmas.setdefault(word, []).append(offset)
    lemmas.update(SENSES)
    (tmp_path / "index.noun").write_text("".join(
        f"{lemma} n {len(offsets)} 1 @ {len(offsets)} 0 " + " ".join(f"{o:08d}" for o in offsets) + "\n"
        for lemma, offsets in sorted(lemmas.items())))
    monkeypatch.setattr(wordnet, "WORDNET_DIR", tmp_path)
    return noun_graph()


def test_names_resolve_in_the_collections_domain_and_distances_follow_the_formula(small_wordnet):
    names = ["rose", *FLOWERS, "purple daisies", "bolero blue", "Rosa canina", "dog"]
    resolution = resolve_names(names, small_wordnet)
    expected = {"rose": 5,            # the flower, not WordNet's first sense (the colour)
                "purple daisies": 100,  # a tail, in the singular
                "bolero blue": None,    # only a colour: outside the domain
                "Rosa canina": 9,       # a Latin binomial: its genus, a group
                "dog": 8}               # an organism, like the flowers
    # the domain: the deepest synset over the first senses of 4 names in 5: flowers are 13 of 17, organisms 14
    for name, synset in expected.items():
        assert resolution.synsets[names.index(name)] == synset, name
    assert resolution.domain == 2 and resolution.coverage == pytest.approx(16 / 17)
    D = lexical_distances(resolution, small_wordnet)
    # by hand, depths along the longest chain: entity 0, organism 1, plant 2, flower 3, genus 1, genus_rosa 2,
    # rose = 1 + max(flower, genus_rosa) = 4, daisy 4
    rose, daisy, rosa = names.index("rose"), names.index("daisy"), names.index("Rosa canina")
    assert D[rose, daisy] == pytest.approx(1 - 3 / 4)   # LCA flower
    assert D[rose, rosa] == pytest.approx(1 - 2 / 4)    # LCA genus_rosa, the rose's member holonym
    assert D[daisy, rosa] == pytest.approx(1 - 0 / 4)   # LCA entity
    assert D[daisy, names.index("dog")] == pytest.approx(1 - 1 / 4)  # LCA organism; dog's depth 3
    assert D[daisy, names.index("purple daisies")] == 0.0 and np.isnan(D[rose, names.index("bolero blue")])


def test_a_wordnet_tree_is_the_linkage_of_the_mixed_distances(small_wordnet):
    names = ["rose", *FLOWERS[:8], "Rosa canina"]  # 8 first senses of 10 are flowers: the domain
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(10, 6)) * 3, 10, axis=0) + rng.normal(size=(100, 6))
    y = np.repeat(np.arange(10), 10)
    builder = make_builder("average:cosine:wordnet=0.6").fit(X, y, names)
    # by hand: cosine distances between the class means, WordNet distances (1 - depth(LCA) / max depth: rose-daisy
    # 1/4, rose-Rosa 1/2, other flowers 1/4 apart, Rosa to the others 1), each divided by its mean
    means = np.stack([X[y == c].mean(axis=0) for c in range(10)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    visual = squareform(1 - unit @ unit.T, checks=False)
    lexical = np.full((10, 10), 0.25)
    lexical[9, :] = lexical[:, 9] = 1.0
    lexical[0, 9] = lexical[9, 0] = 0.5
    lexical = squareform(lexical, checks=False)
    mixed = 0.4 * visual / visual.mean() + 0.6 * lexical / lexical.mean()
    np.testing.assert_allclose(builder.merges_, linkage(mixed, method="average"), atol=1e-9)
    assert builder.wordnet_["coverage"] == 1.0 and builder.wordnet_["synsets"]["rose"].startswith("rose")


def test_candidate_phrases_follow_the_stated_order():
    assert candidate_phrases("hard-leaved pocket orchid")[:6] == [
        "hard_leaved_pocket_orchid", "hard-leaved-pocket-orchid", "leaved_pocket_orchid", "leaved-pocket-orchid",
        "pocket_orchid", "pocket-orchid"]
    assert "orchid" in candidate_phrases("pocket orchid") and "sunflower" in candidate_phrases("sun_flower")
    assert "genus_bolbitis" in candidate_phrases("Bolbitis heteroclita")
    assert "iris" in candidate_phrases("irises") and "coltsfoot" in candidate_phrases("colt's foot")


@pytest.mark.skipif(noun_graph() is None, reason="WordNet 3.0 (wordnet-base) is not installed")
def test_real_names_resolve_to_the_synsets_checked_by_hand():
    graph = noun_graph()
    flowers = ["magnolia", "rose", "sunflower", "hard-leaved pocket orchid", "bolero deep blue", "tiger lily",
               "irises", "sweet william", "globe thistle", "daisy", "foxglove", "camellia", "columbine", "lotus",
               "petunia", "poinsettia", "buttercup", "wallflower", "carnation", "water lily"]
    resolution = resolve_names(flowers, graph)
    by_name = dict(zip(flowers, resolution.synsets))
    assert by_name["magnolia"] == 11709674  # "any shrub or tree of the genus Magnolia", not the bark (11710008)
    assert by_name["bolero deep blue"] is None  # not the colour, nor the butterfly
    assert graph.words[by_name["hard-leaved pocket orchid"]][0] == "orchid"
    assert graph.words[by_name["irises"]][0] == "iris" and 13 <= graph.depth(by_name["irises"])
    assert graph.name(resolution.domain) == "vascular plant"
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    animals = resolve_names(cifar, graph).synsets
    # the animals, not a shuttlecock, a cat-o'-nine-tails or a pawl (the artifact senses of bird, cat and dog)
    assert [graph.words[s][0] for s in animals[2:6]] == ["bird", "cat", "deer", "dog"]
    assert 1503061 == animals[2] and 2121620 == animals[3]
    caltech = resolve_names(["cougar_face", "car_side", "flamingo_head", "chair", "beaver", "anchor", "ant",
                             "Faces_easy", "airplanes", "wild_cat"], graph)
    assert [graph.words[s][0] for s in caltech.synsets[:4]] == ["cougar", "car", "flamingo", "chair"]
    assert graph.words[caltech.synsets[7]][0] == "face" and graph.words[caltech.synsets[8]][0] == "airplane"
    wnids = resolve_names(["n01443537", "n02084071", "tench"], graph)
    assert wnids.synsets[:2] == [1443537, 2084071] and wnids.phrases[0] == "n01443537"


@pytest.mark.slow  # the language model of name trees is loaded and run
@pytest.mark.skipif(noun_graph() is None, reason="WordNet 3.0 (wordnet-base) is not installed")
def test_a_name_tree_tries_the_wordnet_prior_on_validation_and_keeps_it_only_where_validation_agrees():
    from treeseek.evaluation.tuning import select_parameters
    from treeseek.hierarchy.synthetic import planted_hierarchy

    data = planted_hierarchy((2, 5), dim=16, samples_per_class=24, scale=3.0, seed=3)
    names = ["rose", "daisy", "sunflower", "tulip", "orchid", "dog", "cat", "horse", "deer", "frog"]
    grid = {"max_components": [None], "covariance": ["tied"], "alpha": [1.0], "cosine": ["raw"]}
    chosen = select_parameters(data.features, data.labels, names, grid, hierarchy="average:cosine:names",
                               method="combined", widen=False)
    tried = [r for r in chosen.grid if r.get("step") == "wordnet prior"]
    assert [r["hierarchy"] for r in tried] == ["average:cosine:names+wordnet"]
    assert tried[0]["wordnet_coverage"] == 1.0
    without = max(r["map@10"] for r in chosen.grid if r.get("step") != "wordnet prior")
    best = tried[0]
    if best["map@10"] >= without:
        assert chosen.params["hierarchy"] == best["hierarchy"] and chosen.score == best["map@10"]
    else:
        assert chosen.params["hierarchy"] == "average:cosine:names" and chosen.score == without
    assert any("WordNet prior" in note for note in chosen.notes)
