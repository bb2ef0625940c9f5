"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG), vectorised.

EAP: Syed, Rager & Conmy (2023), "Attribution Patching Outperforms Automated Circuit Discovery".
EAP-IG: Hanna, Pezzelle & Belinkov (2024), "Have Faith in Faithfulness"; the activation-interpolating
variant follows the MIB benchmark (Mueller et al. 2025), with every source interpolated at once.

For one batch:

1. Baseline activations of every source, ``[n_src, batch, pos, d_model]`` (see ``activations``).
2. A clean forward stores every source activation; then ``diff = baseline - clean``, zeroed on
   padding and cut to the scored positions. Forward hooks hand each destination input on as a fresh
   view carrying a gradient hook, and make the embedding the root of autograd; parameters are
   frozen, so the backward computes activation gradients only. Where no hook needs the bridge's
   hook flags (q/k/v read in closed form, no MLP neuron groups, nothing pinned), every pass runs
   with them off, as training does: heads are read at their output projection's input (each
   head's ``z_h W_O,h``) and MLP inputs at their norm's input.
3. One backward of ``sum over examples of the metric`` to the root. As the gradient ``g_d`` of a
   destination hook arrives, one einsum scores all of its edges:
   ``scores[:n_up, dst] += einsum(diff[:n_up], g_d)`` over batch, pos and d_model.
4. EAP-IG repeats step 3 at m = ig_steps points ``alpha`` and divides by m, where ``alpha``
   interpolates the input embedding (``eap-ig-inputs``) or every source activation
   (``eap-ig-activations``) from the baseline (0) to the clean run (1). ``ig_rule`` picks the
   points: ``left`` (the default) takes alpha = k/m for k = 0..m-1, as the field's reference
   implementation (hannamw/EAP-IG, which MIB uses) does since Feb 2025: it includes the baseline
   end and leaves out the clean one, so step 2's clean forward only captures activations; ``right``
   takes k = 1..m (the reference before Feb 2025, and circuitviz before 0.2): ``alpha = 1`` is the
   clean run of step 2, so EAP-IG with one step is EAP. Activations are pinned to their
   interpolated value while gradients still flow through each node's own computation.
5. ``attribute`` sums over batches and divides by the number of examples.

Four savings for circuit-tuning, whose every discovery step scores one batch:

* the ``mean`` baseline of one batch on its own (``batch_edge_scores`` without ``means``) is the
  mean of step 2's clean activations over the batch's real tokens, taken from that forward rather
  than from one more;
* ``forward_ids``: step 2's forward reads a longer text of which the clean prompt is an exact,
  right-padded prefix (a pair task's training text: prompt, answer, continuation; an instruction
  batch's training text is its clean text). A causal model's activations at the prompt's positions
  are the same, so the capture and the gradients are cut to those positions, and the logits (with
  their autograd graph, ``return_logits``) are the training step's own: one forward serves both;
* ``shared``: when every example's gradient of the training objective is its metric's gradient
  times a known factor (an instruction batch's loss, the mean over all response tokens, against
  the ``process`` metric, each example's mean), plain EAP's step 3 backpropagates the training
  objective instead, to the root and the trainable parameters at once, each example's differences
  scaled by its factor (step 2): one backward serves both as well;
* the replay (``replay``): plain EAP at the target positions (a tuning step's default) reads
  each example's gradients at one position, so step 3 backpropagates a replay of that position
  alone instead of the whole batch, the clean forward runs with the hook flags off (it is a
  training forward plus a few reads), and the corrupted baseline comes from a forward of the
  tokens the target positions read; the scores are the full backward's to rounding
  (``full_backward`` asks for that one).

The sign convention is ``config.SIGN_CONVENTION``: a score estimates m(edge patched) - m(clean).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from einops import rearrange

from circuitviz.attribution import replay
from circuitviz.attribution.activations import (
    BaselineActivations,
    SourceMeans,
    baseline_activations,
    masked_token_sum,
    position_index,
    select_positions,
    source_means,
)
from circuitviz.attribution.config import AttributionConfig, check_batch
from circuitviz.attribution.hooks import (
    ROOT_HOOK,
    DestHook,
    FiredCheck,
    SourceHook,
    dest_hooks,
    frozen_parameters,
    hook_flags,
    hook_names,
    input_hooks,
    plain_hooks,
    qkv_copies,
    source_hooks,
)
from circuitviz.attribution.lean import LeanDest, NormJacobian, input_gradient, lean_dests
from circuitviz.attribution.scores import EdgeScores
from circuitviz.graph.topology import Graph
from circuitviz.tasks.base import METRICS

log = logging.getLogger(__name__)

Metric = Callable[[torch.Tensor, object], torch.Tensor]  # (logits, batch) -> [batch]


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: what each EAP-IG step interpolates (None for plain EAP)."""

    description: str
    interpolate: str | None


METHODS: dict[str, MethodSpec] = {
    "eap": MethodSpec("gradient at the clean input", None),
    "eap-ig-inputs": MethodSpec("gradients along embeddings from baseline to clean", "inputs"),
    "eap-ig-activations": MethodSpec(
        "gradients along every source activation from baseline to clean", "activations"
    ),
}


@dataclass(frozen=True, kw_only=True)
class BatchScores:
    """Scores of one batch, summed (not averaged) over its ``n_examples`` examples, on the model's
    device. ``logits`` is the clean forward's output when asked for (with its autograd graph)."""

    scores: torch.Tensor = field(repr=False)  # [n_src, n_dst]
    n_examples: int
    logits: torch.Tensor | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class SharedBackward:
    """A training objective whose backward also serves the attribution (``batch_edge_scores``).

    ``objective(logits)`` is the scalar a training step backpropagates; example ``b``'s gradient of
    the metric is ``row_scale[b]`` times its gradient of that objective (examples never interact in
    a causal LM's forward), and the objective's gradients accumulate into ``params``' ``.grad``."""

    objective: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    row_scale: torch.Tensor = field(repr=False)  # [batch]
    params: list[torch.Tensor] = field(repr=False)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _AttributionPass:
    """State of one batch's attribution: the activation differences and the score accumulator.
    Hooks close over this object; none outlives ``step``."""

    def __init__(
        self,
        model,
        graph: Graph,
        batch,
        config,
        metric: Metric,
        base: BaselineActivations | None,
        *,
        per_head_copies: bool = False,
        forward: tuple[torch.Tensor, torch.Tensor] | None = None,
        shared: SharedBackward | None = None,
        replayed: bool = False,
    ) -> None:
        self.model, self.graph, self.batch, self.metric = model, graph, batch, metric
        self.shared = shared
        # The clean pass's gradients come from a replay of the target positions (``replay``).
        self.replayed = replayed
        self.context: replay.CleanContext | None = None
        self.interpolate = METHODS[config.method].interpolate
        # None: the batch's own mean, taken from the clean forward's capture (``_finish_diff``).
        self.base: BaselineActivations | None = base
        self.sources: list[SourceHook] = source_hooks(graph, model)
        self.dests: list[DestHook] = dest_hooks(graph, model)
        # q/k/v destinations read without per-head input copies (``lean``), where the family's
        # projection weights are known; the rest (MLPs, logits) read their input hooks.
        self.lean = None if per_head_copies else lean_dests(model, self.dests)
        # No hook needs the bridge's hook flags (per-head results, a separate MLP input): heads are
        # read at their output projection's input, MLP inputs at their norm's, q/k/v the lean way.
        # Pinning sources (EAP-IG on activations) writes per-head results, which needs them.
        self.light = (
            self.lean is not None and graph.mlp_groups is None and self.interpolate != "activations"
        )
        self.layer_inputs: dict[int, NormJacobian] = {}
        self.mask = batch.attention_mask.to(model.device)
        self.ids = batch.clean_ids.to(model.device)
        n_batch, n_pos = self.ids.shape
        # What the capturing forward reads: the prompt, or a text it is a prefix of
        # (``forward_ids``); activations and gradients are kept at the prompt's positions only.
        self.forward = (
            (self.ids, self.mask)
            if forward is None
            else (forward[0].to(model.device), forward[1].to(model.device))
        )
        self.n_pos = n_pos
        self.pos_idx = position_index(batch, config.positions, model.device)
        # Only the scored positions' differences are ever read, unless EAP-IG pins every
        # position of every source: then the capture keeps those positions alone (a tuning
        # step's "target" keeps one per example). The batch's own mean, which needs every real
        # token, is summed source by source as the capture goes (in float64, never the whole
        # buffer at once).
        self.cut = self.pos_idx is not None and self.interpolate != "activations"
        kept = self.pos_idx.shape[1] if self.cut else n_pos
        self.token_sums: tuple[torch.Tensor, torch.Tensor] | None = None
        if base is None:
            d_model = model.info.d_model
            self.token_sums = (
                torch.zeros(graph.n_src, d_model, device=model.device, dtype=torch.float64),
                torch.zeros(d_model, device=model.device, dtype=torch.float64),
            )
        shape = (graph.n_src, n_batch, kept, model.info.d_model)
        # Clean activations, then baseline - clean; the capture hooks fill every row.
        self.diff = torch.empty(shape, device=model.device, dtype=model.dtype)
        self.scored_diff = self.diff
        self.flat_diff = self.diff.view(graph.n_src, -1)
        self.scores = torch.zeros(
            graph.n_src, graph.n_dst, device=model.device, dtype=_score_dtype(model.dtype)
        )
        self.root: torch.Tensor | None = None
        self.handles: list = []
        self.grads_seen: set[str] = set()
        self.fired = FiredCheck([])

    # -- forward hooks ----------------------------------------------------------------------------
    def _sum_embedding(self, x: torch.Tensor) -> None:
        """The batch's own mean baseline, embedding part: its sum over the real tokens."""
        if self.token_sums is not None:
            self.token_sums[1].add_(masked_token_sum(x.detach()[:, : self.n_pos], self.mask))

    def _root_hook(self, alpha: float, capture: bool = False):
        def hook(x, hook):
            if capture:
                self._sum_embedding(x)
            if alpha != 1.0:
                x = self.base.embed + alpha * (x - self.base.embed)
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            self.root = x
            self.fired.mark(ROOT_HOOK)
            return x

        return hook

    def _capture_hook(self, spec: SourceHook):
        def hook(x, hook):
            with torch.no_grad():  # MLP groups multiply by weights that may require grad
                rows = spec.node_major(x.detach()[:, : self.n_pos])  # [n, batch, pos, d_model]
                if self.token_sums is not None:
                    self.token_sums[0][spec.src_slice] += masked_token_sum(rows, self.mask)
                if self.cut:
                    rows = select_positions(rows, self.pos_idx, batch_dim=1)
                self.diff[spec.src_slice] = rows
            self.fired.mark(spec.hook_name)

        return hook

    def _pin_hooks(self, spec: SourceHook, alpha: float) -> list:
        """Give the sources the value baseline + alpha (clean - baseline); keep their own gradient.
        MLP groups are read at the hidden activation and corrected at the MLP output."""

        def target() -> torch.Tensor:  # [n, batch, pos, d_model]
            return self.base.sources[spec.src_slice] - alpha * self.diff[spec.src_slice]

        if spec.groups is None:

            def hook(x, hook):
                pinned = target()
                if spec.per_head:
                    pinned = rearrange(pinned, "head batch pos d_model -> batch pos head d_model")
                else:
                    pinned = pinned[0]
                self.fired.mark(spec.hook_name)
                return x + (pinned - x).detach()

            return [(spec.hook_name, hook)]
        now: dict[str, torch.Tensor] = {}

        def read(x, hook):
            now["groups"] = spec.node_major(x.detach())
            self.fired.mark(spec.hook_name)

        def write(x, hook):
            self.fired.mark(spec.write_hook)
            return x + (target().sum(0) - now.pop("groups").sum(0)).detach()

        return [(spec.hook_name, read), (spec.write_hook, write)]

    def _watch(self, spec: DestHook):
        """``x`` -> a fresh view of it whose gradient scores ``spec``'s edges: hook_mlp_in *is*
        the residual stream tensor, and its own gradient would include the residual path's."""

        def watch(x: torch.Tensor) -> torch.Tensor:
            view = x.view_as(x)
            self.handles.append(view.register_hook(lambda grad: self._on_grad(spec, grad)))
            return view

        return watch

    def _dest_hooks(self, spec: DestHook) -> list:
        return input_hooks(spec, self._watch(spec), lambda name: self.fired.mark(name))

    def _mlp_input_hooks(self, spec: DestHook) -> list:
        """An MLP's input read at its norm's input (``ln2.hook_in``), where a forward with the hook
        flags off has it: a view of the residual stream that only the norm reads, so its gradient
        is the MLP's alone (the flags' ``hook_mlp_in`` copies the stream for the same reason)."""
        name = f"blocks.{spec.hook_name.split('.')[1]}.ln2.hook_in"
        watch = self._watch(spec)

        def hook(x, hook):
            self.fired.mark(name)
            return watch(x)

        return [(name, hook)]

    def _lean_hooks(self, dests: list[LeanDest]) -> list:
        """Keep each layer's input; watch each projection output's gradient (``lean``)."""

        def keep(dest: LeanDest):
            def hook(x, hook):
                # Only the scored positions' gradients are ever used: the norm's Jacobian is
                # taken there alone.
                x = select_positions(x.detach()[:, : self.n_pos], self.pos_idx, batch_dim=0)
                self.layer_inputs[dest.layer] = NormJacobian(dest.norm, x)
                self.fired.mark(dest.input_hook)

            return hook

        def watch(dest: LeanDest):
            def on_grad(grad: torch.Tensor) -> None:
                x = self.layer_inputs[dest.layer]
                grad = select_positions(grad[:, : self.n_pos], self.pos_idx, batch_dim=0)
                head_major = input_gradient(dest, x, grad)  # [head, batch, pos, d_model]
                # A transposed view: the product reads it as it lies, no copy.
                self._accumulate(dest.spec, head_major.reshape(head_major.shape[0], -1).T)

            def hook(x, hook):
                view = x.view_as(x)
                self.handles.append(view.register_hook(on_grad))
                self.fired.mark(dest.output_hook)
                return view

            return hook

        hooks = {}
        for dest in dests:
            hooks.setdefault(dest.input_hook, keep(dest))
        return list(hooks.items()) + [(dest.output_hook, watch(dest)) for dest in dests]

    def _replay_hooks(self) -> list:
        """Keep what the replay reads (``replay.CleanContext``): the embedding at each target
        position and every layer's keys and values."""
        context = self.context = replay.CleanContext()

        def root(x, hook):
            self._sum_embedding(x)
            context.embed = select_positions(x.detach(), self.pos_idx, batch_dim=0)[:, 0]
            self.fired.mark(ROOT_HOOK)

        def keep(layer: int, which: str, name: str):
            kept = context.keys if which == "k" else context.values

            def hook(x, hook):
                kept[layer] = x.detach()[:, : self.n_pos]
                self.fired.mark(name)

            return hook

        kv = replay.kv_hooks(self.model.info.n_layers)
        return [(ROOT_HOOK, root)] + [(name, keep(lay, w, name)) for lay, w, name in kv]

    def _head_capture_hook(self, spec: SourceHook) -> tuple:
        """A layer's heads, read where a forward with the hook flags off (``light``) has them: the
        output projection's input ``z`` (``[batch, pos, head * d_head]``, or ``[..., head,
        d_head]``).
        Each head's result ``z_h W_O,h`` at the target positions, and (the batch's own mean) its
        sum over real tokens, which is the sum of ``z_h`` times ``W_O,h``."""
        layer = int(spec.hook_name.split(".")[1])
        name = f"blocks.{layer}.attn.o.hook_in"
        info = self.model.info
        attn = self.model.bridge.blocks[layer].attn

        def hook(x, hook):
            with torch.no_grad():
                heads = replay.head_weights(attn.o.original_component, info)
                z = x.detach()[:, : self.n_pos]
                z = z.reshape(*z.shape[:2], info.n_heads, info.d_head)
                if self.token_sums is not None:
                    sums = masked_token_sum(z.flatten(-2), self.mask).view(info.n_heads, -1)
                    self.token_sums[0][spec.src_slice] += torch.einsum(
                        "he,hed->hd", sums, heads.to(sums.dtype)
                    )
                at = select_positions(z, self.pos_idx, batch_dim=0)  # [batch, 1, head, d_head]
                self.diff[spec.src_slice] = torch.einsum("bphe,hed->hbpd", at, heads)
            self.fired.mark(name)

        return (name, hook)

    def _replay_backward(self) -> None:
        """Step 3 for the clean pass by the replay: the metric of the target positions' replayed
        logits, backpropagated through them alone, its gradients scored as they arrive."""
        qkv, inputs = replay.wanted(self.dests, self.lean)
        by_name = {spec.hook_name: spec for spec in self.dests}

        def on_qkv(dest: LeanDest, head_major: torch.Tensor) -> None:
            self._accumulate(dest.spec, head_major.reshape(head_major.shape[0], -1).T)

        def on_input(name: str, grad: torch.Tensor) -> None:
            self._accumulate(by_name[name], grad.reshape(-1, 1))

        watch = replay.Watch(qkv=qkv, inputs=inputs, on_qkv=on_qkv, on_input=on_input)
        with torch.enable_grad():  # the gradient is asked of the root alone: no weight's
            logits, root = replay.replay_logits(
                self.model, self.batch, self.context, self.mask, watch
            )
            objective = replay.metric_at_target(self.metric, logits, self.batch).sum()
            torch.autograd.grad(objective, root)
        self.context = None

    # -- backward ---------------------------------------------------------------------------------
    def _on_grad(self, spec: DestHook, grad: torch.Tensor) -> None:
        grad = select_positions(grad[:, : self.n_pos], self.pos_idx, batch_dim=0)
        if spec.per_head:
            flat = rearrange(grad, "batch pos head d_model -> (batch pos d_model) head")
        else:
            flat = rearrange(grad, "batch pos d_model -> (batch pos d_model) 1")
        self._accumulate(spec, flat)

    def _accumulate(self, spec: DestHook, flat: torch.Tensor) -> None:
        # One matrix product per destination hook: [n_up, (batch pos d_model)] times
        # [(batch pos d_model), head] (the gradient at the scored positions). It is the einsum
        # "n_src batch pos d_model, batch pos head d_model -> n_src head" without the einsum's
        # permute-and-copy on every call.
        contribution = self.flat_diff[: spec.n_up] @ flat.to(self.flat_diff.dtype)
        self.scores[: spec.n_up, spec.dst_slice] += contribution.to(self.scores.dtype)
        self.grads_seen.add(spec.hook_name)

    def _finish_diff(self) -> None:
        """Turn the stored clean activations into baseline - clean, zero on padding, and cut them to
        the scored positions, flattened to ``[n_src, (batch pos d_model)]`` for the products."""
        if self.base is None:  # the batch's own mean, from the sums the capture hooks took
            n_tokens = int(self.mask.sum())
            if n_tokens == 0:
                raise ValueError("the mean baseline needs at least one real token")
            sums, embed_sums = self.token_sums
            dtype = self.diff.dtype
            self.base = BaselineActivations(
                sources=(sums / n_tokens).to(dtype)[:, None, None, :],
                embed=(embed_sums / n_tokens).to(dtype)[None, None, :],
            )
            self.token_sums = None
        base, mask = self.base.sources, self.mask
        if self.cut:  # the differences are kept at the scored positions only
            if base.shape[2] > 1:
                base = select_positions(base, self.pos_idx, batch_dim=1)
            mask = select_positions(mask, self.pos_idx, batch_dim=0)
        torch.sub(base, self.diff, out=self.diff)
        weights = mask.to(self.diff.dtype)[None, :, :, None]
        if self.shared is not None:
            # The backward is the objective's: each example's product with its gradient becomes
            # the metric's when its difference carries the example's factor.
            scale = self.shared.row_scale.to(device=self.diff.device, dtype=self.diff.dtype)
            weights = weights * scale[None, :, None, None]
        self.diff.mul_(weights)
        self.scored_diff = (
            self.diff if self.cut else select_positions(self.diff, self.pos_idx, batch_dim=1)
        )
        self.flat_diff = rearrange(
            self.scored_diff, "n_src batch pos d_model -> n_src (batch pos d_model)"
        ).contiguous()

    def step(
        self,
        alpha: float,
        *,
        capture: bool,
        backward: bool = True,
        keep_graph: bool = False,
    ) -> torch.Tensor:
        """One forward at interpolation point ``alpha`` and (unless ``backward`` is off, for a
        capture-only clean forward) one backward accumulating the scores. Returns the logits;
        with ``keep_graph`` they keep their autograd graph for a later backward."""
        replayed = capture and backward and self.replayed
        fwd = self._replay_hooks() if replayed else [(ROOT_HOOK, self._root_hook(alpha, capture))]
        for spec in self.sources:
            if capture and self.light and spec.per_head:
                fwd.append(self._head_capture_hook(spec))
            elif capture:
                fwd.append((spec.hook_name, self._capture_hook(spec)))
            elif self.interpolate == "activations":
                fwd += self._pin_hooks(spec, alpha)
        if backward and not replayed:
            lean = (
                []
                if self.lean is None
                else [self.lean[s.hook_name] for s in self.dests if s.hook_name in self.lean]
            )
            for spec in self.dests:
                if self.lean is not None and spec.hook_name in self.lean:
                    continue
                light_mlp = self.light and spec.hook_name.endswith(".hook_mlp_in")
                fwd += self._mlp_input_hooks(spec) if light_mlp else self._dest_hooks(spec)
            fwd += self._lean_hooks(lean)
        self.fired = FiredCheck(hook_names(fwd))
        bridge = self.model.bridge
        try:
            grad = (backward and not replayed) or keep_graph
            # Without them the forward is a training forward's (the flags cost 27-84% per pass).
            flags = hook_flags(bridge, False) if self.light else contextlib.nullcontext()
            hooked = plain_hooks(bridge, fwd) if replayed else bridge.hooks(fwd_hooks=fwd)
            with (
                torch.set_grad_enabled(grad),
                flags,
                qkv_copies(bridge, self.lean is None),
                hooked,
            ):
                # The capture reads ``forward``; interpolated points read the prompt itself.
                ids, mask = self.forward if capture else (self.ids, self.mask)
                logits = bridge(ids, attention_mask=mask)
            self.fired.verify("edge attribution forward")
            if capture:
                self._finish_diff()
            if not backward:
                return logits
            self.grads_seen.clear()
            if replayed:
                self._replay_backward()
            elif capture and self.shared is not None:
                objective = self.shared.objective(logits)
                torch.autograd.backward(objective, inputs=[self.root, *self.shared.params])
            else:
                objective = self.metric(logits, self.batch).sum()
                torch.autograd.grad(objective, self.root, retain_graph=keep_graph)
        finally:
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            self.layer_inputs.clear()
            self.root = None
        missing = [spec.hook_name for spec in self.dests if spec.hook_name not in self.grads_seen]
        if missing:
            raise RuntimeError(f"edge attribution backward: no gradient reached {missing}")
        return logits


def batch_edge_scores(
    model,
    graph: Graph,
    batch,
    config: AttributionConfig,
    *,
    metric: Metric | None = None,
    means: SourceMeans | None = None,
    return_logits: bool = False,
    per_head_copies: bool = False,
    forward_ids: tuple[torch.Tensor, torch.Tensor] | None = None,
    shared: SharedBackward | None = None,
    full_backward: bool = False,
) -> BatchScores:
    """Score every edge of ``graph`` on one batch; the per-step entry point of circuit-tuning.

    ``metric(logits, batch) -> [batch]`` defaults to ``circuitviz.tasks.METRICS[config.metric]``.
    ``means`` is the data mean for the ``mean`` baseline (default: this batch's own mean, taken
    from the clean forward). With ``return_logits`` the parameters keep their gradients
    switched on for the clean forward, and its logits come back with the autograd graph intact, so
    a training step can compute its loss from them and call ``backward`` without another forward.
    ``per_head_copies``: read the q/k/v gradients from the bridge's per-head input copies instead
    of in closed form (``circuitviz.attribution.lean``); the same scores, slower (for checks).
    ``forward_ids`` = (ids, mask) of a text each clean prompt is an exact, right-padded prefix of
    (a pair task's ``train_ids`` and ``train_mask``), read by the clean forward instead of the
    prompt (module docstring); ValueError when a prompt is not its prefix.
    ``shared``: backpropagate this training objective (with ``return_logits``, for plain EAP,
    whose one gradient point is the clean pass) instead of the metric, each example's activation
    differences scaled by its ``row_scale``: its parameters' ``.grad`` hold the objective's
    gradients afterwards, and the logits come back without a graph to backpropagate again.
    ``full_backward``: backpropagate the clean pass through every position even where the replay
    of the target positions applies (``circuitviz.attribution.replay``); the same scores, slower
    (for checks).
    """
    check_batch(batch, config.metric, config.baseline, custom_metric=metric is not None)
    metric = metric if metric is not None else METRICS[config.metric]
    if forward_ids is not None:
        check_prefix(batch.clean_ids, batch.attention_mask, *forward_ids)
    replayed = (
        shared is None
        and not full_backward
        and replay.applies(
            model,
            graph,
            config,
            batch,
            custom_metric=metric is not METRICS[config.metric],
            per_head_copies=per_head_copies,
        )
    )
    if config.baseline == "mean" and means is None:
        base = None  # the batch's own mean, from the clean forward
    elif config.baseline == "corrupted" and replayed:
        base = replay.corrupted_baseline(model, graph, batch)
    else:
        base = baseline_activations(model, graph, batch, config.baseline, means)
    run = _AttributionPass(
        model,
        graph,
        batch,
        config,
        metric,
        base,
        per_head_copies=per_head_copies,
        forward=forward_ids,
        shared=shared,
        replayed=replayed,
    )
    alphas = config.alphas()
    if shared is not None and not (return_logits and alphas == (1.0,)):
        raise ValueError(
            "a shared backward needs return_logits and plain EAP (one gradient point, the clean "
            f"pass); got {config.method} with alphas {alphas}"
        )
    # The clean forward captures the activation differences; it is also the alpha = 1 point when
    # the rule includes it.
    with frozen_parameters(model.bridge, enabled=not return_logits):
        keep = return_logits and shared is None
        logits = run.step(1.0, capture=True, backward=1.0 in alphas, keep_graph=keep)
    with frozen_parameters(model.bridge, enabled=alphas != (1.0,)):
        for alpha in alphas:
            if alpha != 1.0:
                run.step(alpha, capture=False)
    return BatchScores(
        scores=run.scores / len(alphas),
        n_examples=int(run.ids.shape[0]),
        logits=logits if return_logits else None,
    )


def check_prefix(
    clean_ids: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, ids_mask: torch.Tensor
) -> None:
    """Raise unless every row's real clean tokens are the first tokens of the same row of ``ids``,
    right-padded, so the prompt's activations in a forward of ``ids`` are its own."""
    n_pos = clean_ids.shape[1]
    if ids.shape[0] != clean_ids.shape[0] or ids.shape[1] < n_pos:
        raise ValueError(
            f"forward_ids {tuple(ids.shape)} cannot hold the clean prompts {tuple(clean_ids.shape)}"
        )
    real = mask.to(ids.device).bool()
    same = (ids[:, :n_pos] == clean_ids.to(ids.device)) & ids_mask[:, :n_pos].bool()
    if not bool((same | ~real).all()) or not bool((real[:, 1:] <= real[:, :-1]).all()):
        raise ValueError(
            "forward_ids must start with each clean prompt, right-padded: the prompt's "
            "activations would not be its own"
        )


def attribute(
    model,
    graph: Graph,
    batches: Iterable,
    config: AttributionConfig,
    *,
    metric: Metric | None = None,
    progress: Callable[[int], None] | None = None,
) -> EdgeScores:
    """Mean edge scores over every example of ``batches`` (any iterable of task batches).

    With the ``mean`` baseline and several batches they are read twice: once for the data mean,
    once to score (a single batch's mean is taken from its own clean forward).
    ``progress(n_batches_done)`` is called after each batch. ``metric(logits, batch) -> [batch]``
    replaces the config's metric (any differentiable function of the logits).

    >>> import circuitviz as cv
    >>> model = cv.load_model("demo")
    >>> graph = cv.graph_for(model)
    >>> data = cv.task_data("sv-agreement", model, split="train", n=16)
    >>> scores = cv.attribute(model, graph, data.batches(8), cv.AttributionConfig())
    >>> tuple(scores.scores.shape), scores.n_examples
    ((37, 101), 16)
    """
    means = None
    if config.baseline == "mean":
        batches = list(batches)
        if len(batches) > 1:  # one batch's mean comes from its own clean forward
            means = source_means(model, graph, batches)
    total = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.float64, device=model.device)
    n_examples = 0
    for done, batch in enumerate(batches, start=1):
        result = batch_edge_scores(model, graph, batch, config, metric=metric, means=means)
        total += result.scores
        n_examples += result.n_examples
        if progress is not None:
            progress(done)
    return mean_edge_scores(total, n_examples, graph, config)


def mean_edge_scores(
    total: torch.Tensor, n_examples: int, graph: Graph, config: AttributionConfig
) -> EdgeScores:
    """``EdgeScores`` from scores summed over ``n_examples`` examples (``BatchScores.scores``)."""
    if n_examples == 0:
        raise ValueError("attribute needs at least one example; the batches were empty")
    total = total.to(torch.float64)
    scores = (total / n_examples).float().cpu().masked_fill(~graph.valid_mask, 0.0)
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise NonFiniteScores(
            f"{bad} of {graph.n_edges} edge scores are NaN or infinite: the model's forward or "
            "its gradient was not finite on these prompts (left-padded prompts do that on a "
            "Llama-family bridge: pad on the right; a diverged model does it anywhere)"
        )
    log.info("scored %d edges on %d examples (%s)", graph.n_edges, n_examples, config.method)
    return EdgeScores(scores=scores, graph=graph, config=config, n_examples=n_examples)


class NonFiniteScores(ValueError):
    """Edge scores that are NaN or infinite: an error, never a result."""
