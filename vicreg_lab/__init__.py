"""vicreg-lab: learn VICReg self-supervised learning on 3D brain MRI.

The core's public names are re-exported here (the teaching helpers live in
:mod:`vicreg_lab.lab`), imported lazily (PEP 562), so that
``import vicreg_lab`` stays fast and ``vicreg-lab --help`` does not load torch,
TorchIO or nilearn.

Examples
--------
>>> import torch
>>> from vicreg_lab import VICRegLoss
>>> out = VICRegLoss()(torch.randn(8, 16), torch.randn(8, 16))
>>> sorted(out)
['covariance', 'invariance', 'loss', 'variance']
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "VICRegLoss": "vicreg_lab.losses",
    "vicreg_loss": "vicreg_lab.losses",
    "rankme": "vicreg_lab.diagnostics",
    "collapse_report": "vicreg_lab.diagnostics",
    "SyntheticCohort": "vicreg_lab.data",
    "NiftiFolder": "vicreg_lab.data",
    "OpenBHB": "vicreg_lab.data",
    "SimCLRTransform": "vicreg_lab.data.torchio_views",
    "TwoViewsCollate": "vicreg_lab.data.collate",
    "BatchedAugment": "vicreg_lab.augment",
    "get_profile": "vicreg_lab.profiles",
    "VICReg": "vicreg_lab.train",
    "build_encoder": "vicreg_lab.models",
    "build_expander": "vicreg_lab.models",
    "probe_table": "vicreg_lab.probes",
    "embeddings_with_baselines": "vicreg_lab.baselines",
    "latent_table": "vicreg_lab.baselines",
    "load_pretrained": "vicreg_lab.pretrained",
    "VICRegL": "vicreg_lab.vicregl",
    "VICRegLLoss": "vicreg_lab.vicregl",
    "vicregl_loss": "vicreg_lab.vicregl",
    "build_local_expander": "vicreg_lab.models",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vicreg_lab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__():
    return __all__
