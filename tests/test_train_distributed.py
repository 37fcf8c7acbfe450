"""DDP training under a real ``torchrun`` with two CPU processes (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_script import Blobs, make_model, noisy_flip

from vicreg_lab.data import stack_images
from vicreg_lab.data.loaders import augment_generator
from vicreg_lab.losses import vicreg_loss

HERE = Path(__file__).parent


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_agree_and_match_single_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*cmd, str(HERE / "_ddp_script.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # 32 volumes, 2 ranks, batch 4 per rank: 4 steps per epoch, 2 epochs
    assert ranks[0]["steps"] == ranks[1]["steps"] == 8
    for key, value in ranks[0]["weights"].items():
        if "running" in key or "num_batches" in key:
            continue  # BatchNorm buffers are per-rank statistics (no SyncBatchNorm on CPU)
        assert torch.equal(value, ranks[1]["weights"][key]), f"ranks disagree on {key}"

    # The first step, recomputed in one process on the same global batch: same initial
    # weights, each rank's shard through the networks in train mode (BatchNorm statistics
    # are per shard, as under DDP), then the loss on the concatenated embeddings.
    dataset = Blobs(n=32)
    reference = make_model(max_epochs=2, batch_size=4)
    reference._build((1, 16, 16, 16), torch.device("cpu"))
    z1, z2 = [], []
    with torch.no_grad():
        for rank in range(2):
            sampler = torch.utils.data.DistributedSampler(dataset, 2, rank, shuffle=True, seed=0)
            sampler.set_epoch(0)
            x = stack_images([dataset[i] for i in list(sampler)[:4]])
            generator = augment_generator(0, 0, rank, "cpu")
            v1, v2 = noisy_flip(x, generator), noisy_flip(x, generator)
            z1.append(reference.expander_(reference.encoder_(v1)))
            z2.append(reference.expander_(reference.encoder_(v2)))
    expected = {k: float(v) for k, v in vicreg_loss(torch.cat(z1), torch.cat(z2)).items()}
    for term in ("variance", "covariance"):  # gathered across ranks: the global value
        for rank in range(2):
            assert ranks[rank]["first"][term] == pytest.approx(expected[term], rel=1e-5)
    # the invariance (and so the loss) is local: their mean over ranks is the global value
    for term in ("invariance", "loss"):
        mean = sum(r["first"][term] for r in ranks) / 2
        assert mean == pytest.approx(expected[term], rel=1e-5)
