"""Direct logit attribution: how much each node writes the task's answer straight into the logits.

For a pair task (an answer and a wrong token at a target position):

1. One forward captures every source node's output (the embedding, each head's output through
   its own rows of W_O, each MLP's or MLP group's output) and the final residual stream, at each
   example's target position.
2. The final norm is linearised by freezing its scale at its value on the whole residual stream:
   LayerNorm ``gamma * (x - mean(x)) / sigma`` and RMSNorm ``gamma * x / rms``, with ``sigma`` and
   ``rms`` those of the full residual. Each node's share of the residual then passes through it on
   its own; the norm's shift (``beta``) is not any node's.
3. Each share is projected onto ``W_U[answer] - W_U[wrong]``: the node's direct logit attribution.
4. What the residual holds besides the nodes' outputs (attention output biases) is ``rest``, with
   the norm's shift and the unembedding's bias. The nodes plus ``rest`` equal the model's
   logit difference exactly (the oracle test).

Values are means over the batch's examples; ``per_example`` keeps them per example.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.attribution.activations import run_and_capture
from circuitviz.graph.topology import Graph

FROZEN_SCALE = (
    "the final norm's scale is frozen at its value on the whole residual stream, so each node's "
    "share passes through it linearly"
)


@dataclass(frozen=True)
class DirectLogitAttribution:
    """Per-node direct effect on logit(answer) - logit(wrong) at the target position."""

    nodes: tuple[str, ...]  # the graph's source names: input, heads, MLPs (or MLP groups)
    per_example: torch.Tensor = field(repr=False)  # [n_nodes, batch] float64
    rest: torch.Tensor = field(repr=False)  # [batch]: biases and the norm's shift
    logit_diff: torch.Tensor = field(repr=False)  # [batch]: the model's own, from its logits

    @property
    def values(self) -> torch.Tensor:
        """``[n_nodes]``: the mean over the examples."""
        return self.per_example.mean(1)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.nodes, self.values.tolist()))


def direct_logit_attribution(model, graph: Graph, batch) -> DirectLogitAttribution:
    """DLA of every source node of ``graph`` on a pair-task ``batch`` (module docstring)."""
    for name in ("target_pos", "answer_ids", "wrong_ids"):
        if getattr(batch, name, None) is None:
            raise ValueError(
                f"direct logit attribution needs a pair task (an answer and a wrong token at a "
                f"target position); this batch has no {name}"
            )
    if len(batch) == 0:
        raise ValueError("direct logit attribution needs at least one example; the batch is empty")
    device = model.device
    ids = batch.clean_ids.to(device)
    mask = batch.attention_mask.to(device)
    final: dict[str, torch.Tensor] = {}

    def keep_final(x, hook):
        final["resid"] = x.detach()

    from circuitviz.tuning.discovery import hook_flags

    with (
        hook_flags(model.bridge, True),
        model.bridge.hooks(fwd_hooks=[("ln_final.hook_in", keep_final)]),
    ):
        sources, _, logits = run_and_capture(model, graph, ids, mask)
    rows = torch.arange(len(batch), device=device)
    pos = batch.target_pos.to(device)
    shares = sources[:, rows, pos].double()  # [n_src, batch, d_model]
    resid = final["resid"][rows, pos].double()  # [batch, d_model]
    unembed = model.bridge.unembed.original_component
    answer, wrong = batch.answer_ids.to(device), batch.wrong_ids.to(device)
    weight = unembed.weight.detach()
    direction = (weight[answer] - weight[wrong]).double()  # [batch, d_model]
    norm = model.bridge.ln_final.original_component
    linear, shift = _frozen_norm(norm, resid)
    per_node = (linear(shares) * direction).sum(-1)
    rest = (linear(resid - shares.sum(0)) * direction).sum(-1) + (shift * direction).sum(-1)
    bias = getattr(unembed, "bias", None)
    if bias is not None:
        rest = rest + (bias[answer] - bias[wrong]).detach().double()
    model_diff = (logits[rows, pos, answer] - logits[rows, pos, wrong]).detach().double()
    if not torch.isfinite(per_node).all():
        raise ValueError(
            "direct logit attribution came out non-finite: the model's activations overflow"
        )
    return DirectLogitAttribution(
        nodes=tuple(graph.src_names), per_example=per_node, rest=rest, logit_diff=model_diff
    )


def _frozen_norm(norm: torch.nn.Module, resid: torch.Tensor):
    """(x -> the norm's linear part at ``resid``'s frozen scale, the norm's shift ``[d_model]``)."""
    weight = norm.weight.detach().double() if norm.weight is not None else 1.0
    if isinstance(norm, torch.nn.LayerNorm):
        centred = resid - resid.mean(-1, keepdim=True)
        sigma = (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        bias = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(resid)
        return lambda x: weight * (x - x.mean(-1, keepdim=True)) / sigma, bias
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None:
        raise NotImplementedError(
            f"direct logit attribution does not know the final norm {type(norm).__name__}"
        )
    rms = (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return lambda x: weight * x / rms, torch.zeros_like(resid)
