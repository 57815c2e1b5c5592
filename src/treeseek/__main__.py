"""``python -m treeseek``: the command line."""
from treeseek.apps.cli.main import main

main()
