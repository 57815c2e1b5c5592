"""ImageNet-style class folders (``n01443537``) named by their WordNet words ("goldfish"), offline.

A WordNet id is a noun synset's offset in WordNet 3.0's ``data.noun``. Debian's ``wordnet-base`` package
installs that file (``/usr/share/wordnet``); it is read here directly, nothing is downloaded. A synset's first
word is its name; underscores become spaces.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
WNID = re.compile(r"^n(\d{8})$")


def is_wnid(name: str) -> bool:
    """Whether a class name is a WordNet noun id: ``n`` and eight digits."""
    return bool(WNID.match(name.strip()))


@functools.cache
def _noun_words(path: Path) -> dict[str, str]:
    words = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith(" "):  # the licence at the top of the file
                continue
            fields = line.split(" ", 5)
            words[fields[0]] = fields[4].replace("_", " ")
    return words


def wordnet_words(names: Sequence[str], directory: Path = WORDNET_DIR) -> list[str]:
    """``names`` with every WordNet id replaced by its synset's first word; other names, and ids when WordNet is
    not installed (a warning says so), stay as they are.

    Examples
    --------
    >>> wordnet_words(["n01443537", "snow leopard"])  # doctest: +SKIP
    ['goldfish', 'snow leopard']
    """
    names = [str(name) for name in names]
    if not any(is_wnid(name) for name in names):
        return names
    data = Path(directory) / "data.noun"
    if not data.is_file():
        logger.warning("the class names are WordNet ids, but WordNet is not installed (%s is missing; on Debian: "
                       "apt-get install wordnet-base): they stay ids", data)
        return names
    words = _noun_words(data)
    return [words.get(WNID.match(name.strip()).group(1), name) if is_wnid(name) else name for name in names]
