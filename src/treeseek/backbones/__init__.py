"""Backbones: networks whose penultimate layer gives the features."""
from .registry import Backbone, load_backbone

__all__ = ["Backbone", "load_backbone"]
