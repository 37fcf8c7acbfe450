"""Everything a notebook needs beyond the core: plots, widgets, experiments, readings.

The core (``vicreg_lab``: the loss, the encoders, the augmentations, the estimator, the
diagnostics and the probes) is what VICReg *is*; this package is how the course *shows*
it. A notebook imports from exactly two places::

    from vicreg_lab import VICReg, SyntheticCohort           # the core
    from vicreg_lab.lab import plot_loss_terms, run_ablation  # the teaching helpers

Names are imported lazily (PEP 562), so ``import vicreg_lab.lab`` loads neither
matplotlib nor ipywidgets until a name that needs them is used.
"""

from importlib import import_module

# public name -> module that defines it
_EXPORTS = {
    # figures
    "GALLERY": "vicreg_lab.lab.plots",
    "plot_age_by_site": "vicreg_lab.lab.plots",
    "plot_augmentation_gallery": "vicreg_lab.lab.plots",
    "plot_cohort_grid": "vicreg_lab.lab.plots",
    "plot_collapse_history": "vicreg_lab.lab.plots",
    "plot_collapse_reports": "vicreg_lab.lab.plots",
    "plot_factors": "vicreg_lab.lab.plots",
    "plot_loss_terms": "vicreg_lab.lab.plots",
    "plot_probe_errors": "vicreg_lab.lab.plots",
    "plot_rankme_against_probe": "vicreg_lab.lab.plots",
    "plot_spectrum": "vicreg_lab.lab.plots",
    "plot_subject": "vicreg_lab.lab.plots",
    "plot_umap": "vicreg_lab.lab.plots",
    "plot_views": "vicreg_lab.lab.plots",
    "plot_cell_map": "vicreg_lab.dense",
    "plot_location_matches": "vicreg_lab.dense",
    "plot_occlusion": "vicreg_lab.saliency",
    # widgets and training callbacks
    "AugmentationPanel": "vicreg_lab.lab.widgets",
    "LossWeightsPanel": "vicreg_lab.lab.widgets",
    "AblationPanel": "vicreg_lab.lab.widgets",
    "LiveLossPlot": "vicreg_lab.lab.callbacks",
    "InterruptAfter": "vicreg_lab.lab.callbacks",
    "SimulatedInterruption": "vicreg_lab.lab.callbacks",
    # experiments
    "DEFAULT_CONFIGS": "vicreg_lab.lab.ablation",
    "PAPER_TABLE7": "vicreg_lab.lab.ablation",
    "ablation_settings": "vicreg_lab.lab.ablation",
    "cached_sweep": "vicreg_lab.lab.ablation",
    "compare_with_paper": "vicreg_lab.lab.ablation",
    "evaluate_model": "vicreg_lab.lab.ablation",
    "paper_findings": "vicreg_lab.lab.ablation",
    "plot_ablation": "vicreg_lab.lab.plots",
    "run_ablation": "vicreg_lab.lab.ablation",
    "train_toy": "vicreg_lab.lab.toy",
    "plot_toy_run": "vicreg_lab.lab.toy",
    "cached_results": "vicreg_lab.pretrained",
    # VICReg's peers on the same harness
    "BarlowTwins": "vicreg_lab.peers",
    "SimCLR": "vicreg_lab.peers",
    "barlow_twins_loss": "vicreg_lab.peers",
    "info_nce_loss": "vicreg_lab.peers",
    "OBJECTIVES": "vicreg_lab.lab.objectives",
    "PAPER_EXPANDER_WIDTH": "vicreg_lab.lab.objectives",
    "compare_objectives": "vicreg_lab.lab.objectives",
    "rankme_against_probe": "vicreg_lab.lab.objectives",
    # confounds: unseen scanners, ComBat
    "PROTOCOLS": "vicreg_lab.lab.confounds",
    "combat": "vicreg_lab.lab.confounds",
    "confound_table": "vicreg_lab.lab.confounds",
    "read_confounds": "vicreg_lab.lab.confounds",
    "read_invariance": "vicreg_lab.lab.confounds",
    # exercises
    "self_check": "vicreg_lab.lab.selfcheck",
    # readings of results
    "read_probes": "vicreg_lab.lab.report",
    "seed_summary": "vicreg_lab.lab.report",
    "compare_seeds": "vicreg_lab.lab.report",
    # beyond the core: augmentation knobs, baselines, local features, saliency, files
    "AugmentParams": "vicreg_lab.augment",
    "view_distance_ratio": "vicreg_lab.lab.view_distance",
    "Effects": "vicreg_lab.data",
    "raw_voxel_features": "vicreg_lab.baselines",
    "intensity_histogram_features": "vicreg_lab.baselines",
    "recalibrate_batchnorm": "vicreg_lab.probes",
    "encode": "vicreg_lab.probes",
    "count_parameters": "vicreg_lab.models",
    "feature_locations": "vicreg_lab.vicregl",
    "cell_average": "vicreg_lab.dense",
    "dense_probe": "vicreg_lab.dense",
    "feature_maps": "vicreg_lab.dense",
    "occlusion_sensitivity": "vicreg_lab.saliency",
    "ridge_direction": "vicreg_lab.saliency",
    "to_nifti": "vicreg_lab.saliency",
    "load_checkpoint": "vicreg_lab.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vicreg_lab.lab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__():
    return __all__
