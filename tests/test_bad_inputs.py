"""Bad input is refused up front, in one line, and nothing is written or lost (issue 18).

Each case runs the real command line (or API) on a real bad input and checks the exit
status (2 for the CLI), that the message names what was wrong, and that the output folder
holds nothing new (or keeps what it had). Checkpoint cases write real files with torch.
"""

import math

import pytest
import torch

from vicreg_lab.checkpoints import load_checkpoint
from vicreg_lab.lab.cli import main
from vicreg_lab.train import VICReg


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, err[-1] if err else ""


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--lr", "-0.1"),
        ("--inv", "inf"),
        ("--var", "nan"),
        ("--cov", "-1"),
        ("--cov", "one"),
        ("--epochs", "0"),
        ("--batch-size", "-2"),
        ("--subjects", "0"),
        ("--shape", "4"),
        ("--shape", "48x48"),
        ("--optimizer", "sgd"),
        ("--augmentation", "mixup"),
    ],
)
def test_a_bad_number_or_choice_is_one_line_and_exit_2(flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    code, line = _run(["train", "--profile", "ci", "--out", str(out), flag, value], capsys)
    assert code == 2
    assert flag in line and value in line  # names what and the value given
    assert not out.exists()  # nothing written


def test_a_non_empty_report_folder_needs_force(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.md").write_text("an earlier report")
    for command in ("demo", "train"):
        code, line = _run([command, "--profile", "ci", "--out", str(out)], capsys)
        assert code == 2 and "not empty" in line and "--force" in line
    assert [p.name for p in out.iterdir()] == ["index.md"]
    assert (out / "index.md").read_text() == "an earlier report"


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _run(["train", "--profile", "ci", "--out", str(blocker / "x")], capsys)
    assert code == 2 and "cannot be written" in line
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "params, word",
    [
        (dict(inv_coeff=float("nan")), "inv_coeff"),
        (dict(var_coeff=-1.0), "var_coeff"),
        (dict(cov_coeff="1"), "cov_coeff"),
        (dict(cov_coeff=True), "cov_coeff"),
        (dict(lr=float("inf")), "lr"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(warmup_epochs=float("nan")), "warmup_epochs"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
    ],
)
def test_the_api_refuses_non_finite_or_negative_settings_before_training(params, word):
    model = VICReg(encoder="small_cnn", expander="16-16", batch_size=4, max_epochs=1, **params)
    with pytest.raises(ValueError, match=f"{word} must be a finite number"):
        model.fit(torch.zeros(8, 1, 16, 16, 16))
    assert not hasattr(model, "encoder_") or not hasattr(model, "history_")


def _checkpoint(tmp_path, **changes):
    state = {
        "format": "vicreg-lab-checkpoint-v1",
        "estimator": "VICReg",
        "epochs_done": 1,
        "params": {"encoder": "small_cnn", "expander": "16-16"},
        "input_size": [16, 16, 16],
        "history": {"epoch": [], "step": []},
    }
    for key, value in changes.items():
        if key in state["params"] or key == "local_expander":
            state["params"][key] = value
        else:
            state[key] = value
    path = tmp_path / "model.ckpt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "changes, word",
    [
        (dict(expander="100000-100000-100000"), "expander"),
        (dict(expander="16-x"), "expander"),
        (dict(expander=[16] * 12), "expander"),
        (dict(local_expander="999999"), "local_expander"),
        (dict(input_size=[2000, 2000, 2000]), "input_size"),
        (dict(input_size=[16, 16]), "input_size"),
    ],
)
def test_checkpoint_parameters_are_bounded_before_anything_is_built(tmp_path, changes, word):
    path = _checkpoint(tmp_path, **changes)
    with pytest.raises(ValueError, match=word):
        VICReg.load(path)


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_a_truncated_checkpoint_is_called_corrupt_never_unsafe(tmp_path, cut):
    good = _checkpoint(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        load_checkpoint(bad)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def _tiny(**params):
    base = dict(encoder="small_cnn", expander="16-16", batch_size=4, max_epochs=1, seed=0)
    return VICReg(**{**base, **params})


def test_resume_refuses_other_settings_naming_them_and_loses_nothing(tmp_path):
    volumes = torch.randn(8, 1, 16, 16, 16)
    _tiny(checkpoint_dir=tmp_path).fit(volumes)
    checkpoint = (tmp_path / "last.ckpt").read_bytes()
    with pytest.raises(ValueError, match=r"optimizer: 'adamw' -> 'lars'.*seed: 0 -> 1"):
        _tiny(checkpoint_dir=tmp_path, optimizer="lars", seed=1, max_epochs=2).fit(
            volumes, resume=True
        )
    with pytest.raises(ValueError, match=r"input size: \[16, 16, 16\] -> \[12, 12, 12\]"):
        _tiny(checkpoint_dir=tmp_path, max_epochs=2).fit(torch.randn(8, 1, 12, 12, 12), resume=True)
    with pytest.raises(ValueError, match="number of items: 8 -> 12"):
        _tiny(checkpoint_dir=tmp_path, max_epochs=2).fit(
            torch.randn(12, 1, 16, 16, 16), resume=True
        )
    with pytest.raises(ValueError, match=r"data: [0-9a-f]{12} -> [0-9a-f]{12} \(other subjects\)"):
        _tiny(checkpoint_dir=tmp_path, max_epochs=2).fit(torch.randn(8, 1, 16, 16, 16), resume=True)
    assert (tmp_path / "last.ckpt").read_bytes() == checkpoint  # untouched
    more = _tiny(checkpoint_dir=tmp_path, max_epochs=2).fit(volumes, resume=True)  # same run
    assert len(more.history_["epoch"]) == 2
    forced = _tiny(checkpoint_dir=tmp_path, seed=5, max_epochs=3).fit(volumes, resume="force")
    assert len(forced.history_["epoch"]) == 3
    assert math.isfinite(forced.history_["epoch"][-1]["loss"])


def _nifti_folder(root, sites, columns=("participant_id", "age", "sex", "site")):
    """A real BIDS-like folder of tiny NIfTI volumes; ``sites`` gives each subject's site."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    ids = [f"sub-{100 + k}" for k in range(len(sites))]
    table = pd.DataFrame(
        {"participant_id": ids, "age": [30.0 + k for k in range(len(ids))], "sex": "F"}
        | {"site": list(sites)}
    )
    root.mkdir(parents=True)
    table[list(columns)].to_csv(root / "participants.tsv", sep="\t", index=False)
    for k, subject in enumerate(ids):
        path = root / subject / "anat" / f"{subject}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        volume = np.random.default_rng(k).random((12, 12, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return root


@pytest.mark.parametrize(
    "sites, columns, words",
    [
        (["A", "B"] * 4, ("participant_id", "age", "sex"), "no site column"),
        (["A", "B"] * 4, ("participant_id", "sex", "site"), "no age column"),
        (["A"] * 8, ("participant_id", "age", "sex", "site"), ">= 2 sites"),
        (["A"] * 7 + ["B"], ("participant_id", "age", "sex", "site"), "B: 1"),
    ],
)
def test_a_table_the_report_cannot_probe_is_refused_before_training(
    tmp_path, capsys, sites, columns, words
):
    data = _nifti_folder(tmp_path / "bids", sites, columns)
    out = tmp_path / "run"
    argv = ["train", "--profile", "ci", "--nifti", str(data), "--out", str(out), "--shape", "12"]
    code, line = _run(argv, capsys)
    assert code == 2 and words in line
    assert not out.exists()  # refused before training: no folder, no checkpoint


def _malformed_sources(root):
    import copy
    import json

    from vicreg_lab.classroom.release import default_source

    source = json.loads((default_source() / "01_loss_terms.ipynb").read_text())
    broken = {}
    nb = copy.deepcopy(source)
    nb["cells"][5]["metadata"]["nbgrader"] = ["not", "an", "object"]
    broken["nbgrader-list"] = nb
    nb = copy.deepcopy(source)
    nb["cells"] = {"not": "a list"}
    broken["cells-object"] = nb
    nb = copy.deepcopy(source)
    del nb["cells"][5]["source"]
    broken["no-source"] = nb
    paths = {}
    for name, nb in broken.items():
        (root / name).mkdir(parents=True)
        paths[name] = root / name / "01_loss_terms.ipynb"
        paths[name].write_text(json.dumps(nb))
    return paths


@pytest.mark.parametrize("broken", ["nbgrader-list", "cells-object", "no-source"])
def test_a_malformed_source_notebook_is_one_line_for_release_and_grade(tmp_path, capsys, broken):
    path = _malformed_sources(tmp_path)[broken]
    out = tmp_path / "student"
    code, line = _run(["assignments", "release", str(out), "--source", str(path)], capsys)
    assert code == 2 and "01_loss_terms.ipynb" in line
    assert not out.exists()
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    (tmp_path / "subs" / "ann" / "01_loss_terms.ipynb").write_text(path.read_text())
    grading = tmp_path / "grading"
    argv = ["assignments", "grade", str(tmp_path / "subs"), "--source", str(path)]
    code, line = _run([*argv, "--out", str(grading)], capsys)
    assert code == 2 and "01_loss_terms.ipynb" in line
    assert not grading.exists()


def test_a_second_training_into_the_same_folder_is_refused_and_orphans_cleaned(tmp_path):
    import fcntl

    from vicreg_lab.checkpoints import checkpoint_lock

    orphan = tmp_path / ".last.ckpt.abc123.tmp.ckpt"  # what a kill during a write leaves
    orphan.write_bytes(b"half a checkpoint")
    with checkpoint_lock(tmp_path):  # the first training holds the folder
        assert not orphan.exists()
        with pytest.raises(ValueError, match="in use by another training"):
            _tiny(checkpoint_dir=tmp_path).fit(torch.randn(8, 1, 16, 16, 16))
        assert not (tmp_path / "last.ckpt").exists()  # the second wrote nothing
    with open(tmp_path / ".lock") as handle:  # released: anyone may take it now
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    _tiny(checkpoint_dir=tmp_path).fit(torch.randn(8, 1, 16, 16, 16))
    assert (tmp_path / "last.ckpt").exists()


def _damage(path, how):
    """Write a real bad NIfTI at ``path``: a header claiming 2000^3 voxels, or half the file."""
    import gzip
    import struct

    raw = path.read_bytes()
    if how == "huge-header":
        header = bytearray(gzip.decompress(raw))
        struct.pack_into("<8h", header, 40, 3, 2000, 2000, 2000, 1, 1, 1, 1)  # dim[0..7]
        path.write_bytes(gzip.compress(bytes(header)))
    else:
        path.write_bytes(raw[: len(raw) // 2])


def test_a_header_claiming_2000_cubed_is_refused_by_the_header_pass(tmp_path, capsys):
    data = _nifti_folder(tmp_path / "bids", ["A", "B"] * 4)
    _damage(data / "sub-105" / "anat" / "sub-105_T1w.nii.gz", "huge-header")
    out = tmp_path / "run"
    argv = ["train", "--profile", "ci", "--nifti", str(data), "--out", str(out), "--shape", "12"]
    code, line = _run(argv, capsys)
    assert code == 2 and "sub-105_T1w.nii.gz" in line and "2000x2000x2000" in line
    assert not out.exists()


def test_a_truncated_volume_is_found_before_training_with_check_volumes(tmp_path, capsys):
    data = _nifti_folder(tmp_path / "bids", ["A", "B"] * 4)
    _damage(data / "sub-107" / "anat" / "sub-107_T1w.nii.gz", "truncate")  # header intact
    out = tmp_path / "run"
    argv = ["train", "--profile", "ci", "--nifti", str(data), "--out", str(out), "--shape", "12"]
    code, line = _run([*argv, "--check-volumes"], capsys)
    assert code == 2 and "could not read NIfTI file" in line and "sub-107" in line
    assert not out.exists()


def test_a_corrupt_volume_met_by_a_dataloader_worker_is_one_line(tmp_path, capsys):
    # 72 subjects: the first 64 make the held batch read in this process, so the
    # corrupt last one is first read by a DataLoader worker during training
    data = _nifti_folder(tmp_path / "bids", ["A", "B"] * 36)
    _damage(data / "sub-171" / "anat" / "sub-171_T1w.nii.gz", "truncate")
    out = tmp_path / "run"
    argv = ["train", "--profile", "ci", "--nifti", str(data), "--out", str(out), "--shape", "12"]
    code, line = _run([*argv, "--workers", "1", "--augmentation", "torchio"], capsys)
    assert code == 2
    assert line.startswith("vicreg-lab train: error: could not read NIfTI file")
    assert "sub-171" in line and "worker" not in line


def test_volumes_of_different_shapes_are_named_not_a_stack_error(tmp_path):
    import nibabel as nib
    import numpy as np

    from vicreg_lab.data import NiftiFolder

    data = _nifti_folder(tmp_path / "bids", ["A", "B"] * 4)
    odd = data / "sub-103" / "anat" / "sub-103_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 12, 12), np.float32), np.eye(4)), odd)
    with pytest.raises(ValueError, match=r"differ in shape.*sub-103.*shape=\(D, H, W\)"):
        NiftiFolder(data, shape=None)
    assert NiftiFolder(data, shape=(12, 12, 12))[3]["image"].shape == (1, 12, 12, 12)
    mixed = [torch.rand(1, 12, 12, 12) for _ in range(7)] + [torch.rand(1, 10, 12, 12)]
    with pytest.raises(ValueError, match="differ in shape"):  # any dataset, through the API
        _tiny().fit(mixed)


def test_volumes_smaller_than_the_raw_baseline_still_get_a_report(tmp_path):
    from vicreg_lab.baselines import RAW, embeddings_with_baselines

    model = _tiny().fit(torch.rand(8, 1, 8, 8, 8))
    features = embeddings_with_baselines(model, torch.rand(6, 1, 8, 8, 8))
    assert features[RAW].shape == (6, 8**3)  # the whole 8^3 volume, not 16^3
