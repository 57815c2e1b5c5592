"""treeseek: hierarchy-aware image retrieval.

Data flows features -> statistics (PCA, Gaussians) -> hierarchy -> search -> evaluation.
"""
__version__ = "0.1.0"
