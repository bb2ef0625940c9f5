"""Worker of ``tests/test_shards.py``, started by torch's launcher on 2 processes (gloo): the
masked optimizer and the ``models.shards`` helpers on parameters split as FSDP splits them
(``DTensor``, rows along dim 0, uneven chunks), and EAP on a Llama-family model sharded by
``shard_model``; their results gathered into ``OUT`` by rank 0.

``python -m torch.distributed.run --standalone --nproc-per-node 2 THIS OUT``"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from circuitviz.models import shards
from circuitviz.tuning.masks import RowMask
from circuitviz.tuning.optim import MaskedOptimizer
from tests.support.sharded_case import CONFIG, STEPS, case


def main(out: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    tensors, grads, keeps = case()
    params = {
        name: torch.nn.Parameter(distribute_tensor(value, mesh, [Shard(0)]))
        for name, value in tensors.items()
    }
    masks = {name: RowMask(dim, keep) for name, (dim, keep) in keeps.items()}
    optimizer = MaskedOptimizer(params, CONFIG)
    norms = []
    for step in range(STEPS):
        for name, param in params.items():
            param.grad = distribute_tensor(grads[name][step], mesh, [Shard(0)])
        norms.append(optimizer.clip_grad_norm(masks, 0.5))
        optimizer.step(masks, CONFIG.lr)
    state, _ = optimizer.state_tensors()  # gathered: a collective
    result = {
        "params": {name: shards.whole(param) for name, param in params.items()},
        "state": state,
        "norms": norms,
        "row_sums": {
            (name, dim): shards.row_sums_of_squares(param, dim)
            for name, param in params.items()
            for dim in range(param.ndim)
        },
    }
    # assign / like round trip: each rank writes its own rows of a whole tensor.
    target = params["weight"]
    shards.assign(target, tensors["weight"] * 3)
    result["assigned"] = shards.whole(target)
    result["like"] = shards.whole(shards.like(target, tensors["weight"] * 5))
    result["eap"] = sharded_eap()
    if dist.get_rank() == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def sharded_eap() -> dict:
    """EAP scores of one batch on ``random:llama-tiny`` split by FSDP, read in closed form and
    from the per-head copies; whether the parameters were split."""
    from circuitviz.attribution import AttributionConfig
    from circuitviz.attribution.eap import batch_edge_scores
    from circuitviz.graph.topology import graph_for
    from circuitviz.models import load_model
    from circuitviz.tuning.discovery import hook_flags
    from circuitviz.tuning.distributed import shard_model
    from tests.support.batches import random_batch

    model = load_model("random:llama-tiny", device="cpu", dtype="float64", seed=1)
    shard_model(model)
    graph = graph_for(model.info)
    batch = random_batch(n=3, n_pos=7, vocab=model.info.d_vocab, seed=2)
    out = {"split": all(shards.is_sharded(p) for p in model.bridge.parameters())}
    with hook_flags(model.bridge, True):
        for copies in (False, True):
            scores = batch_edge_scores(
                model, graph, batch, AttributionConfig(), per_head_copies=copies
            )
            out[copies] = scores.scores
    return out


if __name__ == "__main__":
    main(sys.argv[1])
