"""A lexical prior between classes from WordNet: class names resolved to noun synsets, and the distance between
two synsets d(a, b) = 1 - depth(LCA) / max(depth(a), depth(b)) in the graph of hypernyms, instance hypernyms and
member holonyms (``wordnet.NounGraph``).

How a name is resolved (``resolve_names``):

1. A WordNet id (``n01443537``) is its synset.
2. Otherwise the name as words (``name_semantics.name_phrase``) is looked up as a lemma, then its shorter tails
   ("pocket orchid", then "orchid"), the words joined ("sun flower" -> "sunflower"), the singulars of each
   ("irises" -> "iris"), for a Latin genus or binomial the genus ("genus Bolbitis", a group that its species are
   members of), and the leading words ("faces easy" -> "faces" -> "face"). Of the phrases with a sense in the
   collection's domain, the one that uses most of the name's words wins, then the order above (so "pink
   primrose" is a primrose); a genus only when nothing else resolves; a last word that names a part
   (``PART_WORDS``: "cougar face", "car side") yields to the leading words, the thing it is a part of.
3. The domain is read from what the names are kinds of (hypernyms only): the deepest synset that the most
   frequent sense of at least four names in five (of those that resolve at all) is a kind of: for a flower set a
   plant, for CIFAR-10 and Caltech-101 a whole object. A name takes its first sense in the domain (WordNet's
   order: the most frequent), or stays unresolved: WordNet's first sense of "magnolia" is the bark, and "bolero
   deep blue" would otherwise resolve to the colour. Two other rules were tried and rejected: a domain that any
   sense of half of the names falls in is "organism" on Caltech-101, where "chair" resolves to a president and
   "beaver" to an Oregonian; one that any sense of nine names in ten falls in is "artifact" on CIFAR-10, where
   "bird" resolves to a shuttlecock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from treeseek.hierarchy.name_semantics import name_phrase
from treeseek.hierarchy.wordnet import NounGraph
from treeseek.hierarchy.wordnet_names import WNID

DOMAIN_SHARE = 0.8  # of the names that resolve at all: the domain is above the first sense of at least this many
# a name ending in one of these names the thing it is a part of ("cougar_face", "car_side", "flamingo_head")
PART_WORDS = frozenset({"head", "face", "body", "side", "front", "back", "top", "bottom", "leg", "tail", "wing",
                        "part", "detail", "closeup", "view"})


@dataclass(frozen=True)
class Resolution:
    """Per class: its ``synsets`` (offset, or None when unresolved) and the ``phrases`` that found them; the
    collection's ``domain`` synset."""

    synsets: list[int | None]
    phrases: list[str | None]
    domain: int | None

    @property
    def coverage(self) -> float:
        """The share of classes resolved."""
        return sum(s is not None for s in self.synsets) / max(1, len(self.synsets))

    def describe(self, graph: NounGraph, names: Sequence[str]) -> dict:
        """For the model and the report: the coverage, the domain and each class's synset (its words, or None)."""
        return {"coverage": self.coverage, "domain": None if self.domain is None else graph.name(self.domain),
                "synsets": {str(name): None if synset is None else
                            f"{graph.name(synset)} ({'; '.join(w.replace('_', ' ') for w in graph.words[synset])}, "
                            f"n{synset:08d})" for name, synset in zip(names, self.synsets)}}


def candidate_phrases(name: str) -> list[str]:
    """The lemmas tried for a class name, in order (the module's step 2), as WordNet writes them (underscores;
    hyphens where WordNet has them, as in "black-eyed_susan"). A name of alternatives ("T-shirt/top") tries each."""
    return [phrase for phrase, _ in _candidates(name)]


def _candidates(name: str) -> list[tuple[str, float]]:
    """``candidate_phrases`` with the number of the name's words each one uses (0 for a genus, the last resort; a
    last word in ``PART_WORDS`` counts half)."""
    phrases: dict[str, float] = {}
    for alternative in str(name).replace("'", "").split("/"):
        words = name_phrase(alternative).split()
        if not words:
            continue
        # a tail uses its words; the last word alone, when it names a part of the thing before it, counts half
        part_tail = len(words) > 1 and words[-1] in PART_WORDS
        found = [(joiner.join(words[i:]), len(words) - i - (0.5 if part_tail and i == len(words) - 1 else 0))
                 for i in range(len(words)) for joiner in "_-"]
        if len(words) > 1:
            found.append(("".join(words), len(words)))
        found += [(singular, used) for phrase, used in list(found) for singular in _singulars(phrase)]
        if len(words) <= 2 and words[0].isalpha():  # a Latin genus, or a binomial's: its genus
            found.append((f"genus_{words[0]}", 0))
        leading = [("_".join(words[:i]), i) for i in range(len(words) - 1, 0, -1)]
        found += leading + [(singular, used) for phrase, used in leading for singular in _singulars(phrase)]
        for phrase, used in found:
            phrases.setdefault(phrase, used)
    return list(phrases.items())


def _singulars(phrase: str) -> list[str]:
    """Regular singulars of a phrase's last word (WordNet's own irregular plurals are looked up apart)."""
    head, _, last = phrase.rpartition("_")
    prefix = head + "_" if head else ""
    forms = []
    if last.endswith("ies") and len(last) > 4:
        forms.append(last[:-3] + "y")
    if last.endswith("es") and len(last) > 3:
        forms.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 2:
        forms.append(last[:-1])
    return [prefix + form for form in forms]


def _senses(graph: NounGraph, phrase: str) -> list[int]:
    found = list(graph.senses.get(phrase, []))
    for singular in graph.plurals.get(phrase, []):
        found += [s for s in graph.senses.get(singular, []) if s not in found]
    return found


def resolve_names(names: Sequence[str], graph: NounGraph) -> Resolution:
    """Each class name's synset in the collection's domain, or None (the module's steps 1-3)."""
    fixed: dict[int, int] = {}
    options: dict[int, list[tuple[str, list[int]]]] = {}
    for i, name in enumerate(names):
        match = WNID.match(str(name).strip())
        if match and int(match.group(1)) in graph.words:
            fixed[i] = int(match.group(1))
            continue
        found = [(phrase, used, senses) for phrase, used in _candidates(str(name))
                 if (senses := _senses(graph, phrase))]
        if found:
            options[i] = found
    resolving = [[fixed[i]] if i in fixed else options[i][0][2][:1] for i in sorted({*fixed, *options})]
    domain = _domain(graph, resolving, DOMAIN_SHARE)
    synsets: list[int | None] = [fixed.get(i) for i in range(len(names))]
    phrases: list[str | None] = [f"n{fixed[i]:08d}" if i in fixed else None for i in range(len(names))]
    for i, found in options.items():
        # each phrase's first sense in the domain (a genus is a group, not a kind of the domain's things: taken as
        # it is); then the phrase that uses most of the name's words, the earliest among equals
        inside = [(phrase, used, kept[0]) for phrase, used, senses in found
                  if (kept := [s for s in senses if phrase.startswith("genus_") or domain is None
                               or domain in graph.kind_of(s)])]
        if inside:
            phrase, _, synsets[i] = max(inside, key=lambda entry: entry[1])  # max keeps the first of equals
            phrases[i] = phrase.replace("_", " ")
    return Resolution(synsets, phrases, domain)


def _domain(graph: NounGraph, sense_lists: list[list[int]], share: float) -> int | None:
    """The deepest synset that some sense of at least ``share`` of the names (each a list of senses) is a kind of."""
    if not sense_lists:
        return None
    counts: dict[int, int] = {}
    for senses in sense_lists:
        for synset in frozenset().union(*(graph.kind_of(s) for s in senses)):
            counts[synset] = counts.get(synset, 0) + 1
    needed = share * len(sense_lists)
    common = [s for s, count in counts.items() if count >= needed]
    return max(common, key=lambda s: (graph.depth(s), counts[s], -s)) if common else None


def lexical_distances(resolution: Resolution, graph: NounGraph) -> np.ndarray:
    """Square WordNet distances 1 - similarity between the resolved classes; NaN where a class is unresolved (0 on
    the diagonal)."""
    synsets = resolution.synsets
    n = len(synsets)
    distances = np.full((n, n), np.nan)
    np.fill_diagonal(distances, 0.0)
    for i in range(n):
        for j in range(i + 1, n):
            if synsets[i] is not None and synsets[j] is not None:
                distances[i, j] = distances[j, i] = 1.0 - graph.similarity(synsets[i], synsets[j])
    return distances
