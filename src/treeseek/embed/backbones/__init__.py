"""Backbones: networks whose penultimate layer gives the features."""
from treeseek.embed.backbones.backbone import Backbone
from treeseek.embed.backbones.registry import load_backbone

__all__ = ["Backbone", "load_backbone"]
