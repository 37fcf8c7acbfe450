"""Assignment 4: which loss weights make VICReg collapse, and why.

- :func:`check_collapsed_loss`: the student's ``collapsed_loss(inv_coeff, var_coeff,
  cov_coeff, gamma=1.0, eps=1e-4)``, the value of the VICReg loss when every
  embedding of both views is the same point, against :func:`vicreg_lab.vicreg_loss`.
- :func:`check_collapsing_weights`: trains the toy problem (:mod:`vicreg_lab.lab.toy`)
  with the student's weights and checks that the embeddings collapse completely
  (:func:`vicreg_lab.collapse_report`).
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from vicreg_lab.losses import vicreg_loss

from ._core import Case, CheckResult, Task, finish, number_case, quiet, run_graded

__all__ = ["check_collapsed_loss", "check_collapsing_weights", "toy_verdict"]

TOY_STEPS = 200
_WEIGHTS = ("inv_coeff", "var_coeff", "cov_coeff")

_COLLAPSED_HINT = (
    "At complete collapse every embedding is the same point: the two views agree and "
    "the covariance matrix is 0. Which term is left, and what is the standard deviation "
    "inside it (mind eps)?"
)


def _collapsed_reference(inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4) -> float:
    point = torch.full((8, 5), 0.7, dtype=torch.float64)
    out = vicreg_loss(point, point.clone(), inv_coeff, var_coeff, cov_coeff, gamma=gamma, eps=eps)
    return float(out["loss"])


_COLLAPSED_MISTAKES = (
    (
        lambda inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4: var_coeff * gamma,
        "Almost: the standard deviation in the variance term is sqrt(variance + eps), "
        "which is sqrt(eps) at collapse, not 0.",
    ),
    (
        lambda inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4: (
            2 * var_coeff * (gamma - math.sqrt(eps))
        ),
        "The variance terms of the two views are averaged, not summed.",
    ),
    (
        lambda inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4: 0.0,
        "The invariance and covariance terms are 0 at collapse, but the variance term is "
        "not: that is why it prevents collapse.",
    ),
)


_COLLAPSED_CONCEPT = "the value of the VICReg loss when all embeddings are equal, as a float."


def _collapsed_case(name: str, *args, **kwargs) -> Case:
    expected = _collapsed_reference(*args, **kwargs)
    return number_case(
        name, args, expected, _COLLAPSED_HINT, _COLLAPSED_MISTAKES, tol=1e-6, kwargs=kwargs
    )


def _collapsed_cases() -> list[Case]:
    return [
        _collapsed_case("the paper's weights 25 / 25 / 1", 25.0, 25.0, 1.0),
        _collapsed_case("weights 1 / 1 / 1", 1.0, 1.0, 1.0),
        _collapsed_case("no variance term: 25 / 0 / 1", 25.0, 0.0, 1.0),
        _collapsed_case("gamma = 2", 10.0, 5.0, 1.0, gamma=2.0),
        _collapsed_case("eps = 0.01", 25.0, 25.0, 1.0, eps=0.01),
    ]


def check_collapsed_loss(
    collapsed_loss, points: float = 2, raise_on_fail: bool = True
) -> CheckResult:
    """Check ``collapsed_loss(inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4)``.

    The weights (and gamma, eps) -> a float. ``points``, ``raise_on_fail``: see
    :func:`~vicreg_lab.classroom.check_invariance`.
    """
    hidden = False  # the notebook runs the visible cases; the grader adds the hidden ones
    return run_graded(collapsed_loss, GRADED, "collapsed-loss-check", hidden, points, raise_on_fail)


def toy_verdict(weights: dict, seed: int = 0) -> dict:
    """Train the toy problem with ``weights`` and diagnose its embeddings.

    Parameters
    ----------
    weights : dict
        ``inv_coeff``, ``var_coeff``, ``cov_coeff``.
    seed : int, default=0

    Returns
    -------
    dict
        ``verdict``, ``mean_std`` and ``rankme`` of
        :func:`vicreg_lab.collapse_report` with ``target_std=1.0`` (the toy embeddings
        are VICReg expander outputs, whose std the variance term pushes to 1), and the
        final ``loss``.
    """
    from vicreg_lab.diagnostics import collapse_report
    from vicreg_lab.lab.toy import train_toy

    run = train_toy(**weights, steps=TOY_STEPS, seed=seed)
    report = collapse_report(run["embeddings"], target_std=1.0)
    return {
        "verdict": report.verdict,
        "mean_std": report.mean_std,
        "rankme": report.rankme,
        "loss": run["history"]["loss"][-1],
    }


def check_collapsing_weights(
    weights, points: float = 2, raise_on_fail: bool = True, seeds=(0,)
) -> CheckResult:
    """Check that ``weights`` make the toy problem collapse completely.

    The invariance weight must be positive (without it nothing pulls the two views
    together, and the question is what makes a *working* VICReg collapse).

    Parameters
    ----------
    weights : dict
        ``{"inv_coeff": ..., "var_coeff": ..., "cov_coeff": ...}``, numbers >= 0.
    points, raise_on_fail
        See :func:`~vicreg_lab.classroom.check_invariance`.
    seeds : sequence of int, default=(0,)
        Toy runs to train; every one must collapse.

    Returns
    -------
    CheckResult
    """
    name = "collapsing_weights"
    result = CheckResult(name, max_points=points, n_cases=len(seeds))
    problem = _weights_problem(weights)
    if problem == "not implemented":
        result.not_implemented = True
        result.failures.append(
            "Not implemented yet: `collapsing_weights` is still None. Set it to a dict "
            "{'inv_coeff': ..., 'var_coeff': ..., 'cov_coeff': ...} in the cell above."
        )
    elif problem:
        result.failures.append(problem)
    else:
        for seed in seeds:
            with quiet():
                feedback = _collapse_feedback(weights, seed)
            if feedback:
                result.failures.append(feedback)
    return finish(result, raise_on_fail=raise_on_fail)


def _weights_problem(weights) -> str | None:
    if weights is None:
        return "not implemented"
    if not isinstance(weights, dict):
        return f"collapsing_weights must be a dict, got a {type(weights).__name__}."
    if set(weights) != set(_WEIGHTS):
        return (
            f"collapsing_weights must have exactly the keys {list(_WEIGHTS)}, got "
            f"{sorted(weights)}."
        )
    for key, value in weights.items():
        if not isinstance(value, Real) or isinstance(value, bool) or not value >= 0:
            return f"{key} must be a number >= 0, got {value!r}."
        if value > 1000:
            return f"{key} = {value} is too large: keep the weights between 0 and 1000."
    if weights["inv_coeff"] <= 0:
        return (
            "Keep the invariance term on (inv_coeff > 0): without it nothing pulls the views "
            "together, and the question is which weights make a working VICReg collapse."
        )
    return None


def _collapse_feedback(weights: dict, seed: int) -> str | None:
    try:
        out = toy_verdict(weights, seed=seed)
    except (ValueError, FloatingPointError) as error:
        return (
            f"Training the toy problem with {weights} failed: {error}\n"
            "  hint:     Such weights make training diverge; collapse is a quiet failure."
        )
    if out["verdict"] == "complete collapse":
        return None
    return (
        f"Wrong on the toy run (seed {seed}) with {weights}.\n"
        f"  expected: complete collapse (mean std of the embedding dimensions < 0.1)\n"
        f"  got:      {out['verdict']} (mean std {out['mean_std']:.3g}, "
        f"RankMe {out['rankme']:.3g})\n"
        "  hint:     Only one term rewards embeddings that differ from each other. What "
        "happens when its weight is 0, or tiny next to the invariance weight?"
    )


def _judge_weights(weights, points: float, profile=None) -> CheckResult:
    return check_collapsing_weights(weights, points=points, raise_on_fail=False)


#: The grader's view of assignment 4: grade_id -> what scores it.
GRADED = {
    "collapsed-loss-check": Task(
        "collapsed_loss",
        cases=_collapsed_cases,
        make=_collapsed_case,
        concept=_COLLAPSED_CONCEPT,
    ),
    "collapsing-weights-check": Task("collapsing_weights", kind="value", judge=_judge_weights),
}
