"""Evaluation: retrieval metrics and the harness that scores every method."""
from .harness import EvaluationResult, evaluate_retrieval
from . import metrics

__all__ = ["EvaluationResult", "evaluate_retrieval", "metrics"]
