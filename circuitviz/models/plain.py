"""A plain ``transformers`` model that shares a bridged model's weights, for fast generation.

``TransformerBridge`` wraps the Hugging Face modules in place; calling ``hf_model.generate`` through
the wrappers with its key/value cache gives wrong tokens on Llama-family models (the wrappers do
not thread the cache through rotary attention), and a cache-free loop costs a full forward per
token. So generation runs on a fresh model of the same config, built on the meta device (no
initialisation, no copy) whose parameters and buffers are assigned the bridge's own tensors: it
sees every tuning step at once. Attention runs through ``sdpa``, which handles left padding in
every dtype (the eager path fills fully masked float64 rows with NaN). A model sharded across
processes (FSDP) lends gathered whole copies instead, which then do not see later steps.
"""

from __future__ import annotations

import torch

from circuitviz.models import shards
from circuitviz.models.params import canonical_name


def plain_hf_model(model) -> torch.nn.Module:
    """A ``transformers`` causal LM whose tensors *are* ``model``'s (no copy); eval mode."""
    from transformers import AutoModelForCausalLM

    source: dict[str, torch.Tensor] = {}
    for name, tensor in model.hf_model.state_dict(keep_vars=True).items():
        source.setdefault(canonical_name(name), tensor)
    buffers = {canonical_name(name): buf for name, buf in model.hf_model.named_buffers()}
    config = model.hf_model.config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(
            config, dtype=model.dtype, attn_implementation="sdpa"
        )
    keys = list(plain.state_dict().keys())
    missing = [key for key in keys if key not in source]
    if missing:
        raise RuntimeError(f"cannot map bridge weights to Hugging Face names: {missing[:5]}")
    # A sharded model (FSDP) lends whole copies, gathered on every process (in the same order).
    tensors = {key: shards.whole(source[key]) for key in keys}
    plain.load_state_dict(tensors, assign=True, strict=True)
    for name, _ in list(plain.named_buffers()):
        if name not in buffers:
            raise RuntimeError(f"the bridged model has no buffer {name!r} to share")
        owner, _, attr = name.rpartition(".")
        plain.get_submodule(owner)._buffers[attr] = buffers[name]
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    return plain.eval()
