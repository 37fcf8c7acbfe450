"""OpenBHB (Open Big Healthy Brains), read from a local copy in nidl's layout.

vicreg-lab never downloads OpenBHB (about 350 GB with every modality): get it
yourself from IEEE DataPort, the OpenBHB challenge site, or the Hugging Face
dataset ``benoit-dufumier/openBHB``, and point ``root`` at it. Supported layout::

    <root>/participants.tsv                      all splits, with a "split" column
    <root>/<dir>/participants.tsv                optional: this directory's subjects
    <root>/<dir>/derivatives/sub-<id>/ses-1/sub-<id>_preproc-cat12vbm_desc-gm_T1w.npy
    <root>/<dir>/derivatives/sub-<id>/ses-1/sub-<id>_preproc-quasiraw_T1w.npy

where ``<dir>`` is ``train`` for ``split="train"`` and ``val`` for ``"val"``,
``"internal_test"`` and ``"external_test"``. ``<dir>/participants.tsv`` is used
when present, else ``<root>/participants.tsv``; the ``split`` column, when there
is one, selects the rows (``train``; ``internal_test`` / ``external_test``, whose
union is ``val``). Columns: ``participant_id`` (``1234`` or ``sub-1234``),
``age``, ``sex``, ``site`` (or ``siteXacq``), ``split``.

Arrays: ``vbm`` is CAT12's modulated grey-matter map, (1, 121, 145, 121) on the
1.5 mm MNI grid; ``quasiraw`` a minimally processed T1w, (1, 182, 218, 182) on the
1 mm MNI grid. They are memory-mapped (``np.load(mmap_mode="r")``), so only the
requested item is read. Other shapes are accepted (e.g. a miniature test copy);
their affine then spans the same field of view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ._base import (
    SubjectDataset,
    check_files,
    check_header,
    check_on_missing,
    check_shape,
    check_volume,
    drop_missing_labels,
    read_participants,
    report,
    resize,
    resolve_target,
)

SUFFIX = {"vbm": "preproc-cat12vbm_desc-gm_T1w", "quasiraw": "preproc-quasiraw_T1w"}
NATIVE = {  # shape and voxel-to-MNI affine of each modality's grid
    "vbm": ((121, 145, 121), 1.5),
    "quasiraw": ((182, 218, 182), 1.0),
}
SPLITS = {
    "train": ("train", {"train"}),
    "val": ("val", {"val", "internal_test", "external_test"}),
    "internal_test": ("val", {"internal_test"}),
    "external_test": ("val", {"external_test"}),
}
HOW_TO_GET = (
    "vicreg-lab does not download OpenBHB: download it yourself (IEEE DataPort, the "
    "OpenBHB challenge site, or the Hugging Face dataset benoit-dufumier/openBHB) and "
    "point root at it; for a stand-in that needs no download use SyntheticCohort"
)


class OpenBHB(SubjectDataset):
    """The OpenBHB dataset from a local copy (nidl's layout; see the module docstring).

    Parameters
    ----------
    root : str or path-like
        Folder holding ``participants.tsv`` and ``train/``, ``val/``.
    modality : {"vbm", "quasiraw"}
        Grey-matter map (CAT12 VBM) or quasi-raw T1w image.
    split : {"train", "val", "internal_test", "external_test"}
        ``"val"`` is the union of the internal (training sites) and external
        (unseen sites) test sets.
    target : str, list of str or None
        Label column(s) returned with each image (see "Returns").
    shape : tuple of 3 int or None
        If given, volumes are resampled (trilinear, ``torchio.Resample``) onto
        ``shape`` voxels tiling the whole field of view; the voxel size changes.
    on_missing : {"error", "skip"}
        A participant without its ``.npy`` (or without a target value), or a
        subject folder without a participant: raise, or skip with a warning.
    transform : callable or None
        Applied to each image tensor before it is returned.
    check : {"headers", "volumes", "none"}
        Checked when the dataset is opened: every ``.npy`` header (numeric, 3D, at
        most 512^3 voxels, one shape for all when ``shape`` is None), every array in
        full, or nothing (as for :class:`NiftiFolder`).

    Attributes
    ----------
    participants : pandas.DataFrame
        One row per subject of the split.
    files : list of pathlib.Path
        ``files[i]`` is the array of ``participants.iloc[i]``.
    affine : numpy.ndarray
        Voxel-to-MNI (mm) affine of the returned volumes (read from the first).

    Returns
    -------
    ``dataset[i]`` is ``(image, value)`` for one target (a float32 tensor for a
    numeric column such as age, a ``str`` otherwise), ``(image, dict)`` for a list,
    and the dict ``{"image", "participant_id", "age", "sex", "site", "index"}`` for
    ``target=None``. ``image`` is float32 of shape (1, D, H, W).

    Examples
    --------
    >>> from vicreg_lab.data import OpenBHB
    >>> OpenBHB("/nonexistent/openBHB")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: OpenBHB not found at /nonexistent/openBHB: ...
    """

    def __init__(
        self,
        root,
        modality: str = "vbm",
        split: str = "train",
        target: str | list[str] | None = "age",
        shape=None,
        on_missing: str = "error",
        transform=None,
        check: str = "headers",
    ):
        if modality not in SUFFIX:
            raise ValueError(f"modality must be one of {sorted(SUFFIX)}, got {modality!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self.root, self.modality, self.split = Path(root), modality, split
        self.shape, self.on_missing = check_shape(shape), check_on_missing(on_missing)
        self.transform = transform
        folder, labels = SPLITS[split]
        self._dir = self.root / folder / "derivatives"

        source, table = self._read_table(folder)
        if "site" not in table.columns and "siteXacq" in table.columns:
            table["site"] = table["siteXacq"]
        table["participant_id"] = table.participant_id.str.removeprefix("sub-")
        all_ids = set(table.participant_id)
        if "split" in table.columns:
            table = table[table["split"].isin(labels)].reset_index(drop=True)
            if table.empty:
                raise ValueError(f"{source} has no participant with split in {sorted(labels)}")
        self.target = resolve_target(target, table, source)
        table = self._with_files(table, source, all_ids)
        if table.empty:
            raise ValueError(f"no usable subject for split {split!r} under {self.root}")
        self.files = table.pop("_file").tolist()
        table["participant_id"] = "sub-" + table["participant_id"]
        self.participants = table
        self._affine = None
        check_files(self, check, _header_shape)

    def _with_files(self, table, source: str, all_ids: set):
        """The rows whose array exists (missing arrays and orphan folders reported)."""
        if not self._dir.is_dir():
            raise FileNotFoundError(f"OpenBHB images not found: expected {self._dir}; {HOW_TO_GET}")
        table["_file"] = [self._path(i) for i in table.participant_id]
        exists = table["_file"].map(Path.is_file)
        if not exists.all():
            lacking = table.loc[~exists, "_file"].tolist()
            report(
                self.on_missing,
                f"{len(lacking)} participant(s) of {source} have no {self.modality} array, "
                f"e.g. {lacking[:3]}",
            )
        orphans = sorted(
            p.name for p in self._dir.glob("sub-*") if p.name.removeprefix("sub-") not in all_ids
        )
        if orphans:
            report(
                self.on_missing,
                f"{len(orphans)} subject folder(s) in {self._dir} have no row in {source}: "
                f"{orphans[:5]}",
            )
        kept = table[exists].reset_index(drop=True)
        return drop_missing_labels(kept, self.target, self.on_missing, source)

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-MNI (mm) affine of the returned volumes (from the first subject)."""
        if self._affine is None:
            self._affine = self.get_affine(0)
        return self._affine

    def get_affine(self, index: int = 0) -> np.ndarray:
        """4x4 voxel-to-MNI (mm) affine of ``self[index]["image"]``."""
        return self._read(index)[1]

    def _read_table(self, folder: str) -> tuple[Path, pd.DataFrame]:
        candidates = [self.root / folder / "participants.tsv", self.root / "participants.tsv"]
        for path in candidates:
            if path.is_file():
                table = read_participants(path)
                if path == candidates[1] and "split" not in table.columns:
                    raise ValueError(
                        f"{path} needs a 'split' column to select split {self.split!r}"
                    )
                return path, table
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"OpenBHB not found at {self.root}: the folder does not exist; {HOW_TO_GET}"
            )
        raise FileNotFoundError(
            f"OpenBHB not found at {self.root}: expected {candidates[1]} "
            f"(or {candidates[0]}); {HOW_TO_GET}"
        )

    def _path(self, participant: str) -> Path:
        name = f"sub-{participant}_{SUFFIX[self.modality]}.npy"
        return self._dir / f"sub-{participant}" / "ses-1" / name

    def _read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        path = self.files[index]
        _header_shape(path)  # bounded and numeric before any data is read
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        data = check_volume(data, path, squeeze_axis=0)
        return resize(data, _grid_affine(self.modality, data.shape), self.shape)

    def _load(self, index: int) -> torch.Tensor:
        return self._read(index)[0]


def _header_shape(path) -> tuple[int, int, int]:
    """The 3D shape an ``.npy`` header declares (only the header is read)."""
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError / OSError / EOFError for bad files
        reason = "pickled objects, never loaded" if "pickle" in str(exc) else exc
        raise ValueError(f"could not read OpenBHB array {path}: {reason}") from exc
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        raise ValueError(
            f"{path}: expected a numeric array, got {getattr(data, 'dtype', type(data))}"
        )
    return check_header(data.shape, path, squeeze_axis=0)


def _grid_affine(modality: str, shape) -> np.ndarray:
    """Voxel-to-MNI affine of a modality's grid, stretched to ``shape`` (same field of view)."""
    native, voxel = NATIVE[modality]
    spacing = voxel * np.asarray(native, dtype=float) / np.asarray(shape, dtype=float)
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    # MNI grids of FSL/SPM: the first voxel centred at (90, -126, -72) mm, x flipped.
    corner = np.array([90.0, -126.0, -72.0]) + np.array([voxel, -voxel, -voxel]) / 2
    affine[:3, 3] = corner + np.array([-1.0, 1.0, 1.0]) * spacing / 2
    return affine
