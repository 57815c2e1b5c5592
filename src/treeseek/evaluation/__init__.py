"""Evaluation: retrieval metrics and the harness that scores every method."""
from treeseek.evaluation import metrics
from treeseek.evaluation.harness import EvaluationResult, evaluate_retrieval

__all__ = ["EvaluationResult", "evaluate_retrieval", "metrics"]
