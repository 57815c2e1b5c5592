"""Whole jobs: the main job on an image collection, and the paper's study with its HTML report."""
