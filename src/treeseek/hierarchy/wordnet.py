"""WordNet 3.0's noun graph, read offline from the files of Debian's ``wordnet-base`` package.

Only what treeseek needs is kept: each noun synset's words, its parents (hypernyms, instance hypernyms and member
holonyms: the last makes a species a member of its genus, a genus of its family, a family of its order), the
senses of every lemma in WordNet's order (most frequent first), and the irregular plurals of ``noun.exc``. Nothing
is downloaded: without the files, ``noun_graph`` answers None and callers say so.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
# hypernym, instance hypernym, member holonym (the synset is a member of the pointed group: species -> genus)
PARENT_POINTERS = frozenset({"@", "@i", "#m"})
KIND_POINTERS = frozenset({"@", "@i"})  # "is a kind (or an instance) of": what a collection's domain is read from


@dataclass
class NounGraph:
    """The noun synsets by offset: ``words`` (lemmas, underscores for spaces), ``parents`` (through
    ``PARENT_POINTERS``), ``kinds`` (the hypernyms alone), ``senses`` (lemma -> offsets, most frequent sense
    first) and ``plurals`` (irregular plural -> singulars)."""

    words: dict[int, list[str]]
    parents: dict[int, tuple[int, ...]]
    kinds: dict[int, tuple[int, ...]]
    senses: dict[str, list[int]]
    plurals: dict[str, list[str]]
    _ancestors: dict[int, frozenset] = field(default_factory=dict, repr=False)
    _depth: dict[int, int] = field(default_factory=dict, repr=False)
    _kind_of: dict[int, frozenset] = field(default_factory=dict, repr=False)

    def kind_of(self, synset: int) -> frozenset:
        """The synset and every synset it is a kind or an instance of (hypernyms only, no holonyms)."""
        if synset not in self._kind_of:
            above = frozenset({synset})
            frontier = [synset]
            while frontier:
                frontier = [k for s in frontier for k in self.kinds.get(s, ()) if k not in above]
                above = above.union(frontier)
            self._kind_of[synset] = above
        return self._kind_of[synset]

    def ancestors(self, synset: int) -> frozenset:
        """The synset and every synset above it through ``parents``."""
        if synset not in self._ancestors:
            self._walk(synset)
        return self._ancestors[synset]

    def depth(self, synset: int) -> int:
        """Length of the longest chain of parents up to a synset without any (``entity``, depth 0): a parent is
        always shallower than its child, so a lowest common ancestor is never deeper than either synset."""
        if synset not in self._depth:
            self._walk(synset)
        return self._depth[synset]

    def _walk(self, start: int) -> None:
        """Fill ``_ancestors`` and ``_depth`` of ``start`` and everything above it, depth-first without recursion;
        a pointer that would close a cycle is ignored."""
        stack, on_path = [(start, iter(self.parents.get(start, ())))], {start}
        while stack:
            node, pending = stack[-1]
            parent = next(pending, None)
            if parent is None:
                stack.pop()
                on_path.discard(node)
                done = [p for p in self.parents.get(node, ()) if p in self._depth]
                self._depth[node] = 1 + max((self._depth[p] for p in done), default=-1)
                self._ancestors[node] = frozenset({node}).union(*(self._ancestors[p] for p in done))
            elif parent not in self._depth and parent not in on_path:
                on_path.add(parent)
                stack.append((parent, iter(self.parents.get(parent, ()))))

    def similarity(self, a: int, b: int) -> float:
        """depth(LCA(a, b)) / max(depth(a), depth(b)), the LCA being the deepest common ancestor: 1 for one synset,
        0 for synsets that share only the root."""
        common = self.ancestors(a) & self.ancestors(b)
        deepest = max((self.depth(s) for s in common), default=0)
        return deepest / max(self.depth(a), self.depth(b), 1)

    def name(self, synset: int) -> str:
        """The synset's first word, with spaces."""
        return self.words[synset][0].replace("_", " ")


def noun_graph(directory: Path | None = None) -> NounGraph | None:
    """The noun graph of the WordNet files in ``directory`` (``WORDNET_DIR`` by default; read once per process), or
    None without them."""
    directory = Path(WORDNET_DIR if directory is None else directory)
    if not all((directory / name).is_file() for name in ("data.noun", "index.noun")):
        return None
    return _read(directory)


@functools.cache
def _read(directory: Path) -> NounGraph:
    words: dict[int, list[str]] = {}
    parents: dict[int, tuple[int, ...]] = {}
    kinds: dict[int, tuple[int, ...]] = {}
    with open(directory / "data.noun", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith(" "):  # the licence at the top of the file
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, n_words = int(fields[0]), int(fields[3], 16)
            words[offset] = [fields[4 + 2 * i].lower() for i in range(n_words)]
            at = 4 + 2 * n_words
            n_pointers = int(fields[at])
            pointers = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(n_pointers)]
            parents[offset] = tuple(int(target) for symbol, target, pos, _ in pointers
                                    if symbol in PARENT_POINTERS and pos == "n")
            kinds[offset] = tuple(int(target) for symbol, target, pos, _ in pointers
                                  if symbol in KIND_POINTERS and pos == "n")
    senses: dict[str, list[int]] = {}
    with open(directory / "index.noun", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith(" "):
                continue
            fields = line.split()
            n_senses = int(fields[2])
            senses[fields[0]] = [int(offset) for offset in fields[-n_senses:]]
    plurals: dict[str, list[str]] = {}
    exceptions = directory / "noun.exc"
    if exceptions.is_file():
        for line in exceptions.read_text(encoding="utf-8", errors="replace").splitlines():
            plural, *singulars = line.split()
            plurals[plural] = singulars
    return NounGraph(words, parents, kinds, senses, plurals)
