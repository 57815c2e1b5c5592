"""The package layout is the data flow: each layer imports only those below it, and no module imports itself."""
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_each_layer_imports_only_the_layers_below_it(capsys):
    """import-linter's layers contract in pyproject.toml; a broken one prints the import that breaks it."""
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("treeseek")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
