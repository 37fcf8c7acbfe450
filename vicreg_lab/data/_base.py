"""What the three datasets share: the item convention, label tables and volume checks.

Item convention (the same for :class:`SyntheticCohort`, :class:`NiftiFolder` and
:class:`OpenBHB`):

- ``target=None``: ``dataset[i]`` is a dict ``{"image", "participant_id", "age",
  "sex", "site", "index"}`` (the label keys present in the table), with Python
  values (``age`` a float).
- ``target="age"`` (one column): ``dataset[i]`` is ``(image, value)``; a numeric
  value is a float32 scalar tensor (ready for a loss), anything else a ``str``.
- ``target=["age", "site"]`` (several columns): ``(image, {"age": ..., "site": ...})``
  with values as above.

``image`` is always a float32 tensor of shape (1, D, H, W). Labels come from row
``i`` of ``dataset.participants``, and images are matched to rows by participant
id, never by file listing order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

LABELS = ("participant_id", "age", "sex", "site")


def image_of(item) -> torch.Tensor:
    """The volume of one item: a tensor or array, ``(image, target)`` or ``{"image": ...}``."""
    if isinstance(item, Mapping):
        if "image" not in item:
            raise ValueError(f"items that are dicts need an 'image' key; this one has {list(item)}")
        item = item["image"]
    elif isinstance(item, (tuple, list)):
        item = item[0]
    return torch.as_tensor(item)


def stack_images(items) -> torch.Tensor:
    """One batch ``(B, 1, D, H, W)`` from dataset items (a DataLoader's ``collate_fn``)."""
    images = [image_of(item) for item in items]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"volumes of one batch differ in shape ({sorted(shapes)[:2]}) and cannot be "
            "stacked; bring them to one shape (e.g. NiftiFolder(shape=(D, H, W)))"
        )
    return torch.stack(images)


def as_volumes(volumes) -> torch.Tensor:
    """``volumes`` as a float tensor ``(N, C, D, H, W)``, or a clear error."""
    x = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    if x.ndim != 5:
        raise ValueError(f"volumes must have shape (N, C, D, H, W), got {tuple(x.shape)}")
    return x.float()


class SubjectDataset(Dataset):
    """Base class: subclasses set ``participants``, ``target``, ``transform``; define ``_load``."""

    participants: pd.DataFrame
    target: str | list[str] | None = None
    transform = None

    def __len__(self) -> int:
        return len(self.participants)

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {n}")
        index = int(index) % n
        image = self._load(index)
        if self.transform is not None:
            image = self.transform(image)
        row = self.participants.iloc[index]
        if self.target is None:
            item = {"image": image}
            item.update({k: _python(row[k]) for k in LABELS if k in row.index})
            item["index"] = index
            return item
        if isinstance(self.target, str):
            return image, _target_value(row[self.target])
        return image, {k: _target_value(row[k]) for k in self.target}

    def _load(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def get_affine(self, index: int = 0) -> np.ndarray:
        """4x4 voxel-to-world (mm) affine of ``self[index]["image"]``."""
        return self.affine

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, target={self.target!r})"


def _python(value):
    """Numpy scalars -> Python scalars (plain values in item dicts)."""
    return value.item() if isinstance(value, np.generic) else value


def _target_value(value):
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float32)
    return str(value)


def resolve_target(target, participants: pd.DataFrame, source) -> str | list[str] | None:
    """Check that the target column(s) exist in ``participants`` (read from ``source``)."""
    if target is None:
        return None
    names = [target] if isinstance(target, str) else list(target)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"target must be None, a column name or a list of names, got {target!r}")
    missing = [n for n in names if n not in participants.columns]
    if missing:
        raise ValueError(
            f"target column(s) {missing} not found in {source}; "
            f"available columns: {list(participants.columns)}"
        )
    return target if isinstance(target, str) else names


def drop_missing_labels(participants, target, on_missing, source) -> pd.DataFrame:
    """Error on (or, with ``on_missing="skip"``, drop with a warning) rows lacking a target."""
    if target is None:
        return participants
    names = [target] if isinstance(target, str) else target
    bad = participants[names].isna().any(axis=1)
    if bad.any():
        ids = participants.loc[bad, "participant_id"].tolist()
        report(
            on_missing,
            f"{len(ids)} participant(s) in {source} have no value for {names}: {ids[:5]}",
        )
        participants = participants[~bad].reset_index(drop=True)
    return participants


def report(on_missing: str, message: str) -> None:
    """Raise ``message`` (``on_missing="error"``) or warn that the items are skipped."""
    if on_missing == "error":
        raise ValueError(message + " (pass on_missing='skip' to leave them out with a warning)")
    warnings.warn(message + "; skipped", UserWarning, stacklevel=3)


def check_on_missing(on_missing: str) -> str:
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    return on_missing


def read_participants(path: Path) -> pd.DataFrame:
    """Read a BIDS ``participants.tsv``; ``participant_id`` is kept as text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"participants table not found: {path} (expected a tab-separated file with a "
            "'participant_id' column and one column per label, e.g. age, sex, site)"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
    except Exception as exc:  # pandas raises several types for malformed files
        raise ValueError(f"could not read participants table {path}: {exc}") from exc
    if "participant_id" not in table.columns:
        raise ValueError(
            f"{path} has no 'participant_id' column (columns: {list(table.columns)}); "
            "is it tab-separated?"
        )
    if table.empty:
        raise ValueError(f"{path} lists no participants")
    table["participant_id"] = table["participant_id"].str.strip()
    duplicated = table["participant_id"][table["participant_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path} lists participant(s) more than once: {duplicated[:5]}")
    return table


CHECKS = ("headers", "volumes", "none")
MAX_VOXELS = 512**3
"""The most voxels a volume may have (a 1 mm whole-head T1w has ~16 million)."""


def check_header(shape, path, squeeze_axis: int) -> tuple[int, int, int]:
    """The 3D shape of a file whose header declares ``shape``, or a ``ValueError`` naming it.

    A singleton axis at ``squeeze_axis`` is dropped (as :func:`check_volume` does);
    refused: any other shape than 3D, more than :data:`MAX_VOXELS` voxels.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 4 and shape[squeeze_axis] == 1:
        shape = shape[:squeeze_axis] + shape[squeeze_axis:][1:]
    if len(shape) != 3:
        raise ValueError(
            f"{path}: expected a 3D volume, the header says shape {shape} "
            "(one singleton channel axis is allowed)"
        )
    if np.prod(shape, dtype=np.int64) > MAX_VOXELS:
        raise ValueError(
            f"{path}: the header claims {'x'.join(map(str, shape))} voxels, more than "
            f"{MAX_VOXELS:,} (512^3); a corrupt header, or a volume to downsample first"
        )
    return shape


def check_files(dataset, check: str, header_shape) -> None:
    """What a dataset checks when it is opened (its ``check`` parameter, see NiftiFolder).

    ``"headers"``: ``header_shape(path)`` of every file in ``dataset.files`` (readable,
    3D, bounded) and, when ``dataset.shape`` is None, one shape for all; ``"volumes"``:
    every volume read in full; ``"none"``: nothing.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if check == "volumes":
        for index in range(len(dataset.files)):
            dataset._load(index)
    if check != "headers":
        return
    shapes: dict[tuple, Path] = {}
    for path in dataset.files:
        shapes.setdefault(header_shape(path), path)
    if dataset.shape is None and len(shapes) > 1:
        (a, first), (b, second) = list(shapes.items())[:2]
        raise ValueError(
            f"volumes differ in shape ({first}: {a}, {second}: {b}) and shape=None keeps "
            "them as they are, so they cannot be batched; pass shape=(D, H, W)"
        )


def check_volume(data: np.ndarray, path, squeeze_axis: int) -> np.ndarray:
    """Return ``data`` as a 3D float32 array or raise an error naming ``path``.

    A singleton axis at ``squeeze_axis`` (-1 for NIfTI's (X, Y, Z, 1), 0 for
    OpenBHB's (1, X, Y, Z)) is dropped; anything else that is not 3D is refused,
    as are non-finite and all-zero volumes.
    """
    if data.ndim == 4 and data.shape[squeeze_axis] == 1:
        data = data.squeeze(squeeze_axis)
    if data.ndim != 3:
        raise ValueError(
            f"{path}: expected a 3D volume, got shape {tuple(data.shape)} "
            "(one singleton channel axis is allowed)"
        )
    # a private, writable float32 copy when needed (memory-mapped arrays are read-only)
    data = np.array(data, dtype=np.float32, copy=not data.flags.writeable or None)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f"{path}: {bad} voxel(s) are NaN or infinite; expected finite values")
    if not np.any(data):
        raise ValueError(f"{path}: the volume is empty (all zeros)")
    return data


def resize(data: np.ndarray, affine: np.ndarray, shape) -> tuple[torch.Tensor, np.ndarray]:
    """Resample a 3D volume onto ``shape`` voxels covering the same field of view.

    Like ``torchio.Resize``, but exact: the target grid (``shape`` and the affine
    whose voxels tile the original field of view, so the voxel size changes and may
    become anisotropic) is computed here and passed to ``torchio.Resample``
    (trilinear), so the output has exactly ``shape`` with no crop or pad. A volume
    that already has ``shape`` is returned as is.

    Returns
    -------
    (torch.Tensor, numpy.ndarray)
        The float32 volume (1, *shape) and its affine.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(data))[None]
    if shape is None or tuple(data.shape) == tuple(shape):
        return tensor, affine
    import torchio as tio

    scale = np.asarray(data.shape, dtype=float) / np.asarray(shape, dtype=float)
    target = np.array(affine, dtype=float)
    target[:3, :3] = affine[:3, :3] * scale  # column j scaled: voxel size along axis j
    target[:3, 3] = (affine @ np.r_[(scale - 1) / 2, 1.0])[:3]  # centre of the new voxel 0
    grid = (tuple(int(n) for n in shape), target)
    image = tio.Resample(grid)(tio.ScalarImage(tensor=tensor, affine=affine))
    return image.data.float(), image.affine


def check_shape(shape, allow_none: bool = True):
    """Validate a ``shape`` argument: None (keep) or three positive ints."""
    if shape is None and allow_none:
        return None
    if (
        isinstance(shape, (tuple, list))
        and len(shape) == 3
        and all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)
    ):
        return tuple(int(s) for s in shape)
    raise ValueError(f"shape must be three positive ints (D, H, W) or None, got {shape!r}")
