"""What every checker shares: run a student's function on cases, compare, explain.

A check runs the student's function on a list of :class:`Case` objects. The first
case that goes wrong produces the feedback: which case, what the input looked like,
what was expected and what came back, and a hint that names the concept (or the
typical mistake the answer matches). The solution itself is never printed.

A check returns a :class:`CheckResult`; when it did not pass it raises
:class:`CheckFailed` instead, a subclass of ``AssertionError``, so that nbgrader (and
any test runner) counts the grade cell as failed. A stub that still raises
``NotImplementedError`` is reported as "not implemented yet", never as a crash.

In a notebook, a :class:`CheckResult` shows its report as printed text, not as a
cell result: nbgrader reads a numeric cell result as partial credit, and printed
text leaves the grade to the pass/fail of the cell.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .sandbox_child import call_case

__all__ = [
    "Case",
    "CheckFailed",
    "CheckResult",
    "Task",
    "finish",
    "hidden_cases",
    "judge_case",
    "number_case",
    "quiet",
    "run_cases",
    "run_graded",
]


class CheckFailed(AssertionError):
    """A check did not pass; the message is the feedback for the student.

    Attributes
    ----------
    result : CheckResult
        The full result (points, failing cases).
    """

    def __init__(self, result: CheckResult):
        super().__init__(result.report())
        self.result = result


@dataclass
class CheckResult:
    """Outcome of one check.

    Parameters
    ----------
    name : str
        What was checked, e.g. ``"invariance_term"``.
    max_points : float
        Points the check is worth (0 for extra, hidden cases).
    n_cases : int
        Number of cases the check has.
    failures : list of str
        One feedback paragraph per failing case, in the order of the cases; empty
        when the check passed.
    not_implemented : bool
        True when the function still raises ``NotImplementedError``.
    details : str
        Extra lines shown under a passed report (e.g. the measured values).
    earned : float, optional
        Points earned when a check gives partial credit (the grader's multi-seed
        judgement of a design); by default all the points when passed, else 0.

    Examples
    --------
    >>> result = CheckResult("f", max_points=2, n_cases=3)
    >>> result.passed, result.points
    (True, 2)
    >>> print(result.report())
    PASSED f: 3/3 cases, 2/2 points
    """

    name: str
    max_points: float
    n_cases: int
    failures: list[str] = field(default_factory=list)
    not_implemented: bool = False
    details: str = ""
    earned: float | None = None

    @property
    def passed(self) -> bool:
        """True when every case passed."""
        return not self.failures

    @property
    def points(self) -> float:
        """Points earned: ``earned`` if set, else all of them when every case passed, else 0."""
        if self.earned is not None:
            return self.earned
        return self.max_points if self.passed else 0

    def report(self) -> str:
        """The feedback as text: one line when passed, the first failure in detail otherwise."""
        score = f"{self.points:g}/{self.max_points:g} points"
        if self.passed:
            line = f"PASSED {self.name}: {self.n_cases}/{self.n_cases} cases, {score}"
            return f"{line}\n{self.details}" if self.details else line
        if self.not_implemented:
            return f"FAILED {self.name}: {score}\n{self.failures[0]}"
        header = f"FAILED {self.name}: {len(self.failures)} of {self.n_cases} cases failed, {score}"
        lines = [header, "", self.failures[0]]
        if len(self.failures) > 1:
            others = [f.splitlines()[0] for f in self.failures[1:]]
            lines += ["", "Also failing (fix the first one, then run this cell again):"]
            lines += [f"  - {line}" for line in others]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        return self.report()

    def _ipython_display_(self) -> None:
        print(self.report())


@dataclass
class Case:
    """One input of a check and what a correct function gives for it.

    Parameters
    ----------
    name : str
        Short description shown in the feedback, e.g. ``"2 x 3 batch, hand-computable"``.
    args : tuple
        Positional arguments. Tensors are cloned before every call, so a function
        that modifies its input in place is caught and cannot spoil other cases.
    expected : object
        The correct output; or an exception class the function must raise.
    kwargs : dict
        Keyword arguments.
    shows : str
        How the input looks, for the feedback (default: shapes and dtypes).
    hint : str
        What to think about when the value is wrong.
    mistakes : sequence of (callable, str)
        Typical mistakes: ``(wrong_function, hint)``. When the student's output
        matches ``wrong_function(*args, **kwargs)``, its hint is shown instead of
        ``hint``.
    rtol, atol : float
        Tolerances of the value comparison.
    unordered : bool
        Compare the values of a tensor output as a multiset (any order).
    grad : bool
        Also check that the output is differentiable with respect to the tensor
        arguments and that the gradient is finite.
    kind : {"tensor", "number", "label"}
        What the output must be: a torch tensor (shape and dtype of ``expected``),
        a real number (a Python float or anything ``float()`` accepts), or one of
        some strings.
    """

    name: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    shows: str = ""
    hint: str = ""
    mistakes: Sequence[tuple[Callable, str]] = ()
    rtol: float = 1e-4
    atol: float = 1e-6
    unordered: bool = False
    grad: bool = False
    kind: str = "tensor"


@dataclass(frozen=True)
class Task:
    """How the grader scores one grade cell from what the student's cells define.

    Parameters
    ----------
    answer : str
        The name the answer cells define (``"invariance_term"``).
    kind : {"function", "value", "call"}
        A function called on cases in the student's process; a value taken as it is
        (``collapsing_weights``); a function called once without arguments, whose
        result is the answer (``my_augmentations()``).
    cases : callable, optional
        ``() -> list of Case`` (function tasks): the visible cases.
    make : callable, optional
        ``(name, *args, **kwargs) -> Case``: a case of this function with its reference
        value, hint and typical mistakes; the instructor's hidden cases are built with it
        (``assignments/hidden_cases.py``).
    concept : str
        What the function computes (the "not implemented" feedback).
    judge : callable, optional
        ``(answer, points, profile) -> CheckResult`` for value and call tasks; it runs in
        the grading process on plain data.
    """

    answer: str
    kind: str = "function"
    cases: Callable[[], list] | None = None
    make: Callable[..., Case] | None = None
    concept: str = ""
    judge: Callable | None = None


HIDDEN_FILE = "hidden_cases.py"


def hidden_cases(grade_id: str, source=None) -> list[Case]:
    """The instructor's hidden cases of one grade cell, from ``assignments/hidden_cases.py``.

    They live in the instructor's source, not in the package students install: a
    student reading ``vicreg_lab`` finds the visible cases only.

    Parameters
    ----------
    grade_id : str
    source : str or Path, optional
        The folder of the source notebooks (default: ``assignments/`` of this checkout,
        else of the current folder).

    Raises
    ------
    FileNotFoundError
        No ``hidden_cases.py`` there (a student's installation).
    """
    from .release import default_source

    folder = Path(source) if source is not None else default_source()
    return list(_load_hidden(str(folder.resolve())).get(grade_id, []))


@lru_cache(maxsize=4)
def _load_hidden(folder: str) -> dict:
    import importlib.util

    path = Path(folder) / HIDDEN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"hidden cases not found: {path} (they live in the instructor's source, not in "
            "the installed package)"
        )
    spec = importlib.util.spec_from_file_location("vicreg_lab_hidden_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the instructor's own file
    return module.hidden_cases()


def run_cases(
    fn: Callable,
    cases: Sequence[Case],
    name: str,
    max_points: float,
    concept: str,
    raise_on_fail: bool = True,
    hidden: bool = False,
) -> CheckResult:
    """Run ``fn`` on every case and return the :class:`CheckResult`.

    Parameters
    ----------
    fn : callable
        The student's function.
    cases : sequence of Case
    name : str
        Name of the function, as the student wrote it.
    max_points : float
        Points the check is worth.
    concept : str
        One sentence on what the function computes; shown when it is not implemented.
    raise_on_fail : bool, default=True
        Raise :class:`CheckFailed` (an ``AssertionError``) when a case fails.
    hidden : bool, default=False
        The cases are hidden tests: the report says so and they are worth 0 points
        (the visible check of the same grade cell carries them).

    Returns
    -------
    CheckResult
    """
    label = f"{name} (hidden cases)" if hidden else name
    max_points = 0 if hidden else max_points
    result = CheckResult(name=label, max_points=max_points, n_cases=len(cases))
    if not callable(fn):
        result.failures.append(
            f"`{name}` should be a function, but it is a {type(fn).__name__} "
            f"({_short(fn)}). Run the cell that defines it with `def {name}(...):`."
        )
    else:
        for case in cases:
            with quiet():
                feedback = _run_case(fn, case, name)
            if feedback == "not implemented":
                result.not_implemented = True
                result.failures = [
                    f"Not implemented yet: `{name}` still raises NotImplementedError.\n"
                    f"Replace `raise NotImplementedError()` in its cell with your code, run "
                    f"that cell, then run this one again.\nWhat it should do: {concept}"
                ]
                break
            if feedback:
                result.failures.append(feedback)
    return finish(result, raise_on_fail=raise_on_fail)


def run_graded(
    fn: Callable,
    graded: dict[str, Task],
    grade_id: str,
    hidden: bool,
    points: float,
    raise_on_fail: bool,
) -> CheckResult:
    """Run the student's ``fn`` on the cases of one grade cell: what each ``check_*`` does.

    Parameters
    ----------
    fn : callable
        The student's function.
    graded : dict of str to Task
        The assignment's ``GRADED``: ``graded[grade_id]`` gives the function's name, its
        concept and its visible cases, the same the grader uses.
    grade_id : str
        The grade cell, e.g. ``"invariance-check"``.
    hidden, points, raise_on_fail
        As in :func:`run_cases` (``points`` is its ``max_points``); with ``hidden``, the
        instructor's :func:`hidden_cases` of ``grade_id`` replace the visible ones.
    """
    task = graded[grade_id]
    cases = hidden_cases(grade_id) if hidden else task.cases()
    return run_cases(
        fn,
        cases,
        name=task.answer,
        max_points=points,
        concept=task.concept,
        raise_on_fail=raise_on_fail,
        hidden=hidden,
    )


def number_case(
    name: str, args: tuple, expected: float, hint: str, mistakes=(), *, tol: float, **fields
) -> Case:
    """A :class:`Case` whose answer is a real number, right within ``tol``.

    ``tol`` is both the relative and the absolute tolerance; ``fields`` are other fields of
    :class:`Case` (``kwargs``, ``shows``).
    """
    return Case(
        name,
        args,
        expected,
        kind="number",
        hint=hint,
        mistakes=mistakes,
        rtol=tol,
        atol=tol,
        **fields,
    )


@contextmanager
def quiet():
    """Silence warnings: nbgrader scores a grade cell that writes to stderr as failed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def finish(result: CheckResult, raise_on_fail: bool = True) -> CheckResult:
    """Return ``result``, or raise :class:`CheckFailed` if it failed and ``raise_on_fail``."""
    if not result.passed and raise_on_fail:
        raise CheckFailed(result)
    return result


# ----------------------------------------------------------------------------- one case


def _run_case(fn: Callable, case: Case, name: str) -> str | None:
    """Feedback for one case, ``"not implemented"``, or None when it passed."""
    return judge_case(call_case(fn, case.args, case.kwargs, case.grad), case, name)


def judge_case(outcome: dict, case: Case, name: str, redact: bool = False) -> str | None:
    """Feedback for one case from what a call gave (:func:`call_case`), or None if right.

    ``"not implemented"`` when the function still raises ``NotImplementedError``. With
    ``redact`` (hidden cases), the feedback names the case and gives the hint, never the
    input, the expected value or what came back.
    """
    if outcome["status"] == "not implemented":
        return "not implemented"
    title = f'hidden case "{case.name}"' if redact else f'case "{case.name}"'
    shows = case.shows or _describe_args(case.args, case.kwargs)
    wants_error = isinstance(case.expected, type) and issubclass(case.expected, BaseException)
    expected = f"to raise {case.expected.__name__}" if wants_error else _short(case.expected)
    if outcome["status"] == "raised":
        error = outcome["error"]
        if wants_error and case.expected.__name__ in error["names"]:
            return None
        got = f"{error['names'][0]}: {error['message']}{error['where']}"
        if redact:
            got = f"{error['names'][0]} (an error)"
        hint = case.hint if wants_error or redact else _error_hint(error, case.hint)
        return _format(title, shows, expected, got, hint, redact)
    got = outcome["value"]
    if wants_error:
        said = f"no error, it returned {_short(got)}"
        return _format(title, shows, expected, said, case.hint, redact)
    if outcome["modified"]:
        changed = " and ".join(f"argument {i + 1}" for i in outcome["modified"])
        return _format(
            title,
            shows,
            "the inputs left unchanged",
            f"`{name}` changed {changed} in place",
            "Operations ending in an underscore (z.sub_(...)) and `z -= ...` modify the "
            "caller's tensor. Write `z = z - ...` to make a new tensor instead.",
            redact,
        )
    problem = _compare(got, case)
    if problem is None and case.grad:
        problem = _gradient_problem(outcome["grad"])
    if problem is None:
        return None
    what, hint = problem
    if redact and hint not in {mistake_hint for _, mistake_hint in case.mistakes}:
        hint = case.hint  # a computed hint may tell a hidden shape; a mistake's does not
    return _format(title, shows, expected, what, hint, redact)


def _format(title: str, shows: str, expected: str, got: str, hint: str, redact=False) -> str:
    if redact:
        lines = [f"Wrong on {title}."]
    else:
        lines = [f"Wrong on {title}.", f"  input:    {shows}", f"  expected: {expected}"]
        lines.append(f"  got:      {got}")
    if hint:
        lines.append(f"  hint:     {hint}")
    return "\n".join(lines)


def _compare(got, case: Case) -> tuple[str, str] | None:
    """None if ``got`` is right, else (what was got, hint)."""
    if got is None and case.expected is not None:
        return "None", "Your function returned nothing: did you forget the `return` statement?"
    if case.kind == "label":
        if got == case.expected:
            return None
        return _short(got), case.hint
    if case.kind == "number":
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        try:
            value = float(got)
        except (TypeError, ValueError):
            return (
                f"a {type(got).__name__} ({_short(got)})",
                "Return a single number (a Python float), e.g. `return float(value)`.",
            )
        if not math.isfinite(value):
            return f"{value}", _nan_hint(case)
        if math.isclose(value, float(case.expected), rel_tol=case.rtol, abs_tol=case.atol):
            return None
        return f"{value:.6g}", _mistake_hint(value, case)
    return _compare_tensor(got, case)


def _compare_tensor(got, case: Case) -> tuple[str, str] | None:
    expected = case.expected
    if not isinstance(got, torch.Tensor):
        return (
            f"a {type(got).__name__} ({_short(got)})",
            "Return a torch tensor: stay with torch operations (no .item(), .numpy(), "
            "float() or numpy functions), so that the loss can be backpropagated.",
        )
    if tuple(got.shape) != tuple(expected.shape):
        return (
            f"a tensor of shape {tuple(got.shape)}",
            _shape_hint(got, case),
        )
    if got.dtype != expected.dtype:
        return (
            f"dtype {got.dtype} (expected {expected.dtype})",
            "Keep the dtype of the input: do not convert with .float() or build new "
            "tensors with a fixed dtype (use the input's dtype, e.g. torch.zeros_like).",
        )
    got_values = got.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(got_values).all()):
        return _short(got), _nan_hint(case)
    want = expected.detach().to("cpu", torch.float64)
    if _close(got_values, want, case):
        return None
    return _short(got), _mistake_hint(got_values, case)


def _close(got: torch.Tensor, want: torch.Tensor, case: Case) -> bool:
    if case.unordered:
        got, want = got.flatten().sort().values, want.flatten().sort().values
    return bool(torch.allclose(got, want, rtol=case.rtol, atol=case.atol))


def _mistake_hint(value, case: Case) -> str:
    """The hint of the first typical mistake that gives ``value``, else the case's hint."""
    for wrong, hint in case.mistakes:
        try:
            with torch.no_grad():
                candidate = wrong(*case.args, **case.kwargs)
        except Exception:  # noqa: BLE001 - a mistake that does not apply to this case
            continue
        if _same(value, candidate, case):
            return hint
    return case.hint


def _same(value, candidate, case: Case) -> bool:
    if isinstance(value, float):
        try:
            return math.isclose(value, float(candidate), rel_tol=case.rtol, abs_tol=case.atol)
        except (TypeError, ValueError):
            return False
    candidate = torch.as_tensor(candidate).detach().to("cpu", torch.float64)
    if candidate.shape != value.shape:
        return False
    return bool(torch.allclose(value, candidate, rtol=case.rtol, atol=case.atol))


def _shape_hint(got: torch.Tensor, case: Case) -> str:
    for wrong, hint in case.mistakes:
        try:
            with torch.no_grad():
                candidate = torch.as_tensor(wrong(*case.args, **case.kwargs))
        except Exception:  # noqa: BLE001
            continue
        if tuple(candidate.shape) == tuple(got.shape):
            return hint
    if case.expected.ndim == 0:
        return (
            "The result must be a single number in a 0-dimensional tensor (shape ()): "
            "reduce over every dimension, e.g. with .mean() or .sum() without dim=."
        )
    return f"The result must have shape {tuple(case.expected.shape)}. {case.hint}".strip()


def _nan_hint(case: Case) -> str:
    return (
        "The result is NaN or infinite. Look for a division by zero (N - 1 with N = 1? "
        "a sum of zeros?) or the square root or logarithm of zero. " + case.hint
    ).strip()


def _error_hint(error: dict, hint: str) -> str:
    names, message = error["names"], error["message"]
    if "RuntimeError" in names and "size" in message:
        return "A shape mismatch: print the shapes of your intermediate tensors. " + hint
    if {"AttributeError", "TypeError"} & set(names) and "numpy" in message:
        return "Stay with torch tensors and torch functions. " + hint
    return hint


def _gradient_problem(grad) -> tuple[str, str] | None:
    """What is wrong with the gradients :func:`call_case` found (None: nothing)."""
    if grad is None:
        return (
            "a result with no gradient (requires_grad=False)",
            "The result is cut off from its inputs: avoid .item(), .numpy(), float(), "
            ".detach() and torch.no_grad(); training backpropagates through this value.",
        )
    if isinstance(grad, str):
        return grad, "Use out-of-place operations (no `+=`, no `_()`)."
    for g in grad:
        if g is None:
            return "no gradient for one input", "Every input must contribute to the result."
        if not isinstance(g, torch.Tensor) or not bool(torch.isfinite(g).all()):
            return (
                "a NaN or infinite gradient",
                "The derivative of sqrt(x) is infinite at x = 0: a dimension with zero "
                "variance (collapse!) then breaks training. That is what eps is for: take "
                "the square root of (variance + eps).",
            )
    return None


# ----------------------------------------------------------------------------- helpers


def _describe_args(args: tuple, kwargs: dict) -> str:
    parts = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 12:
            return f"{_round_list(value)} ({value.dtype})"
        return f"tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} ({value.dtype})"
    return repr(value)


def _short(value) -> str:
    if isinstance(value, type) and issubclass(value, BaseException):
        return f"to raise {value.__name__}"
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return f"{value.item():.6g} (a 0-d tensor, {value.dtype})"
        if value.numel() <= 12:
            return f"{_round_list(value)} (shape {tuple(value.shape)}, {value.dtype})"
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _round_list(value: torch.Tensor):
    values = value.detach().to("cpu", torch.float64).numpy().round(4)
    return values.tolist()
