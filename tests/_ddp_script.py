"""Run under torchrun by tests/test_train_distributed.py: a short DDP training on CPU (gloo).

Usage: torchrun --standalone --nproc_per_node=2 _ddp_script.py OUT_DIR
Each rank writes OUT_DIR/rank{r}.pt: its first-step loss terms and its final weights.
"""

import sys

import torch
from _train_script import Blobs, make_model

from vicreg_lab.distributed import init_distributed


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    rank, world_size = init_distributed()
    assert world_size == 2 and torch.distributed.is_initialized()
    model = make_model(max_epochs=2, batch_size=4).fit(Blobs(n=32))
    first = {
        k: model.history_["step"][0][k] for k in ("loss", "invariance", "variance", "covariance")
    }
    weights = {k: v.clone() for k, v in model.encoder_.state_dict().items()}
    torch.save({"first": first, "weights": weights, "steps": len(model.history_["step"])},
               f"{out}/rank{rank}.pt")  # fmt: skip
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
