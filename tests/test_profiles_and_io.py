"""Run profiles and atomic writes."""

import pytest

from vicreg_lab import _io
from vicreg_lab.profiles import PROFILES, get_profile


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("VICREG_LAB_PROFILE", "CI")
    assert get_profile().name == "ci"
    assert get_profile("gpu").name == "gpu"


def test_unset_profile_falls_back_to_hardware(monkeypatch):
    import torch

    monkeypatch.delenv("VICREG_LAB_PROFILE", raising=False)
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown profile 'big'.*\['ci', 'cpu', 'gpu', 'long'\]"):
        get_profile("big")


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = PROFILES["ci"], PROFILES["cpu"], PROFILES["gpu"]
    assert ci.n_subjects < cpu.n_subjects < gpu.n_subjects
    assert ci.shape[0] < cpu.shape[0] < gpu.shape[0]
    assert ci.override(max_epochs=7).max_epochs == 7 and ci.max_epochs != 7


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "the temporary file must be cleaned up"
    _io.write_text(target, "new")
    assert target.read_text() == "new"
