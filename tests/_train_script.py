"""Run by tests/test_train.py in a subprocess: train a tiny VICReg, optionally killing itself.

Usage: python _train_script.py CHECKPOINT_DIR OUT_FILE [--kill-at-step K] [--resume]
"""

import argparse
import os
import signal

import torch

from vicreg_lab.train import VICReg


class Blobs(torch.utils.data.Dataset):
    """Volumes holding one bright ball each, of a size and place that vary by index."""

    def __init__(self, n=24, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
        centres = size / 4 + size / 2 * torch.rand(n, 3, 1, 1, 1, generator=g)
        radii = size / 8 + size / 6 * torch.rand(n, 1, 1, 1, generator=g)
        dist = ((grid[None] - centres) ** 2).sum(1).sqrt()
        self.volumes = torch.sigmoid(2 * (radii - dist))[:, None]
        self.ages = radii.flatten()

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, i):
        return {"image": self.volumes[i], "age": float(self.ages[i])}


def noisy_flip(x, generator):
    """A cheap augmentation that uses the generator it is given (for exact repeats)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
    return x + 0.1 * torch.randn(x.shape, generator=generator)


def make_model(checkpoint_dir=None, callbacks=(), estimator=VICReg, **changes):
    params = dict(
        encoder="small_cnn",
        expander="32-32",
        batch_size=8,
        max_epochs=3,
        augmentation=noisy_flip,
        checkpoint_dir=checkpoint_dir,
        progress=False,
        callbacks=callbacks,
        seed=0,
    )
    params.update(changes)
    return estimator(**params)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("out")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    def kill(model, event, record):
        if event == "step" and record["step"] == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill, mid-epoch

    model = make_model(args.checkpoint_dir, callbacks=[kill] if args.kill_at_step else ())
    model.fit(Blobs(), resume=args.resume)
    model.save(args.out)


if __name__ == "__main__":
    main()
