"""The paper's study on one dataset: every baseline, the grid search, robustness, and an HTML report."""
from .report import write_html_report
from .runner import STUDY_ROWS, run_experiment

__all__ = ["STUDY_ROWS", "run_experiment", "write_html_report"]
