"""Statistics in feature space: PCA, class Gaussians, Bhattacharyya overlap."""
from .bhattacharyya import bhattacharyya_coefficient, bhattacharyya_distance
from .gaussians import COVARIANCE_MODELS, ClassGaussians
from .pca import VariancePCA

__all__ = ["COVARIANCE_MODELS", "ClassGaussians", "VariancePCA", "bhattacharyya_coefficient", "bhattacharyya_distance"]
