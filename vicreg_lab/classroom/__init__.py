"""Autograded checks for the classroom assignments in ``assignments/``.

Each ``check_*`` function runs a student's function (or answer) on small cases and
explains what went wrong: which case, the input, what was expected and what came
back, and a hint that names the concept or the typical mistake. It never shows the
solution. When the check passes it returns a :class:`CheckResult`, shown in a
notebook as one line with the points; when it fails it raises :class:`CheckFailed`,
an ``AssertionError`` whose message is the feedback,
so that nbgrader (or any test runner) counts the grade cell as failed. A function
that still raises ``NotImplementedError`` gets "Not implemented yet", not a crash.

Assignment 1, the loss terms: :func:`check_invariance`, :func:`check_variance`,
:func:`check_off_diagonal`, :func:`check_covariance`, :func:`check_vicreg_total`,
:func:`check_no_library_shortcut`.

Assignment 2, RankMe: :func:`check_rankme`, :func:`three_runs`, :func:`check_diagnose`.

Assignment 3, augmentations: :func:`augmentation_experiment`,
:func:`check_augmentations`, :data:`NATURAL_IMAGE_RECIPE`.

Assignment 4, collapse: :func:`check_collapsed_loss`, :func:`toy_verdict`,
:func:`check_collapsing_weights`.

The grader (:mod:`~vicreg_lab.classroom.grade`) runs students' answers in a contained
child process (:mod:`~vicreg_lab.classroom.sandbox`) and scores them here, on visible
cases and on the hidden cases of the instructor's ``assignments/hidden_cases.py``
(:func:`hidden_cases`); each grade cell is scored by a :class:`Task`.

The student versions of the notebooks are built by :func:`release.release`
(``vicreg-lab assignments release OUT_DIR``).

Examples
--------
>>> from vicreg_lab.classroom import check_invariance
>>> def invariance_term(z1, z2):
...     raise NotImplementedError()
>>> try:
...     check_invariance(invariance_term)
... except AssertionError as feedback:
...     print(str(feedback).splitlines()[1])
Not implemented yet: `invariance_term` still raises NotImplementedError.
"""

from ._core import Case, CheckFailed, CheckResult, Task, hidden_cases, run_cases
from .augmentations import (
    MAX_SITE_ACCURACY,
    MIN_AGE_R2,
    NATURAL_IMAGE_RECIPE,
    augmentation_experiment,
    check_augmentations,
    experiment_sizes,
)
from .loss_terms import (
    check_covariance,
    check_invariance,
    check_no_library_shortcut,
    check_off_diagonal,
    check_variance,
    check_vicreg_total,
)
from .loss_weights import check_collapsed_loss, check_collapsing_weights, toy_verdict
from .rankme import LABELS, check_diagnose, check_rankme, three_runs

__all__ = [
    "LABELS",
    "MAX_SITE_ACCURACY",
    "MIN_AGE_R2",
    "NATURAL_IMAGE_RECIPE",
    "Case",
    "CheckFailed",
    "CheckResult",
    "Task",
    "augmentation_experiment",
    "check_augmentations",
    "check_collapsed_loss",
    "check_collapsing_weights",
    "check_covariance",
    "check_diagnose",
    "check_invariance",
    "check_no_library_shortcut",
    "check_off_diagonal",
    "check_rankme",
    "check_variance",
    "check_vicreg_total",
    "experiment_sizes",
    "hidden_cases",
    "run_cases",
    "three_runs",
    "toy_verdict",
]
