"""Evaluation: retrieval metrics and the harness that scores every method."""
from . import metrics
from .harness import EvaluationResult, evaluate_retrieval

__all__ = ["EvaluationResult", "evaluate_retrieval", "metrics"]
