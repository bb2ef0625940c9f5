"""The circuit-tuning loop (Li et al. 2025, arXiv:2502.06106, section 3, corrected) and its baselines.

For optimizer steps t = 1..T (T = steps, or epochs x batches per epoch):

1. Read step t's training batch (a pure function of t and the seed; see ``data``).
2. Every K steps (t = 1, 1 + K, ...): discover the circuit on that batch (attribution on its
   clean/corrupted prompts, then top-N / threshold / node-weighted selection with N from the
   schedule), or draw a random subgraph of N edges (``random``); ``full`` trains everything.
   Forced nodes (layer-0 q/k/v, random activation) join the circuit.
3. One forward of the training text with the hook flags off (the model is never ablated unless
   ``circuit_forward``), the loss, one backward reaching only the circuit's tensors, optional
   clipping, and a masked optimizer step that leaves every entry outside the circuit
   bit-identical (``optim``). On a discovery step of ``circuit`` the attribution's clean forward
   reads the training text (the prompt is its prefix) and its logits give the loss: one forward
   serves both (``discovery.score_edges_on_training_text``). On an instruction batch scored with
   the ``process`` metric, the loss's backward is the attribution's too, each example's gradient
   rescaled to the metric's: one backward serves both as well (``discovery.shared_backward``).
4. Record the step; every E steps evaluate (dev accuracy, logit difference, held-out LM loss),
   every S steps snapshot the circuit on a fixed probe batch and the per-head weight changes,
   every C steps save a checkpoint (weights of the tunable tensors, optimizer state, the current
   circuit) from which ``resume`` continues bit-identically.

Before step 1 the untouched model is evaluated (step 0) and two snapshots are taken: "before" (the
original task's circuit, e.g. sv-agreement's) and "during" at step 0 (the training task's). After
step T: a final evaluation, an "after" snapshot, the summary, status "finished". A NaN or infinite
loss stops the run at that step with status "failed"; everything recorded before stays.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from circuitviz.attribution.eap import NonFiniteScores
from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map, shards
from circuitviz.models.params import count_unique_params
from circuitviz.runs import Run, RunWriter
from circuitviz.tuning.ablation import run_circuit_forward
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.data import TuningData, build_tuning_data
from circuitviz.tuning.discovery import (
    StepCircuit,
    circuit_from_edges,
    hook_flags,
    random_edges,
    random_extra_nodes,
    score_edges,
    score_edges_on_training_text,
    select_edges,
    shared_backward,
)
from circuitviz.tuning.loss import training_ids, training_loss
from circuitviz.tuning.masks import (
    build_mask_bank,
    full_finetune_params,
    layer0_qkv_nodes,
)
from circuitviz.tuning.optim import MaskedOptimizer, NonFiniteLoss, check_finite, lr_at
from circuitviz.tuning.records import HeadChangeMeter, evaluate, snapshot_scores, summarise
from circuitviz.tuning.schedule import is_discovery_step, is_every, top_n_at
from circuitviz.tuning.state import ResumeState, StoredCircuit, indices_of, mask_of
from circuitviz.tuning.storage import check_sizes

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StepProgress:
    """What a progress bar shows after each optimizer step."""

    step: int
    total: int
    loss: float
    task_metric: float | None
    accuracy: float | None
    n_nodes: int
    n_edges: int
    top_n: int | None


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, say); the run is kept with status failed."""


@dataclass(frozen=True, kw_only=True)
class TuneResult:
    run_id: str
    run_dir: Path
    summary: dict


Progress = Callable[[StepProgress], None]


def run_tuning(
    model,
    task: str,
    config: TuneConfig,
    writer: RunWriter,
    *,
    progress: Progress | None = None,
    data: TuningData | None = None,
) -> TuneResult:
    """Run (or, if ``writer`` holds a checkpoint, continue) a tuning run to its last step.

    ``model`` must hold the untouched weights: they are the reference of the head-change records,
    and a resumed run loads its checkpoint on top of them. Raises NonFiniteLoss (status "failed")
    when the loss diverges; the model's weights are changed in place either way.
    """
    if config.adapters:
        from circuitviz.tuning.lora_tuner import LoraTuner as tuner_class
    else:
        tuner_class = Tuner
    from circuitviz.tuning import distributed

    distributed.check_config(config, distributed.world_size())
    if distributed.world_size() > 1:
        distributed.init(model.device)
        if config.shard == "fsdp":
            distributed.shard_model(model)
        tuner_class = distributed.data_parallel(tuner_class, sharded=config.shard == "fsdp")
    tuner = tuner_class(model, task, config, writer, data)
    with trainable_only(model, tuner.train_params.values()):
        return tuner.run(progress)


class _Checkpointed(torch.nn.Module):
    """A transformer block run under activation checkpointing (``checkpointed_blocks``); any
    other attribute the model's loop reads (an attention type, say) is the block's."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.block, name)


@contextmanager
def checkpointed_blocks(bridge, enabled: bool = True) -> Iterator[None]:
    """Activation checkpointing of every transformer block for the duration (``enabled``): a
    forward keeps only each block's input, and the backward recomputes the block's activations.
    The same values and gradients, less memory. No forward hook may be registered inside a block
    (it would fire again in the recomputation)."""
    if not enabled:
        yield
        return
    first = bridge.blocks[0]
    lists = [
        module
        for module in bridge.modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) and module[0] is first
    ]
    if not lists:
        raise RuntimeError("grad_checkpointing: the model's list of blocks was not found")
    originals = [list(blocks) for blocks in lists]
    for blocks in lists:
        for i, block in enumerate(list(blocks)):
            blocks[i] = _Checkpointed(block)
    try:
        yield
    finally:
        for blocks, saved in zip(lists, originals):
            for i, block in enumerate(saved):
                blocks[i] = block


@contextmanager
def _diverged_at(step: int) -> Iterator[None]:
    """Edge scores that are not finite in the middle of a run mean the model diverged: said as a
    diverged loss is (``NonFiniteLoss``: the run is kept and marked failed)."""
    try:
        yield
    except NonFiniteScores as exc:
        raise NonFiniteLoss(
            f"the edge scores became NaN or infinite at step {step}: training diverged. Lower "
            "--lr, set --grad-clip, or use --optimizer adamw; every step before this one is kept "
            "in the run."
        ) from exc


@contextmanager
def trainable_only(model, params) -> Iterator[None]:
    """``requires_grad`` off on every parameter outside ``params`` for the duration."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.bridge.parameters()]
    for param, _ in saved:
        param.requires_grad_(id(param) in keep)
    try:
        yield
    finally:
        for param, flag in saved:
            param.requires_grad_(flag)


class Tuner:
    """The state of one run; each method is one named part of the loop above. ``run_tuning`` is
    the entry point; the benchmark drives ``step`` directly."""

    def __init__(self, model, task, config: TuneConfig, writer: RunWriter, data) -> None:
        self.model, self.task, self.config, self.writer = model, task, config, writer
        self.graph = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups)
        check_sizes(config, self.graph.n_edges)
        self.pmap = build_param_map(model, self.graph)
        self.bank = build_mask_bank(self.pmap, self.graph)
        self.data = data if data is not None else build_tuning_data(model, task, config)
        self.total = self.data.total_steps(config)
        self.train_params = self._trainable_params()
        self.optimizer = MaskedOptimizer(self.train_params, config)
        self.meter = HeadChangeMeter(self.bank, self.pmap.params)
        self.forced = torch.zeros(self.bank.n_nodes, dtype=torch.bool)
        if config.layer0_qkv:
            self.forced |= layer0_qkv_nodes(self.bank)
        self.extra: torch.Tensor | None = None
        # Full fine-tuning is the full circuit: every node, every edge, every tensor whole.
        self._set_circuit(
            StepCircuit(
                nodes=torch.ones(self.bank.n_nodes, dtype=torch.bool),
                edge_mask=self.graph.valid_mask.clone(),
                n_edges=self.graph.n_edges,
                top_n=None,
            ),
            whole=not config.discovers,
        )
        self.base: dict = {}
        self.last_eval: dict | None = None
        self.started = time.perf_counter()
        self.seconds_before = 0.0  # wall time of earlier segments of a resumed run
        self.touched: set[str] = set()  # tensors some step has updated (all a checkpoint needs)

    def _trainable_params(self) -> dict[str, torch.nn.Parameter]:
        """The tensors the optimizer steps (named): every parameter for full fine-tuning, else
        those the graph's nodes own (``LoraTuner``: the adapters' factors instead)."""
        if self.config.method == "full":
            names = full_finetune_params(self.pmap)
        else:
            names = self.bank.param_names
        return {name: self.pmap.params[name] for name in names}

    def _seconds(self) -> float:
        """Wall time of the whole run so far, every resumed segment included."""
        return self.seconds_before + time.perf_counter() - self.started

    # -- the run ---------------------------------------------------------------------------------
    def run(self, progress: Progress | None) -> TuneResult:
        self.started = time.perf_counter()
        first = self._restore()
        if first is None:
            self._begin()
            first = 1
        log.info("run %s: steps %d..%d", self.writer.run_id, first, self.total)
        try:
            for step in range(first, self.total + 1):
                loss = self.step(step)
                self._periodic(step)
                if progress is not None:
                    progress(self._progress(step, loss))
        except NonFiniteLoss as exc:
            self.writer.set_status("failed", str(exc))
            raise
        summary = self._finish(self._seconds())
        return TuneResult(run_id=self.writer.run_id, run_dir=self.writer.dir, summary=summary)

    def _begin(self) -> None:
        self.base = evaluate(self.model, self.data, self.config)
        self.last_eval = self.base
        self.writer.log_eval(0, **self.base)
        self.writer.set_summary(
            {f"base_{key}": value for key, value in self.base.items()}
            | {"heldout_text": self.data.heldout_source.get("name", "demo-filler")}
        )
        n = top_n_at(1, self.config)
        scores, selected = snapshot_scores(
            self.model, self.graph, self.data.probe_original, n, self.config
        )
        self.writer.add_snapshot(0, "before", self.data.original_task, scores, selected)
        self._snapshot(0, "during")

    def step(self, step: int) -> float:
        """Optimizer step ``step``: discover if due, train, record; returns the loss."""
        started = time.perf_counter()
        batch, ids = self._batch(step)
        discovered = is_discovery_step(step, self.config)
        logits, spent = self._discover(batch, ids, step) if discovered else (None, None)
        loss = self._train(batch, ids, step, logits, spent)
        self.writer.log_step(
            step,
            loss=loss,
            lr=lr_at(step, self.config),
            top_n=self.circuit.top_n,
            n_nodes=int(self.circuit.nodes.sum()),
            n_edges=self.circuit.n_edges,
            tuned_params_whole=self.counts["whole"],
            tuned_params_exact=self.counts["exact"],
            tuned_ratio=self.counts["exact"] / self.bank.n_model_params,
            discovered=discovered,
            seconds=time.perf_counter() - started,  # this step's discovery and update only
        )
        return loss

    def _batch(self, step: int):
        """(step ``step``'s training batch, its training ids)."""
        batch = self.data.batch_for_step(step, self.config.seed)
        return batch, training_ids(batch, self.config, step)

    # Whether a discovery step's attribution forward also gives the training loss (``_discover``);
    # never for a circuit-only forward (that one is ablated) nor for LoRA (its training pass
    # swaps the weights the forward must see).
    shares_forward = True
    # Whether the training backward names the tensors it reaches (``inputs=``); FSDP's are not the
    # tensors the forward used, so there requires_grad alone chooses them.
    backward_to_inputs = True
    # Whether a shared forward's backward may be the training step's too (``shared_backward``;
    # data-parallel ranks rescale it against the global batch). Off only to check it against the
    # two backwards it replaces.
    shares_backward = True

    def _discover(self, batch, ids, step: int) -> tuple[torch.Tensor | None, float | None]:
        """Choose this step's circuit. Returns (the training logits when the attribution's
        forward made them (``shares_forward``), else None; the training loss when its backward
        ran too, every trainable tensor's gradient in place (``shares_backward``), else None)."""
        n = top_n_at(step, self.config)
        logits, spent = None, None
        if self.config.method == "random":
            edges = random_edges(self.graph, n, seed=self.config.seed, step=step)
        elif self.shares_forward and not (
            self.config.circuit_forward or self.config.grad_checkpointing
        ):
            for param in self.train_params.values():
                param.requires_grad_(True)
            losses: list[float] = []
            shared = self._shared_backward(batch, ids, step, losses)
            if shared is not None:
                self.optimizer.zero_grad()
            with _diverged_at(step):
                scores, logits = self._scores(batch, ids, shared=shared)
            spent = losses[0] if losses else None
            edges = select_edges(scores, n, self.config)
        else:
            with _diverged_at(step):
                scores, _ = self._scores(batch, None)
            edges = select_edges(scores, n, self.config)
        if self.extra is None:
            self.extra = random_extra_nodes(self.bank, self.bank.nodes_of_edges(edges), self.config)
        self._set_circuit(circuit_from_edges(edges, self.bank, self.forced | self.extra, n))
        return logits, spent

    def _shared_backward(self, batch, ids, step: int, losses: list[float]):
        """The training objective as the attribution's backward (``discovery.shared_backward``),
        or None; the loss it records is appended to ``losses``, after the finiteness check that
        comes before any backward."""
        if not self.shares_backward:
            return None

        def objective(logits: torch.Tensor) -> torch.Tensor:
            parts = training_loss(logits, ids, batch, self.config)
            total, loss = self._objective(parts, batch)
            check_finite(loss, "the training loss", step)
            losses.append(loss)
            return total

        return shared_backward(batch, self.config, objective, list(self.train_params.values()))

    def _scores(self, batch, ids: torch.Tensor | None, means=None, shared=None):
        """(edge scores of ``batch``, the training logits when ``ids`` is given: the attribution
        forward reads them). ``means``: the mean baseline's data mean (default: the batch's).
        ``shared``: the training objective to backpropagate instead of the metric."""
        if ids is None:
            return score_edges(self.model, self.graph, batch, self.config, means), None
        return score_edges_on_training_text(
            self.model, self.graph, batch, ids, self.config, means, shared=shared
        )

    def _set_circuit(self, circuit: StepCircuit, *, whole: bool = False) -> None:
        """Train ``circuit`` from now on; ``whole``: every trainable tensor entirely (full
        fine-tuning, whose tensors include embeddings and norms that no node owns)."""
        self.circuit = circuit
        if whole:
            self.masks = dict.fromkeys(self.train_params)
            n = count_unique_params(self.train_params.values())
            self.counts = {"whole": n, "exact": n}
        else:
            self.masks = self.bank.masks(circuit.nodes, device=self.model.device)
            self.counts = self.bank.count(circuit.nodes)

    def _train(
        self,
        batch,
        ids,
        step: int,
        logits: torch.Tensor | None = None,
        spent: float | None = None,
    ) -> float:
        """Loss, one backward reaching only the circuit's tensors, clipping, masked update.
        ``logits``: the training text's, from the discovery forward (else a forward here).
        ``spent``: the loss whose backward the discovery already ran (``_discover``); the update
        then reads the gradients in place, the optimizer dropping those outside the circuit."""
        trainable = [self.train_params[name] for name in self.masks]
        if spent is not None:
            if trainable:
                self._update(trainable, step)
            return spent
        self.optimizer.zero_grad()
        with contextlib.ExitStack() as stack:
            if logits is None:
                for name, param in self.train_params.items():
                    param.requires_grad_(name in self.masks)
                # The forward and its backward see one model: checkpointing recomputes blocks
                # inside the backward, which must run them as the forward did.
                stack.enter_context(hook_flags(self.model.bridge, False))
                stack.enter_context(
                    checkpointed_blocks(self.model.bridge, self.config.grad_checkpointing)
                )
                logits = self._forward(batch, ids)
            parts = training_loss(logits, ids, batch, self.config)
            objective, loss = self._objective(parts, batch)
            check_finite(loss, "the training loss", step)
            if not trainable:  # a circuit of input->logits edges owns no parameter: no update
                return loss
            torch.autograd.backward(
                objective, inputs=trainable if self.backward_to_inputs else None
            )
        self._update(trainable, step)
        return loss

    def _update(self, trainable: list[torch.Tensor], step: int) -> None:
        """Reduce across processes, clip, and step the circuit's entries."""
        self._reduce_grads(trainable)
        if self.config.grad_clip is not None:
            norm = self.optimizer.clip_grad_norm(self.masks, self.config.grad_clip)
            check_finite(norm, "the gradient norm", step)
        self.optimizer.step(self.masks, lr_at(step, self.config))
        self.touched.update(self.masks)

    def _objective(self, parts, batch) -> tuple[torch.Tensor, float]:
        """(what is backpropagated, the step's loss as recorded)."""
        return parts.total, float(parts.total.detach())

    def _reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Combine gradients across processes (``distributed``); one process has nothing to do."""

    def _forward(self, batch, ids) -> torch.Tensor:
        """Logits ``[batch, pos_t, d_vocab]`` of the training text (hook flags off: ``_train``)."""
        if self.config.circuit_forward:
            return run_circuit_forward(
                self.model, self.graph, self.circuit.edge_mask, ids, batch.train_mask
            )
        return self.model.bridge(ids)

    def _periodic(self, step: int) -> None:
        if is_every(step, self.config.eval_every, self.total):
            self._evaluate(step)
        if is_every(step, self.config.snapshot_every, self.total):
            self._snapshot(step, "during")
        if is_every(step, self.config.checkpoint_every, self.total):
            self._checkpoint(step)

    def _evaluate(self, step: int) -> dict:
        """Dev figures and the held-out loss; an instruction task's exact match (a generation per
        example) only at the end and every ``exact_match_every`` steps."""
        every = self.config.exact_match_every
        exact = step == self.total or (every > 0 and step % every == 0)
        self.last_eval = evaluate(self.model, self.data, self.config, exact_match=exact)
        self.writer.log_eval(step, **self.last_eval)
        return self.last_eval

    def _snapshot(self, step: int, label: str) -> None:
        n = top_n_at(max(step, 1), self.config)
        scores, selected = snapshot_scores(self.model, self.graph, self.data.probe, n, self.config)
        self.writer.add_snapshot(step, label, self.data.task, scores, selected)
        if step > 0:
            self.writer.add_head_changes(step, self.meter.rows_now())

    def _last_records(self) -> dict:
        """The final evaluation, the "after" snapshot and the last checkpoint; the evaluation."""
        final = self._evaluate(self.total)
        self._snapshot(self.total, "after")
        self._checkpoint(self.total)
        return final

    def _finish(self, seconds: float) -> dict:
        final = self._last_records()
        run = Run(self.writer.dir)
        base = self.base or {
            key.removeprefix("base_"): value
            for key, value in run.summary.items()
            if key.startswith("base_")
        }
        summary = summarise(run, base, final, seconds)
        self.writer.set_summary(summary)
        self.writer.set_status("finished")
        return run.refresh().summary

    # -- checkpoints -----------------------------------------------------------------------------
    def _checkpoint(self, step: int) -> None:
        tensors = {
            f"param/{name}": shards.whole(p, cpu=True) for name, p in self.train_params.items()
        }
        optim_tensors, optim_extra = self.optimizer.state_tensors()
        tensors.update(optim_tensors)
        circuit = self.circuit
        state = ResumeState(
            step=step,
            optimizer=optim_extra,
            circuit=StoredCircuit.of(circuit.nodes, circuit.edge_mask, circuit.top_n)
            if self.config.discovers
            else None,
            extra_nodes=None if self.extra is None else indices_of(self.extra),
            torch_rng=torch.get_rng_state(),
            seconds=self._seconds(),
            touched=tuple(sorted(self.touched)),
        )
        try:
            self.writer.save_checkpoint(step, tensors, state.to_dict())
            self._slim_old_checkpoints()
        except Exception as exc:  # safetensors, torch.save and the OS each raise their own type
            message = (
                f"could not write the checkpoint of step {step} ({type(exc).__name__}: {exc}); "
                f"every step up to {step} is recorded. Free disk space, then resume the run"
            )
            self.writer.set_status("failed", message)
            raise CheckpointError(message) from exc

    def _slim_old_checkpoints(self, keep: int = 2) -> None:
        """Every checkpoint but the newest ``keep`` (which stay resumable) keeps only the tensors
        that had changed by its step, in the model's dtype, and no optimizer state: what loading
        a checkpoint's weights (``run:RUN@STEP``, rescoring, analyses) needs. On SmolLM2 a full
        checkpoint with AdamW state is about 1.6 GB; a slim one holds only the circuit's tensors."""
        from circuitviz.runs.checkpoints import load_resume_state, load_tensors

        for step, path, state_path in self.writer.checkpoint_files()[:-keep]:
            if not (path.is_file() and state_path.is_file()):
                continue
            stored = load_resume_state(state_path)
            if stored.get("slim"):
                continue
            names = [f"param/{name}" for name in stored.get("touched", ())]
            tensors = load_tensors(path)
            kept = {name: tensors[name] for name in names if name in tensors}
            if not kept:  # nothing had changed yet: the untouched model is this step's weights
                first = next(iter(tensors))
                kept = {first: tensors[first]}
            self.writer.save_checkpoint(
                step, kept, {"step": step, "slim": True, "touched": list(stored.get("touched", ()))}
            )

    def _restore(self) -> int | None:
        """Load the newest checkpoint, if any; returns the first step still to run."""
        found = self.writer.latest_checkpoint()
        if found is None:
            return None
        step, path, stored = found
        state = ResumeState.from_dict(stored)
        from circuitviz.runs.checkpoints import load_tensors

        # A sharded model copies only each process's rows to its device (``shards.assign``).
        sharded = any(shards.is_sharded(p) for p in self.train_params.values())
        tensors = load_tensors(path, device="cpu" if sharded else str(self.model.device))
        with torch.no_grad():
            for name, param in self.train_params.items():
                key = f"param/{name}"
                if key not in tensors:
                    raise ValueError(
                        f"checkpoint {path} lacks {key}; was it written by another run?"
                    )
                shards.assign(param, tensors[key])
        self.optimizer.load_state_tensors(tensors, state.optimizer)
        if state.extra_nodes is not None:
            self.extra = mask_of(state.extra_nodes, self.bank.n_nodes)
        if self.config.discovers and state.circuit is not None:
            self._set_circuit(
                StepCircuit(
                    nodes=state.circuit.node_mask(self.bank.n_nodes),
                    edge_mask=state.circuit.edge_mask(self.graph.n_src, self.graph.n_dst),
                    n_edges=len(state.circuit.edges),
                    top_n=state.circuit.top_n,
                )
            )
        torch.set_rng_state(state.torch_rng)
        self.seconds_before = state.seconds
        self.touched = set(state.touched)
        run = Run(self.writer.dir)
        self.base = {
            key.removeprefix("base_"): value
            for key, value in run.summary.items()
            if key.startswith("base_")
        }
        evals = run.evals()
        if len(evals):
            row = evals[evals["step"] <= step].iloc[-1]
            self.last_eval = {"accuracy": row["accuracy"], "task_metric": row["task_metric"]}
        log.info("resuming run %s after step %d", self.writer.run_id, step)
        return step + 1

    def _progress(self, step: int, loss: float) -> StepProgress:
        last = self.last_eval or {}
        return StepProgress(
            step=step,
            total=self.total,
            loss=loss,
            task_metric=last.get("task_metric"),
            accuracy=last.get("accuracy"),
            n_nodes=int(self.circuit.nodes.sum()),
            n_edges=self.circuit.n_edges,
            top_n=self.circuit.top_n,
        )
