"""Exact edge patching: the slow, obviously correct reference that the fast methods are tested against.

For each edge u -> d, one forward in which only destination d's input changes, by
``scale * (a_u(baseline) - a_u(clean))`` at the scored positions (every real token, or the target
position). Everything downstream of d is recomputed; nothing else is touched. Then

* ``scale = 1`` gives the true effect of patching that one edge, m(patched) - m(clean), which EAP
  estimates to first order;
* ``(effect(+eps) - effect(-eps)) / (2 eps)`` is the derivative that EAP computes exactly.

An MLP neuron group's input (``m{L}.g{j}``, see ``circuitviz.models.mlp``) is patched without the
fast path's per-group algebra: a first forward patches the whole MLP input of layer L and keeps the
MLP's hidden activation; the second, clean forward splices group j's neurons of that activation in.
Group j's neurons then see the patched input and every other neuron the clean one.

One forward per edge and per scale, with a Python loop over edges: use it on tiny models only.
"""

from __future__ import annotations

import torch

from circuitviz.attribution.activations import baseline_activations, run_and_capture
from circuitviz.attribution.config import AttributionConfig
from circuitviz.attribution.hooks import dest_hooks
from circuitviz.graph.topology import Graph
from circuitviz.tasks.base import METRICS


def _position_weights(batch, positions: str, device: torch.device) -> torch.Tensor:
    """``[batch, pos]``: 1 where an edge is patched, else 0."""
    mask = batch.attention_mask.to(device)
    if positions == "all":
        return mask.clone()
    weights = torch.zeros_like(mask)
    for row in range(mask.shape[0]):
        weights[row, int(batch.target_pos[row])] = 1
    return weights


def edge_effects(
    model,
    graph: Graph,
    batch,
    config: AttributionConfig,
    edges: list[tuple[int, int]],
    *,
    scale: float = 1.0,
    metric=None,
    means=None,
    extra_hooks: list | None = None,
) -> torch.Tensor:
    """``[len(edges)]``: mean over examples of m(edge scaled in) - m(clean), one forward per edge.

    ``edges`` are (src_idx, dst_idx) pairs of valid edges. Only ``config.baseline``,
    ``config.positions`` and ``config.metric`` are used. ``extra_hooks`` run in every patched
    forward (not in the clean and baseline captures): the EAP-IG oracle moves the input there.
    """
    extra_hooks = list(extra_hooks or [])
    metric = metric if metric is not None else METRICS[config.metric]
    device = model.device
    ids = batch.clean_ids.to(device)
    mask = batch.attention_mask.to(device)
    clean_sources, _, clean_logits = run_and_capture(model, graph, ids, mask)
    base = baseline_activations(model, graph, batch, config.baseline, means)
    base_sources = base.sources.expand_as(clean_sources)
    weights = _position_weights(batch, config.positions, device).to(model.dtype)
    m_clean = metric(clean_logits, batch)
    owner = {}
    for spec in dest_hooks(graph, model):
        for offset, dst_idx in enumerate(range(spec.dst_slice.start, spec.dst_slice.stop)):
            owner[dst_idx] = (spec, offset)

    effects = []
    for src_idx, dst_idx in edges:
        if not bool(graph.valid_mask[src_idx, dst_idx]):
            raise ValueError(f"edge ({src_idx}, {dst_idx}) is not a valid edge of the graph")
        spec, offset = owner[dst_idx]
        delta = scale * (base_sources[src_idx] - clean_sources[src_idx]) * weights[:, :, None]
        if spec.groups is not None:
            logits = _run_with_group_input_patched(
                model, graph, spec.layer, offset, delta, ids, mask, extra_hooks
            )
            effects.append((metric(logits, batch) - m_clean).mean())
            continue

        def patch(x, hook, spec=spec, offset=offset, delta=delta):
            x = x.clone()
            if spec.per_head:
                x[:, :, offset, :] += delta
            else:
                x += delta
            return x

        hooks = [*extra_hooks, (spec.hook_name, patch)]
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            logits = model.bridge(ids, attention_mask=mask)
        effects.append((metric(logits, batch) - m_clean).mean())
    return torch.stack(effects)


def _run_with_group_input_patched(
    model, graph, layer, group, delta, ids, mask, extra_hooks=()
) -> torch.Tensor:
    """Logits with only neuron group ``group`` of layer ``layer``'s MLP reading ``input + delta``."""
    size = model.info.d_mlp // graph.mlp_groups
    cols = slice(group * size, (group + 1) * size)
    kept: dict[str, torch.Tensor] = {}

    def shift(x, hook):
        return x + delta

    def keep(x, hook):
        kept["hidden"] = x.clone()

    def splice(x, hook):
        x = x.clone()
        x[..., cols] = kept["hidden"][..., cols]
        return x

    hidden, mlp_in = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_in"
    with torch.no_grad():
        with model.bridge.hooks(fwd_hooks=[*extra_hooks, (mlp_in, shift), (hidden, keep)]):
            model.bridge(ids, attention_mask=mask)
        with model.bridge.hooks(fwd_hooks=[*extra_hooks, (hidden, splice)]):
            return model.bridge(ids, attention_mask=mask)


def edge_derivatives(
    model, graph: Graph, batch, config: AttributionConfig, edges, *, eps: float = 1e-4, **kwargs
) -> torch.Tensor:
    """Central finite difference of ``edge_effects`` in the scale: what EAP computes in closed form."""
    plus = edge_effects(model, graph, batch, config, edges, scale=eps, **kwargs)
    minus = edge_effects(model, graph, batch, config, edges, scale=-eps, **kwargs)
    return (plus - minus) / (2 * eps)
