"""Run under torchrun by tests/test_vicregl.py: a short VICRegL training on CPU (gloo).

Usage: torchrun --standalone --nproc_per_node=2 _vicregl_ddp_script.py OUT_DIR
Each rank writes OUT_DIR/rank{r}.pt: its first-step loss terms and its final weights.
"""

import sys

import torch
from _train_script import Blobs, make_model

from vicreg_lab.distributed import init_distributed
from vicreg_lab.vicregl import TERMS, VICRegL


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    rank, world_size = init_distributed()
    assert world_size == 2 and torch.distributed.is_initialized()
    model = make_model(
        max_epochs=1,
        batch_size=4,
        estimator=VICRegL,
        augmentation="batched",
        encoder_kwargs={"output_stride": 4},
        local_expander="16-16",
    ).fit(Blobs(n=16))
    first = {k: model.history_["step"][0][k] for k in TERMS}
    torch.save(
        {
            "first": first,
            "encoder": {k: v.clone() for k, v in model.encoder_.state_dict().items()},
            "local_expander": {k: v.clone() for k, v in model.local_expander_.state_dict().items()},
        },
        f"{out}/rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
