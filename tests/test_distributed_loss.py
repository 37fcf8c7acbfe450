"""VICReg with ``gather_distributed=True`` on two real CPU processes (gloo).

Each rank holds one half of a fixed global batch. Its variance and covariance
terms are those of the full batch, its invariance term that of its half, so

* the mean over ranks of the rank losses is the single-process loss of the full
  batch (equal halves: the mean of the local MSEs is the global MSE);
* the gradient on rank ``r`` is ``world_size`` times the slice ``r`` of the
  single-process gradient: the all_reduce(SUM) in the backward of the gather
  collects the ``world_size`` identical copies of the variance/covariance
  gradient, and the local invariance is ``world_size`` times more sensitive to
  a local row than the global mean is.
"""

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vicreg_lab.losses import vicreg_loss

pytestmark = pytest.mark.distributed

WORLD_SIZE = 2
TIMEOUT_S = 60


def _rank_main(rank, world_size, folder):
    """Entry point of one process: loss and gradients of this rank's half, saved to a file."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )
    try:
        data = torch.load(f"{folder}/batch.pt")
        rows = data["z1"].shape[0] // world_size
        local = slice(rank * rows, (rank + 1) * rows)
        z1 = data["z1"][local].clone().requires_grad_(True)
        z2 = data["z2"][local].clone().requires_grad_(True)
        out = vicreg_loss(z1, z2, gather_distributed=True)
        out["loss"].backward()
        result = {key: value.detach() for key, value in out.items()}
        result.update(grad1=z1.grad, grad2=z2.grad)
        torch.save(result, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run_ranks(folder):
    context = mp.start_processes(
        _rank_main,
        args=(WORLD_SIZE, str(folder)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=TIMEOUT_S)
    while not context.join(timeout=1):  # raises if a rank failed
        if datetime.datetime.now() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} ranks did not finish within {TIMEOUT_S} s")


def test_gathered_loss_and_gradients_match_single_process(tmp_path):
    gen = torch.Generator().manual_seed(0)
    n_per_rank, dim = 6, 10
    z1 = torch.randn(WORLD_SIZE * n_per_rank, dim, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(WORLD_SIZE * n_per_rank, dim, generator=gen, dtype=torch.float64)
    torch.save({"z1": z1, "z2": z2}, tmp_path / "batch.pt")

    _run_ranks(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]

    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    single = vicreg_loss(full1, full2)
    single["loss"].backward()

    # variance and covariance: every rank sees the full batch
    for result in ranks:
        for key in ("variance", "covariance"):
            torch.testing.assert_close(result[key], single[key].detach(), rtol=1e-12, atol=0)
    # invariance is local, so the ranks differ, but their mean is the global term
    assert ranks[0]["invariance"] != ranks[1]["invariance"]
    mean_loss = sum(result["loss"] for result in ranks) / WORLD_SIZE
    torch.testing.assert_close(mean_loss, single["loss"].detach(), rtol=1e-12, atol=0)

    for rank, result in enumerate(ranks):
        local = slice(rank * n_per_rank, (rank + 1) * n_per_rank)
        for key, full in (("grad1", full1), ("grad2", full2)):
            torch.testing.assert_close(
                result[key] / WORLD_SIZE, full.grad[local], rtol=1e-10, atol=1e-14
            )
