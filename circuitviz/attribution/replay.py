"""Plain EAP at one position per example, backpropagated through that position alone.

With ``positions="target"`` plain EAP reads the metric's gradient only at each example's target
position ``t`` (the last prompt token, whose logits the pair metrics read). A causal model's
logits at ``t`` depend on every position up to ``t``, but a destination's input at ``t`` reaches
them only through position ``t`` itself: its query, its own key and value (which, of all the
queries up to ``t``, only ``t``'s reads) and the residual stream at ``t``. So that gradient is the
gradient of a *replay* of position ``t`` alone, in which every layer's keys and values at the
other positions are the clean forward's, held constant:

1. The clean forward (the bridge, hook flags off, a few read-only hooks) keeps, besides the
   sources' activations at ``t``, each layer's keys and values and the embedding at ``t``.
2. The replay runs one token per example, from that embedding (the root of autograd), through the
   modules the bridge wraps (norms, projections, MLPs) with the bridge's attention arithmetic
   (scale, grouped-query repeat, rotary, the softmax's dtype): at each layer the query at ``t``
   attends over the kept keys and values, position ``t``'s own recomputed from the replayed
   residual stream so that their gradient flows.
3. The metric of the replayed logits is backpropagated to the root; the destinations' gradients
   (q/k/v in the closed form of ``lean``, MLP inputs, the final residual stream) are the full
   backward's, to rounding, and score the edges as ``eap`` does.

The full backward costs a training backward over every position; the replay's, one position's.
The corrupted baseline at ``t`` comes from the same code (``corrupted_baseline``): a no-grad
forward of only the tokens position ``t`` reads. Models: the GPT-2 and plain Llama families
(``applies``); anything else, MLP neuron groups, a user's metric (which may read other positions),
EAP-IG, left-padded prompts and a sharded model take the full backward. The tests check the replay
against the full backward (``eap.batch_edge_scores(..., full_backward=True)``) and against finite
differences of exact patching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from circuitviz.attribution.hooks import DestHook
from circuitviz.attribution.lean import QKV, LeanDest, NormJacobian

FAMILIES = ("gpt2", "llama")


def applies(model, graph, config, batch, *, custom_metric: bool, per_head_copies: bool) -> bool:
    """Whether one batch's attribution takes the replay (module docstring): plain EAP at the
    target positions with a pair metric, a GPT-2 or plain Llama-family model, unsharded, on
    right-padded prompts (whose positions are 0, 1, ... as the replay assumes; the bridge moves a
    left-padded row's positions)."""
    from circuitviz.models import shards

    mask = batch.attention_mask.bool()
    if (
        not bool((mask[:, 1:] <= mask[:, :-1]).all())
        or config.method != "eap"
        or config.positions != "target"
        or custom_metric
        or per_head_copies
        or graph.mlp_groups is not None
        or model.info.family not in FAMILIES
    ):
        return False
    # FSDP shards the blocks' parameters; the first block's say.
    if any(shards.is_sharded(p) for p in model.bridge.blocks[0].parameters()):
        return False
    return model.info.family != "llama" or _plain_rotary_attention(model)


def _plain_rotary_attention(model) -> bool:
    """Whether a Llama-family model's attention is the one the replay computes: rotary over the
    whole head (rotate-half pairs), no sliding window, query/key norm, logit soft-capping, sinks,
    gates or position-dependent scaling (the bridge's attention handles those; the replay does
    not, so such a model takes the full backward)."""
    config = model.hf_model.config
    rope = getattr(config, "rope_parameters", None) or {}
    attn = model.bridge.blocks[0].attn
    hf_attn = attn.original_component
    bridge_config = attn.config
    return not (
        getattr(config, "sliding_window", None) is not None
        and getattr(config, "use_sliding_window", True)
        or getattr(config, "partial_rotary_factor", 1.0) != 1.0
        or (isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None)
        or getattr(bridge_config, "rotary_interleaved_cos_sin", False)
        or getattr(bridge_config, "rotary_adjacent_pairs", False)
        or any(
            getattr(hf_attn, name, None) is not None
            for name in ("q_norm", "k_norm", "attn_logit_softcapping", "sinks")
        )
        or "gate" in attn._modules
    )


def kv_hooks(n_layers: int) -> list[tuple[int, str, str]]:
    """(layer, k|v, bridge hook) of every layer's key and value projection output."""
    return [
        (layer, which, f"blocks.{layer}.attn.{which}.hook_out")
        for layer in range(n_layers)
        for which in ("k", "v")
    ]


@dataclass
class CleanContext:
    """What the clean forward leaves for the replay (step 1): every layer's keys and values as the
    projections put them out (``[batch, pos, kv_head * d_head]`` or ``[..., kv_head, d_head]``,
    before any rotary embedding), and the embedding at each target position ``[batch, d_model]``."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    embed: torch.Tensor | None = None


@dataclass(frozen=True)
class Watch:
    """Which destinations' gradients the replay hands on, and to what: ``on_qkv(dest,
    head_major)`` for a q/k/v destination read in closed form (``lean.LeanDest``, its input
    gradient ``[head, batch, 1, d_model]``), ``on_input(hook_name, grad)`` for an MLP input's or
    the final residual stream's ``[batch, d_model]``."""

    qkv: dict  # {(layer, q|k|v): LeanDest}
    inputs: frozenset  # {hook_name}
    on_qkv: Callable[[LeanDest, torch.Tensor], None]
    on_input: Callable[[str, torch.Tensor], None]


def replay_logits(model, batch, context: CleanContext, mask: torch.Tensor, watch: Watch):
    """Step 2: the logits at each example's target position ``[batch, d_vocab]``, computed from
    ``context.embed`` (made the root of autograd; returned with it) through every layer."""
    bridge, info = model.bridge, model.info
    target = batch.target_pos.to(model.device)
    n_batch = target.shape[0]
    root = context.embed.detach().requires_grad_(True)
    n_pos = context.keys[0].shape[1]
    positions = torch.arange(n_pos, device=model.device)
    # Keys a target query may read: causal, and not padding.
    visible = (positions[None, :] <= target[:, None]) & mask[:, :n_pos].bool()
    at_target = (positions[None, :] == target[:, None]).to(context.embed.dtype)  # one-hot
    rotary = _Rotary(model, n_batch, n_pos, target) if info.family == "llama" else None
    x = root
    for layer, block in enumerate(bridge.blocks):
        attn = block.attn
        qkv = _projections(attn, block.ln1.original_component(x), info)  # [batch, n_all * d_head]
        if any((layer, which) in watch.qkv for which in QKV):
            qkv = qkv.view_as(qkv)
            qkv.register_hook(_qkv_hook(watch, layer, block, x, info))
        q, k, v = qkv.view(n_batch, -1, info.d_head).split(_sizes(info), dim=1)
        keys = context.keys[layer].view(n_batch, n_pos, info.n_kv_heads, info.d_head)
        values = context.values[layer].view(n_batch, n_pos, info.n_kv_heads, info.d_head)
        if rotary is not None:
            q, k, keys = rotary.query(q), rotary.query(k), rotary.keys(keys)
        # Position t's own key and value carry the gradient; the others are constants.
        own = (k, v, at_target)
        z = _attend(attn, q, keys.detach(), values.detach(), visible, layer, info, own)
        x = x + _output(attn, z, n_batch)
        # The MLP's input is a view of its own: the residual stream's gradient is not its.
        mlp_in = x
        if f"blocks.{layer}.hook_mlp_in" in watch.inputs:
            mlp_in = _watched(x, watch, f"blocks.{layer}.hook_mlp_in")
        x = x + _mlp(block, block.ln2.original_component(mlp_in), info)
    final = f"blocks.{info.n_layers - 1}.hook_out"
    if final in watch.inputs:
        x = _watched(x, watch, final)
    logits = bridge.unembed.original_component(bridge.ln_final.original_component(x))
    return logits, root


def corrupted_baseline(model, graph, batch):
    """The ``corrupted`` baseline at each example's target position, ``BaselineActivations`` of
    ``[n_src, batch, 1, d_model]``: one no-grad forward of the corrupted prompts through the same
    modules and arithmetic as the replay, keeping the sources at the target positions only. Only
    what position ``t`` reads is computed: the real tokens up to ``t``, packed (no padding goes
    through the projections and MLPs), and in the last layer the target positions alone. On a
    small model that is a third of the bridge's forward with hooks."""
    from circuitviz.attribution.activations import BaselineActivations
    from circuitviz.attribution.hooks import ROOT_HOOK, source_hooks

    bridge, info = model.bridge, model.info
    ids = batch.corrupt_ids.to(model.device)
    mask = batch.attention_mask.to(model.device).bool()
    target = batch.target_pos.to(model.device)
    n_batch, n_pos = ids.shape
    rows = torch.arange(n_batch, device=model.device)
    positions = torch.arange(n_pos, device=model.device)
    needed = mask & (positions[None, :] <= target[:, None])  # what position t reads
    if not bool(needed[rows, target].all()):
        raise ValueError("a target position is padding: the batch's attention mask is wrong")
    b_idx, p_idx = needed.nonzero(as_tuple=True)  # packed, row by row
    t_idx = needed.sum(1).cumsum(0) - 1  # each row's target: its last needed token
    # [batch, query, key]: causal, and not padding.
    visible = (positions[None, :, None] >= positions[None, None, :]) & needed[:, None, :]
    rotary = _Rotary(model, n_batch, n_pos, target) if info.family == "llama" else None
    last = info.n_layers - 1
    kept: dict[str, torch.Tensor] = {}

    def padded(x: torch.Tensor) -> torch.Tensor:  # [n_tokens, ...] -> [batch, pos, ...]
        out = x.new_zeros(n_batch, n_pos, *x.shape[1:])
        out[b_idx, p_idx] = x
        return out

    with torch.no_grad():
        x = bridge.embed.original_component(ids[b_idx, p_idx])  # [n_tokens, d_model]
        if info.family == "gpt2":
            x = x + bridge.pos_embed.original_component(p_idx)
        kept[ROOT_HOOK] = x[t_idx][None]
        for layer, block in enumerate(bridge.blocks):
            attn = block.attn
            normed = block.ln1.original_component(x)
            qkv = _projections(attn, normed, info).view(len(x), -1, info.d_head)
            q, k, v = qkv.split(_sizes(info), dim=1)  # [n_tokens, n, d_head]
            if rotary is not None:
                k = rotary.packed(k, b_idx, p_idx)
            keys, values = padded(k), padded(v)
            heads = head_weights(attn.o.original_component, info)  # [head, d_head, d_model]
            if layer < last:
                if rotary is not None:
                    q = rotary.packed(q, b_idx, p_idx)
                z = _attend_all(attn, padded(q), keys, values, visible, layer, info)
                z = z[b_idx, p_idx]  # [n_tokens, head, d_head]
                kept[f"blocks.{layer}.attn.hook_result"] = torch.einsum(
                    "bhe,hed->hbd", z[t_idx], heads
                )
            else:  # the last layer: the target positions alone
                x, q = x[t_idx], q[t_idx]
                if rotary is not None:
                    q = rotary.query(q)
                z = _attend(attn, q, keys, values, needed, layer, info)  # [batch, head, d_head]
                kept[f"blocks.{layer}.attn.hook_result"] = torch.einsum("bhe,hed->hbd", z, heads)
            x = x + attn.o.original_component(z.reshape(len(x), -1))
            out = _mlp(block, block.ln2.original_component(x), info)
            kept[f"blocks.{layer}.mlp.hook_out"] = (out if layer == last else out[t_idx])[None]
            x = x + out
    sources = torch.empty(graph.n_src, n_batch, 1, info.d_model, device=model.device, dtype=x.dtype)
    for spec in source_hooks(graph, model):
        rows_of = kept[spec.hook_name]
        if rows_of.shape[0] != spec.src_slice.stop - spec.src_slice.start:
            raise RuntimeError(
                f"{spec.hook_name} gives {rows_of.shape[0]} sources, the graph has "
                f"{spec.src_slice.stop - spec.src_slice.start}"
            )
        sources[spec.src_slice] = rows_of[:, :, None, :]
    return BaselineActivations(sources=sources, embed=kept[ROOT_HOOK][0][:, None, :])


def metric_at_target(metric, logits: torch.Tensor, batch) -> torch.Tensor:
    """A pair metric (which reads the logits at ``target_pos``) of the replayed logits
    ``[batch, d_vocab]``: ``[batch]``."""
    return metric(logits[:, None, :], _AtFirst(batch))


class _AtFirst:
    """``batch`` (any object with a task batch's fields) whose target is position 0: the replayed
    logits' one position."""

    def __init__(self, batch) -> None:
        self._batch = batch
        self.target_pos = torch.zeros_like(batch.target_pos)

    def __getattr__(self, name: str):
        return getattr(self._batch, name)


def _sizes(info) -> tuple[int, int, int]:
    """Heads of the q, k and v projections."""
    return (info.n_heads, info.n_kv_heads, info.n_kv_heads)


def _projections(attn, normed: torch.Tensor, info) -> torch.Tensor:
    """q, k and v of ``normed`` ``[batch, d_model]`` side by side, ``[batch, n_all * d_head]``:
    GPT-2's fused projection in one product, three otherwise."""
    if info.family == "gpt2":
        return attn.qkv.original_component(normed)
    return torch.cat([attn.get_submodule(w).original_component(normed) for w in QKV], dim=-1)


def _qkv_hook(watch: Watch, layer: int, block, x: torch.Tensor, info):
    """The gradient at a layer's q/k/v outputs, turned into each wanted destination's head-major
    input gradient by the closed form of ``lean``: the norm's Jacobian and one product for the
    three projections together, split afterwards."""
    x = x.detach()[:, None, :]  # [batch, 1, d_model]

    def hook(grad: torch.Tensor) -> None:
        jacobian = NormJacobian(block.ln1.original_component, x)
        grad = grad.view(grad.shape[0], 1, -1, info.d_head)  # [batch, 1, n_all, d_head]
        head_major = jacobian.projected_vjp(grad, _projection_weights(block.attn, info))
        for which, part in zip(QKV, head_major.split(_sizes(info)), strict=True):
            dest = watch.qkv.get((layer, which))
            if dest is not None:
                watch.on_qkv(dest, part)

    return hook


def _projection_weights(attn, info) -> torch.Tensor:
    """The q, k and v projection weights stacked by head, ``[n_all, d_head, d_model]``: GPT-2's
    fused weight as a view, the three others concatenated."""
    if info.family == "gpt2":  # Conv1D: [d_model, n_all * d_head]
        weight = attn.qkv.original_component.weight.detach().T
    else:
        weight = torch.cat([attn.get_submodule(w).original_component.weight.detach() for w in QKV])
    return weight.unflatten(0, (-1, info.d_head))


def _watched(x: torch.Tensor, watch: Watch, name: str) -> torch.Tensor:
    view = x.view_as(x)
    view.register_hook(lambda grad: watch.on_input(name, grad))
    return view


def _attend(attn, q, keys, values, visible, layer: int, info, own=None) -> torch.Tensor:
    """One query per example ``q`` ``[batch, head, d_head]`` over ``keys``/``values`` ``[batch,
    pos, kv_head, d_head]`` where ``visible`` ``[batch, pos]``, with the bridge's arithmetic
    (scale, inverse-layer scaling, upcast, grouped-query repeat): ``[batch, head, d_head]``.

    ``keys`` and ``values`` are constants. ``own`` = (k, v ``[batch, kv_head, d_head]``, ``at``
    ``[batch, pos]`` one-hot) gives the query's own position's key and value their gradient:
    terms whose value is exactly zero carry it (``k`` through the query's own score, ``v``
    through its own weight), so the value is the constants' and nothing is counted twice. With
    one query, products and sums over small tensors cost a fraction of batched matrix products."""
    qs, ks, values, scale, upcast = _arithmetic(attn, q, keys, values, layer, info)
    scores = (qs[:, None] * ks).sum(-1) * scale  # [batch, pos, head]
    if own is not None:
        k, v, at = own
        n_rep = info.n_heads // info.n_kv_heads
        if n_rep > 1:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        mine = (qs.detach() * (k.float() if upcast else k)).sum(-1) * scale  # [batch, head]
        scores = scores + at[:, :, None] * (mine - mine.detach())[:, None, :]
    scores = scores.masked_fill(~visible[:, :, None], torch.finfo(scores.dtype).min)
    weights = _softmax(attn, scores.transpose(1, 2), info).transpose(1, 2).to(values.dtype)
    z = (weights[..., None] * values).sum(1)
    if own is not None:
        own_weight = (weights * at[:, :, None]).sum(1).detach()  # [batch, head]
        z = z + own_weight[..., None] * (v - v.detach())
    return z


def _attend_all(attn, q, k, v, visible, layer: int, info) -> torch.Tensor:
    """Every query of ``q`` ``[batch, pos, head, d_head]`` over ``k``/``v`` where ``visible``
    ``[batch, query, key]``, with ``_attend``'s arithmetic: ``[batch, pos, head, d_head]``."""
    qs, ks, v, scale, _ = _arithmetic(attn, q, k, v, layer, info)
    scores = torch.einsum("bqhd,bkhd->bhqk", qs, ks) * scale
    scores = scores.masked_fill(~visible[:, None], torch.finfo(scores.dtype).min)
    weights = _softmax(attn, scores, info).to(v.dtype)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v)


def _arithmetic(attn, q, keys, values, layer: int, info):
    """What the bridge's attention does before its scores: keys and values ``[batch, pos,
    kv_head, d_head]`` repeated to every query head (grouped-query attention), q and k upcast to
    float32 where GPT-2's ``reorder_and_upcast_attn`` asks, and the scale. Returns (q, keys,
    values, scale, upcast)."""
    n_rep = info.n_heads // info.n_kv_heads
    if n_rep > 1:
        keys = keys.repeat_interleave(n_rep, dim=2)
        values = values.repeat_interleave(n_rep, dim=2)
    upcast = bool(getattr(attn, "_reorder_and_upcast_attn", False))
    if upcast:
        q, keys = q.float(), keys.float()
    return q, keys, values, _scale(attn, layer, info), upcast


def _softmax(attn, scores: torch.Tensor, info) -> torch.Tensor:
    """Softmax over the last axis by the bridge's own attention's rule (its dtype: float32 for the
    Llama family whatever the model's, the scores' own for GPT-2), so the replay's weights are the
    bridge's to the last bit wherever its scores are. Every row has a visible key, so the bridge's
    handling of fully masked rows never applies."""
    dtype = torch.float32 if info.family == "llama" else None
    masked = getattr(attn, "_masked_softmax", None)
    if masked is None:
        return torch.softmax(scores, dim=-1, dtype=dtype)
    return masked(scores, dtype=dtype)


def _scale(attn, layer: int, info) -> float:
    if info.family == "llama":
        return getattr(attn.original_component, "scaling", info.d_head**-0.5)
    scale = info.d_head**-0.5
    if getattr(attn.config, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(layer + 1)
    return scale


def head_weights(o: torch.nn.Module, info) -> torch.Tensor:
    """The output projection per head, ``[head, d_head, d_model]``: a Conv1D (GPT-2) stores its
    weight ``[in, out]``, a Linear ``[out, in]``."""
    weight = o.weight.detach()
    if type(o).__name__ != "Conv1D":
        weight = weight.T
    return weight.reshape(info.n_heads, info.d_head, weight.shape[-1])


def _mlp(block, x: torch.Tensor, info) -> torch.Tensor:
    """The block's MLP on ``x``, through its projections' own modules (the MLP module calls the
    bridge's hooked wrappers of them), with a tanh-approximated GELU as one operation."""
    mlp = block.mlp
    act = getattr(mlp.original_component, "act", None) or mlp.original_component.act_fn
    if info.family == "gpt2":
        return mlp.out.original_component(
            _activation(act, mlp.get_submodule("in").original_component(x))
        )
    gate = _activation(act, mlp.gate.original_component(x))
    return mlp.out.original_component(gate * mlp.get_submodule("in").original_component(x))


_TANH_GELUS = ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "GELUPytorchTanh")


def _activation(act: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if type(act).__name__ in _TANH_GELUS:  # seven elementwise operations in Python otherwise
        return torch.nn.functional.gelu(x, approximate="tanh")
    return act(x)


def _output(attn, z: torch.Tensor, n_batch: int) -> torch.Tensor:
    """The attention output projection of ``z`` ``[batch, head, d_head]``: ``[batch, d_model]``."""
    return attn.o.original_component(z.reshape(n_batch, -1))


class _Rotary:
    """Llama-family rotary embedding at every position ``[batch, pos, d_head]`` (``keys``) and at
    each example's target position (``query``), from the model's own rotary module."""

    def __init__(self, model, n_batch: int, n_pos: int, target: torch.Tensor | None) -> None:
        hf = model.hf_model
        module = getattr(getattr(hf, "model", hf), "rotary_emb", None)
        if module is None:
            raise RuntimeError(
                "a Llama-family model without a rotary_emb module cannot be replayed"
            )
        positions = torch.arange(n_pos, device=model.device)[None].expand(n_batch, n_pos)
        cos, sin = module(torch.zeros(1, device=model.device, dtype=model.dtype), positions)
        self.cos_all, self.sin_all = cos[:, :, None, :], sin[:, :, None, :]
        if target is not None:
            rows = torch.arange(n_batch, device=model.device)
            self.cos_t, self.sin_t = cos[rows, target][:, None, :], sin[rows, target][:, None, :]

    def query(self, x: torch.Tensor) -> torch.Tensor:  # [batch, n, d_head], at the target
        return x * self.cos_t.to(x.dtype) + _rotate_half(x) * self.sin_t.to(x.dtype)

    def packed(self, x: torch.Tensor, b_idx: torch.Tensor, p_idx: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n_tokens, n, d_head]`` of the tokens at (``b_idx``, ``p_idx``)."""
        cos, sin = self.cos_all[b_idx, p_idx], self.sin_all[b_idx, p_idx]  # [n_tokens, 1, d_head]
        return x * cos.to(x.dtype) + _rotate_half(x) * sin.to(x.dtype)

    def keys(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, n, d_head]
        return x * self.cos_all.to(x.dtype) + _rotate_half(x) * self.sin_all.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def wanted(dests: list[DestHook], lean: dict) -> tuple[dict, frozenset]:
    """({(layer, which): LeanDest} of the q/k/v destinations among ``dests``, read in closed
    form; {hook_name} of the others)."""
    qkv, inputs = {}, set()
    for spec in dests:
        if lean is not None and spec.hook_name in lean:
            dest = lean[spec.hook_name]
            qkv[(dest.layer, dest.which)] = dest
        else:
            inputs.add(spec.hook_name)
    return qkv, frozenset(inputs)
