"""OpenBHB: reads a miniature copy in nidl's layout; labels match images; bad input is named."""

import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from vicreg_lab.data import OpenBHB

SMALL = (12, 14, 12)
SUFFIX = {"vbm": "preproc-cat12vbm_desc-gm_T1w", "quasiraw": "preproc-quasiraw_T1w"}
SPLITS = ["train"] * 6 + ["internal_test"] * 3 + ["external_test"] * 3


def _array_path(root, pid, split, modality="vbm"):
    folder = "train" if split == "train" else "val"
    return (
        root / folder / "derivatives" / f"sub-{pid}" / "ses-1" / f"sub-{pid}_{SUFFIX[modality]}.npy"
    )


def _make_openbhb(root, seed=0):
    """A fake OpenBHB: numeric ids, written in random order; each array is filled with its age."""
    rng = random.Random(seed)
    ids = rng.sample(range(1000, 9999), len(SPLITS))
    table = pd.DataFrame(
        {
            "participant_id": ids,
            "age": [round(10 + 70 * rng.random(), 1) for _ in ids],
            "sex": rng.choices(["female", "male"], k=len(ids)),
            "site": rng.choices(range(5), k=len(ids)),
            "split": SPLITS,
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    table.sample(frac=1, random_state=seed).to_csv(root / "participants.tsv", sep="\t", index=False)
    for k in rng.sample(range(len(ids)), len(ids)):
        row = table.iloc[k]
        for modality, shape in (("vbm", SMALL), ("quasiraw", (16, 18, 16))):
            path = _array_path(root, row.participant_id, row.split, modality)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.full((1, *shape), row.age, dtype=np.float32))
    return table


def _index(dataset, pid):
    return list(dataset.participants.participant_id).index(f"sub-{pid}")


def test_labels_match_arrays_in_every_split(tmp_path):
    table = _make_openbhb(tmp_path)
    expected = {"train": 6, "val": 6, "internal_test": 3, "external_test": 3}
    for split, n in expected.items():
        dataset = OpenBHB(tmp_path, split=split)
        assert len(dataset) == n
        for i in range(n):
            image, age = dataset[i]
            assert image.shape == (1, *SMALL) and image.dtype == torch.float32
            assert age.dtype == torch.float32
            assert float(image.mean()) == pytest.approx(float(age), abs=1e-4)
        allowed = {"val": {"internal_test", "external_test"}}.get(split, {split})
        assert set(dataset.participants.split) == allowed
    assert set(OpenBHB(tmp_path, split="val").participants.participant_id) == {
        f"sub-{p}" for p in table.participant_id[6:]
    }


def test_quasiraw_items_and_targets(tmp_path):
    table = _make_openbhb(tmp_path)
    dataset = OpenBHB(tmp_path, modality="quasiraw", target=None)
    item = dataset[2]
    assert set(item) == {"image", "participant_id", "age", "sex", "site", "index"}
    assert item["image"].shape == (1, 16, 18, 16)
    row = table.set_index("participant_id").loc[int(item["participant_id"][4:])]
    assert item["age"] == pytest.approx(row.age) and item["sex"] == row.sex
    _, labels = OpenBHB(tmp_path, target=["sex", "site"])[2]
    assert labels["sex"] == item["sex"] and float(labels["site"]) == item["site"]
    with pytest.raises(ValueError, match=r"'diagnosis'.*participants\.tsv"):
        OpenBHB(tmp_path, target="diagnosis")


def test_any_shape_is_read_without_warnings_and_resized_exactly(tmp_path):
    _make_openbhb(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = OpenBHB(tmp_path, shape=(6, 7, 5))
        image, age = dataset[0]
    assert image.shape == (1, 6, 7, 5)
    assert torch.allclose(image, torch.full_like(image, float(age)), atol=1e-3)
    # the affine spans the 1.5 mm MNI grid's field of view (121 x 145 x 121 voxels)
    np.testing.assert_allclose(
        np.abs(np.diag(dataset.affine)[:3]) * (6, 7, 5), [181.5, 217.5, 181.5]
    )
    assert np.linalg.norm(dataset.affine @ np.r_[2.5, 3, 2, 1] - [0, -18, 18, 1]) < 1e-6


def test_split_level_table_and_site_x_acq(tmp_path):
    table = _make_openbhb(tmp_path)
    (tmp_path / "participants.tsv").unlink()
    train = table[table.split == "train"].drop(columns=["split", "site"])
    train.assign(siteXacq=7).to_csv(tmp_path / "train" / "participants.tsv", sep="\t", index=False)
    dataset = OpenBHB(tmp_path, target="site")
    assert len(dataset) == 6 and float(dataset[0][1]) == 7.0
    with pytest.raises(FileNotFoundError, match="download it yourself"):
        OpenBHB(tmp_path, split="val")


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*download it yourself"):
        OpenBHB(tmp_path / "nowhere")
    tmp_path.joinpath("participants.tsv").write_text("participant_id\tage\tsplit\n1\t30\ttrain\n")
    with pytest.raises(FileNotFoundError, match=r"train/derivatives.*download it yourself"):
        OpenBHB(tmp_path)


def test_root_table_needs_a_split_column(tmp_path):
    table = _make_openbhb(tmp_path)
    table.drop(columns="split").to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="'split' column"):
        OpenBHB(tmp_path)


def test_participant_without_array_and_stray_folder(tmp_path):
    table = _make_openbhb(tmp_path)
    lost = table.participant_id[1]
    _array_path(tmp_path, lost, "train").unlink()
    with pytest.raises(ValueError, match=rf"have no vbm array.*sub-{lost}"):
        OpenBHB(tmp_path)
    with pytest.warns(UserWarning, match="skipped"):
        dataset = OpenBHB(tmp_path, on_missing="skip")
    assert len(dataset) == 5 and f"sub-{lost}" not in set(dataset.participants.participant_id)
    assert all(float(dataset[i][0].mean()) == pytest.approx(float(dataset[i][1])) for i in range(5))
    stray = _array_path(tmp_path, 42, "train")
    stray.parent.mkdir(parents=True)
    np.save(stray, np.ones((1, *SMALL), dtype=np.float32))
    with pytest.raises(ValueError, match=r"subject folder.*sub-42"):
        OpenBHB(tmp_path, split="train", modality="quasiraw")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"garbage bytes", "could not read OpenBHB array"),
        (np.full((1, *SMALL), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.zeros((1, *SMALL), dtype=np.float32), "empty"),
        (np.ones((2, *SMALL), dtype=np.float32), "expected a 3D volume"),
        (np.array(["a", "b"]), "expected a numeric array"),
    ],
)
def test_bad_arrays_are_named(tmp_path, content, message):
    table = _make_openbhb(tmp_path)
    pid = table.participant_id[3]
    path = _array_path(tmp_path, pid, "train")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    name = f"sub-{pid}_preproc-cat12vbm_desc-gm_T1w.npy"
    header_level = message not in ("NaN or infinite", "empty")  # found without the data
    for check in ("headers", "volumes"):
        if header_level or check == "volumes":  # refused when the dataset is opened
            with pytest.raises(ValueError, match=message) as refused:
                OpenBHB(tmp_path, check=check)
            assert name in str(refused.value) and "allow_pickle" not in str(refused.value)
    dataset = OpenBHB(tmp_path, check="none")  # arrays read lazily: the others stay usable
    assert len(dataset) == 6
    with pytest.raises(ValueError) as error:
        dataset[_index(dataset, pid)]
    assert name in str(error.value)
    assert message in str(error.value)


def test_arguments_are_checked(tmp_path):
    _make_openbhb(tmp_path)
    with pytest.raises(ValueError, match="modality"):
        OpenBHB(tmp_path, modality="fs_xhemi")
    with pytest.raises(ValueError, match="split"):
        OpenBHB(tmp_path, split="test")
    with pytest.raises(ValueError, match="shape"):
        OpenBHB(tmp_path, shape=(8, 8))
