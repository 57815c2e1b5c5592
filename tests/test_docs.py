"""The examples in the public API's docstrings run and give what they show."""
import doctest
import importlib

import pytest

PUBLIC = ["treeseek.model", "treeseek.search.contract", "treeseek.search.memory_index", "treeseek.search.code_index",
          "treeseek.index.tree_index", "treeseek.codes.hpdh", "treeseek.codes.baselines",
          "treeseek.evaluation.harness", "treeseek.evaluation.conventions", "treeseek.apps.jobs.config",
          "treeseek.statistics.row_selection"]


@pytest.mark.parametrize("name", PUBLIC)
def test_the_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
