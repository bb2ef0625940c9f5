"""Head roles by the standard detectors, each a score in [0, 1] per head (or in logits, copying).

On random token sequences (``n_sequences`` of ``length`` tokens drawn from the vocabulary, the same
for every checkpoint of a run):

* ``previous_token``: mean attention from each position to the one before it;
* ``duplicate_token``: on a sequence repeated once ``[R, R]``, mean attention from each token of the
  second copy to the same token in the first;
* ``induction``: on ``[R, R]``, mean attention from each token of the second copy to the token
  *after* its earlier occurrence (what it predicts comes next);

and on the task's probe set:

* ``copying``: how much each head, at the target position, raises the logits of the tokens it
  attends to: the attention-weighted direct logit attribution (the final norm at its frozen scale,
  as ``analysis.dla``) of the head's output onto those tokens' unembeddings, less its mean over the
  vocabulary. Positive: the head copies what it reads (a name mover in IOI).

``holders`` names, per role, the head with the highest score: across checkpoints, a change of holder
is a role migrating from one head to another. Oracle tests plant each behaviour in a tiny model built
by hand (tests/test_analysis_roles.py) and check that the detector finds that head.
"""

from __future__ import annotations

import torch

from circuitviz.analysis.attention import attention_patterns

ROLES = ("previous_token", "duplicate_token", "induction", "copying")


def random_sequences(
    vocab: tuple[int, int], length: int, n_sequences: int, seed: int = 0
) -> torch.Tensor:
    """``[n_sequences, length]`` token ids drawn uniformly from ``range(*vocab)``, distinct within
    each sequence (so a duplicate is only the planted repeat)."""
    low, high = vocab
    if high - low < length:
        raise ValueError(f"need {length} distinct tokens, the range {vocab} has {high - low}")
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.randperm(high - low, generator=g)[:length] + low for _ in range(n_sequences)]
    )


def attention_roles(
    model,
    *,
    vocab: tuple[int, int] | None = None,
    length: int = 16,
    n_sequences: int = 8,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``{previous_token, duplicate_token, induction}`` -> ``[n_layers, n_heads]`` float64."""
    vocab = vocab or _default_vocab(model)
    base = random_sequences(vocab, length, n_sequences, seed)
    single = attention_patterns(model, base).double()  # [L, n, H, q, k]
    q = torch.arange(1, length)
    previous = single[..., q, q - 1].mean(dim=(1, 3))
    repeated = attention_patterns(model, torch.cat([base, base], dim=1)).double()
    second = torch.arange(length, 2 * length)
    duplicate = repeated[..., second, second - length].mean(dim=(1, 3))
    induction = repeated[..., second, second - length + 1].mean(dim=(1, 3))
    return {"previous_token": previous, "duplicate_token": duplicate, "induction": induction}


def copying_scores(model, ids: torch.Tensor, target_pos: torch.Tensor, attention_mask=None):
    """``[n_layers, n_heads]`` float64: each head's attention-weighted direct logit onto the tokens
    it attends to from the target position, less its mean over the vocabulary (module docstring)."""
    from circuitviz.analysis.dla import _frozen_norm

    n_layers, device = model.info.n_layers, model.device
    mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
    outputs: list[torch.Tensor | None] = [None] * n_layers
    patterns: list[torch.Tensor | None] = [None] * n_layers
    final: dict[str, torch.Tensor] = {}
    rows = torch.arange(ids.shape[0], device=device)
    pos = target_pos.to(device)

    def keep_result(layer):
        def hook(x, hook):  # [batch, pos, head, d_model]
            outputs[layer] = x.detach()[rows, pos]

        return hook

    def keep_pattern(layer):
        def hook(x, hook):  # [batch, head, q, k]
            patterns[layer] = x.detach()[rows, :, pos]

        return hook

    def keep_final(x, hook):
        final["resid"] = x.detach()[rows, pos]

    hooks = [(f"blocks.{L}.attn.hook_result", keep_result(L)) for L in range(n_layers)]
    hooks += [(f"blocks.{L}.attn.hook_pattern", keep_pattern(L)) for L in range(n_layers)]
    hooks.append(("ln_final.hook_in", keep_final))
    from circuitviz.tuning.discovery import hook_flags

    with torch.no_grad(), hook_flags(model.bridge, True), model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(ids.to(device), attention_mask=mask.to(device))
    linear, _ = _frozen_norm(model.bridge.ln_final.original_component, final["resid"].double())
    unembed = model.bridge.unembed.original_component.weight.detach().double()  # [vocab, d]
    out = torch.zeros(n_layers, model.info.n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        heads = outputs[layer].double().transpose(0, 1)  # [head, batch, d_model]
        logits = linear(heads) @ unembed.T  # [head, batch, vocab]
        centred = logits - logits.mean(-1, keepdim=True)
        attended = centred.gather(-1, ids.to(device)[None].expand(len(heads), -1, -1))  # [H, b, k]
        weights = patterns[layer].double().transpose(0, 1) * mask.to(device)[None]  # [H, b, k]
        out[layer] = (weights * attended).sum(-1).mean(-1).cpu()
    return out


def holders(scores: dict[str, torch.Tensor]) -> dict[str, tuple[str, float]]:
    """role -> (the head with the highest score, e.g. ``a1.h3``, its score)."""
    out = {}
    for role, grid in scores.items():
        index = int(torch.argmax(grid))
        layer, head = divmod(index, grid.shape[1])
        out[role] = (f"a{layer}.h{head}", float(grid[layer, head]))
    return out


def _default_vocab(model) -> tuple[int, int]:
    """Ordinary token ids: past the first few (special tokens sit there in most tokenizers)."""
    size = model.info.d_vocab
    return (min(10, size // 2), min(size, 5000))
