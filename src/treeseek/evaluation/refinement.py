"""What the validation search decides after its main grid, at the chosen PCA size and covariance.

``refine_choice``: where the cosine is taken (``TreeseekModel.cosine``) with every alpha of the grid, the soft
ranking's temperature, and alpha and the temperature past the edge of their grids while the validation score
still rises (``widened``). ``with_wordnet_prior``: for a name tree, whether WordNet's distances join the language
model's.
"""
from __future__ import annotations

import numpy as np

from treeseek.hierarchy.builders import make_builder
from treeseek.hierarchy.lexical_prior import resolve_names
from treeseek.hierarchy.wordnet import noun_graph
from treeseek.model import TreeseekModel

SELECTION_METRIC = "map@10"


def refine_choice(model: TreeseekModel, best: dict, grid: dict, method: str, widen: bool, results: list,
                  score_of) -> tuple[dict, float, list[str]]:
    """After the main grid: the cosine space (with every alpha of the grid), then the soft ranking's temperature,
    then alpha past the edge of its grid. ``score_of(model, alpha)`` is the validation score; every point scored is
    appended to ``results``. Returns the chosen ``{cosine, alpha[, temperature]}``, their score and notes."""
    base = {k: best[k] for k in best if k not in (SELECTION_METRIC, "alpha", "step")}
    chosen = {"cosine": model.cosine, "alpha": best["alpha"], "temperature": model.temperature}
    score, notes = best[SELECTION_METRIC], []

    def score_at(**change) -> float:
        point = {**chosen, **change}
        variant = model.with_class_hierarchy(model.class_hierarchy_, cosine=point["cosine"],
                                             temperature=point["temperature"])
        value = score_of(variant, point["alpha"])
        results.append({**base, **point, SELECTION_METRIC: value, "step": ", ".join(change)})
        return value

    for space in grid["cosine"]:
        if space == model.cosine:  # the main grid scored it at every alpha
            continue
        for alpha in grid["alpha"]:
            value = score_at(cosine=space, alpha=alpha)
            if value > score:
                score, chosen = value, {**chosen, "cosine": space, "alpha": alpha}
    if len(grid["cosine"]) > 1:
        notes.append(f"the cosine taken on {chosen['cosine']} features scored best "
                     f"(candidates: {', '.join(grid['cosine'])})")
    if method == "soft" and grid["temperature"]:  # an empty grid: the model's temperature, not searched
        temperatures = sorted(set(grid["temperature"]) | {chosen["temperature"]})
        for temperature in temperatures:
            if temperature != chosen["temperature"]:
                value = score_at(temperature=temperature)
                if value > score:
                    score, chosen = value, {**chosen, "temperature": temperature}
        if widen:
            chosen["temperature"], score, note = widened(lambda t: score_at(temperature=t), chosen["temperature"],
                                                         score, temperatures, "temperature")
            notes += [note] if note else []
    if widen:
        chosen["alpha"], score, note = widened(lambda a: score_at(alpha=a), chosen["alpha"], score, grid["alpha"])
        notes += [note] if note else []
    return ({k: v for k, v in chosen.items() if k != "temperature" or method == "soft"}, score, notes)


MIN_WORDNET_COVERAGE = 0.5  # of the class names resolved in WordNet, for a name tree to try the WordNet prior


def with_wordnet_prior(model: TreeseekModel, fit_x: np.ndarray, fit_y: np.ndarray, class_names: list[str],
                       alpha: float, score: float, score_of, results: list) -> tuple[dict, float, str | None]:
    """For a name tree (``...:names``): the WordNet prior (``names+wordnet`` at its default weight) when at least
    ``MIN_WORDNET_COVERAGE`` of the class names resolve, kept when its validation score is at least the language
    model's alone (validation agrees). Returns the change of parameters, the score and a note.

    The weight is not searched: validation mAP@10 does not see how semantic a tree is, and on Caltech-101 it
    preferred weight 1, which closed 40% of the flat-to-WordNet mAHP@250 gap against 49% at the default 0.7
    (``benchmarks/bench_lexical_trees.py``)."""
    parts = str(model.hierarchy).split(":")
    if not any(part == "names" or part.startswith("names=") for part in parts):
        return {}, score, None
    graph = noun_graph()
    coverage = 0.0 if graph is None else resolve_names(class_names, graph).coverage
    if coverage < MIN_WORDNET_COVERAGE:
        return {}, score, (f"the WordNet prior was not tried: {coverage:.0%} of the class names resolve in WordNet "
                           f"(at least {MIN_WORDNET_COVERAGE:.0%} needed)" if graph is not None else
                           "the WordNet prior was not tried: WordNet is not installed")
    spec = ":".join("names+wordnet" if part.startswith("names") else part for part in parts)
    builder = make_builder(spec, model.threshold, model.covariance).fit(model.pca_.transform(fit_x), fit_y,
                                                                        class_names, split=model.split_)
    value = score_of(model.with_class_hierarchy(builder.hierarchy_, hierarchy=spec), alpha)
    results.append({"hierarchy": spec, "alpha": alpha, "cosine": model.cosine, "temperature": model.temperature,
                    "wordnet_coverage": coverage, SELECTION_METRIC: value, "step": "wordnet prior"})
    if value < score:
        return {}, score, (f"the WordNet prior ({coverage:.0%} of the names resolved) scored {value:.4f} on "
                           f"validation against {score:.4f} without: the tree keeps the language model alone")
    return {"hierarchy": spec}, value, (f"the WordNet prior ({coverage:.0%} of the names resolved) is mixed in: "
                                        f"{spec} scored {value:.4f} on validation against {score:.4f} without")


MAX_WIDENING = 6  # doublings (or halvings) tried past an edge of a grid


def widened(score_at, best_value: float, best_score: float, grid_values, name: str = "alpha"
            ) -> tuple[float, float, str | None]:
    """Past the grid's edge while the score still rises: from a best value at the largest (smallest) grid value,
    double (halve) it while the validation score rises, at most ``MAX_WIDENING`` times.

    Returns ``(value, score, note)``; ``note`` says what was searched, None when the best value was inside the grid.
    """
    largest, smallest = max(grid_values), min(grid_values)
    if best_value == largest and largest > 0:
        step, edge = 2.0, "largest"
    elif best_value == smallest and smallest > 0 and len(set(grid_values)) > 1:
        step, edge = 0.5, "smallest"
    else:
        return best_value, best_score, None
    value, score = best_value, best_score
    for _ in range(MAX_WIDENING):
        candidate = value * step
        candidate_score = score_at(candidate)
        if not candidate_score > score:
            break
        value, score = candidate, candidate_score
    found = f"(x{step:g} while the validation score rose) chose {value:g}" if value != best_value else \
        f"(x{step:g}) scored no higher: kept {value:g}"
    return value, score, (f"the best {name} on the grid was its {edge} value, {best_value:g}; searching on past "
                          f"it {found}")
