"""The package layout is the data flow: each layer imports only those below it, and no module imports itself."""
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_each_layer_imports_only_the_layers_below_it():
    """import-linter's layers contract in pyproject.toml; a broken one prints the import that breaks it. (Run as
    a process: its command reconfigures logging, which would silence treeseek's loggers in this one.)"""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("treeseek")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_help_loads_no_heavy_library():
    """'treeseek --help' answers at once: none of torch, scikit-learn, SciPy, matplotlib, FAISS or pandas (nor the
    treeseek modules that need them) is imported to print it."""
    import subprocess
    import sys

    script = ("import sys\nfrom treeseek.apps.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
              "    pass\nheavy = ('torch', 'sklearn', 'scipy', 'matplotlib', 'faiss', 'pandas', 'treeseek.model', "
              "'treeseek.index', 'treeseek.evaluation')\nprint(sorted(m for m in heavy if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert shown.strip().splitlines()[-1] == "[]", shown
