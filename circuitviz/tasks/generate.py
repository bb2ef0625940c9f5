"""Greedy, batched generation of responses, bounded by ``max_new_tokens``.

1. Prompts are sorted by length (so a batch pads little) and left-padded, batch by batch.
2. A plain ``transformers`` model sharing the bridged model's weights (``models.plain``) generates
   greedily with its key/value cache, stopping a row at its first stop token (EOS, the chat
   template's end-of-turn token), after ``max_new_tokens``, or at the model's context length.
3. Each row's new tokens are cut at the first stop token (exclusive) and returned in the prompts'
   original order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitviz.models.plain import plain_hf_model


@torch.no_grad()
def greedy_generate(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    batch_size: int = 16,
) -> list[list[int]]:
    """The generated token ids (new tokens only, without the stop token) for each prompt."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("every prompt needs at least one token")
    plain = plain_hf_model(model)
    stops = [int(i) for i in stop_ids]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]), dtype=torch.long)
            mask[r, width - len(prompts[i]) :] = 1
        # Never past the model's context (the demo model reads 64 positions): a row simply stops.
        room = model.info.n_ctx - width if model.info.n_ctx else max_new_tokens
        if room < 1:
            continue  # the prompt alone fills the context: nothing can be generated
        generated = plain.generate(
            ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=min(max_new_tokens, room),
            do_sample=False,
            num_beams=1,
            eos_token_id=stops or None,
            pad_token_id=pad_id,
        )[:, width:].tolist()
        for r, i in enumerate(rows):
            tokens = generated[r]
            cut = next((p for p, token in enumerate(tokens) if token in stops), len(tokens))
            out[i] = tokens[:cut]
    return out
