"""The checkers of vicreg_lab.classroom and the student-version builder (release).

The reference answers are the solution cells of the source notebooks in assignments/,
run in a plain namespace (no kernel): the checks must pass on them, fail with the
matching hint on typical mistakes, and turn a stub into "Not implemented yet".
"""

import warnings
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from vicreg_lab.classroom import (
    MAX_SITE_ACCURACY,
    MIN_AGE_R2,
    CheckFailed,
    CheckResult,
    check_collapsed_loss,
    check_collapsing_weights,
    check_covariance,
    check_diagnose,
    check_invariance,
    check_no_library_shortcut,
    check_off_diagonal,
    check_rankme,
    check_variance,
    check_vicreg_total,
)
from vicreg_lab.classroom import augmentations as aug
from vicreg_lab.classroom.rankme import _truth_agrees_with_report
from vicreg_lab.classroom.release import (
    CODE_STUB,
    TEXT_STUB,
    ReleaseError,
    compute_checksum,
    release,
    release_notebook,
)
from vicreg_lab.lab.cli import main

ASSIGNMENTS = Path(__file__).resolve().parents[1] / "assignments"


def _solutions(name: str) -> dict:
    """Run the import cell and the solution cells of a source notebook; return the names."""
    nb = nbformat.read(ASSIGNMENTS / name, as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        is_import = cell.source.startswith(("import ", "from "))
        if cell.cell_type == "code" and (meta.get("solution") or is_import):
            exec(compile(cell.source, name, "exec"), namespace)  # noqa: S102 - our own notebook
    return namespace


@pytest.fixture(scope="module")
def loss_solutions():
    return _solutions("01_loss_terms.ipynb")


@pytest.fixture(scope="module")
def rankme_solutions():
    return _solutions("02_rankme_diagnosis.ipynb")


def _stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- the solutions


@pytest.mark.parametrize(
    "check, name",
    [
        (check_invariance, "invariance_term"),
        (check_variance, "variance_term"),
        (check_off_diagonal, "off_diagonal"),
        (check_covariance, "covariance_term"),
        (check_vicreg_total, "vicreg_total"),
    ],
)
def test_loss_solutions_pass_visible_and_hidden_cases(loss_solutions, check, name):
    fn = loss_solutions[name]
    visible = check(fn)
    assert visible.passed and visible.points == visible.max_points > 0
    assert check(fn, hidden=True).passed
    assert check_no_library_shortcut(fn).passed


def test_rankme_and_diagnose_solutions_pass(rankme_solutions):
    assert check_rankme(rankme_solutions["rankme"]).points == 3
    assert check_rankme(rankme_solutions["rankme"], hidden=True).passed
    assert check_diagnose(rankme_solutions["diagnose"]).points == 3
    assert check_diagnose(rankme_solutions["diagnose"], hidden=True).passed


def test_the_three_runs_are_what_the_checker_says():
    assert _truth_agrees_with_report()


def test_collapse_answers_pass_and_healthy_weights_fail():
    def collapsed_loss(inv_coeff, var_coeff, cov_coeff, gamma=1.0, eps=1e-4):
        return var_coeff * max(gamma - eps**0.5, 0.0)

    assert check_collapsed_loss(collapsed_loss).passed
    assert check_collapsing_weights({"inv_coeff": 25.0, "var_coeff": 0.0, "cov_coeff": 1.0})
    with pytest.raises(CheckFailed, match="got:      healthy"):
        check_collapsing_weights({"inv_coeff": 25.0, "var_coeff": 25.0, "cov_coeff": 1.0})


# ----------------------------------------------------------------------------- feedback


def _feedback(check, fn) -> str:
    result = check(fn, raise_on_fail=False)
    assert not result.passed and result.points == 0
    return result.report()


@pytest.mark.parametrize(
    "check, wrong, hint",
    [
        (check_invariance, lambda a, b: ((a - b) ** 2).sum(), "You summed the squares"),
        (check_invariance, lambda a, b: ((a - b) ** 2).sum(1).mean(), "divided by N"),
        (check_invariance, lambda a, b: (a - b).abs().mean(), "absolute differences"),
        (
            check_variance,
            lambda z, gamma=1.0, eps=1e-4: F.relu(gamma - z.std(0, correction=0)).mean(),
            "biased variance",
        ),
        (check_variance, lambda z, gamma=1.0, eps=1e-4: F.relu(gamma - z.std(0)).mean(), "eps"),
        (
            check_variance,
            lambda z, gamma=1.0, eps=1e-4: (gamma - (z.var(0) + eps).sqrt()).mean(),
            "hinge",
        ),
        (check_off_diagonal, lambda m: m.flatten(), "You kept the diagonal"),
        (check_off_diagonal, lambda m: m * (1 - torch.eye(len(m))), "flat 1-D tensor"),
        (
            check_covariance,
            lambda z: (
                (
                    (z.T @ z / (len(z) - 1)).pow(2).sum()
                    - (z.T @ z / (len(z) - 1)).diagonal().pow(2).sum()
                )
                / z.shape[1]
            ),
            "did not centre",
        ),
        (check_rankme, lambda z: float(torch.linalg.matrix_rank(z - z.mean(0))), "matrix rank"),
    ],
)
def test_typical_mistakes_get_their_hint(check, wrong, hint):
    assert hint in _feedback(check, wrong)


def test_feedback_names_the_case_input_expected_and_got():
    text = _feedback(check_invariance, lambda a, b: ((a - b) ** 2).sum())
    assert 'Wrong on case "2 x 3 batch against zeros' in text
    assert "expected: 15.1667" in text and "got:      91" in text
    assert "Also failing" in text and "0/2 points" in text


def test_the_feedback_never_shows_the_solution_code():
    nb = nbformat.read(ASSIGNMENTS / "01_loss_terms.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "def variance_term" in c.source]
    body = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
    text = _feedback(check_variance, lambda z, gamma=1.0, eps=1e-4: z.sum())
    for line in body.splitlines():
        assert not line.strip() or line.strip() not in text, line


def test_a_stub_fails_with_not_implemented_feedback_not_a_crash():
    with pytest.raises(AssertionError) as info:
        check_covariance(_stub)
    assert isinstance(info.value, CheckFailed)
    assert info.value.result.not_implemented and info.value.result.points == 0
    assert "Not implemented yet: `covariance_term`" in str(info.value)
    with pytest.raises(CheckFailed, match="Not implemented yet"):
        check_collapsing_weights(None)
    with pytest.raises(CheckFailed, match="Not implemented yet"):
        aug.check_augmentations(_stub, profile="ci")


def test_an_error_in_student_code_points_at_the_line():
    def covariance_term(z):
        c = z.T @ z
        return (c @ z).sum()

    text = _feedback(check_covariance, covariance_term)
    assert "RuntimeError" in text and "line 3 of `covariance_term`: return (c @ z).sum()" in text


def test_shape_dtype_inplace_and_gradient_problems_are_named():
    assert "shape ()" in _feedback(check_invariance, lambda a, b: ((a - b) ** 2).mean(0))
    assert "Keep the dtype" in _feedback(
        check_invariance, lambda a, b: ((a - b) ** 2).mean().float()
    )

    def in_place(z):
        z -= z.mean(0)
        return (z.T @ z).sum() * 0

    assert "changed argument 1 in place" in _feedback(check_covariance, in_place)

    def no_grad(z1, z2):
        return torch.tensor(((z1 - z2) ** 2).mean().item(), dtype=z1.dtype)

    assert "no gradient" in _feedback(check_invariance, no_grad)

    def no_eps(z, gamma=1.0, eps=1e-4):
        if len(z) < 2:
            raise ValueError("N < 2")
        return F.relu(gamma - z.var(0).sqrt()).mean() + 0 * eps

    assert "eps" in _feedback(check_variance, no_eps)


def test_a_non_function_a_missing_return_and_a_wrong_label_get_feedback():
    assert "should be a function" in _feedback(check_invariance, 3.0)
    assert "forget the `return`" in _feedback(check_rankme, lambda z: None)
    text = _feedback(check_diagnose, lambda z: "healthy")
    assert "expected: 'complete collapse'" in text or "expected: 'dimensional collapse'" in text


def test_library_shortcut_is_refused():
    from vicreg_lab.losses import vicreg_loss

    def invariance_term(z1, z2):
        return vicreg_loss(z1, z2)["invariance"]

    with pytest.raises(CheckFailed, match="calls vicreg_loss"):
        check_no_library_shortcut(invariance_term)


def test_the_covariance_kernels_are_a_library_shortcut_too():
    from vicreg_lab.covariance_kernels import offdiag_sq_sum_gram

    def covariance_term(z):
        return offdiag_sq_sum_gram(z - z.mean(0)) / z.shape[1]

    with pytest.raises(CheckFailed, match="calls offdiag_sq_sum_gram"):
        check_no_library_shortcut(covariance_term)


def test_student_warnings_stay_silent(recwarn):
    def invariance_term(z1, z2):
        warnings.warn("noisy student code", UserWarning, stacklevel=1)
        return ((z1 - z2) ** 2).mean()

    assert check_invariance(invariance_term).passed
    assert not [w for w in recwarn if "noisy" in str(w.message)]


def test_result_shows_its_report_as_printed_text(capsys):
    result = CheckResult("f", max_points=2, n_cases=3)
    result._ipython_display_()
    assert capsys.readouterr().out == "PASSED f: 3/3 cases, 2/2 points\n"
    assert repr(CheckResult("f", 1, 1, failures=["Wrong on x."])).startswith("FAILED f")


def test_collapse_weights_are_validated():
    for weights, message in [
        ([25, 0, 1], "must be a dict"),
        ({"inv_coeff": 25.0, "var_coeff": 0.0}, "exactly the keys"),
        ({"inv_coeff": 0.0, "var_coeff": 0.0, "cov_coeff": 1.0}, "inv_coeff > 0"),
        ({"inv_coeff": 25.0, "var_coeff": -1.0, "cov_coeff": 1.0}, "number >= 0"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            check_collapsing_weights(weights)


def test_collapsed_loss_mistake_hint():
    text = _feedback(check_collapsed_loss, lambda inv, var, cov, gamma=1.0, eps=1e-4: var * gamma)
    assert "sqrt(eps)" in text


# ----------------------------------------------------------------------------- augmentations


def _outcome(age, site):
    return aug.ExperimentResult(age, site, 0.25, None, {}, None, {})


def test_augmentation_judgement_uses_both_thresholds():
    assert aug._judge(_outcome(MIN_AGE_R2 + 0.01, MAX_SITE_ACCURACY - 0.01)) == []
    (age,) = aug._judge(_outcome(MIN_AGE_R2 - 0.01, MAX_SITE_ACCURACY))
    assert "Age is not kept" in age and "move anatomy" in age
    (site,) = aug._judge(_outcome(0.9, 0.9))
    assert "scanner is still readable" in site and "contrast" in site
    assert len(aug._judge(_outcome(0.0, 1.0))) == 2


def test_a_design_scores_by_tiers_of_age_and_site():
    assert aug.design_score(0.8, 0.3) == 1.0
    assert aug.design_score(0.45, 0.3) == 0.75  # age only half kept
    assert aug.design_score(0.8, 0.7) == 0.75  # site half gone
    assert aug.design_score(0.8, 0.9) == 0.5  # the photograph recipe's kind of run
    assert aug.design_score(0.1, 0.9) == 0.0


def test_the_grader_judges_a_design_over_seeds_with_partial_points():
    # the photograph recipe keeps age and the scanner: half of each seed's credit
    result = aug.grade_design(aug.NATURAL_IMAGE_RECIPE, points=4, profile="ci", seeds=(1,))
    assert result.points == 2.0 and not result.passed
    assert "run 1: age R^2" in result.details
    bad = aug.grade_design({"gamma": 5.0}, points=4, profile="ci")
    assert bad.points == 0 and "cannot be used" in bad.failures[0]


def test_bad_augmentation_knobs_are_feedback_before_any_training():
    with pytest.raises(CheckFailed, match=r"unknown augmentation knobs \['crop'\]"):
        aug.check_augmentations(lambda: {"crop": 0.5}, profile="ci")
    with pytest.raises(CheckFailed, match="gamma must lie in"):
        aug.check_augmentations(lambda: {"gamma": 5.0}, profile="ci")
    with pytest.raises(CheckFailed, match="returning a dict"):
        aug.check_augmentations({"gamma": 0.5}, profile="ci")


def test_experiment_sizes_follow_the_profile():
    assert aug.experiment_sizes("ci").n_subjects < aug.experiment_sizes("cpu").n_subjects


def test_the_experiment_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    seen = []
    monkeypatch.setattr(aug, "_experiment", lambda *args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    aug.augmentation_experiment({}, profile="ci")
    assert seen == [1] and torch.get_num_threads() == before


# ----------------------------------------------------------------------------- release


def _meta(grade=False, solution=False, locked=False, grade_id="x", points=None):
    meta = {"grade": grade, "solution": solution, "locked": locked, "schema_version": 3}
    meta["grade_id"] = grade_id
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _source_notebook():
    v4 = nbformat.v4
    nb = v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "P"}})
    solution = v4.new_code_cell(
        "def f(x):\n    '''Doc.'''\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        metadata=_meta(solution=True, grade_id="f-solution"),
    )
    solution.outputs = [v4.new_output("stream", name="stdout", text="old output")]
    solution.execution_count = 3
    grade = v4.new_code_cell(
        "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(5) == 10\n### END HIDDEN TESTS",
        metadata=_meta(grade=True, locked=True, grade_id="f-check", points=2),
    )
    whole = v4.new_code_cell("answer = 42", metadata=_meta(solution=True, grade_id="answer"))
    written = v4.new_markdown_cell(
        "Because.\n### BEGIN SOLUTION\nThe reason.\n### END SOLUTION",
        metadata=_meta(grade=True, solution=True, grade_id="why", points=1),
    )
    plain = v4.new_code_cell("print('hello')")
    nb.cells = [v4.new_markdown_cell("# Title"), solution, grade, whole, written, plain]
    return nb


def test_release_replaces_solutions_removes_hidden_tests_and_locks():
    source = _source_notebook()
    nb = release_notebook(source)
    _, solution, grade, whole, written, plain = nb.cells
    assert solution.source == (
        "def f(x):\n    '''Doc.'''\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert solution.outputs == [] and solution.execution_count is None
    assert grade.source == "assert f(1) == 2"
    assert whole.source == CODE_STUB and written.source == f"Because.\n{TEXT_STUB}"
    assert plain.source == "print('hello')" and "nbgrader" not in plain.metadata
    assert solution.metadata["deletable"] is False and "editable" not in solution.metadata
    assert grade.metadata["editable"] is False and grade.metadata["deletable"] is False
    for cell in (solution, grade, whole, written):
        assert cell.metadata["nbgrader"]["checksum"] == compute_checksum(cell)
        assert cell.metadata["nbgrader"]["cell_type"] == cell.cell_type
    assert grade.metadata["nbgrader"]["points"] == 2
    assert "BEGIN SOLUTION" in source.cells[1].source, "the source must be left unchanged"
    nbformat.validate(nb)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda nb: (
                nb.cells[5].metadata.update(_meta(grade_id="p"))
                or setattr(nb.cells[5], "source", "### BEGIN SOLUTION\nx\n### END SOLUTION")
            ),
            "not a solution cell",
        ),
        (
            lambda nb: setattr(
                nb.cells[5], "source", "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"
            ),
            "not a grade cell",
        ),
        (lambda nb: setattr(nb.cells[1], "source", "### BEGIN SOLUTION\nx"), "without a matching"),
        (
            lambda nb: setattr(nb.cells[1], "source", "### BEGIN SOLUTION\n### BEGIN SOLUTION"),
            "nested",
        ),
        (lambda nb: nb.cells[3].metadata["nbgrader"].update(grade_id="f-check"), "duplicate"),
        (lambda nb: nb.cells[2].metadata["nbgrader"].pop("points"), "needs points"),
        (lambda nb: nb.cells[2].metadata["nbgrader"].update(schema_version=2), "schema_version"),
        (lambda nb: nb.cells[4].metadata["nbgrader"].update(solution=False), "graded by hand"),
        (lambda nb: nb.cells[3].metadata["nbgrader"].update(grade_id="a b"), "grade_id"),
    ],
)
def test_release_refuses_broken_sources_with_the_cell_named(change, message):
    nb = _source_notebook()
    change(nb)
    with pytest.raises(ReleaseError, match=message) as info:
        release_notebook(nb, name="hw.ipynb")
    assert "hw.ipynb, cell" in str(info.value)


def test_release_writes_files_and_protects_existing_ones(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_source_notebook(), src / "hw.ipynb")
    out = tmp_path / "out"
    assert release(src, out) == [out / "hw.ipynb"]
    assert "YOUR CODE HERE" in (out / "hw.ipynb").read_text()
    with pytest.raises(FileExistsError, match="force"):
        release(src, out)
    assert release(src, out, force=True) == [out / "hw.ipynb"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        release(tmp_path / "missing", out)
    with pytest.raises(FileExistsError, match="source folder"):
        release(src, src)


def test_release_writes_nothing_when_one_source_is_broken(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_source_notebook(), src / "a.ipynb")
    broken = _source_notebook()
    broken.cells[1].source = "### BEGIN SOLUTION"
    nbformat.write(broken, src / "b.ipynb")
    with pytest.raises(ReleaseError, match="b.ipynb"):
        release(src, tmp_path / "out")
    assert not (tmp_path / "out" / "a.ipynb").exists()


def test_cli_release_command(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_source_notebook(), src / "hw.ipynb")
    out = tmp_path / "student"
    assert main(["assignments", "release", str(out), "--source", str(src)]) == 0
    assert str(out / "hw.ipynb") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["assignments", "release", str(out), "--source", str(src)])
    assert exit_info.value.code == 2 and "--force" in capsys.readouterr().err
    assert main(["assignments", "release", str(out), "--source", str(src), "--force"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["assignments"])
    assert exit_info.value.code == 2
