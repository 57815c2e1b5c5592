"""The ``treeseek`` command line."""
from treeseek.apps.cli.main import app, main

__all__ = ["app", "main"]
