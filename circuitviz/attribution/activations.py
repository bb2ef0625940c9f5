"""Source activations of a run, the baselines an ablated activation is replaced by, and positions.

Activations are stored node-major, ``[n_src, batch, pos, d_model]``, so that the sources a
destination reads are one contiguous prefix ``[:n_up]`` and one einsum scores all of its edges.
A baseline is the value each source takes when ablated:

* ``corrupted``: the source's activation on the corrupted prompt (a no-grad forward);
* ``mean``: the source's mean activation over every real (non-padding) token of the data;
* ``zero``: zero.

Batches are duck-typed: anything with ``clean_ids``, ``corrupt_ids``, ``attention_mask`` and
``target_pos`` (see ``circuitviz.tasks.TaskBatch``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from circuitviz.attribution.hooks import ROOT_HOOK, FiredCheck, qkv_copies, source_hooks
from circuitviz.graph.topology import Graph


@dataclass(frozen=True, kw_only=True)
class SourceMeans:
    """Mean activation of every source ``[n_src, d_model]`` and of the embedding ``[d_model]``."""

    sources: torch.Tensor = field(repr=False)
    embed: torch.Tensor = field(repr=False)
    n_tokens: int


@dataclass(frozen=True, kw_only=True)
class BaselineActivations:
    """What each source is replaced by when ablated, broadcastable to ``[n_src, batch, pos,
    d_model]``; ``embed`` is the same for the embedding (the EAP-IG input path starts there)."""

    sources: torch.Tensor = field(repr=False)
    embed: torch.Tensor = field(repr=False)


def run_and_capture(model, graph: Graph, ids: torch.Tensor, attention_mask: torch.Tensor):
    """One no-grad forward; returns (sources ``[n_src, batch, pos, d_model]``, embedding
    ``[batch, pos, d_model]``, logits ``[batch, pos, d_vocab]``)."""
    hooks = source_hooks(graph, model)
    n_batch, n_pos = ids.shape
    sources = torch.empty(
        graph.n_src, n_batch, n_pos, model.info.d_model, device=model.device, dtype=model.dtype
    )
    captured: dict[str, torch.Tensor] = {}
    fired = FiredCheck([h.hook_name for h in hooks] + [ROOT_HOOK])

    def store(spec):
        def hook(x, hook):
            sources[spec.src_slice] = spec.node_major(x)
            fired.mark(spec.hook_name)

        return hook

    def store_embed(x, hook):
        captured["embed"] = x.clone()
        fired.mark(ROOT_HOOK)

    fwd = [(ROOT_HOOK, store_embed)] + [(spec.hook_name, store(spec)) for spec in hooks]
    # Only sources are read: the per-head q/k/v input copies would be made for nothing.
    with torch.no_grad(), qkv_copies(model.bridge, False), model.bridge.hooks(fwd_hooks=fwd):
        logits = model.bridge(ids, attention_mask=attention_mask)
    fired.verify("capturing source activations")
    return sources, captured["embed"], logits


def source_means(model, graph: Graph, batches: Iterable) -> SourceMeans:
    """Mean of every source's activation over all real tokens of the clean prompts in ``batches``."""
    total = torch.zeros(graph.n_src, model.info.d_model, device=model.device, dtype=torch.float64)
    embed_total = torch.zeros(model.info.d_model, device=model.device, dtype=torch.float64)
    n_tokens = 0
    for batch in batches:
        mask = batch.attention_mask.to(model.device)
        sources, embed, _ = run_and_capture(model, graph, batch.clean_ids.to(model.device), mask)
        sums, embed_sums = token_sums(sources, embed, mask)
        total += sums
        embed_total += embed_sums
        n_tokens += int(mask.sum())
    return _means(total, embed_total, n_tokens, model.dtype)


def token_sums(sources: torch.Tensor, embed: torch.Tensor, mask: torch.Tensor):
    """float64 sums over the real tokens of ``mask``: (``[n_src, d_model]``, ``[d_model]``)."""
    return masked_token_sum(sources, mask), masked_token_sum(embed, mask)


def masked_token_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` ``[..., batch, pos, d_model]`` summed in float64 over the real tokens of ``mask``
    ``[batch, pos]``: ``[..., d_model]``."""
    # Summed in float64 as read, without a float64 copy of ``x``.
    return x[..., mask.to(x.device).bool(), :].sum(dim=-2, dtype=torch.float64)


def _means(total, embed_total, n_tokens: int, dtype: torch.dtype) -> SourceMeans:
    if n_tokens == 0:
        raise ValueError("source_means needs at least one real token; the batches were empty")
    return SourceMeans(
        sources=(total / n_tokens).to(dtype),
        embed=(embed_total / n_tokens).to(dtype),
        n_tokens=n_tokens,
    )


def baseline_activations(
    model, graph: Graph, batch, baseline: str, means: SourceMeans | None = None
) -> BaselineActivations:
    """The baseline of one batch. For ``mean`` without ``means``, the batch's own mean is used."""
    if baseline == "corrupted":
        if getattr(batch, "corrupt_ids", None) is None:
            raise ValueError(
                "the 'corrupted' baseline needs a corrupted prompt, which this batch (an "
                "instruction/SFT task) does not have: use baseline 'mean' or 'zero'"
            )
        mask = batch.attention_mask.to(model.device)
        sources, embed, _ = run_and_capture(model, graph, batch.corrupt_ids.to(model.device), mask)
        return BaselineActivations(sources=sources, embed=embed)
    if baseline == "mean":
        means = means if means is not None else source_means(model, graph, [batch])
        return BaselineActivations(
            sources=means.sources[:, None, None, :], embed=means.embed[None, None, :]
        )
    if baseline == "zero":
        zeros = torch.zeros(graph.n_src, 1, 1, model.info.d_model, device=model.device)
        return BaselineActivations(sources=zeros.to(model.dtype), embed=zeros[0].to(model.dtype))
    raise ValueError(f"baseline must be corrupted, mean or zero, got {baseline!r}")


def position_index(batch, positions: str, device: torch.device) -> torch.Tensor | None:
    """``[batch, 1]`` index of the position the metric reads for ``target``; None for ``all``."""
    if positions == "target":
        if getattr(batch, "target_pos", None) is None:
            raise ValueError(
                "positions 'target' needs a pair task's answer position; an instruction (SFT) "
                "batch has none: use positions 'all'"
            )
        return batch.target_pos.to(device)[:, None]
    if positions == "all":
        return None
    raise ValueError(f"positions must be all or target, got {positions!r}")


def select_positions(x: torch.Tensor, pos_idx: torch.Tensor | None, batch_dim: int) -> torch.Tensor:
    """Keep only the positions ``pos_idx`` (``[batch, k]``) of ``x``, whose batch axis is
    ``batch_dim`` and whose position axis follows it; ``None`` keeps every position."""
    if pos_idx is None:
        return x
    rows = torch.arange(pos_idx.shape[0], device=pos_idx.device)[:, None]  # [batch, 1]
    index = (slice(None),) * batch_dim + (rows, pos_idx)
    return x[index]
