"""Statistics in feature space: PCA, class Gaussians, Bhattacharyya overlap."""
from treeseek.statistics.bhattacharyya import bhattacharyya_coefficient, bhattacharyya_distance
from treeseek.statistics.gaussians import COVARIANCE_MODELS, ClassGaussians
from treeseek.statistics.pca import VariancePCA

__all__ = ["COVARIANCE_MODELS", "ClassGaussians", "VariancePCA", "bhattacharyya_coefficient", "bhattacharyya_distance"]
