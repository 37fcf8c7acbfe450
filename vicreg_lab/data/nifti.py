"""A BIDS-like folder of NIfTI volumes with a ``participants.tsv`` of labels.

Layout (what :meth:`SyntheticCohort.to_bids` writes)::

    root/
      participants.tsv              participant_id, age, sex, site, ... (tab-separated)
      sub-0000/anat/sub-0000_T1w.nii.gz
      sub-0001/anat/sub-0001_T1w.nii.gz
      ...

Images are found with a glob pattern and matched to rows of ``participants.tsv``
by the ``sub-<label>`` at the start of their file name, never by listing order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
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

_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)")


def _unreadable(path, exc: Exception) -> ValueError:
    return ValueError(f"could not read NIfTI file {path}: {exc or type(exc).__name__}")


def header_shape(path) -> tuple[int, int, int]:
    """The 3D shape a NIfTI file's header declares, or a ``ValueError`` naming the file.

    Only the header is read. Refused: an unreadable header, more than three axes
    (a fourth of length 1 is allowed), more than 512^3 voxels.
    """
    import nibabel as nib

    try:
        shape = nib.load(path).header.get_data_shape()
    except Exception as exc:  # nibabel and gzip raise many types
        raise _unreadable(path, exc) from exc
    return check_header(shape, path, squeeze_axis=-1)


class NiftiFolder(SubjectDataset):
    """Subjects of a BIDS-like folder: one NIfTI volume each, labels in ``participants.tsv``.

    Parameters
    ----------
    root : str or path-like
        The folder holding ``participants.tsv`` and the images.
    target : str, list of str or None
        Label column(s) returned with each image (see "Returns").
    shape : tuple of 3 int or None
        Every volume is brought to this shape by ``torchio.Resample`` (trilinear)
        onto ``shape`` voxels tiling the file's whole field of view (what
        ``torchio.Resize`` does, without its off-by-one rounding): the voxel size
        changes and may become anisotropic; nothing is cropped or padded. A volume
        that already has ``shape`` is left untouched. ``None`` keeps each file's shape
        (then all files must share it to be batched).
    pattern : str
        Glob pattern, relative to ``root``, of the image files. Each file name must
        start with ``sub-<label>``, matching a ``participant_id`` in the table
        (``participant_id`` values without the ``sub-`` prefix are given it).
    on_missing : {"error", "skip"}
        What to do with a participant without an image, an image without a
        participant, or a participant without a target value: raise a
        ``ValueError``, or leave them out with a warning.
    transform : callable or None
        Applied to each image tensor before it is returned.
    check : {"headers", "volumes", "none"}
        What is checked when the folder is opened, before any training: every file's
        header (fast: readable, 3D, at most 512^3 voxels, and one shape
        for all when ``shape`` is None), every volume in full (also finite and not
        empty: reads all the data once), or nothing (each file is checked when loaded).

    Attributes
    ----------
    participants : pandas.DataFrame
        One row per usable subject, in ``participants.tsv`` order.
    files : list of pathlib.Path
        ``files[i]`` is the image of ``participants.iloc[i]``.

    Returns
    -------
    ``folder[i]`` is a dict ``{"image", "participant_id", ...labels, "index"}`` when
    ``target`` is None, else ``(image, value)`` (a float32 tensor for a numeric
    column, a ``str`` otherwise; a dict of those for a list of columns). ``image``
    is float32 of shape (1, D, H, W), in the file's own intensity units.

    Raises
    ------
    FileNotFoundError
        If ``root`` or ``participants.tsv`` does not exist.
    ValueError
        For a missing target column, ambiguous or unmatched files (with
        ``on_missing="error"``), and, when an item is loaded, an unreadable, non-3D,
        non-finite or empty volume (the message names the file); with ``check``,
        these are raised when the folder is opened.

    Examples
    --------
    >>> import tempfile
    >>> from vicreg_lab.data import NiftiFolder, SyntheticCohort
    >>> root = SyntheticCohort(4, shape=(24, 24, 24)).to_bids(tempfile.mkdtemp())
    >>> folder = NiftiFolder(root, target="age", shape=(16, 16, 16))
    >>> image, age = folder[0]
    >>> tuple(image.shape), round(float(age), 1) == float(folder.participants.age[0])
    ((1, 16, 16, 16), True)
    """

    def __init__(
        self,
        root,
        target: str | list[str] | None = None,
        shape=(64, 64, 64),
        pattern: str = "sub-*/anat/sub-*_T1w.nii*",
        on_missing: str = "error",
        transform=None,
        check: str = "headers",
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"NiftiFolder root is not a directory: {self.root}")
        self.shape = check_shape(shape)
        self.pattern, self.on_missing = pattern, check_on_missing(on_missing)
        self.transform = transform
        source = self.root / "participants.tsv"
        table = read_participants(source)
        table["participant_id"] = [
            p if p.startswith("sub-") else f"sub-{p}" for p in table.participant_id
        ]
        self.target = resolve_target(target, table, source)

        files = self._find_files()
        orphans = sorted(set(files) - set(table.participant_id))
        if orphans:
            report(
                on_missing,
                f"{len(orphans)} image(s) under {self.root} have no row in {source}: "
                f"{[str(files[o]) for o in orphans[:5]]}",
            )
        has_image = table.participant_id.isin(files)
        if not has_image.all():
            lacking = table.participant_id[~has_image].tolist()
            report(
                on_missing,
                f"{len(lacking)} participant(s) in {source} have no image matching "
                f"{pattern!r} under {self.root}: {lacking[:5]}",
            )
        table = table[has_image].reset_index(drop=True)
        self.participants = drop_missing_labels(table, self.target, on_missing, source)
        if self.participants.empty:
            raise ValueError(f"no usable subject in {self.root} (pattern {pattern!r})")
        self.files = [files[p] for p in self.participants.participant_id]
        check_files(self, check, header_shape)

    def _find_files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in sorted(self.root.glob(self.pattern)):
            match = _SUBJECT.match(path.name)
            if match is None:
                raise ValueError(
                    f"{path} matches pattern {self.pattern!r} but its name does not start "
                    "with 'sub-<label>', so it cannot be matched to a participant"
                )
            subject = match.group(1)
            if subject in files:
                raise ValueError(
                    f"two images match pattern {self.pattern!r} for {subject}: "
                    f"{files[subject]} and {path}; make the pattern more specific"
                )
            files[subject] = path
        return files

    def _read(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        import nibabel as nib

        path = self.files[index]
        header_shape(path)  # bounded before any data is read
        try:
            image = nib.load(path)
            data = image.get_fdata(dtype=np.float32)
        except Exception as exc:  # nibabel, gzip and zlib raise many types
            raise _unreadable(path, exc) from exc
        data = check_volume(data, path, squeeze_axis=-1)
        return resize(data, image.affine, self.shape)

    def _load(self, index: int) -> torch.Tensor:
        return self._read(index)[0]

    def get_affine(self, index: int = 0) -> np.ndarray:
        """4x4 voxel-to-world (mm) affine of ``self[index]["image"]`` (after resizing)."""
        return self._read(index)[1]
