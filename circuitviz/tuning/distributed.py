"""Data-parallel circuit-tuning over ``torch.distributed``: several processes, one global batch.

Started by ``circuitviz tune --nproc N`` (which runs ``torch.distributed.run``) or by ``torchrun
... -m circuitviz tune``, each of the N processes (ranks) loads the model and the same data, and
every optimizer step goes:

1. The step's global batch and its training ids are drawn exactly as in one process; rank r keeps
   its contiguous share of the rows (the batch size must divide by N).
2. Discovery: each rank scores the edges on its rows; the score sums ``[n_src, n_dst]`` and the
   example counts are all-reduced, so every rank holds the global mean and selects the same
   circuit. With the ``mean`` baseline the data mean is all-reduced first, so it is the global
   batch's, as in one process. Where one backward serves the attribution and the update
   (``discovery.shared_backward``: instruction data, the ``process`` metric, plain EAP), it does
   here too, each example's factor taken against the global response-token count.
3. Training: each rank backpropagates its share of the global mean loss (its rows' summed loss over
   the global token count, all-reduced), and the gradients of the circuit's tensors are summed
   across ranks: every rank then holds the one-process gradient, and the masked optimizer step
   (clipping included) is identical everywhere, so the weights stay identical.
4. Rank 0 alone writes the run store (records, snapshots, evaluations, checkpoints); the others open
   it to read checkpoints when resuming. A rank that fails makes the others fail at their next
   collective; the run keeps every recorded step, and ``--resume`` continues it.

Backends: ``nccl`` on CUDA, ``gloo`` on the CPU. The records, circuits and weights equal a
one-process run on the same global batch to float tolerance (tested on the CPU with gloo).
What a global batch cannot split exactly is refused: the de-biasing term (the absolute value of a
batch mean), the circuit-only forward (its ablation uses the batch's mean activations) and LoRA's
dropout (its random masks are drawn per process).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import warnings
from dataclasses import replace

import torch
import torch.distributed as dist

from circuitviz.runs import RunWriter
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.loop import Tuner
from circuitviz.tuning.loss import loss_weight, training_ids

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world_size() -> int:
    """Processes in this run: ``WORLD_SIZE`` as torch's launcher sets it, else 1."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def init(device: str | torch.device) -> None:
    """Join the process group the launcher described (nccl on CUDA, gloo on the CPU)."""
    if dist.is_initialized():
        return
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} are not: start several processes with "
            "circuitviz tune --nproc N or torchrun, not by hand"
        )
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(
        backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30)
    )


# What gloo says when the process at the other end of a collective has gone.
_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the run stopped (a
    network error between the processes; other distributed errors keep their traceback)."""
    if not dist.is_initialized():
        return False
    return isinstance(exc, dist.DistNetworkError) or any(marker in str(exc) for marker in _LOST)


def check_config(config: TuneConfig, n_processes: int) -> None:
    """Raise ValueError for what a global batch cannot be split into ``n_processes`` shares of,
    and for ``--shard fsdp`` in one process."""
    if config.shard == "fsdp" and n_processes < 2:
        raise ValueError(
            "--shard fsdp splits the model across processes: start several with --nproc N (or "
            "torchrun --nproc-per-node N -m circuitviz tune ...), or leave --shard out (a run "
            "tuned with --shard fsdp resumes with --resume RUN --nproc N)"
        )
    if config.shard == "fsdp":
        from torch.distributed.fsdp import FSDPModule

        if not hasattr(FSDPModule, "set_force_sum_reduction_for_comms"):
            raise ValueError(
                f"--shard fsdp needs a newer torch than {torch.__version__} (its FSDP cannot sum "
                "gradients on every backend); upgrade torch, or leave --shard out"
            )
    if n_processes == 1:
        return
    if config.batch_size % n_processes:
        raise ValueError(
            f"--batch-size {config.batch_size} does not divide into {n_processes} processes: "
            f"use a multiple of {n_processes}"
        )
    refused = {
        "--debias-beta": config.debias_beta > 0,
        "--circuit-forward": config.circuit_forward,
    }
    named = [name for name, used in refused.items() if used]
    if named:
        raise ValueError(
            f"{', '.join(named)}: not exact across processes; run in one process, or leave "
            "the option out"
        )
    if config.adapters and config.lora_dropout > 0:
        raise ValueError(
            f"LoRA dropout ({config.lora_dropout:g}, --lora-dropout) draws its masks in each "
            "process, which is not exact across processes: pass --lora-dropout 0, or run in "
            "one process"
        )


class FollowerWriter(RunWriter):
    """A rank other than 0: reads the run rank 0 writes (its checkpoints, to resume) and writes
    nothing."""

    @classmethod
    def open(cls, run_dir) -> FollowerWriter:
        conn = sqlite3.connect(f"file:{run_dir}/run.sqlite?mode=ro", uri=True, timeout=60)
        return cls(run_dir, conn, None)

    def checkpoint_files(self) -> list:
        return []  # rank 0 slims old checkpoints; the others leave its files alone

    def log_step(self, *args, **kwargs) -> None:
        pass

    def log_eval(self, *args, **kwargs) -> None:
        pass

    def add_snapshot(self, *args, **kwargs) -> None:
        pass

    def add_head_changes(self, *args, **kwargs) -> None:
        pass

    def save_checkpoint(self, *args, **kwargs) -> None:
        pass

    def set_status(self, *args, **kwargs) -> None:
        pass

    def set_summary(self, *args, **kwargs) -> None:
        pass


def _all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a new tensor; gloo reduces on the CPU)."""
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


class DataParallel:
    """Mixed into a ``Tuner`` class (see ``data_parallel``): the parts of a step that differ when
    several processes share one global batch (module docstring)."""

    def _shard(self, batch, ids: torch.Tensor):
        n_ranks, me = dist.get_world_size(), dist.get_rank()
        share = len(batch) // n_ranks
        rows = torch.arange(me * share, (me + 1) * share, device=ids.device)
        shard = batch.select(rows.to(batch.device))
        return shard, ids[rows][:, : shard.train_ids.shape[1]]

    def _batch(self, step: int):
        batch = self.data.batch_for_step(step, self.config.seed)
        return self._shard(batch, training_ids(batch, self.config, step))

    def _scores(self, batch, ids, means=None, shared=None):
        if self.config.attribution.baseline == "mean" and means is None:
            means = self._global_means(batch)
        scores, logits = super()._scores(batch, ids, means, shared)
        n_local = torch.tensor(float(scores.n_examples))
        n_global = int(_all_sum(n_local).item())
        total = _all_sum(scores.scores.double() * scores.n_examples)
        mean = (total / n_global).float().masked_fill(~self.graph.valid_mask, 0.0)
        return replace(scores, scores=mean, n_examples=n_global), logits

    def _global_means(self, batch):
        from circuitviz.attribution.activations import SourceMeans, run_and_capture, token_sums
        from circuitviz.tuning.discovery import hook_flags

        mask = batch.attention_mask.to(self.model.device)
        with hook_flags(self.model.bridge, True):
            sources, embed, _ = run_and_capture(
                self.model, self.graph, batch.clean_ids.to(self.model.device), mask
            )
        sums, embed_sums = token_sums(sources, embed, mask)
        n_tokens = int(_all_sum(mask.sum().double()).item())
        dtype = self.model.dtype
        return SourceMeans(
            sources=(_all_sum(sums) / n_tokens).to(dtype),
            embed=(_all_sum(embed_sums) / n_tokens).to(dtype),
            n_tokens=n_tokens,
        )

    def _objective(self, parts, batch):
        local = loss_weight(batch, self.config).double()
        total = _all_sum(local).clamp_min(1)
        numerator = parts.total * local.clamp_min(1).to(parts.total.dtype)
        loss = float(_all_sum(numerator.detach().double()) / total)
        return numerator / total.to(parts.total.dtype), loss

    def _reduce_grads(self, params) -> None:
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)

    def _shared_backward(self, batch, ids, step, losses):
        """As in one process, with each example's factor taken against the global batch: the
        objective here is this rank's rows' summed loss over the global token count (``_objective``),
        so example b's metric gradient is (global count / b's count) times its gradient."""
        shared = super()._shared_backward(batch, ids, step, losses)
        if shared is None:
            return None
        local = loss_weight(batch, self.config).double().clamp_min(1)
        scale = _all_sum(local).clamp_min(1) / local
        return replace(shared, row_scale=shared.row_scale * scale.to(shared.row_scale))

    # Only rank 0 evaluates, snapshots and summarises; the others skip straight to training,
    # unless every rank must take part in each forward (``FullySharded``). Their writer
    # (``FollowerWriter``) writes nothing either way.
    every_rank_forwards = False

    def _begin(self) -> None:
        if dist.get_rank() == 0 or self.every_rank_forwards:
            super()._begin()

    def _periodic(self, step: int) -> None:
        if dist.get_rank() == 0 or self.every_rank_forwards:
            super()._periodic(step)

    def _finish(self, seconds: float) -> dict:
        if dist.get_rank() == 0:
            summary = super()._finish(seconds)
        else:
            if self.every_rank_forwards:
                self._last_records()
            summary = {}
        dist.barrier()
        return summary


class FullySharded(DataParallel):
    """``--shard fsdp``: data parallel (each rank scores and trains on its share of the global
    batch, as ``DataParallel``) on a model whose parameters, gradients and optimizer state are
    split across the ranks (``shard_model``).

    What changes from ``DataParallel``: FSDP gathers each block's weights for its forward and
    backward, which every rank must join, so every rank runs the evaluations and snapshots (rank 0
    alone writes them) and checkpoints gather whole tensors (``models.shards``). FSDP sums the
    gradients itself (reduce-scatter; divide factor 1, so the sum ``_objective`` expects). The
    attribution's forward is not reused for training (its second backward would need FSDP to
    gather the weights again). The attribution's closed-form q/k/v path reads each projection
    weight inside its block's backward, while FSDP holds it whole (``attribution.lean``).
    """

    every_rank_forwards = True
    shares_forward = False
    backward_to_inputs = False

    def _reduce_grads(self, params) -> None:
        pass  # FSDP reduce-scattered them in the backward


def check_shardable(model) -> None:
    """Raise ValueError for a model FSDP cannot split: one whose bridge exposes parts of a fused
    tensor as separate parameters (GPT-2's q/k/v views of ``c_attn``), which sharding would
    split into unrelated copies."""
    from circuitviz.models.shards import storage_key

    owners: dict = {}
    for name, param in model.bridge.named_parameters():
        owners.setdefault(storage_key(param)[0], []).append(name)
    shared = [names for names in owners.values() if len(names) > 1]
    if shared:
        raise ValueError(
            f"--shard fsdp: this {model.info.family} model exposes views of fused weights as "
            f"separate parameters ({shared[0][0]} shares storage with {len(shared[0]) - 1} "
            "more), which FSDP cannot split; use a Llama-family model, or data parallel "
            "without --shard"
        )


def shard_model(model) -> None:
    """Split ``model``'s parameters across the process group with torch FSDP (``fully_shard``):
    one unit per transformer block, and the embeddings, final norm and unembedding in the root
    unit. In place; a model already sharded is left as it is."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from circuitviz.models.shards import is_sharded

    if any(is_sharded(param) for param in model.bridge.parameters()):
        return
    check_shardable(model)
    # The bridge's blocks return views of their hidden states; FSDP warns that an in-place op on
    # one would skip its gather. circuitviz's hooks never write block outputs in place (a sharded
    # run equals one process: tests/test_distributed.py), so the warning, once per block and
    # rank, only buries the run's own output.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(model.device.type, (dist.get_world_size(),))
    for block in model.bridge.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model.bridge, mesh=mesh)
    for module in model.bridge.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum


def data_parallel(tuner_class: type[Tuner], *, sharded: bool = False) -> type[Tuner]:
    """``tuner_class`` with the data-parallel parts of a step (``DataParallel``), or with those of
    a sharded model (``FullySharded``)."""
    mixin = FullySharded if sharded else DataParallel
    return type(f"{mixin.__name__}{tuner_class.__name__}", (mixin, tuner_class), {})
