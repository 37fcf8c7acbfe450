"""Inline self-checks for the notebooks' exercises: right or not, without giving the answer away."""

from __future__ import annotations

import math

__all__ = ["self_check"]


def self_check(
    answer, expected, name: str = "your answer", rel: float = 0.01, hint: str = ""
) -> bool:
    """Print whether ``answer`` matches ``expected`` and return it; never print ``expected``.

    Numbers (and 0-d tensors) match within ``rel`` (relative; absolute 1e-6 near 0); any
    other value matches by equality, strings ignoring case and surrounding spaces. ``None``
    means "not answered yet" (the cell still runs, so a notebook runs top to bottom).
    """
    if answer is None:
        print(f"Not answered yet: set {name} and run this cell again.")
        return False
    right = _matches(answer, expected, rel)
    if right:
        print(f"Right: {name} = {answer!r}.")
    else:
        print(f"Not quite: {name} = {answer!r}." + (f" Hint: {hint}" if hint else ""))
    return right


def _matches(answer, expected, rel: float) -> bool:
    if hasattr(expected, "item"):
        expected = expected.item()
    if hasattr(answer, "item"):
        answer = answer.item()
    numbers = (int, float)
    if isinstance(expected, numbers) and not isinstance(expected, bool):
        if not isinstance(answer, numbers) or isinstance(answer, bool):
            return False
        return math.isclose(answer, expected, rel_tol=rel, abs_tol=1e-6)
    if isinstance(expected, str) and isinstance(answer, str):
        return answer.strip().lower() == expected.strip().lower()
    return answer == expected
