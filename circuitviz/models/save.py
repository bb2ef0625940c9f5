"""Save a (possibly fine-tuned) bridged model as a plain Hugging Face directory.

``save_pretrained`` fails on a model after ``boot_transformers`` (GPT-2's q/k/v are strided views of the
fused ``c_attn``; Llama has shared tensors). So we build a fresh model of the same config and copy every
tensor into it by name, with the bridge's ``._original_component`` path segments removed: the fused
tensors the bridge keeps in sync (``c_attn``, ``c_proj``) carry Hugging Face's own names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from circuitviz.models.params import canonical_name


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under the Hugging Face names of its architecture."""
    from transformers import AutoModelForCausalLM

    source: dict[str, torch.Tensor] = {}
    for name, tensor in model.hf_model.state_dict().items():
        source.setdefault(canonical_name(name), tensor)
    fresh_keys = AutoModelForCausalLM.from_config(model.hf_model.config).state_dict().keys()
    missing = [key for key in fresh_keys if key not in source]
    if missing:
        raise RuntimeError(f"cannot map bridge weights back to Hugging Face names: {missing[:5]}")
    return {key: source[key].detach().clone().contiguous() for key in fresh_keys}


def save_model(model, out_dir: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files to ``out_dir``; the result
    loads with ``load_model(out_dir)`` and with plain ``transformers``."""
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fresh = AutoModelForCausalLM.from_config(model.hf_model.config)
    fresh.load_state_dict(hf_state_dict(model))
    fresh.to(torch.float32 if model.dtype == torch.float64 else model.dtype)
    fresh.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    return out
