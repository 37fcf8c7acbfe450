"""Training callbacks for :class:`vicreg_lab.VICReg` (``VICReg(callbacks=[...])``).

A callback is any callable ``callback(estimator, event, record)``: ``event`` is ``"step"``
or ``"epoch"``, ``record`` the dict just appended to ``estimator.history_[event]``. The
``"epoch"`` call comes after that epoch's checkpoint is written.
"""

from __future__ import annotations

TERMS = ("loss", "invariance", "variance", "covariance")


class LiveLossPlot:
    """Redraw the loss terms in place while training runs, one small axis per term.

    Parameters
    ----------
    every : int, default=10
        Redraw every ``every`` steps (and at the end of every epoch).
    display : bool, default=True
        Show the figure with IPython's ``display`` and update it in place; ``False``
        only keeps it in ``self.figure``.

    Examples
    --------
    >>> VICReg(callbacks=[LiveLossPlot(every=5)]).fit(cohort)  # doctest: +SKIP
    """

    def __init__(self, every: int = 10, display: bool = True):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.display = display
        self.figure = None
        self.redraws = 0
        self._handle = None
        self._lines = {}

    def _setup(self):
        import matplotlib.pyplot as plt

        self.figure, axes = plt.subplots(1, len(TERMS), figsize=(3.2 * len(TERMS), 2.6))
        for ax, term in zip(axes, TERMS, strict=True):
            (self._lines[term],) = ax.plot([], [], lw=1.2)
            ax.set_title(term)
            ax.set_xlabel("step")
        self.figure.tight_layout()
        plt.close(self.figure)  # shown through display(), not by pyplot
        if self.display:
            from IPython.display import display

            self._handle = display(self.figure, display_id=True)

    def __call__(self, estimator, event: str, record: dict) -> None:
        if event == "step" and (record["step"] + 1) % self.every:
            return
        if self.figure is None:
            self._setup()
        steps = estimator.history_["step"]
        x = [r["step"] for r in steps]
        for term, line in self._lines.items():
            line.set_data(x, [r[term] for r in steps])
            line.axes.relim()
            line.axes.autoscale_view()
        self.redraws += 1
        if self._handle is not None:
            self._handle.update(self.figure)


class SimulatedInterruption(KeyboardInterrupt):
    """Raised by :class:`InterruptAfter`, as if the kernel had been interrupted.

    A ``KeyboardInterrupt`` (what Jupyter's Stop button raises), so ``except Exception``
    lets it through, as it would a real interruption.
    """


class InterruptAfter:
    """Interrupt training at the end of epoch ``epochs``, to rehearse resuming.

    Epochs count from 1 over the whole run (a resumed run past ``epochs`` stops after
    its first new one). The checkpoint is written before callbacks run, so
    ``fit(resume=True)`` continues from there.

    Examples
    --------
    >>> stop = InterruptAfter(2)
    >>> VICReg(max_epochs=4, checkpoint_dir="ckpt", callbacks=[stop]).fit(cohort)  # doctest: +SKIP
    SimulatedInterruption: training interrupted after epoch 2 of 4 (InterruptAfter(2))
    >>> VICReg(max_epochs=4, checkpoint_dir="ckpt").fit(cohort, resume=True)  # doctest: +SKIP
    """

    def __init__(self, epochs: int):
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        self.epochs = epochs

    def __call__(self, estimator, event: str, record: dict) -> None:
        done = record["epoch"] + 1
        if event == "epoch" and done >= self.epochs:
            raise SimulatedInterruption(
                f"training interrupted after epoch {done} of {estimator.max_epochs} "
                f"(InterruptAfter({self.epochs}))"
            )
