"""Attention patterns, read from the model's own forward, and where the metric position looks.

* ``attention_patterns``: every layer's pattern ``[n_layers, batch, n_heads, query, key]`` from one
  forward (the bridge's ``hook_pattern``; with grouped-query attention every query head has its own
  row). The oracle test recomputes them from the weights by hand (GPT-2) and against Hugging Face's
  own eager attention (Llama family).
* ``prompt_pattern``: the whole pattern of every head on one prompt (its real tokens), with the
  tokens, for a page to draw at a chosen step;
* ``attention_to_tagged``: per head, the attention weight from each example's target position to its
  *tagged* tokens, the positions where the clean and the corrupted prompt differ (the subject whose
  number flips, IOI's names, the occupation): ``[n_layers, n_heads]``, the mean over examples.
"""

from __future__ import annotations

import torch


def attention_patterns(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """``[n_layers, batch, n_heads, query, key]`` attention weights of one no-grad forward."""
    n_layers = model.info.n_layers
    patterns: list[torch.Tensor | None] = [None] * n_layers

    def keep(layer: int):
        def hook(pattern, hook):
            patterns[layer] = pattern.detach()

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_pattern", keep(layer)) for layer in range(n_layers)]
    mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(ids.to(model.device), attention_mask=mask.to(model.device))
    missing = [layer for layer, p in enumerate(patterns) if p is None]
    if missing:
        raise RuntimeError(f"no attention pattern came from layers {missing}")
    return torch.stack(patterns)


def tagged_positions(batch) -> torch.Tensor:
    """``[batch, pos]`` bool: the real tokens where the clean and the corrupted prompt differ."""
    if getattr(batch, "corrupt_ids", None) is None:
        raise ValueError("tagged tokens need a pair task (a clean and a corrupted prompt)")
    differ = batch.clean_ids != batch.corrupt_ids
    return differ & batch.attention_mask.bool()


def attention_to_tagged(model, batch, patterns: torch.Tensor | None = None) -> torch.Tensor:
    """``[n_layers, n_heads]`` float64: mean over examples of the attention from the target
    position to the tagged tokens. ValueError when no example has a tagged token. ``patterns``:
    the batch's ``attention_patterns`` when the caller has them already."""
    tagged = tagged_positions(batch).to(model.device)
    usable = tagged.any(1)
    if not usable.any():
        raise ValueError(
            "no example's clean and corrupted prompts differ at any token: nothing is tagged"
        )
    if patterns is None:
        patterns = attention_patterns(model, batch.clean_ids, batch.attention_mask)
    by_example = patterns.transpose(0, 1)  # [batch, L, H, query, key]
    rows = torch.arange(len(batch), device=patterns.device)
    at_target = by_example[rows, :, :, batch.target_pos.to(patterns.device)]  # [batch, L, H, key]
    weight = (at_target.double() * tagged[:, None, None, :].double()).sum(-1)  # [batch, L, H]
    return weight[usable].mean(0)


def prompt_pattern(model, batch, row: int = 0, patterns: torch.Tensor | None = None):
    """(``[n_layers, n_heads, n, n]`` pattern of the batch's prompt ``row`` over its ``n`` real
    tokens, their texts). The rows of a right-padded batch's forward (``patterns``, computed here
    when not given): a causal model's real tokens never see the padding after them."""
    if patterns is None:
        patterns = attention_patterns(model, batch.clean_ids, batch.attention_mask)
    n = int(batch.attention_mask[row].sum())
    tokens = [model.tokenizer.decode([int(t)]) for t in batch.clean_ids[row, :n]]
    return patterns[:, row, :, :n, :n], tokens
