"""Embedding: backbones (a registry of networks), their checkpoints, and feature extraction from images."""
