"""Checkpoints of a VICReg run: the file, read safely, and what a resumed run must share.

A checkpoint is a dict written by ``torch.save``: the format tag, the estimator's class
name and plain constructor parameters, the input size, the networks' and the optimizer's
state and the history. It is read with ``weights_only=True`` (nothing in it can run
code) and its parameters are bounded before any network is built from them.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vicreg_lab._io import atomic_path
from vicreg_lab.data import image_of

__all__ = [
    "CHECKPOINT_NAME",
    "check_checkpoint_params",
    "checkpoint_lock",
    "load_checkpoint",
    "load_weights",
    "restore",
    "state_of",
]

FORMAT = "vicreg-lab-checkpoint-v1"
CHECKPOINT_NAME = "last.ckpt"
#: Parameters that say where and how a run executes, not what it trains: not saved.
RUNTIME_PARAMS = (
    "device",
    "num_workers",
    "checkpoint_dir",
    "progress",
    "callbacks",
    "sync_batchnorm",
)
#: Bounds a checkpoint's parameters must respect before anything is built from them.
MAX_WIDTH, MAX_INPUT_SIDE = 65536, 1024
# VICRegL's parameters, stored by checkpoints written before VICRegL became a subclass
VICREGL_PARAMS = ("alpha", "num_matches", "l2_all_matches", "local_expander")


def save_state(state: dict, path: Path) -> Path:
    """Write ``state`` to ``path`` atomically (a kill leaves the previous file whole)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a vicreg-lab checkpoint safely (``weights_only=True``) and check its format.

    Nothing in the file can run code; a file that is not a readable checkpoint is
    "corrupt or truncated" (never retried with unsafe loading), and its parameters are
    checked and bounded (:func:`check_checkpoint_params`) before a network is built.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = "not a file torch can read" if not path.is_file() else type(err).__name__
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated, or holds objects a checkpoint "
            f"never holds ({reason}); it was not loaded"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vicreg-lab checkpoint")
    check_checkpoint_params(state, path)
    return state


def check_checkpoint_params(state: dict, where) -> None:
    """Refuse parameters no vicreg-lab run writes (huge widths, odd sizes) before building."""
    params, size = state.get("params"), state.get("input_size")
    if not isinstance(params, dict):
        raise ValueError(f"{where}: the checkpoint has no parameters")
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(isinstance(n, int) and 1 <= n <= MAX_INPUT_SIDE for n in size)
    ):
        raise ValueError(f"{where}: input_size {size!r} is not [D, H, W] of 1-{MAX_INPUT_SIDE}")
    for key in ("expander", "local_expander"):
        spec = params.get(key)
        if spec is None:
            continue
        if isinstance(spec, str) and spec.strip().lower() == "none":
            continue  # no expander
        widths = spec.split("-") if isinstance(spec, str) else spec
        if not isinstance(widths, list) or not 1 <= len(widths) <= 8:
            widths = [None]
        if not all(str(w).isdigit() and 1 <= int(w) <= MAX_WIDTH for w in widths):
            raise ValueError(
                f"{where}: {key} {spec!r} is not 1-8 widths of 1-{MAX_WIDTH} "
                "(e.g. '2048-2048-2048'); refused before building it"
            )


def plain_params(model) -> dict:
    """Constructor parameters that a weights_only checkpoint can hold (no modules, no callables)."""
    params = {}
    for key, value in model.get_params(deep=False).items():
        if key in RUNTIME_PARAMS or value is None:
            continue
        if isinstance(value, (str, int, float)):
            params[key] = value
        elif isinstance(value, (tuple, list)):
            params[key] = list(value)
        elif isinstance(value, dict):
            params[key] = dict(value)
    return params


def differences(state: dict, model) -> list[str]:
    """``name: checkpoint -> this run`` for every setting a resumed run must share."""
    saved, now = dict(state["params"]), plain_params(model)
    found = [
        f"{key}: {saved.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(saved) | set(now))
        if key != "max_epochs" and saved.get(key) != now.get(key)
    ]
    if list(state["input_size"]) != list(model.input_size_):
        found.append(f"input size: {state['input_size']} -> {list(model.input_size_)}")
    items = state.get("n_items")
    if items is not None and items != getattr(model, "n_items_", None):
        found.append(f"number of items: {items} -> {model.n_items_}")
    elif state.get("data") not in (None, getattr(model, "data_fingerprint_", None)):
        found.append(
            f"data: {str(state['data'])[:12]} -> {model.data_fingerprint_} (other subjects)"
        )
    return found


def estimator_of(state: dict) -> tuple[type, dict]:
    """The estimator class a checkpoint was written by, and its constructor parameters."""
    params = dict(state["params"])
    name = state.get("estimator") or ("VICRegL" if params.get("loss") == "vicregl" else "VICReg")
    params.pop("loss", None)
    if name == "VICRegL":
        from vicreg_lab.vicregl import VICRegL

        return VICRegL, params
    if name != "VICReg":
        raise ValueError(f"the checkpoint was written by an unknown estimator {name!r}")
    from vicreg_lab.train import VICReg

    return VICReg, {k: v for k, v in params.items() if k not in VICREGL_PARAMS}


@contextmanager
def checkpoint_lock(folder):
    """Hold ``folder/.lock`` while training into it; clean temporary files left by a kill.

    A second training into the same folder is refused at once (one line naming the
    folder) instead of both writing ``last.ckpt``. ``folder=None``: nothing to lock.
    """
    if folder is None:
        yield
        return
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"{folder} is in use by another training; wait for it or choose another folder"
            ) from None
        for orphan in folder.glob(f".{CHECKPOINT_NAME}.*.tmp*"):  # a write cut by a kill
            orphan.unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fingerprint(data, first) -> str:
    """A short hash of which data a run trains on: the participant ids when the dataset
    has a ``participants`` table, else the first item's volume (what a resume compares)."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    table = getattr(dataset, "participants", None)
    if table is not None and "participant_id" in getattr(table, "columns", ()):
        content = "\n".join(map(str, table["participant_id"])).encode()
    else:
        content = image_of(first).detach().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(content).hexdigest()[:12]


def state_of(model, epochs_done: int) -> dict:
    """What a checkpoint of a fitted estimator holds (see the module's docstring)."""
    networks = {name.rstrip("_"): getattr(model, name).state_dict() for name in model.network_names}
    return {
        "estimator": type(model).__name__,
        "epochs_done": epochs_done,
        "params": plain_params(model),
        "input_size": list(model.input_size_),
        "n_items": getattr(model, "n_items_", None),
        "data": getattr(model, "data_fingerprint_", None),
        **networks,
        "optimizer": model.optimizer_.state_dict(),
        "history": model.history_,
    }


def load_weights(model, state: dict) -> None:
    """Load a checkpoint's networks into a built estimator."""
    for name in model.network_names:
        key = name.rstrip("_")
        if key not in state:
            raise ValueError(f"the checkpoint has no {key} weights for {type(model).__name__}")
        getattr(model, name).load_state_dict(state[key])


def restore(model, force: bool = False) -> int:
    """Continue a built estimator from ``checkpoint_dir/last.ckpt``; returns the epochs done
    (0 without a checkpoint). A checkpoint of another run is refused, naming the fields."""
    if model.checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    path = Path(model.checkpoint_dir) / CHECKPOINT_NAME
    if not path.exists():
        return 0
    state = load_checkpoint(path)
    found = differences(state, model)
    if found and not force:
        raise ValueError(
            f"cannot resume from {path}: this run differs from the checkpoint's in "
            f"{'; '.join(found)} (start a new --out, or resume='force' / "
            "--force-resume to continue anyway)"
        )
    load_weights(model, state)
    model.optimizer_.load_state_dict(state["optimizer"])
    model.history_ = state["history"]
    return int(state["epochs_done"])
