"""Training callbacks on a real (tiny) VICReg run: the live plot and the rehearsed interruption."""

import numpy as np
import pytest
from _train_script import Blobs, make_model
from matplotlib.figure import Figure

from vicreg_lab.lab.callbacks import TERMS, InterruptAfter, LiveLossPlot, SimulatedInterruption


def test_live_loss_plot_redraws_every_n_steps_and_each_epoch():
    plot = LiveLossPlot(every=2, display=False)
    model = make_model(max_epochs=2, callbacks=[plot]).fit(Blobs(n=24))  # 3 steps per epoch
    # steps 1, 3, 5 (every 2nd) and the two epoch ends
    assert plot.redraws == 5 and isinstance(plot.figure, Figure)
    assert [ax.get_title() for ax in plot.figure.axes] == list(TERMS)
    losses = [r["loss"] for r in model.history_["step"]]
    x, y = plot.figure.axes[0].lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(6))
    np.testing.assert_allclose(y, losses)
    with pytest.raises(ValueError, match="every must be >= 1"):
        LiveLossPlot(every=0)


def test_interrupt_after_stops_with_a_checkpoint_and_resume_finishes(tmp_path):
    data = Blobs(n=16)  # 2 steps per epoch
    stopped = make_model(tmp_path, max_epochs=3, callbacks=[InterruptAfter(1)])
    with pytest.raises(SimulatedInterruption, match="after epoch 1 of 3"):
        stopped.fit(data)
    assert isinstance(SimulatedInterruption(), KeyboardInterrupt)
    assert len(stopped.history_["epoch"]) == 1 and (tmp_path / "last.ckpt").exists()

    resumed = make_model(tmp_path, max_epochs=3).fit(data, resume=True)
    uninterrupted = make_model(None, max_epochs=3).fit(data)
    losses = [[r["loss"] for r in m.history_["step"]] for m in (resumed, uninterrupted)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]  # the same run, on the CPU
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        InterruptAfter(0)
