"""HTTP interface: a JSON API and a web page over one persistent index (``treeseek serve``)."""
from treeseek.apps.server.app import create_app

__all__ = ["create_app"]
