"""Interactive panels for notebooks (ipywidgets)."""

from __future__ import annotations

import io

import ipywidgets as widgets
import torch

from .augment import AugmentParams, BatchedAugment, SimCLRTransform
from .augment.params import LIMITS, check_volume

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
_PREVIEW_SIDE = 64  # default output: the volume's shape scaled to at most this side


class AugmentationPanel:
    """Sliders for the augmentation strengths and two live views of one volume.

    Moving a slider redraws the same random sample with the new strengths
    (the seed is kept); "New sample" draws a new one. Sliders only report
    when released (``continuous_update=False``), so the panel stays responsive
    on Binder.

    Parameters
    ----------
    volume : torch.Tensor
        Floating-point volume (1, D, H, W) or (D, H, W).
    transform_cls : {SimCLRTransform, BatchedAugment, "torchio", "batched"}, default=SimCLRTransform
        Which pipeline draws the views.
    input_size : int or tuple of int, optional
        Size of the views; by default the volume's shape, scaled down so that
        its longest side is at most 64.
    seed : int, default=0
        Seed of the first sample; sample ``k`` uses ``seed + k``.

    Attributes
    ----------
    sliders : dict of str to ipywidgets.FloatSlider
        One slider per knob (see ``SLIDERS``).
    button : ipywidgets.Button
        "New sample".
    image : ipywidgets.Image
        The PNG of the last figure.
    widget : ipywidgets.VBox
        The whole panel (what a notebook displays).
    params : AugmentParams
        The strengths set by the sliders.
    transform : SimCLRTransform or BatchedAugment
        The transform that drew the last views.
    views : tuple of torch.Tensor
        The last two views (1, D, H, W).
    figure : matplotlib.figure.Figure
        The last figure.
    n_redraws : int
        How many times the views were drawn.

    Examples
    --------
    >>> import torch
    >>> from vicreg_lab.widgets import AugmentationPanel
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
        check_volume(volume, 4, "AugmentationPanel")
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
        self.button = widgets.Button(description="New sample", icon="refresh")
        self.image = widgets.Image(format="png")
        for slider in self.sliders.values():
            slider.observe(self._on_slider, names="value")
        self.button.on_click(self._on_click)
        boxes = list(self.sliders.values())
        half = (len(boxes) + 1) // 2
        controls = widgets.HBox([widgets.VBox(boxes[:half]), widgets.VBox(boxes[half:])])
        self.widget = widgets.VBox([controls, self.button, self.image])
        self.redraw()

    def redraw(self) -> None:
        """Draw two views with the current sliders and sample, and show them."""
        from .viz import plot_views

        self.transform = self.transform_cls(
            input_size=self.input_size, seed=self.seed + self.sample, **self.params.as_dict()
        )
        if isinstance(self.transform, BatchedAugment):
            v1, v2, _, _ = self.transform.two_views(self.volume[None])
            self.views = (v1[0], v2[0])
        else:
            self.views = (self.transform(self.volume), self.transform(self.volume))
        name = type(self.transform).__name__
        self.figure = plot_views(self.volume, *self.views, title=f"{name}, sample {self.sample}")
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=72)
        self.image.value = buffer.getvalue()
        self.n_redraws += 1

    def display(self) -> None:
        """Show the panel in a notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self):
        self.display()

    def _on_slider(self, change) -> None:
        self.params = _params_from(self.params, {n: s.value for n, s in self.sliders.items()})
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
    changes.update({k: v for k, v in values.items() if k in LIMITS})
    return params.replace(**changes)
