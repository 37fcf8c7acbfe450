"""Interactive panels for notebooks (ipywidgets)."""

from __future__ import annotations

import html
import io
import numbers
import time

import ipywidgets as widgets
import torch

from vicreg_lab.augment import LIMITS, AugmentParams, BatchedAugment
from vicreg_lab.data.checks import check_tensor_volume
from vicreg_lab.data.torchio_views import SimCLRTransform
from vicreg_lab.lab.ablation import (
    AblationResult,
    AblationSettings,
    RunResult,
    ablation_settings,
    check_configs,
    config_name,
    run_ablation,
)
from vicreg_lab.lab.plots import VERDICT_COLORS, plot_ablation

# slider name -> (label, min, max, step); each min/max lies within AugmentParams' limits
SLIDERS = {
    "crop_scale_min": ("crop min", 0.05, 1.0, 0.05),
    "flip_prob": ("flip prob", 0.0, 1.0, 0.05),
    "rotation_degrees": ("rotation °", 0.0, 90.0, 1.0),
    "blur_sigma_max": ("blur σ max", 0.0, 3.0, 0.1),
    "noise_std_max": ("noise std max", 0.0, 0.3, 0.01),
    "gamma_max": ("|log γ| max", 0.0, 1.0, 0.05),
    "bias_field": ("bias field", 0.0, 1.0, 0.05),
    "p_blur": ("p blur", 0.0, 1.0, 0.05),
    "p_noise": ("p noise", 0.0, 1.0, 0.05),
    "p_intensity": ("p intensity", 0.0, 1.0, 0.05),
}
#: flip-axis toggle labels, in axis order (D, H, W of an RAS+ / MNI-oriented volume)
FLIP_AXES = ("left-right", "front-back", "up-down")
_PREVIEW_SIDE = 64  # default output: the volume's shape scaled to at most this side


class _Panel:
    """What the panels share: notebook display, and the last figure shown as a PNG."""

    def display(self) -> None:
        """Show the panel in a notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.display()

    def _show(self, figure) -> None:
        self.figure = figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=72)
        self.image.value = buffer.getvalue()


class AugmentationPanel(_Panel):
    """Sliders for the augmentation strengths and two live views of one volume.

    Moving a slider redraws the same random sample with the new strengths; "New sample"
    draws the next one. Sliders report only when released, so the panel stays responsive
    on Binder.

    Parameters
    ----------
    volume : torch.Tensor
        Floating-point volume (1, D, H, W) or (D, H, W).
    transform_cls : {SimCLRTransform, BatchedAugment, "torchio", "batched"}
        Which pipeline draws the views.
    input_size : int or tuple of int, optional
        Size of the views; default the volume's shape, scaled to a longest side of at most 64.
    seed : int, default=0
        Seed of the first sample; sample ``k`` uses ``seed + k``.

    Attributes
    ----------
    sliders, flip_axes, button, image, widget
        One slider per knob (:data:`SLIDERS`), the flip-axis choice (:data:`FLIP_AXES`),
        "New sample", the last figure's PNG, and the panel; CSS classes
        ``vicreg-augment-panel``, ``vicreg-augment-new-sample`` and ``vicreg-augment-views``
        mark the panel, the button and the image for styling and browser tests.
    params, transform, views, figure, n_redraws
        The sliders' AugmentParams, the transform that drew the last two views (1, D, H, W),
        the last figure, how many times the views were drawn.

    Examples
    --------
    >>> panel = AugmentationPanel(torch.rand(1, 24, 24, 24), input_size=16)
    >>> panel.sliders["crop_scale_min"].value = 0.9
    >>> panel.transform.params.crop_scale, panel.n_redraws
    ((0.9, 1.0), 2)
    """

    def __init__(self, volume, transform_cls=SimCLRTransform, input_size=None, seed: int = 0):
        if not isinstance(volume, torch.Tensor) and hasattr(volume, "__array__"):
            volume = torch.as_tensor(volume)
        if isinstance(volume, torch.Tensor) and volume.ndim == 3:
            volume = volume[None]
        check_tensor_volume(volume, 4, "AugmentationPanel")
        self.volume = volume.detach().float().cpu()
        self.transform_cls = _transform_class(transform_cls)
        if input_size is None:
            shape = self.volume.shape[1:]
            scale = min(1.0, _PREVIEW_SIDE / max(shape))  # shrink large volumes, never enlarge
            input_size = tuple(max(2, round(s * scale)) for s in shape)
        self.input_size = input_size
        self.seed = int(seed)
        self.sample = 0
        self.n_redraws = 0
        self.params = AugmentParams()
        self.sliders = {
            name: widgets.FloatSlider(
                value=_slider_value(self.params, name),
                min=lo,
                max=hi,
                step=step,
                description=label,
                continuous_update=False,
                readout_format=".2f",
                style={"description_width": "110px"},
            )
            for name, (label, lo, hi, step) in SLIDERS.items()
        }
        self.flip_axes = widgets.SelectMultiple(
            options=FLIP_AXES,
            value=[FLIP_AXES[a] for a in self.params.flip_axes],
            description="flip axes",
            rows=3,
            style={"description_width": "110px"},
        )
        self.button = widgets.Button(description="New sample", icon="refresh")
        self.image = widgets.Image(format="png")
        for slider in self.sliders.values():
            slider.observe(self._on_slider, names="value")
        self.flip_axes.observe(self._on_slider, names="value")
        self.button.on_click(self._on_click)
        boxes = list(self.sliders.values())
        half = (len(boxes) + 1) // 2
        columns = [widgets.VBox(boxes[:half]), widgets.VBox([*boxes[half:], self.flip_axes])]
        controls = widgets.HBox(columns)
        self.widget = widgets.VBox([controls, self.button, self.image])
        self.widget.add_class("vicreg-augment-panel")
        self.button.add_class("vicreg-augment-new-sample")
        self.image.add_class("vicreg-augment-views")
        self.redraw()

    def redraw(self) -> None:
        """Draw two views with the current sliders and sample, and show them."""
        from vicreg_lab.lab.plots import plot_views

        self.transform = self.transform_cls(
            input_size=self.input_size, seed=self.seed + self.sample, **self.params.as_dict()
        )
        if isinstance(self.transform, BatchedAugment):
            v1, v2, _, _ = self.transform.two_views(self.volume[None])
            self.views = (v1[0], v2[0])
        else:
            self.views = (self.transform(self.volume), self.transform(self.volume))
        name = type(self.transform).__name__
        self._show(plot_views(self.volume, *self.views, title=f"{name}, sample {self.sample}"))
        self.n_redraws += 1

    def _on_slider(self, change) -> None:
        values = {n: s.value for n, s in self.sliders.items()}
        values["flip_axes"] = tuple(FLIP_AXES.index(a) for a in self.flip_axes.value)
        self.params = _params_from(self.params, values)
        self.redraw()

    def _on_click(self, _button) -> None:
        self.sample += 1
        self.redraw()


def _transform_class(transform_cls):
    choices = {"torchio": SimCLRTransform, "batched": BatchedAugment}
    choices.update({SimCLRTransform: SimCLRTransform, BatchedAugment: BatchedAugment})
    try:
        return choices[transform_cls]
    except (KeyError, TypeError):
        raise ValueError(
            "transform_cls must be SimCLRTransform, BatchedAugment, 'torchio' or 'batched', "
            f"got {transform_cls!r}"
        ) from None


def _slider_value(params: AugmentParams, name: str) -> float:
    values = {
        "crop_scale_min": params.crop_scale[0],
        "blur_sigma_max": params.blur_sigma[1],
        "noise_std_max": params.noise_std[1],
        "gamma_max": max(abs(g) for g in params.gamma),
    }
    return values.get(name, getattr(params, name, None))


def _params_from(params: AugmentParams, values: dict) -> AugmentParams:
    """New params from slider values (range maxima keep their lower ends when possible)."""
    crop_hi = max(params.crop_scale[1], values["crop_scale_min"])
    blur, noise = values["blur_sigma_max"], values["noise_std_max"]
    changes = {
        "crop_scale": (values["crop_scale_min"], crop_hi),
        "blur_sigma": (min(params.blur_sigma[0], blur), blur),
        "noise_std": (min(params.noise_std[0], noise), noise),
        "gamma": (-values["gamma_max"], values["gamma_max"]),
    }
    changes.update({k: v for k, v in values.items() if k in LIMITS or k == "flip_axes"})
    return params.replace(**changes)


# ---------------------------------------------------------------- loss weights

# slider key -> (description, train_toy keyword, standard value of the paper)
LOSS_WEIGHTS = {
    "inv": ("invariance", "inv_coeff", 25.0),
    "var": ("variance", "var_coeff", 25.0),
    "cov": ("covariance", "cov_coeff", 1.0),
}
WEIGHT_EXPONENTS = (-3.0, 2.0)  # the sliders span 10^-3 .. 10^2


class LossWeightsPanel(_Panel):
    """Sliders for the three VICReg loss weights, on a toy problem that trains in a second.

    Releasing a slider retrains the toy MLP of :mod:`vicreg_lab.lab.toy` from the same seed,
    then shows the loss terms, the embeddings, their spread per principal axis, and the
    verdict of ``collapse_report(embeddings, target_std=1.0)`` (the std the variance term
    asks for). A variance weight near 0 collapses the embeddings to a point; a covariance
    weight near 0 flattens them onto a few directions.

    Parameters
    ----------
    inv_coeff, var_coeff, cov_coeff : float, default=25, 25, 1
        Starting weights, within ``[1e-3, 1e2]`` (the sliders are logarithmic).
    steps, n, seed, lr
        Of every run (:func:`vicreg_lab.lab.toy.train_toy`): only the weights change.

    Attributes
    ----------
    sliders : dict of str to ipywidgets.FloatLogSlider
        Keys ``"inv"``, ``"var"``, ``"cov"`` (CSS classes ``vicreg-loss-inv`` etc.).
    reset_button, readout, image, widget
        Back to 25 / 25 / 1 (``vicreg-loss-reset``); the weights, final terms and verdict
        (``vicreg-loss-readout``, the verdict a ``span.vicreg-loss-verdict`` whose
        ``data-verdict`` is e.g. ``complete-collapse``); the figure's PNG
        (``vicreg-loss-figure``); the panel (``vicreg-loss-panel``).
    run, report, figure, n_updates, seconds
        The last :func:`~vicreg_lab.lab.toy.train_toy` result, its CollapseReport and
        figure, how many runs were trained, the last update's wall time.

    Examples
    --------
    >>> panel = LossWeightsPanel(steps=100)
    >>> panel.sliders["var"].value = 0.001  # releasing a slider retrains
    >>> panel.n_updates, panel.report.verdict
    (2, 'complete collapse')
    """

    def __init__(
        self,
        inv_coeff: float = 25.0,
        var_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        steps: int = 200,
        n: int = 512,
        seed: int = 0,
        lr: float = 3e-3,
    ):
        start = {"inv": inv_coeff, "var": var_coeff, "cov": cov_coeff}
        for key, value in start.items():
            _check_weight(LOSS_WEIGHTS[key][1], value)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an int >= 2, got {n!r}")
        self.steps, self.n, self.seed, self.lr = steps, n, int(seed), lr
        self.n_updates = 0
        self._hold = False
        self._build_widgets(start)
        self.update()

    def _build_widgets(self, start: dict) -> None:
        self.sliders = {
            key: weight_slider(label, start[key], WEIGHT_EXPONENTS, step=0.1)
            for key, (label, _, _) in LOSS_WEIGHTS.items()
        }
        for key, slider in self.sliders.items():
            slider.add_class(f"vicreg-loss-{key}")
            slider.observe(self._on_slider, names="value")
        self.reset_button = widgets.Button(description="Paper: 25 / 25 / 1", icon="undo")
        self.reset_button.add_class("vicreg-loss-reset")
        self.reset_button.on_click(self._on_reset)
        self.readout = widgets.HTML().add_class("vicreg-loss-readout")
        self.image = widgets.Image(format="png").add_class("vicreg-loss-figure")
        controls = widgets.HBox([widgets.VBox(list(self.sliders.values())), self.reset_button])
        self.widget = widgets.VBox([controls, self.readout, self.image])
        self.widget.add_class("vicreg-loss-panel")

    @property
    def weights(self) -> dict:
        """The slider values as :func:`vicreg_lab.lab.toy.train_toy` keywords."""
        return {LOSS_WEIGHTS[key][1]: float(s.value) for key, s in self.sliders.items()}

    def set_weights(self, inv=None, var=None, cov=None) -> None:
        """Move several sliders at once, then retrain once (``None`` leaves a slider)."""
        values = {"inv": inv, "var": var, "cov": cov}
        for key, value in values.items():
            if value is not None:
                _check_weight(LOSS_WEIGHTS[key][1], value)
        self._hold = True
        try:
            for key, value in values.items():
                if value is not None:
                    self.sliders[key].value = value
        finally:
            self._hold = False
        self.update()

    def update(self) -> None:
        """Train the toy problem with the current weights and show the result."""
        import time

        from vicreg_lab.diagnostics import collapse_report
        from vicreg_lab.lab.toy import plot_toy_run, train_toy

        tick = time.perf_counter()
        self.readout.value = f"<i>training with {_weights_text(self.weights)} ...</i>"
        self.run = train_toy(**self.weights, steps=self.steps, n=self.n, seed=self.seed, lr=self.lr)
        self.report = collapse_report(self.run["embeddings"], target_std=1.0)  # gamma = 1
        self._show(plot_toy_run(self.run, title=_weights_text(self.weights)))
        self.n_updates += 1
        self.seconds = time.perf_counter() - tick
        self.readout.value = _readout_html(self.weights, self.run["history"], self.report)

    def _on_slider(self, change) -> None:
        if not self._hold:
            self._safe_update()

    def _on_reset(self, _button) -> None:
        self.set_weights(**{key: standard for key, (_, _, standard) in LOSS_WEIGHTS.items()})

    def _safe_update(self) -> None:
        """Update from a widget callback: an error shows in the readout instead of being lost."""
        try:
            self.update()
        except (ValueError, FloatingPointError, RuntimeError) as error:
            self.readout.value = f"<b>training failed:</b> {html.escape(str(error))}"


def weight_slider(label: str, value: float, exponents, step: float) -> widgets.FloatLogSlider:
    """A loss-weight slider from ``10**exponents[0]`` to ``10**exponents[1]``, read on release."""
    lo, hi = exponents
    return widgets.FloatLogSlider(
        value=value,
        base=10,
        min=lo,
        max=hi,
        step=step,
        description=label,
        continuous_update=False,
        readout_format=".3g",
        style={"description_width": "80px"},
    )


def _check_weight(name: str, value) -> None:
    lo, hi = (10.0**e for e in WEIGHT_EXPONENTS)
    if not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(
            f"{name} must be a number in [{lo:g}, {hi:g}] (the sliders are logarithmic), "
            f"got {value!r}"
        )


def _weights_text(weights: dict) -> str:
    return "inv {inv_coeff:.3g} · var {var_coeff:.3g} · cov {cov_coeff:.3g}".format(**weights)


def _readout_html(weights: dict, history: dict, report) -> str:
    """The readout: weights, final unweighted terms, and the collapse verdict."""
    terms = ", ".join(f"{term} {history[term][-1]:.4g}" for term, _, _ in LOSS_WEIGHTS.values())
    colour = VERDICT_COLORS.get(report.verdict, "black")
    verdict = (
        f'<span class="vicreg-loss-verdict" data-verdict="{report.verdict.replace(" ", "-")}" '
        f'style="color:{colour}"><b>{report.verdict}</b></span>'
    )
    return (
        f"<b>weights</b> {_weights_text(weights)}<br>"
        f"<b>after {len(history['step'])} steps</b> (unweighted): {terms}<br>"
        f"<b>verdict</b>: {verdict} (mean std {report.mean_std:.3g}, "
        f"RankMe {report.rankme:.3g} of {min(report.n_samples - 1, report.n_dims)})"
    )


# ---------------------------------------------------------------- the ablation

_ABLATION_EXPONENTS = (-2.0, 2.0)  # the sliders span 10^-2 .. 10^2; a checkbox switches off
_ABLATION_TERMS = {"inv": "invariance", "var": "variance", "cov": "covariance"}


class AblationPanel:
    """Sliders for the three loss weights; "Train" runs (or loads) one short ablation run.

    A run is sized (:func:`~vicreg_lab.lab.ablation.ablation_settings`) and cached like the
    sweep's, so a configuration already trained shows at once, beside the sweep's runs
    (:func:`~vicreg_lab.lab.plots.plot_ablation`).

    Parameters
    ----------
    dataset, eval_dataset : Dataset
        As for :func:`~vicreg_lab.lab.ablation.run_ablation`.
    sweep : AblationResult, optional
        Precomputed runs: listed in a drop-down and drawn beside the new run.
    settings : AblationSettings, optional
        Default ``ablation_settings(profile)``.
    cache, seed
        As for :func:`~vicreg_lab.lab.ablation.run_ablation`.
    weights : tuple of 3 float, default=(25, 25, 1)
        Starting (inv, var, cov); 0 switches a term off.

    Attributes
    ----------
    sliders, enabled : dict of str to widget
        Per term (``"inv"``, ``"var"``, ``"cov"``): a log slider from 0.01 to 100, and a
        checkbox (unticked: weight 0).
    presets, button, readout, image, widget
        The sweep's drop-down, "Train", the last run's numbers, its figure (PNG), the panel.
    run, figure, n_runs, seconds
        The last run and figure, how many runs were shown, the last click's wall time.

    Examples
    --------
    >>> panel = AblationPanel(train, held_out, sweep=sweep)  # doctest: +SKIP
    >>> panel.set_weights(var=0)      # untick the variance term  # doctest: +SKIP
    >>> panel.button.click()          # what "Train" does          # doctest: +SKIP
    >>> panel.run.verdict                                    # doctest: +SKIP
    'complete collapse'
    """

    def __init__(
        self,
        dataset,
        eval_dataset=None,
        sweep: AblationResult | None = None,
        settings: AblationSettings | None = None,
        profile=None,
        cache=True,
        seed: int = 0,
        weights: tuple[float, float, float] = (25.0, 25.0, 1.0),
    ):
        check_configs({"weights": weights})
        _check_panel_weights(dict(zip(_ABLATION_TERMS, weights, strict=True)))
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.sweep = sweep if sweep is not None else AblationResult({})
        self.settings = settings or ablation_settings(profile)
        self.cache, self.seed = cache, int(seed)
        self.n_runs = 0
        self.run = None
        self._build_widgets(dict(zip(_ABLATION_TERMS, weights, strict=True)))
        self.readout.value = (
            f"<i>{self.settings.steps} steps per run at {self.settings.shape}; "
            "press Train (a cached configuration shows at once)</i>"
        )

    def _build_widgets(self, start: dict) -> None:
        self.sliders, self.enabled = {}, {}
        for key, label in _ABLATION_TERMS.items():
            value = start[key] if start[key] > 0 else 1.0
            self.sliders[key] = weight_slider(label, value, _ABLATION_EXPONENTS, step=0.05)
            self.enabled[key] = widgets.Checkbox(
                value=start[key] > 0, description="on", indent=False
            )
        options = [("(choose a precomputed run)", None)] + [
            (f"{name}: {config_name(r.inv, r.var, r.cov)}", name)
            for name, r in self.sweep.runs.items()
        ]
        self.presets = widgets.Dropdown(options=options, value=None, description="sweep")
        self.presets.observe(self._on_preset, names="value")
        self.button = widgets.Button(description="Train", icon="play", button_style="primary")
        self.button.on_click(self._on_click)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        rows = [widgets.HBox([self.sliders[k], self.enabled[k]]) for k in _ABLATION_TERMS]
        self.widget = widgets.VBox([*rows, widgets.HBox([self.presets, self.button])])
        self.widget.children += (self.readout, self.image)

    @property
    def weights(self) -> tuple[float, float, float]:
        """(inv, var, cov) from the sliders, to 3 significant digits; 0 when unticked."""
        return tuple(
            float(f"{self.sliders[k].value:.3g}") if self.enabled[k].value else 0.0
            for k in _ABLATION_TERMS
        )

    def set_weights(self, inv=None, var=None, cov=None) -> None:
        """Move sliders without training (``0`` unticks a term, ``None`` leaves it)."""
        values = {"inv": inv, "var": var, "cov": cov}
        _check_panel_weights(values)
        for key, value in values.items():
            if value is None:
                continue
            self.enabled[key].value = value > 0
            if value > 0:
                self.sliders[key].value = value

    def train(self) -> RunResult:
        """Run (or load from the cache) the current configuration and show it."""
        tick = time.perf_counter()
        weights = self.weights
        name = self._name_of(weights)
        self.readout.value = f"<i>training {html.escape(name)} ...</i>"
        result = run_ablation(
            {name: weights},
            self.dataset,
            self.eval_dataset,
            settings=self.settings,
            cache=self.cache,
            seed=self.seed,
        )
        self.run = result[name]
        shown = self.sweep.with_run(self.run)
        self.figure = plot_ablation(shown, title=f"{name}: {config_name(*weights)}")
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=72)
        self.image.value = buffer.getvalue()
        self.n_runs += 1
        self.seconds = time.perf_counter() - tick
        self.readout.value = _ablation_readout_html(self.run, self.seconds)
        return self.run

    def display(self) -> None:
        """Show the panel in a notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.display()

    def _name_of(self, weights) -> str:
        for name, run in self.sweep.runs.items():
            if (run.inv, run.var, run.cov) == weights and run.kind == "short run":
                return name
        return config_name(*weights)

    def _on_click(self, _button) -> None:
        try:
            self.train()
        except (ValueError, FloatingPointError, RuntimeError) as error:
            self.readout.value = f"<b>training failed:</b> {html.escape(str(error))}"

    def _on_preset(self, change) -> None:
        if change["new"] is None:
            return
        run = self.sweep[change["new"]]
        self.set_weights(inv=run.inv, var=run.var, cov=run.cov)
        self._on_click(None)


def _check_panel_weights(values: dict) -> None:
    """Each weight is None (unchanged), 0 (off) or within the sliders' range."""
    lo, hi = (10**e for e in _ABLATION_EXPONENTS)
    for key, value in values.items():
        ok = value is None or (
            isinstance(value, numbers.Real) and (value == 0 or lo <= value <= hi)
        )
        if not ok:
            raise ValueError(
                f"{_ABLATION_TERMS[key]} weight must be 0 (off) or in [{lo:g}, {hi:g}], "
                f"got {value!r}"
            )


def _ablation_readout_html(run: RunResult, seconds: float) -> str:
    row = run.row()
    colour = VERDICT_COLORS.get(row["verdict"], VERDICT_COLORS["complete collapse"])
    source = "loaded from the cache" if run.cached else f"trained in {row['train_seconds']:.0f} s"
    return (
        f"<b>{html.escape(run.name)}</b> ({config_name(run.inv, run.var, run.cov)}), "
        f"{row['steps']} steps, {source}; shown in {seconds:.1f} s<br>"
        f"expander std {row['exp_std']:.3g} · representation RankMe {row['rep_rankme']:.3g} "
        f"of {row['rep_rankme_max']} · age R² {row['age_r2']:.2f}<br>"
        f'<b>verdict</b>: <span style="color:{colour}"><b>{row["verdict"]}</b></span>'
    )
