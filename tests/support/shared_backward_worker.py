"""Worker of ``tests/test_distributed.py``, started by torch's launcher on 2 processes (gloo): on an
instruction batch split across the ranks, one data-parallel discovery step with the shared
backward (``DataParallel._shared_backward``) against the metric's backward followed by the
loss's, then three whole steps each way. Rank 0 writes what both ranks computed to ``OUT``.

``python -m torch.distributed.run --standalone --nproc-per-node 2 THIS OUT RUNS TASK``"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from circuitviz.attribution.config import AttributionConfig
from circuitviz.models import load_model
from circuitviz.tasks.sft_metrics import response_counts
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.distributed import FollowerWriter, data_parallel
from circuitviz.tuning.loop import Tuner, trainable_only
from circuitviz.tuning.loss import training_loss
from circuitviz.tuning.storage import create_run

ATTRIBUTION = AttributionConfig(metric="process", baseline="mean", positions="all")
CONFIG = TuneConfig(
    attribution=ATTRIBUTION,
    top_n=30,
    steps=3,
    batch_size=8,
    n_train=40,
    n_dev=4,
    n_probe=4,
    n_heldout=4,
    lr=0.05,
)


def tuner(runs: Path, task: str, name: str) -> Tuner:
    model = load_model("demo")
    if dist.get_rank() == 0:
        writer = create_run(model, task, CONFIG, runs, run_id=name)
    dist.barrier()
    if dist.get_rank() != 0:
        writer = FollowerWriter.open(runs / name)
    return data_parallel(Tuner)(model, task, CONFIG, writer, None)


def gathered(value: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(out, value.contiguous())
    return out


def one_step(t: Tuner) -> dict:
    """Scores and reduced gradients of step 1, shared and apart, on this rank's rows."""
    batch, ids = t._batch(1)
    params = list(t.train_params.values())
    out = {"counts": gathered(response_counts(batch).sum().reshape(1))}
    with trainable_only(t.model, params):
        apart, logits = t._scores(batch, ids)
        objective, _ = t._objective(training_loss(logits, ids, batch, t.config), batch)
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        t._reduce_grads(params)
        out["apart"] = (
            apart.scores,
            [p.grad.clone() if p.grad is not None else None for p in params],
        )
        t.optimizer.zero_grad()
        losses: list[float] = []
        shared = t._shared_backward(batch, ids, 1, losses)
        assert shared is not None, "a data-parallel rank did not share the backward"
        one, _ = t._scores(batch, ids, shared=shared)
        t._reduce_grads(params)
        out["shared"] = (
            one.scores,
            [p.grad.clone() if p.grad is not None else None for p in params],
        )
        t.optimizer.zero_grad()
    return out


def main(out: str, runs: str, task: str) -> None:
    dist.init_process_group("gloo")
    runs = Path(runs)
    result = one_step(tuner(runs, task, "probe"))
    for name, shares in (("shared", True), ("apart", False)):
        t = tuner(runs, task, name)
        t.shares_backward = shares
        discover, spent = t._discover, []

        def counted(*args, _discover=discover, _spent=spent):
            logits, loss = _discover(*args)
            _spent.append(loss is not None)  # the loss comes back where the backward was shared
            return logits, loss

        t._discover = counted
        with trainable_only(t.model, t.train_params.values()):
            result[f"{name}_losses"] = [t.step(step) for step in (1, 2, 3)]
        result[f"{name}_steps_sharing"] = sum(spent)
        result[f"{name}_params"] = {k: v.detach().clone() for k, v in t.train_params.items()}
        t.writer.close()
    if dist.get_rank() == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
