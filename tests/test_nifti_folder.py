"""NiftiFolder: labels always match their image; every kind of bad input gets a clear error."""

import gzip
import os
import random

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from vicreg_lab.data import NiftiFolder

SHAPE = (8, 9, 10)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _write_image(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), path)


def _make_folder(root, n=12, seed=0, shape=SHAPE):
    """Subjects with irregular ids, written in a random order; each image is filled with its age."""
    rng = random.Random(seed)
    ids = [f"sub-{label}" for label in rng.sample(range(100, 999), n)]
    ages = [round(20 + 60 * rng.random(), 1) for _ in ids]
    table = pd.DataFrame(
        {"participant_id": ids, "age": ages, "sex": rng.choices("FM", k=n), "site": "site-A"}
    )
    root.mkdir(parents=True, exist_ok=True)
    table.sample(frac=1, random_state=seed).to_csv(root / "participants.tsv", sep="\t", index=False)
    order = list(range(n))
    rng.shuffle(order)
    for k in order:
        _write_image(root / ids[k] / "anat" / f"{ids[k]}_T1w.nii.gz", np.full(shape, ages[k]))
    return table


def test_labels_match_images_whatever_the_file_order(tmp_path):
    _make_folder(tmp_path)
    folder = NiftiFolder(tmp_path, shape=None)
    assert len(folder) == 12
    for i in range(len(folder)):
        item = folder[i]
        assert item["image"].shape == (1, *SHAPE) and item["image"].dtype == torch.float32
        assert float(item["image"].mean()) == pytest.approx(item["age"], abs=1e-4)
        assert folder.files[i].name.startswith(item["participant_id"] + "_")


def test_renaming_files_on_disk_keeps_the_match(tmp_path):
    table = _make_folder(tmp_path)
    # Swap two subjects' folders and files on disk: their labels must follow the ids.
    a, b = table.participant_id[:2]
    os.rename(tmp_path / a, tmp_path / "tmp")
    os.rename(tmp_path / b, tmp_path / a)
    os.rename(tmp_path / "tmp", tmp_path / b)
    os.rename(tmp_path / a / "anat" / f"{b}_T1w.nii.gz", tmp_path / a / "anat" / f"{a}_T1w.nii.gz")
    os.rename(tmp_path / b / "anat" / f"{a}_T1w.nii.gz", tmp_path / b / "anat" / f"{b}_T1w.nii.gz")
    folder = NiftiFolder(tmp_path, target="age", shape=None)
    by_id = dict(zip(folder.participants.participant_id, range(len(folder)), strict=True))
    image_a, age_a = folder[by_id[a]]
    # a's file now holds b's image: the age returned is a's, the image b's
    assert float(age_a) == pytest.approx(table.age[0])
    assert float(image_a.mean()) == pytest.approx(table.age[1], abs=1e-4)


def test_resizing_to_a_common_shape(tmp_path):
    _make_folder(tmp_path, n=3)
    _write_image(tmp_path / "sub-big" / "anat" / "sub-big_T1w.nii.gz", np.full((12, 14, 11), 50.0))
    table = pd.read_csv(tmp_path / "participants.tsv", sep="\t")
    table.loc[len(table)] = ["sub-big", 50.0, "F", "site-B"]
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    folder = NiftiFolder(tmp_path, target="age", shape=(6, 7, 5))
    for i in range(len(folder)):
        image, age = folder[i]
        assert image.shape == (1, 6, 7, 5)
        assert float(image[0, 3, 3, 2]) == pytest.approx(float(age), abs=1e-3)
    affine = folder.get_affine(0)
    field_of_view = np.diag(affine)[:3] * (6, 7, 5)
    np.testing.assert_allclose(field_of_view, np.array(SHAPE) * 2.0)


def test_targets_and_items(tmp_path):
    table = _make_folder(tmp_path, n=4)
    folder = NiftiFolder(tmp_path, target=["age", "sex"], shape=None)
    image, labels = folder[0]
    row = table.set_index("participant_id").loc[folder.participants.participant_id[0]]
    assert labels["sex"] == row.sex and float(labels["age"]) == pytest.approx(row.age)
    with pytest.raises(ValueError, match=r"'diagnosis'.*participants\.tsv"):
        NiftiFolder(tmp_path, target="diagnosis")


def test_ids_without_the_sub_prefix_are_matched(tmp_path):
    table = _make_folder(tmp_path, n=3)
    table.assign(participant_id=table.participant_id.str[4:]).to_csv(
        tmp_path / "participants.tsv", sep="\t", index=False
    )
    folder = NiftiFolder(tmp_path, shape=None)
    assert folder[0]["participant_id"].startswith("sub-")
    assert float(folder[0]["image"].mean()) == pytest.approx(folder[0]["age"], abs=1e-4)


def test_a_singleton_fourth_axis_is_accepted_a_real_one_refused(tmp_path):
    table = _make_folder(tmp_path, n=2)
    first, second = table.participant_id
    _write_image(tmp_path / first / "anat" / f"{first}_T1w.nii.gz", np.full((*SHAPE, 1), 30.0))
    _write_image(tmp_path / second / "anat" / f"{second}_T1w.nii.gz", np.ones((*SHAPE, 2)))
    with pytest.raises(ValueError, match=rf"{second}_T1w\.nii\.gz.*expected a 3D volume"):
        NiftiFolder(tmp_path, shape=None)  # the header pass, when the folder is opened
    folder = NiftiFolder(tmp_path, shape=None, check="none")
    index = {p: i for i, p in enumerate(folder.participants.participant_id)}
    assert folder[index[first]]["image"].shape == (1, *SHAPE)
    with pytest.raises(ValueError, match=rf"{second}_T1w\.nii\.gz.*expected a 3D volume"):
        folder[index[second]]


@pytest.mark.parametrize(
    "value, message", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (0.0, "empty")]
)
def test_non_finite_and_empty_volumes_are_refused(tmp_path, value, message):
    table = _make_folder(tmp_path, n=2)
    bad = table.participant_id[1]
    data = np.zeros(SHAPE) if value == 0 else np.ones(SHAPE)
    data[1, 2, 3] = value
    _write_image(tmp_path / bad / "anat" / f"{bad}_T1w.nii.gz", data)
    folder = NiftiFolder(tmp_path, shape=None)  # headers are fine: found when loaded
    with pytest.raises(ValueError, match=rf"{bad}_T1w\.nii\.gz.*{message}"):
        NiftiFolder(tmp_path, shape=None, check="volumes")
    with pytest.raises(ValueError, match=rf"{bad}_T1w\.nii\.gz.*{message}"):
        folder[list(folder.participants.participant_id).index(bad)]


def test_corrupt_files_are_named(tmp_path):
    table = _make_folder(tmp_path, n=2)
    bad = tmp_path / table.participant_id[0] / "anat" / f"{table.participant_id[0]}_T1w.nii.gz"
    truncated = gzip.compress(bad.read_bytes()[:200])  # a valid gzip of a truncated NIfTI
    bad.write_bytes(truncated)
    garbage = tmp_path / table.participant_id[1] / "anat" / f"{table.participant_id[1]}_T1w.nii.gz"
    garbage.write_bytes(b"not a nifti at all")
    with pytest.raises(ValueError, match=r"could not read NIfTI file .*_T1w\.nii\.gz"):
        NiftiFolder(tmp_path, shape=None)
    folder = NiftiFolder(tmp_path, shape=None, check="none")
    for i in range(2):
        with pytest.raises(ValueError, match=r"could not read NIfTI file .*_T1w\.nii\.gz"):
            folder[i]


def test_missing_table_root_or_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        NiftiFolder(tmp_path / "nowhere")
    _make_folder(tmp_path, n=2)
    (tmp_path / "participants.tsv").rename(tmp_path / "labels.csv")
    with pytest.raises(FileNotFoundError, match=r"participants\.tsv"):
        NiftiFolder(tmp_path)
    pd.DataFrame({"id": ["sub-1"], "age": [3]}).to_csv(tmp_path / "participants.tsv", index=False)
    with pytest.raises(ValueError, match="no 'participant_id' column"):
        NiftiFolder(tmp_path)


def test_participant_without_image(tmp_path):
    table = _make_folder(tmp_path, n=4)
    lost = table.participant_id[2]
    (tmp_path / lost / "anat" / f"{lost}_T1w.nii.gz").unlink()
    with pytest.raises(ValueError, match=rf"have no image.*{lost}"):
        NiftiFolder(tmp_path)
    with pytest.warns(UserWarning, match=rf"{lost}.*skipped"):
        folder = NiftiFolder(tmp_path, on_missing="skip", shape=None)
    assert len(folder) == 3 and lost not in set(folder.participants.participant_id)
    for i in range(3):
        assert float(folder[i]["image"].mean()) == pytest.approx(folder[i]["age"], abs=1e-4)


def test_image_without_participant(tmp_path):
    _make_folder(tmp_path, n=3)
    _write_image(tmp_path / "sub-stray" / "anat" / "sub-stray_T1w.nii.gz", np.ones(SHAPE))
    with pytest.raises(ValueError, match=r"have no row in .*participants\.tsv.*sub-stray"):
        NiftiFolder(tmp_path)
    with pytest.warns(UserWarning, match="sub-stray"):
        assert len(NiftiFolder(tmp_path, on_missing="skip")) == 3


def test_missing_target_value(tmp_path):
    table = _make_folder(tmp_path, n=3)
    table.loc[1, "age"] = np.nan
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=rf"no value for \['age'\].*{table.participant_id[1]}"):
        NiftiFolder(tmp_path, target="age")
    with pytest.warns(UserWarning, match="no value"):
        assert len(NiftiFolder(tmp_path, target="age", on_missing="skip")) == 2
    assert len(NiftiFolder(tmp_path)) == 3  # no target: nothing is missing


def test_ambiguous_or_unnamed_files(tmp_path):
    table = _make_folder(tmp_path, n=2)
    pid = table.participant_id[0]
    _write_image(tmp_path / pid / "anat" / f"{pid}_run-2_T1w.nii.gz", np.ones(SHAPE))
    with pytest.raises(ValueError, match=f"two images match .* for {pid}"):
        NiftiFolder(tmp_path)
    (tmp_path / pid / "anat" / f"{pid}_run-2_T1w.nii.gz").rename(
        tmp_path / pid / "anat" / "T1w.nii.gz"
    )
    with pytest.raises(ValueError, match="T1w.nii.gz matches .* does not start with 'sub-<label>'"):
        NiftiFolder(tmp_path, pattern="sub-*/anat/*.nii.gz")
    with pytest.raises(ValueError, match="on_missing"):
        NiftiFolder(tmp_path, on_missing="ignore")


def test_cohort_grid_of_a_folder(tmp_path):
    from vicreg_lab.lab.plots import plot_cohort_grid

    _make_folder(tmp_path, n=5)
    fig = plot_cohort_grid(NiftiFolder(tmp_path, target="age", shape=(8, 8, 8)), by="age", n=3)
    ages = [float(ax.get_title().split()[0]) for ax in fig.axes[:3]]
    assert ages == sorted(ages)
